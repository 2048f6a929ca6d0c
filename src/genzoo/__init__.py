"""genzoo: deep generative models side by side, on one data layer, one trainer and honest metrics."""

from genzoo.checkpoint import load_run
from genzoo.data import DataInfo, list_datasets, load_split
from genzoo.evaluate import likelihood_metrics
from genzoo.models import MODELS, build_model
from genzoo.training import TrainConfig, Trainer, train

__version__ = "0.1.0"
__all__ = ["MODELS", "DataInfo", "TrainConfig", "Trainer", "build_model", "likelihood_metrics", "list_datasets",
           "load_run", "load_split", "train"]
