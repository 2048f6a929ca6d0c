"""The model registry: every genzoo model by its command-line name."""

from __future__ import annotations

import dataclasses

from genzoo.data.core import DataInfo
from genzoo.models.adversarial.cgan import CGAN
from genzoo.models.adversarial.dcgan import DCGAN
from genzoo.models.adversarial.gan import GAN
from genzoo.models.adversarial.wgan_gp import WGANGP
from genzoo.models.autoregressive.made import MADE
from genzoo.models.autoregressive.nade import NADE
from genzoo.models.autoregressive.pixelcnn import GatedPixelCNN, PixelCNN
from genzoo.models.autoregressive.pixelrnn import PixelRNN
from genzoo.models.base import GenerativeModel, LogLikelihood, ModelConfig, Phase
from genzoo.models.latent.aae import AdversarialAutoencoder
from genzoo.models.latent.ae import AutoEncoder
from genzoo.models.latent.avb import AVB
from genzoo.models.latent.cvae import CVAE
from genzoo.models.latent.dvae import DVAE
from genzoo.models.latent.iwae import IWAE
from genzoo.models.latent.vae import VAE

MODEL_CLASSES: list[type[GenerativeModel]] = [
    AutoEncoder, VAE, CVAE, DVAE, IWAE, AdversarialAutoencoder, AVB, GAN, DCGAN, CGAN, WGANGP,
]
# the autoregressive family (one line per module)
MODEL_CLASSES += [NADE, MADE]
MODEL_CLASSES += [PixelCNN, GatedPixelCNN]
MODEL_CLASSES += [PixelRNN]

MODELS: dict[str, type[GenerativeModel]] = {cls.name: cls for cls in MODEL_CLASSES}

__all__ = ["MODELS", "GenerativeModel", "LogLikelihood", "ModelConfig", "Phase", "build_model", "model_class"]


def model_class(name: str) -> type[GenerativeModel]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def build_model(name: str, info: DataInfo, config: ModelConfig | dict | None = None) -> GenerativeModel:
    """Build model ``name`` for data ``info`` from a config object, a dict of field values, or defaults."""
    cls = model_class(name)
    if not isinstance(config, ModelConfig):
        config = config_from_dict(cls.Config, config or {})
    return cls(config, info)


def config_from_dict(config_cls: type[ModelConfig], values: dict) -> ModelConfig:
    """A config from a dict (a saved config.json or command-line overrides); unknown keys fail loudly."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for {config_cls.__name__}; "
                         f"valid options: {', '.join(sorted(known))}")
    return config_cls(**values)
