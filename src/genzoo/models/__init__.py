"""Generative models by family, the protocol they answer, and the registry of their names."""

from genzoo.models.base import (
    GenerativeModel,
    LikelihoodKind,
    LogLikelihood,
    ModelConfig,
    Phase,
    check_choice,
    check_labelled,
    check_positive,
)
from genzoo.models.registry import (
    MODEL_CLASSES,
    MODELS,
    build_model,
    config_from_dict,
    model_class,
)

__all__ = [
    "GenerativeModel",
    "LikelihoodKind",
    "LogLikelihood",
    "MODELS",
    "MODEL_CLASSES",
    "ModelConfig",
    "Phase",
    "build_model",
    "check_choice",
    "check_labelled",
    "check_positive",
    "config_from_dict",
    "model_class",
]
