"""Protocol v2: declared capabilities, samplers and estimators; imports that run one way."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from genzoo.data.core import DataInfo
from genzoo.data.registry import dataset_info, load_split
from genzoo.evaluate.likelihood import likelihood_metrics
from genzoo.models.base import CAPABILITIES, LIKELIHOOD_KINDS, SAMPLING_OPTIONS
from genzoo.models.registry import build_model, FAMILIES, MODEL_FAMILY, MODELS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "genzoo"
# what each capability promises: the methods a model declaring it must define
PROMISES = {"encode": ("encode", "decode"), "decode": ("decode",), "corrupt": ("corrupt",), "complete": ("complete",),
            "fit_after_training": ("fit_after_training",), "extra_likelihood_terms": ("likelihood_terms",),
            "invert": ("encode", "decode"), "initialize": ("initialize",), "guide": ("sample",), "chain": ("sampling_chain",),
            "input_gradients": ("sample",)}
# layers, lowest first: a module may import only from its own layer or a lower one
LAYERS = [{"data", "nn", "distributions", "checkpoint", "provenance"}, {"models"}, {"evaluate"}, {"train"},
          {"figures"}, {"runs"}, {"bench"}, {"window"}, {"cli"}]


def declared_capabilities(cls) -> frozenset[str]:
    """A class's capabilities; one that declares them per instance (ddpm: "guide" when class-conditional
    with label dropout) is asked as a class-conditional model of the digits."""
    if isinstance(cls.capabilities, frozenset):
        return cls.capabilities
    return build_model(cls.name, DataInfo("digits", (1, 8, 8), 10, "discrete", 17), {"class_conditional": True}).capabilities


@pytest.mark.parametrize("name", sorted(MODELS))
def test_declared_capabilities_are_known_and_kept(name):
    cls = MODELS[name]
    capabilities = declared_capabilities(cls)
    assert capabilities <= set(CAPABILITIES)
    for capability in capabilities:
        for method in PROMISES[capability]:
            assert getattr(cls, method) is not getattr(MODELS["gan"].__mro__[-3], method, None), (name, method)
    assert cls.samplers and all(set(s.options) <= set(SAMPLING_OPTIONS) for s in cls.samplers)
    assert len({s.name for s in cls.samplers}) == len(cls.samplers)
    assert MODEL_FAMILY[name] in FAMILIES and cls.__module__.split(".")[2] == MODEL_FAMILY[name]


def test_no_capability_is_guessed_with_hasattr():
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "hasattr"]
        assert not calls, f"{path.relative_to(PACKAGE)} guesses a capability with hasattr"


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "genzoo" or len(parts) < 2:
        return None
    return next((i for i, layer in enumerate(LAYERS) if parts[1] in layer), None)


def test_imports_run_one_way():
    for path in PACKAGE.rglob("*.py"):
        module = "genzoo." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        own = layer_of(module)
        if own is None:
            assert path.parent == PACKAGE and path.stem in ("__init__", "__main__"), f"{module} has no layer"
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                layer = layer_of(target)
                assert layer is None or layer <= own, f"{module} imports {target}: against the layering"


def test_a_sampler_or_option_the_model_lacks_is_refused_by_name():
    model = build_model("vae", dataset_info("digits"), {"hidden_dim": 8, "latent_dim": 2})
    with pytest.raises(ValueError, match="no sampler 'ddim'; its samplers: ancestral"):
        model.generate(2, sampler="ddim")
    with pytest.raises(ValueError, match="no --steps option"):
        model.generate(2, steps=10)
    assert model.generate(3).shape == (3, 1, 8, 8)
    made = build_model("made", dataset_info("digits"), {"hidden_dims": (16,)})
    with pytest.raises(ValueError, match="its samplers: cached, naive"):
        made.generate(1, sampler="fast")
    with pytest.raises(ValueError, match="its estimators: exact"):
        made.estimator("ais")
    gan = build_model("gan", dataset_info("digits"), {"hidden_dim": 8})
    with pytest.raises(ValueError, match="no likelihood"):
        gan.estimator(None)


def test_the_importance_estimator_reports_its_own_standard_error():
    # The delta-method standard error of the IWAE bound's split mean agrees with the spread of the
    # split mean over independent evaluations (different seeds), within sampling error.
    torch.manual_seed(0)
    model = build_model("vae", dataset_info("digits"), {"hidden_dim": 16, "latent_dim": 2}).eval()
    info, split = load_split("digits", "test")
    runs = [likelihood_metrics(model, split, info, draws=20, seed=s, limit=40) for s in range(24)]
    assert all(r["likelihood"] == "lower_bound" and r["likelihood"] in LIKELIHOOD_KINDS for r in runs)
    spread = torch.tensor([r["nll_nats"] for r in runs]).std().item()
    reported = sum(r["nll_std_err"] for r in runs) / len(runs)
    assert 0.5 < reported / spread < 2.0, (reported, spread)
    single = likelihood_metrics(model, split, info, draws=1, limit=40)
    assert single["nll_std_err"] is None  # one draw gives no variance
    made = build_model("made", info, {"hidden_dims": (16,)}).eval()
    exact = likelihood_metrics(made, split, info, limit=40)
    assert exact["likelihood"] == "exact" and exact["nll_std_err"] == 0.0 and "neg_elbo_nats" not in exact
    assert math.isfinite(runs[0]["neg_elbo_nats"]) and runs[0]["estimator"] == "importance"


def test_every_public_name_imports_as_what_it_names():
    """``from genzoo import NAME`` gives the function or class, never a subpackage of the same name."""
    import subprocess
    import sys

    import genzoo

    names = ", ".join(genzoo.__all__)
    code = f"from genzoo import {names}\nimport types\nprint([n for n in [{names}] if isinstance(n, types.ModuleType)])"
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]
