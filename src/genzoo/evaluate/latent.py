"""How much of a latent space a model uses: active units and the KL of each latent dimension.

A VAE trained on the ELBO often switches latent dimensions off: q(z_u | x) equals the prior
whatever x is, the dimension costs no KL and carries no information, and decoding while it
varies changes nothing (Burda, Grosse & Salakhutdinov 2016, "Importance Weighted Autoencoders",
arXiv:1509.00519, section 5.2). Two pure functions measure it:

- ``latent_activity`` / ``active_units``: A_u = Cov_x(E_{q(z|x)}[z_u]), the variance over the data of
  the code ``encode`` returns (the posterior mean for the VAE family); u is active when A_u > 0.01;
- ``kl_per_dim``: the average over x of KL(q(z_u | x) || p(z_u)) in nats, for models whose
  posterior and prior are diagonal Gaussians (the VAE family without the VampPrior). The sum
  over u is the ELBO's KL term.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genzoo.data.core import batches
from genzoo.distributions.gaussian import gaussian_kl
from genzoo.models.base import GenerativeModel
from genzoo.models.latent.vae import VAE
from genzoo.nn.mode import eval_mode, module_device

ACTIVE_THRESHOLD = 0.01  # Burda et al. 2016, section 5.2
BATCH_SIZE = 500  # examples encoded at once


def _labels(model: GenerativeModel, y: Tensor | None) -> Tensor | None:
    if not model.conditional:
        return None
    if y is None:
        raise ValueError(f"{type(model).__name__} is conditional: give the labels y of x")
    return y


@torch.no_grad()
def latent_activity(model: GenerativeModel, x: Tensor, y: Tensor | None = None) -> Tensor:
    """A_u = Var_x(encode(x)_u) for each latent dimension u: (d,), float64.

    x: (N, ...) inputs in the model's representation, N >= 2; y: (N,) labels (conditional models).
    The variance is the population one (divide by N), as in Burda et al.
    """
    if len(x) < 2:
        raise ValueError(f"the activity of a latent dimension is a variance over inputs: give at least 2, got {len(x)}")
    device, y = module_device(model), _labels(model, y)
    with eval_mode(model):
        codes = torch.cat([model.encode(xb.to(device), None if yb is None else yb.to(device)).reshape(len(xb), -1)
                           for xb, yb in batches(x, y, BATCH_SIZE)])  # (N, d)
    return codes.double().var(0, correction=0).cpu()


def active_units(model: GenerativeModel, x: Tensor, y: Tensor | None = None,
                 threshold: float = ACTIVE_THRESHOLD) -> dict:
    """The number of active latent dimensions of ``model`` on inputs x (N, ...) (Burda et al. 2016, 5.2).

    Returns {"active_units": count of A_u > threshold, "latent_dim": d, "activity": [A_u for each u],
    "threshold": threshold, "num_examples": N}. ``encode`` must return the code whose variance is
    meant: the posterior mean for the VAE family, f(x) for a deterministic encoder (AE, AAE), and
    f(x, eps=0) for AVB's implicit posterior (a point summary, not its mean).
    """
    activity = latent_activity(model, x, y)
    return {"active_units": int((activity > threshold).sum()), "latent_dim": len(activity),
            "activity": activity.tolist(), "threshold": threshold, "num_examples": len(x)}


@torch.no_grad()
def kl_per_dim(model: GenerativeModel, x: Tensor, y: Tensor | None = None) -> Tensor | None:
    """E_x KL(q(z_u | x) || p(z_u)) for each latent dimension u, in nats: (d,), float64.

    Closed form for the diagonal Gaussians of the VAE family (a learned Gaussian p(z | y) included);
    None for a model without them: no Gaussian posterior (AE, AAE, AVB) or a VampPrior, whose
    mixture does not factorise over dimensions.
    """
    if not isinstance(model, VAE) or model.config.prior == "vamp":
        return None
    device, y = module_device(model), _labels(model, y)
    total = None
    with eval_mode(model):
        for xb, yb in batches(x, y, BATCH_SIZE):
            xb, yb = xb.to(device), None if yb is None else yb.to(device)
            q, p = model.posterior(xb, yb), model.prior(len(xb), yb)  # (mean, logvar), each (B, d)
            # a trailing axis of size 1: gaussian_kl sums over it only, leaving one KL per dimension
            kl = gaussian_kl(*(t.unsqueeze(-1) for t in (*q, *p))).double().sum(0)  # (d,)
            total = kl if total is None else total + kl
    return (total / len(x)).cpu()
