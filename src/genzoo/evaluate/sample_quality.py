"""Evaluation as pure functions of a model and a split: likelihood bounds in nats and bits/dim.

The one place where the data's discretisation enters the numbers: ``fixed_inputs`` turns a
split into the representation the model's likelihood is defined on (statically binarised, or
dequantised with a fixed seed), and ``likelihood_metrics`` adds ``nats_offset`` for continuous
densities on discrete data before converting to bits/dim.

Sample quality is measured in the feature space of a digit classifier trained on the dataset
itself (``genzoo.feature_net``), by pure functions of two feature matrices: ``frechet_distance``,
``kernel_distance``, ``precision_recall`` and ``classifier_score``; ``sample_quality_metrics``
draws the samples and says which network, layer and sample counts were used.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import Tensor

from genzoo.data.core import DataInfo, Split, batches, check_finite, prepare
from genzoo.evaluate.feature_net import (
    DigitClassifier,
    check_feature_net,
    load_feature_net,
)
from genzoo.models.base import GenerativeModel
from genzoo.nn.mode import eval_mode

# --- sample quality: statistics of two feature matrices (float64) ----------------------------------
SAMPLE_METRICS = ("fd", "kid", "pr", "score")  # names accepted by ``sample_quality_metrics``
KID_NUM_SUBSETS, KID_SUBSET_SIZE = 100, 1000  # Binkowski et al. (2018); torch-fidelity's defaults
PR_K = 3  # neighbourhood size of improved precision and recall (Kynkaanniemi et al. 2019)
DISTANCE_CHUNK_ELEMENTS = 2 ** 23  # pairwise distances computed in blocks of at most this many (64 MiB)


def _psd_sqrt_eigenvalues(eigenvalues: Tensor) -> Tensor:
    """Square roots of the eigenvalues (D,) of a symmetric PSD matrix, round-off set to 0 first.

    Eigenvalues below the numerical rank tolerance D eps max|lambda| (that of numpy's matrix_rank)
    are zero up to round-off; their square roots (~ sqrt(eps)) would otherwise add up to an error
    of order sqrt(eps) for the singular covariances of ReLU features.
    """
    tolerance = len(eigenvalues) * torch.finfo(eigenvalues.dtype).eps * eigenvalues.abs().max()
    return torch.where(eigenvalues > tolerance, eigenvalues, torch.zeros_like(eigenvalues)).sqrt()


def _sqrtm_psd(c: Tensor) -> Tensor:
    """Square root (D, D) of a symmetric positive semi-definite matrix."""
    eigenvalues, eigenvectors = torch.linalg.eigh(c)
    return (eigenvectors * _psd_sqrt_eigenvalues(eigenvalues)) @ eigenvectors.T


def frechet_distance_gaussians(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """Squared Frechet (2-Wasserstein) distance of N(mu1, C1) and N(mu2, C2) (Dowson & Landau 1982):

        ||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^{1/2}),

    the FID formula of Heusel et al. (2017, arXiv:1706.08500). Tr (C1 C2)^{1/2} is computed as the
    sum of square roots of the eigenvalues of the symmetric PSD matrix C1^{1/2} C2 C1^{1/2}, which
    has the same eigenvalues as C1 C2; eigenvalues within round-off of 0 count as 0. float64 throughout.
    """
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    s1 = _sqrtm_psd((cov1 + cov1.T) / 2)  # (D, D)
    m = s1 @ cov2 @ s1
    trace_sqrt = _psd_sqrt_eigenvalues(torch.linalg.eigvalsh((m + m.T) / 2)).sum()
    return float((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * trace_sqrt)


def _gaussian_fit(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64."""
    if len(feats) < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {len(feats)}")
    feats = feats.double()
    return feats.mean(0), torch.cov(feats.T)


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Frechet distance of Gaussians fitted to features (N, D) and (M, D): FID with another network.

    Biased upwards for finite N and M (more so for fewer samples): compare numbers only at equal counts.
    """
    return frechet_distance_gaussians(*_gaussian_fit(feats_a), *_gaussian_fit(feats_b))


def polynomial_kernel(a: Tensor, b: Tensor) -> Tensor:
    """k(x, y) = (x . y / D + 1)^3 for rows of a (N, D) and b (M, D) -> (N, M), the KID kernel."""
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2_unbiased(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased estimate of MMD^2 with ``polynomial_kernel`` between samples x (m, D) and y (n, D).

    Within-sample means leave out the diagonal (U-statistics); the cross term averages all m n
    pairs, which is unbiased for independent samples. Can be negative when the distributions agree.
    """
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    within_y = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return within_x + within_y - 2 * k_xy.mean()


def kid_subset_size(subset_size: int, n_a: int, n_b: int) -> int:
    return min(subset_size, n_a // 2, n_b // 2)


def kernel_distance(feats_a: Tensor, feats_b: Tensor, num_subsets: int = KID_NUM_SUBSETS,
                    subset_size: int = KID_SUBSET_SIZE,
                    generator: torch.Generator | None = None) -> tuple[float, float]:
    """Kernel distance (KID, Binkowski et al. 2018, "Demystifying MMD GANs", arXiv:1801.01401).

    ``mmd2_unbiased`` with the cubic polynomial kernel on ``num_subsets`` pairs of random subsets
    (drawn without replacement, ``subset_size`` capped at half the smaller set, so that subsets
    differ and their spread means something on small test splits) of features (N, D) and
    (M, D). Returns (mean, std) over the subsets, the convention of torch-fidelity: std is the
    spread of one subset's estimate (population std), not the standard error of the mean, which
    would be smaller (the subsets overlap, so std / sqrt(num_subsets) would understate it).
    ``generator`` (CPU) draws the subsets; None means one seeded 0, so the result is reproducible.
    """
    size = kid_subset_size(subset_size, len(feats_a), len(feats_b))
    if size < 2:
        raise ValueError(f"the kernel distance needs at least 2 feature vectors per set, got "
                         f"{len(feats_a)} and {len(feats_b)}")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    a, b = feats_a.double(), feats_b.double()
    estimates = torch.stack([
        mmd2_unbiased(a[torch.randperm(len(a), generator=generator)[:size].to(a.device)],
                      b[torch.randperm(len(b), generator=generator)[:size].to(b.device)])
        for _ in range(num_subsets)
    ])  # (num_subsets,)
    return float(estimates.mean()), float(estimates.std(correction=0))


def _squared_distances(a: Tensor, b: Tensor, a_norms: Tensor, b_norms: Tensor) -> Tensor:
    """Squared Euclidean distances (N, M) of rows of a (N, D) and b (M, D), given their squared norms.

    ||a||^2 + ||b||^2 - 2 a.b loses about eps (||a||^2 + ||b||^2) to round-off; distances below
    a few times that are set to exactly 0, so that identical points are at distance 0 however
    the blocks fall (needed for duplicated points, whose k-NN radius is 0).
    """
    scale = a_norms[:, None] + b_norms[None, :]  # (N, M)
    d = torch.addmm(scale, a, b.T, alpha=-2)
    return d.masked_fill_(d <= 64 * torch.finfo(d.dtype).eps * scale, 0)


def _row_chunks(n_rows: int, n_cols: int):
    step = max(1, DISTANCE_CHUNK_ELEMENTS // max(1, n_cols))
    return range(0, n_rows, step), step


def knn_radii(feats: Tensor, k: int = PR_K) -> Tensor:
    """Squared distance (N,) from each row of feats (N, D) to its k-th nearest other row."""
    if len(feats) <= k:
        raise ValueError(f"k-nearest-neighbour radii with k={k} need more than {k} feature vectors, got {len(feats)}")
    norms = feats.square().sum(1)
    starts, step = _row_chunks(len(feats), len(feats))
    # the (k+1)-th smallest distance: the smallest is the point itself, at distance 0
    return torch.cat([_squared_distances(feats[i:i + step], feats, norms[i:i + step], norms)
                      .topk(k + 1, dim=1, largest=False).values[:, k] for i in starts])


def _share_inside_balls(queries: Tensor, centers: Tensor, radii: Tensor) -> float:
    """Share of queries (N, D) within the squared radius (M,) of at least one of centers (M, D)."""
    q_norms, c_norms = queries.square().sum(1), centers.square().sum(1)
    starts, step = _row_chunks(len(queries), len(centers))
    inside = sum(int((_squared_distances(queries[i:i + step], centers, q_norms[i:i + step], c_norms)
                      <= radii[None, :]).any(1).sum()) for i in starts)
    return inside / len(queries)


def precision_recall(real_feats: Tensor, fake_feats: Tensor, k: int = PR_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019, arXiv:1904.06991).

    Each set's manifold is the union of balls around its points, of radius the distance to the
    k-th nearest neighbour within the set (the point itself excluded). Precision is the share of
    fakes inside the real manifold (fidelity); recall the share of reals inside the fake manifold
    (coverage). Distances are computed in float64 in blocks, so 10k x 10k fits in memory.

    Read precision beside recall, FD and KID: a few outlying real points have large balls that
    can hold far-off fakes (Naeem et al. 2020, arXiv:2002.09797). With genzoo's MNIST network and
    the 1,000 test images, 8 such balls hold 97.5% of shuffled-pixel noise; its recall is 0.
    """
    real, fake = real_feats.double(), fake_feats.double()
    precision = _share_inside_balls(fake, real, knn_radii(real, k))
    recall = _share_inside_balls(real, fake, knn_radii(fake, k))
    return precision, recall


def classifier_score(probs: Tensor) -> float:
    """exp(E_x KL(p(y|x) || p(y))) of class probabilities (N, K), p(y) their mean over the N rows.

    The Inception score of Salimans et al. (2016, arXiv:1606.03498) with the dataset's own
    classifier (TF-GAN's MNIST classifier score), computed over all N rows at once (no splits).
    1 when every row is the same; K when the rows are confident and the classes equally frequent.
    """
    p = probs.double()  # (N, K)
    p_y = p.mean(0, keepdim=True)  # (1, K)
    kl = (torch.xlogy(p, p) - torch.xlogy(p, p_y)).sum(1)  # (N,) nats; 0 log 0 = 0
    return float(kl.mean().exp())


# --- sample quality of a model ------------------------------------------------------------------
@torch.no_grad()
def _classify(net: DigitClassifier, x: Tensor) -> tuple[Tensor, Tensor]:
    """Features (B, F) and class probabilities (B, K) of images (B, C, H, W) in [0, 1], in fp32."""
    feats = net.features(x.float())
    return feats, net.head(feats).softmax(1)


def sample_quality_metrics(model: GenerativeModel, split: Split, info: DataInfo,
                           metrics: tuple[str, ...] | list[str] = SAMPLE_METRICS, num_samples: int | None = None,
                           batch_size: int = 500, seed: int = 0, feature_net: DigitClassifier | None = None,
                           sampling: dict | None = None) -> dict:
    """Sample quality of ``model`` against ``split`` in the feature space of ``info``'s digit classifier.

    ``metrics`` (from ``SAMPLE_METRICS``): "fd" -> ``fd`` (``frechet_distance``); "kid" -> ``kid``
    and ``kid_std`` (``kernel_distance``); "pr" -> ``precision`` and ``recall`` (k=3); "score" ->
    ``classifier_score`` of the samples and ``classifier_score_data`` of the split for reference.
    A conditional model also gets ``conditional_accuracy``: the share of samples that the
    classifier assigns to the label they were drawn for (labels cycle 0..K-1).

    Real images are the split's levels scaled to [0, 1] (x / (K-1); binary data as 0/1). Fake
    images are ``num_samples`` (default: as many as the split) draws of ``model.sample`` in
    batches, with a generator seeded ``seed`` on the model's device, clamped to [0, 1] as when
    shown. ``feature_net`` defaults to ``load_feature_net(info.name)``; one trained for
    another dataset raises ValueError. The result says which network, layer, split and counts.
    """
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in SAMPLE_METRICS]
    if unknown:
        raise ValueError(f"unknown sample-quality metric(s) {', '.join(map(repr, unknown))}; "
                         f"choose from: {', '.join(SAMPLE_METRICS)}")
    if feature_net is None:
        feature_net = load_feature_net(info.name)
    check_feature_net(feature_net, info)
    num_samples = len(split) if num_samples is None else num_samples
    if num_samples < 1 or len(split) < 1:
        raise ValueError(f"sample quality needs samples and real images, got {num_samples} and {len(split)}")
    if model.conditional and not info.num_classes:
        raise ValueError(f"{model.name} is conditional but {info.name} has no classes")
    device = model.device
    net = copy.deepcopy(feature_net).to(device).eval()  # the caller's network is left where it was

    # 1. real images: features and class probabilities
    real = prepare(split.images, info, "discrete", train=False)  # (N, C, H, W) in [0, 1]
    real_feats, real_probs = map(torch.cat, zip(*(_classify(net, xb.to(device))
                                                  for xb, _ in batches(real, None, batch_size))))

    # 2. samples, for labels cycling 0..K-1 when the model is conditional
    labels = torch.arange(num_samples, device=device) % info.num_classes if model.conditional else None
    generator = torch.Generator(device).manual_seed(seed)
    fake_feats, fake_probs, sampling_seconds = [], [], 0.0
    with eval_mode(model):
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            started = time.perf_counter()
            x = model.generate(n, None if labels is None else labels[start:start + n], generator,
                               **(sampling or {}))  # (n, C, H, W)
            sampling_seconds += time.perf_counter() - started
            if tuple(x.shape) != (n, *info.shape):
                raise ValueError(f"{model.name}.sample({n}) returned shape {tuple(x.shape)}, "
                                 f"expected {(n, *info.shape)}")
            check_finite(x, f"the samples of {model.name} (batch at sample {start}; did training diverge?)")
            feats, probs = _classify(net, x.clamp(0, 1))
            fake_feats.append(feats)
            fake_probs.append(probs)
    fake_feats, fake_probs = torch.cat(fake_feats), torch.cat(fake_probs)  # (M, F), (M, K)

    # 3. statistics, in float64
    result: dict = {}
    if "fd" in metrics:
        result["fd"] = frechet_distance(real_feats, fake_feats)
    if "kid" in metrics:
        subsets = torch.Generator().manual_seed(seed)
        result["kid"], result["kid_std"] = kernel_distance(real_feats, fake_feats, generator=subsets)
        result.update(kid_num_subsets=KID_NUM_SUBSETS,
                      kid_subset_size=kid_subset_size(KID_SUBSET_SIZE, len(real_feats), num_samples))
    if "pr" in metrics:
        result["precision"], result["recall"] = precision_recall(real_feats, fake_feats, PR_K)
        result["pr_k"] = PR_K
    if "score" in metrics:
        result["classifier_score"] = classifier_score(fake_probs)
        result["classifier_score_data"] = classifier_score(real_probs)
    if model.conditional:
        result["conditional_accuracy"] = float((fake_probs.argmax(1) == labels).double().mean())
    result.update(
        seconds_per_sample=sampling_seconds / num_samples,
        num_samples=num_samples,
        num_real=len(split),
        split=split.split,
        split_source=split.source,
        feature_net=feature_net.describe(),
        feature_net_test_accuracy=feature_net.metadata.get("test_accuracy"),
    )
    return result
