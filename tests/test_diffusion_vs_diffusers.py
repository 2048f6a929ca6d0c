"""benchmarks/diffusion_vs_diffusers.py in --quick mode: the rows, their numbers, and that the two U-Nets are one network.

diffusers is in the test extra, so this test runs (never skips) in CI. The quick run takes batch 2,
two rounds of one step per (library, lever) and two 25-step DDIM images per sampler: about 10-20 s on
one thread, most of it the bf16 levers (bf16 matmuls are slow on CPUs without AVX512-BF16 or AMX).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "diffusion_vs_diffusers.py"
PARAM_TOLERANCE = 0.01  # relative; the layouts are built to match tensor for tensor, so the counts are in fact equal


def load_benchmark():
    spec = importlib.util.spec_from_file_location("diffusion_vs_diffusers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while the class is built
    spec.loader.exec_module(module)  # exits with status 2 if diffusers is missing: a failure, not a skip
    return module


def positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def test_quick_run_has_every_row_with_finite_positive_numbers(capsys):
    bench = load_benchmark()
    threads = torch.get_num_threads()
    result = bench.main(["--quick", "--threads", "1"])
    assert torch.get_num_threads() == threads, "the benchmark must give the thread count back"
    printed = capsys.readouterr().out

    keys = bench.DEFAULT_LEVERS.split(",")
    training = result["training"]
    assert [(r["library"], r["lever_key"]) for r in training] == [(lib, k) for k in keys for lib in ("genzoo", "diffusers")]
    for r in training:
        assert r["error"] is None, r
        assert r["timed_steps"] == 2
        for name in ("step_ms", "examples_per_s", "gflops", "share_fp32_peak", "share_bf16_peak"):
            assert positive(r[name]), (name, r)
        assert (r["ratio"] is None) == (r["library"] == "diffusers")
        if r["ratio"] is not None:
            assert positive(r["ratio"])
        assert f"| {r['lever']} | {r['library']} | {r['params']:,} |" in printed

    sampling = result["sampling"]
    assert [(r["library"], r["lever"]) for r in sampling] == [
        (lib, bench.LEVERS[k].label) for k in bench.SAMPLE_LEVERS for lib in ("genzoo", "diffusers")]
    for r in sampling:
        assert positive(r["seconds_per_image"]), r
        if r["library"] == "genzoo":
            assert positive(r["ratio"])
    assert all(positive(v) for v in result["matmul_peak_gflops"].values())
    assert "## Training step" in printed and "## Sampling" in printed and "Best against best" in printed

    # the matched architecture: parameter counts, FLOPs, outputs and samples
    g, d = (next(r["params"] for r in training if r["library"] == lib) for lib in ("genzoo", "diffusers"))
    assert abs(g - d) <= PARAM_TOLERANCE * d, (g, d)
    flops = result["forward_mflop"]
    assert abs(flops["genzoo"] - flops["diffusers"]) <= 0.01 * flops["diffusers"], flops
    eq = result["equivalence"]
    assert eq["output_max_abs_diff"] < 1e-4 * max(1.0, eq["output_scale"]), eq
    assert eq["sample_max_abs_diff"] <= 1 / 255 + 1e-6 and eq["sample_share_equal"] > 0.99, eq


def test_weights_map_strictly_with_attention_at_7x7():
    """With attention blocks at 7x7 too (AttnDownBlock2D / AttnUpBlock2D), every tensor maps and the outputs agree."""
    bench = load_benchmark()
    torch.manual_seed(0)
    ddpm = bench.genzoo_ddpm((7,)).eval()
    with torch.no_grad():
        for p in ddpm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    unet = bench.diffusers_unet((7,)).eval()
    bench.load_genzoo_weights(unet, ddpm.net)  # strict: raises on any unmatched tensor
    assert bench.params(ddpm.net) == bench.params(unet)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 800])
    with torch.no_grad():
        torch.testing.assert_close(unet(x, t).sample, ddpm.net(x, t), rtol=1e-4, atol=1e-4)
