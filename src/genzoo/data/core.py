"""Datasets: what each one is, how to read it, and how its pixels become model inputs.

Every dataset is held in memory as a ``Split``: images as stored levels (uint8, (N, C, H, W)) and
labels (int64, (N,)) or None. Its ``DataInfo`` declares the shape, the number of classes and the
value type, so that a model picks a matching likelihood and bits/dim is computed in one place
(``nats_offset`` and ``bits_per_dim`` below).

Datasets (``list_datasets()``):

- ``digits``           scikit-learn's 1,797 8x8 digits, 17 levels; ships with scikit-learn.
- ``mnist``            28x28 MNIST in IDX files, 256 levels.
- ``binarized_mnist``  the statically binarised MNIST of Larochelle & Murray (2011), ``.amat`` text.

Splits. ``"train"`` is the official training file. ``"valid"`` is the official validation file if
there is one, else a fixed random 10% held out of the training file (``torch.randperm`` with seed 0;
``"train"`` is then the other 90%). ``"test"`` is the official test file if there is one, else the
validation split, which is never trained on. ``digits`` has no official files: a seed-0 permutation
gives test 360, valid 180, train 1,257. ``Split.source`` says which file (or stand-in) each split
came from.

Files. ``data_root`` is searched, then ``data_root/<name>``; without ``data_root`` the directory is
``$GENZOO_DATA/<name>``, or ``~/.cache/genzoo/data/<name>``. When the training files are missing and
``download`` is true they are downloaded there (MNIST checked by MD5, binarized MNIST by structure);
offline, a ``FileNotFoundError`` says which files to put where. Loaded arrays are cached in-process,
so do not modify a split's tensors in place.

Model inputs are float tensors in [0, 1], in one of three representations (``prepare``):

- ``"binary"``     {0, 1}. Binary data as is; 8-bit data binarised: dynamically when training (a
                   fresh Bernoulli draw per pass), and statically for evaluation, by
                   ``static_binarize``, once per whole split with ``STATIC_BINARIZATION_SEED``, so
                   that each image has one fixed binarisation whatever the batching.
- ``"discrete"``   level / (K - 1) for K levels: the grid of a discretised likelihood.
- ``"continuous"`` (level + u) / K with u ~ U[0, 1): uniform dequantisation. A continuous density
                   p on [0, 1]^D bounds the discrete likelihood: -log P(level) <= -log p + D log K
                   (Jensen), so ``nats_offset`` adds D log K before converting to bits/dim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

ValueType = Literal["binary", "discrete", "continuous"]
InputKind = Literal["binary", "discrete", "continuous"]
SPLITS = ("train", "valid", "test")

STATIC_BINARIZATION_SEED = 0  # evaluation binarises 8-bit data once, with this seed
SPLIT_SEED = 0  # seed of every permutation that carves or subsets a split
VALID_FRACTION = 0.1  # held out of the training file when there is no validation file




@dataclass(frozen=True)
class DataInfo:
    """What a dataset is: enough for a model to choose its likelihood and for bits/dim."""

    name: str
    shape: tuple[int, ...]  # (C, H, W) for images, (D,) for vectors
    num_classes: int  # 0 when the dataset has no labels
    value_type: ValueType
    num_levels: int | None  # 2 for binary, 17 for digits, 256 for 8-bit; None if continuous

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    @property
    def kind(self) -> str:
        """"image" (C, H, W) or "vector" (D,): what networks fit it and which metrics apply."""
        return "image" if len(self.shape) == 3 else "vector"

    @property
    def memory_format(self) -> torch.memory_format:
        """The layout models compute this data in: channels_last for images, whose 3x3 convolutions run
        6x faster in it than in NCHW on a CPU (weights and inputs both; the layout changes no values)."""
        return torch.channels_last if self.kind == "image" else torch.contiguous_format

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "value_type": self.value_type,
            "num_levels": self.num_levels,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "DataInfo":
        return cls(d["name"], tuple(d["shape"]), d["num_classes"], d["value_type"], d["num_levels"])


@dataclass(frozen=True)
class Split:
    """One split of a dataset, as stored levels, and a sentence saying where it came from."""

    images: Tensor  # (N, C, H, W) uint8 levels, or (N, D) float32 vectors
    labels: Tensor | None  # (N,) int64, None for unlabelled data
    split: str  # "train", "valid" or "test"
    source: str  # e.g. "official validation file binarized_mnist_valid.amat.gz, 10,000 images"

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, limit: int | None) -> Split:
        """A fixed random subset of ``limit`` examples (seed-0 permutation, original order kept)."""
        n = len(self)
        if limit is None or limit >= n:
            return self
        if limit < 1:
            raise ValueError(f"subset limit must be positive, got {limit}")
        return self.take(split_order(n)[:limit], f"fixed random subset of {limit} of {n} (seed {SPLIT_SEED})")

    def hold_out(self, n: int) -> tuple[Split, Split]:
        """(the rest, ``n`` held-out examples): the held-out part is ``subset(n)``, the rest is disjoint."""
        total = len(self)
        if not 1 <= n < total:
            raise ValueError(f"cannot hold out {n} of the {total:,} {self.split} examples: choose 1 to {total - 1}")
        order = split_order(total)
        what = f"fixed random {n:,} of {total:,} (seed {SPLIT_SEED})"
        return (self.take(order[n:], f"minus the held-out {what}"),
                self.take(order[:n], f"held out for model selection: {what}"))

    def take(self, index: Tensor, what: str) -> Split:
        """The examples at ``index`` (kept in their original order); ``what`` is added to the source."""
        index = index.sort().values.to(self.images.device)
        labels = None if self.labels is None else self.labels[index]
        return Split(self.images[index], labels, self.split, f"{self.source}; {what}")


def split_order(n: int) -> Tensor:
    """The one fixed permutation of ``n`` examples that every carved split and subset takes from."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))



# --- model inputs ------------------------------------------------------------------------------
INPUT_KINDS = ("binary", "discrete", "continuous")


def _check_kind(info: DataInfo, kind: str) -> None:
    if kind not in INPUT_KINDS:
        raise ValueError(f"unknown input kind {kind!r}; choose one of: {', '.join(INPUT_KINDS)}")
    if info.value_type == "continuous" and kind != "continuous":
        raise ValueError(f"{info.name} is continuous data: kind {kind!r} needs levels; use 'continuous'")


def prepare(images: Tensor, info: DataInfo, kind: InputKind, *, train: bool,
            generator: torch.Generator | None = None) -> Tensor:
    """Stored levels (N, C, H, W) -> float32 model inputs (N, C, H, W) on the same device.

    ``generator`` (on the images' device) drives dynamic binarisation and dequantisation noise.
    Evaluation of 8-bit data as binary needs a statically binarised split (``static_binarize``):
    binarising batch by batch would give an image different pixels in different evaluations.
    """
    _check_kind(info, kind)
    x = images.float()  # (N, C, H, W)
    if info.value_type == "continuous":
        return x
    k = info.num_levels
    if kind == "binary":
        if info.value_type == "binary":
            return x
        if not train:
            raise ValueError(
                f"{info.name} has {k} levels: for evaluation as binary, call static_binarize(split, info) "
                "on the whole split first and use the binary DataInfo it returns"
            )
        return torch.bernoulli(x / (k - 1), generator=generator)  # dynamic binarisation
    if kind == "discrete":
        return x / (k - 1)
    u = torch.rand(x.shape, generator=generator, device=x.device)  # U[0, 1) dequantisation noise
    return (x + u) / k


def static_binarize(split: Split, info: DataInfo) -> tuple[DataInfo, Split]:
    """Binarise a whole split once: pixel ~ Bernoulli(level / (K - 1)), seeded STATIC_BINARIZATION_SEED.

    Returns the binary ``DataInfo`` and split. The draw depends on the whole split, so binarise
    the full split before taking a subset or batches; binary data is returned unchanged.
    """
    if info.value_type == "binary":
        return info, split
    _check_kind(info, "binary")
    generator = torch.Generator().manual_seed(STATIC_BINARIZATION_SEED)
    probs = split.images.cpu().float() / (info.num_levels - 1)  # (N, C, H, W)
    images = torch.bernoulli(probs, generator=generator).to(torch.uint8).to(split.images.device)
    binary = DataInfo(info.name, info.shape, info.num_classes, "binary", 2)
    source = f"{split.source}; statically binarised (Bernoulli, seed {STATIC_BINARIZATION_SEED})"
    return binary, Split(images, split.labels, split.split, source)


def scale_to_symmetric(x: Tensor) -> Tensor:
    """[0, 1] -> [-1, 1], e.g. for a tanh generator."""
    return 2 * x - 1


def scale_from_symmetric(x: Tensor) -> Tensor:
    """[-1, 1] -> [0, 1]; inverse of ``scale_to_symmetric``."""
    return (x + 1) / 2


def check_finite(x: Tensor, what: str) -> None:
    """Raise ValueError if ``x`` (e.g. user-provided images) holds NaN or infinite values."""
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values")


# --- likelihood units --------------------------------------------------------------------------
def nats_offset(info: DataInfo, kind: InputKind) -> float:
    """Nats to add to a per-example NLL so it bounds the NLL of the stored levels.

    D log K for a continuous density on dequantised discrete (or binary) data, else 0.
    """
    _check_kind(info, kind)
    if kind == "continuous" and info.value_type != "continuous":
        return info.dim * math.log(info.num_levels)
    return 0.0


def bits_per_dim(nll_nats: float, info: DataInfo) -> float:
    """Per-example NLL in nats -> bits per dimension: nll / (D ln 2)."""
    return nll_nats / (info.dim * math.log(2))


# --- batches -----------------------------------------------------------------------------------
def epoch_shard(num_examples: int, batch_size: int, epoch: int, seed: int, rank: int = 0, world: int = 1) -> Tensor:
    """This process's example indices for ``epoch``: (steps_per_epoch * batch_size,).

    One permutation per (seed, epoch), shared by all processes; process ``rank`` takes every
    ``world``-th index, so the shards are disjoint, equally long, and together cover the epoch
    (up to the remainder dropped to keep whole batches).
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    permutation = torch.randperm(num_examples, generator=generator)
    steps = num_examples // (batch_size * world)
    return permutation[rank::world][: steps * batch_size]


def batches(x: Tensor, y: Tensor | None, batch_size: int):
    """(x, y) in consecutive batches."""
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size], None if y is None else y[start:start + batch_size]
