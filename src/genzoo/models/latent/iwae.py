"""Importance-weighted autoencoder.

Burda, Grosse & Salakhutdinov, "Importance Weighted Autoencoders", 2016 (arXiv:1509.00519).

Same generative model and encoder as the VAE; training maximises the k-sample bound

    L_k = E[log (1/k) sum_i w_i],   w_i = p(x, z_i) / q(z_i | x),   z_i ~ q(z | x),

which is tighter than the ELBO (L_1) and rises towards log p(x) as k grows. Its gradient is
sum_i w~_i grad log w_i with normalised weights w~_i = w_i / sum_j w_j that are not themselves
differentiated (the paper's eq. 14). We write that estimator explicitly as a surrogate whose
value is the bound and whose gradient is the estimator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from genzoo.distributions.numerics import log_mean_exp
from genzoo.models.base import check_positive
from genzoo.models.latent.vae import VAE, VAEConfig


@dataclass
class IWAEConfig(VAEConfig):
    k: int = 5  # importance samples per example in the training bound

    def validate(self, info) -> None:
        super().validate(info)
        check_positive(self, "k")
        if self.beta != 1.0 or self.kl_warmup_steps:  # inherited from the VAE's config, meaningless here
            raise ValueError(f"iwae trains the k-sample bound, which has no KL term to weight: beta={self.beta} and "
                             f"kl_warmup_steps={self.kl_warmup_steps} must stay 1 and 0")


class IWAE(VAE):
    name = "iwae"
    description = "Importance-weighted autoencoder (Burda et al. 2016): trains the k-sample bound"
    Config = IWAEConfig

    def loss(self, x: Tensor, y: Tensor | None = None, phase: str = "model", step: int | None = None) -> dict[str, Tensor]:
        self.check_input(x)
        y = self.check_labels(y, x.shape[0])
        log_w = self.log_weights(x, y, self.config.k)  # (k, B), differentiable through z = mu + sigma * eps
        bound = log_mean_exp(log_w, 0)  # (B,) L_k
        normalised_w = torch.softmax(log_w, 0).detach()  # detach: the weights are not differentiated
        surrogate = (normalised_w * log_w).sum(0)  # gradient = sum_i w~_i grad log w_i
        objective = bound.detach() + surrogate - surrogate.detach()  # value L_k, gradient the estimator
        return {"loss": -objective, "neg_iwae": -bound.detach(), "neg_elbo": -log_w.mean(0).detach()}
