"""genzoo: deep generative models side by side, on one data layer, one trainer and honest metrics.

The public API is imported lazily (PEP 562), so that ``genzoo list`` and ``--help`` start fast.
"""

import importlib

__version__ = "0.2.0"

_API = {
    "load_run": "genzoo.models.registry",
    "DataInfo": "genzoo.data",
    "list_datasets": "genzoo.data",
    "load_split": "genzoo.data",
    "likelihood_metrics": "genzoo.evaluate.likelihood",
    "sample_quality_metrics": "genzoo.evaluate.sample_quality",
    "load_feature_net": "genzoo.evaluate.feature_net",
    "MODELS": "genzoo.models",
    "build_model": "genzoo.models",
    "TrainConfig": "genzoo.train.loop",
    "Trainer": "genzoo.train.loop",
}  # not "train": the subpackage genzoo.train takes that attribute once imported; use genzoo.train.train
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'genzoo' has no attribute {name!r}")
