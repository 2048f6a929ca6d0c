"""Inpainting: hide part of an image and let a model fill it in.

Masks are named on the command line: ``bottom-half``, ``top-half``, ``right-half``, ``left-half``
and ``random:P`` (each pixel hidden with probability P, from a seeded generator). A mask is an
(H, W) bool tensor that is True where the pixel is observed (kept).

Any model that declares "complete" (``complete(x, observed, labels, generator, sampler)``) can
inpaint: the autoregressive family draws the hidden pixels from its conditionals, a diffusion
model by RePaint or replacement. ``conditional_log_likelihood`` adds log p(x_hidden | x_observed)
where the model can compute it (autoregressive models; None for diffusion).
"""

from __future__ import annotations

import torch
from torch import Tensor

HALF_MASKS = ("bottom-half", "top-half", "right-half", "left-half")
MASK_HELP = "bottom-half | top-half | right-half | left-half | random:P (hide each pixel with probability P)"
HIDDEN_GRAY = 0.5  # how hidden pixels are drawn in the "observed" row of a figure


def parse_mask(spec: str, height: int, width: int, seed: int = 0) -> Tensor:
    """The observed-pixel mask (H, W) named by ``spec`` (see ``MASK_HELP``); True = observed."""
    observed = torch.ones(height, width, dtype=torch.bool)
    if spec == "bottom-half":
        observed[height // 2:] = False
    elif spec == "top-half":
        observed[:height // 2] = False
    elif spec == "right-half":
        observed[:, width // 2:] = False
    elif spec == "left-half":
        observed[:, :width // 2] = False
    elif spec.startswith("random:"):
        try:
            p = float(spec.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"mask {spec!r}: the hidden fraction after 'random:' must be a number") from None
        if not 0 < p < 1:
            raise ValueError(f"mask {spec!r}: the hidden fraction must lie strictly between 0 and 1")
        observed = torch.rand(height, width, generator=torch.Generator().manual_seed(seed)) >= p
    else:
        raise ValueError(f"unknown mask {spec!r}; choose one of: {MASK_HELP}")
    return observed


def check_can_inpaint(model) -> None:
    if not model.can("complete"):
        raise ValueError(f"{model.name} cannot inpaint: it has no way to sample hidden pixels given the others "
                         "(the autoregressive and diffusion models can)")
    if model.info.kind != "image":
        raise ValueError(f"inpainting hides parts of images; {model.info.name} holds {model.info.shape[0]}-D vectors")


@torch.no_grad()
def inpaint(model, image: Tensor, observed: Tensor, n: int, label: int | None = None, seed: int = 0,
            sampler: str | None = None) -> dict:
    """``n`` completions of one image (C, H, W) whose pixels outside ``observed`` (H, W) are hidden.

    Returns {"completions": (n, C, H, W), "masked": (C, H, W) with hidden pixels gray,
    "conditional_nll_nats": -log p(x_hidden | x_observed) of the true image (None where the model
    has none), "conditional_exact": whether that number is exact, "hidden_pixels": count}.
    """
    check_can_inpaint(model)
    c, h, w = model.info.shape
    if tuple(image.shape) != (c, h, w):
        raise ValueError(f"the image has shape {tuple(image.shape)}; {model.name} takes {(c, h, w)}")
    if tuple(observed.shape) != (h, w):
        raise ValueError(f"the inpainting mask has shape {tuple(observed.shape)}; the images are {h}x{w}")
    device = model.device
    labels = None
    if model.conditional:
        if label is None:
            raise ValueError(f"{model.name} is conditional: give the image's label")
        labels = torch.full((n,), label, dtype=torch.long, device=device)
    x = image.to(device).float().expand(n, c, h, w)
    generator = torch.Generator(device).manual_seed(seed)
    completions = model.complete(x, observed, labels, generator, sampler)
    conditional = model.conditional_log_likelihood(x[:1], observed, None if labels is None else labels[:1])
    masked = torch.where(observed.to(device), image.to(device).float(), torch.tensor(HIDDEN_GRAY, device=device))
    return {"completions": completions.cpu(), "masked": masked.cpu(),
            "conditional_nll_nats": None if conditional is None else -conditional["log_likelihood"].item(),
            "conditional_exact": None if conditional is None else conditional["exact"],
            "hidden_pixels": int((~observed).sum()) * c}


def conditional_nll_text(result: dict, model_name: str, sampler: str | None = None) -> str:
    """One line on an ``inpaint`` result's -log p(hidden | observed): its value and whether it is exact, or that
    the model gives none."""
    if result["conditional_nll_nats"] is None:
        return (f"{model_name} draws completions ({sampler or 'its default sampler'}) without a number for "
                f"-log p(hidden | observed); {result['hidden_pixels']} hidden dimensions")
    exactness = ("exact: every observed pixel precedes every hidden one in the model's order"
                 if result["conditional_exact"] else
                 "not exact: some hidden pixels precede observed ones in the model's order, so each hidden "
                 "pixel conditions only on the observed pixels before it")
    return (f"-log p(hidden | observed) = {result['conditional_nll_nats']:.2f} nats over "
            f"{result['hidden_pixels']} hidden dimensions ({exactness})")
