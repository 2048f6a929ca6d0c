"""Symptoms of an undertrained model that its samples show: no diversity, or noise.

A short budget (``--epochs 15`` where the default is 100) can leave a model whose samples are all
alike (a VAE whose decoder still ignores z and draws the mean digit, a GAN that found one blob) or
rough noise (a generator or an autoregressive model that has not learned strokes yet), while its
losses look ordinary. ``sample_symptoms`` compares a batch of samples with a batch of data and says
what it sees, with the numbers, and what to do.

Both measures are ratios to the same statistic of the data, so their thresholds do not depend on
the data's scale (they were set on digits runs: see the constants):

- diversity: the mean per-pixel standard deviation across the samples over that of the data
  (``sample_diversity``: 0 when every sample is identical, about 1 when as varied as the data),
  within each class when labels are given (a conditional model that ignores its noise draws one
  image per class: varied across classes, identical within them);
- roughness: one minus the correlation of neighbouring pixels (images only): about 0 for smooth
  images, 1 for independent per-pixel noise; 0.48 for the 8x8 digits, whose strokes are one or
  two pixels wide. A ratio of mean absolute neighbour differences would not do on such data: the
  digits' sharp strokes already make neighbours differ by 0.24 on average, uniform noise by 1/3,
  only 1.4 times as much.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genzoo.data.core import DataInfo, prepare
from genzoo.models.adversarial.losses import sample_diversity
from genzoo.models.base import GenerativeModel
from genzoo.nn.mode import eval_mode

# Both thresholds were set on digits, 64 samples against 64 training images, 5 seeds each:
# diversity 0.17-0.25 for the alike samples of vae, dvae, gan and (within classes) cvae after 15
# epochs, 0.33-0.41 for avb's smudges after 15; 0.75 or more for every model at its default budget.
# (The GAN's own collapse warning, MIN_DIVERSITY = 0.1, watches one training batch for total collapse.)
MIN_SAMPLE_DIVERSITY = 0.5
# Roughness ratio 0.9-1.33 at the default budget (MADE's speckle the highest); 1.5-2.5 after 40
# steps for made, wgan-gp, dcgan, cgan, pixelcnn, gated-pixelcnn and pixelrnn (nade: 1.36-1.56).
MAX_ROUGHNESS = 1.5  # samples whose roughness is above this many times the data's: noise


def roughness(images: Tensor) -> Tensor:
    """One minus the correlation of neighbouring pixels, averaged over images (B, C, H, W): a scalar.

    Per image: the mean squared difference of horizontally and vertically neighbouring pixels over
    twice the variance of its pixels, 1 - rho for a stationary image with neighbour correlation
    rho; an image of one value counts 0 (smooth).
    """
    x = images.detach().float()
    dx = (x[..., :, 1:] - x[..., :, :-1]).square().flatten(1)  # (B, C*H*(W-1))
    dy = (x[..., 1:, :] - x[..., :-1, :]).square().flatten(1)  # (B, C*(H-1)*W)
    differences = torch.cat([dx, dy], 1).mean(1)  # (B,)
    variance = x.flatten(1).var(1, correction=0)  # (B,)
    return torch.where(variance > 0, differences / (2 * variance.clamp_min(1e-12)), 0.0).mean()


def _advice(epochs: float | None, default_epochs: int | None) -> str:
    if epochs is not None and default_epochs is not None and epochs < default_epochs:
        return (f"it has trained {epochs:.3g} of the {default_epochs} epochs it is meant to: train longer "
                "(leave out --epochs for that default)")
    return "train longer, or see its options (genzoo train MODEL --help)"


def _diversity(samples: Tensor, real: Tensor, labels: Tensor | None, real_labels: Tensor | None) -> float:
    """``sample_diversity``, averaged over the classes with at least 2 samples and 2 data points."""
    if labels is None or real_labels is None:
        return float(sample_diversity(samples, real))
    ratios = [float(sample_diversity(samples[labels == k], real[real_labels == k]))
              for k in labels.unique().tolist() if (labels == k).sum() >= 2 and (real_labels == k).sum() >= 2]
    if not ratios:
        raise ValueError("sample_symptoms: no class has 2 samples and 2 data points to compare")
    return sum(ratios) / len(ratios)


def sample_symptoms(samples: Tensor, real: Tensor, labels: Tensor | None = None, real_labels: Tensor | None = None,
                    epochs: float | None = None, default_epochs: int | None = None) -> list[str]:
    """Messages about what is wrong with ``samples`` compared with ``real`` data; [] when nothing is.

    samples, real: (B, C, H, W) images or (B, D) vectors on the same scale (images in [0, 1] as
    shown), at least 2 each. labels, real_labels: their classes (B,), for a conditional model:
    diversity is then compared within classes. Checks (a) no diversity (below
    ``MIN_SAMPLE_DIVERSITY``) and, for images, (b) noise (``roughness`` above ``MAX_ROUGHNESS``
    times the data's). ``epochs`` trained and the ``default_epochs`` of the dataset, when given,
    make the advice say how far short the run fell.
    """
    if samples.shape[1:] != real.shape[1:]:
        raise ValueError(f"sample_symptoms: samples {tuple(samples.shape)} and data {tuple(real.shape)} differ in shape")
    if len(samples) < 2 or len(real) < 2:
        raise ValueError(f"sample_symptoms: a spread needs at least 2 samples and 2 data points, "
                         f"got {len(samples)} and {len(real)}")
    samples, real = samples.detach().float().cpu(), real.detach().float().cpu()
    labels = None if labels is None else labels.cpu()
    real_labels = None if real_labels is None else real_labels.cpu()
    advice = _advice(epochs, default_epochs)
    messages = []
    diversity = _diversity(samples, real, labels, real_labels)
    if diversity < MIN_SAMPLE_DIVERSITY:
        within = " within each class" if labels is not None and real_labels is not None else ""
        messages.append(f"the samples are too alike{within}: they vary only {diversity:.2f}x as much as the data "
                        f"(mean per-pixel standard deviation, {len(samples)} samples; below "
                        f"{MIN_SAMPLE_DIVERSITY:g}x); {advice}")
    if samples.dim() == 4:
        ratio = float(roughness(samples) / roughness(real).clamp_min(1e-12))
        if ratio > MAX_ROUGHNESS:
            messages.append(f"the samples look like noise: their neighbouring pixels are {ratio:.1f}x as "
                            f"uncorrelated as the data's (1 - neighbour correlation; above {MAX_ROUGHNESS:g}x); {advice}")
    return messages


@torch.no_grad()
def final_sample_symptoms(model: GenerativeModel, data: Tensor, labels: Tensor | None, info: DataInfo,
                          epochs: float, default_epochs: int, n: int = 64) -> list[str]:
    """``sample_symptoms`` of ``n`` samples of a trained model against its first ``n`` training examples.

    ``data`` holds the stored training values (levels or vectors) and ``labels`` their classes;
    images are compared as shown, in [0, 1].
    """
    n = min(n, len(data))
    kind = "continuous" if info.value_type == "continuous" else "discrete"
    real = prepare(data[:n], info, kind, train=False)
    sample_labels = real_labels = None
    if model.conditional:
        sample_labels, real_labels = torch.arange(n, device=data.device) % info.num_classes, labels[:n]
    with eval_mode(model):
        samples = model.generate(n, sample_labels, torch.Generator(data.device).manual_seed(0))
    samples = samples.clamp(0, 1) if kind == "discrete" else samples
    return sample_symptoms(samples, real, sample_labels, real_labels, epochs=epochs, default_epochs=default_epochs)
