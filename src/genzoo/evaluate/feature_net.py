"""The feature network of genzoo's sample-quality metrics: a small digit classifier per dataset.

Inception-v3 features (FID, Heusel et al. 2017, arXiv:1706.08500) need ImageNet weights and
photographs. For digit data the field's practice is a classifier trained on the dataset itself:
TF-GAN's MNIST classifier score and Frechet distance, the "Frechet LeNet distance". genzoo trains
one small convolutional network per dataset with a fixed, versioned recipe and seed, and measures
Frechet distance, kernel distance, precision/recall and the classifier score in its feature space
(``genzoo.evaluate``).

The network (``DigitClassifier``) is LeNet-like: stages of two 3x3 convolutions with batch norm and
ReLU, each followed by 2x2 max-pooling, an adaptive max-pool to a small grid, then

    fc1: flatten -> ``feature_dim`` units, ReLU     <- the feature layer (``FEATURE_LAYER``)
    fc2: dropout -> one logit per class

so ``features(x)`` is (B, 128) and ``forward(x)`` gives logits (B, 10), for images (B, C, H, W) in
[0, 1] (28x28 MNIST: 28 -> 14 -> 7 -> 3x3 grid; 8x8 digits: 8 -> 4 -> 2 -> 2x2 grid).

Recipes (``RECIPES``, one per dataset; a change of any field needs a new version in its name):
AdamW with linear warm-up and cosine decay, bf16 autocast and channels_last for speed on CPU (3x
faster than fp32 here), seed 0 for the initial weights, dropout, the data order and the
augmentation. Augmentation is light: random integer shifts (+-2 px at 28x28, +-1 px at 8x8) and,
at 28x28, random rotations (+-10 degrees) and zooms (+-10%). Accuracy is measured in fp32 on the
dataset's test split (for the local 10k MNIST subset: the held-out validation split, see
``genzoo.data``); the recipes were chosen on a dev split carved from the training split.

``binarized_mnist`` has no labels. Its network is trained on the labelled ``mnist`` training images
binarised stochastically, pixel ~ Bernoulli(level / 255) drawn afresh every epoch: the distribution
of which the Larochelle & Murray (2011) static binarisation is one draw. It is tested on the
``mnist`` test split binarised once with ``genzoo.data.static_binarize``. The file's metadata says
so (``train_data``, ``binarize``, ``test_split_source``).

Files. Weights and JSON metadata (dataset, recipe, layer, feature dim, test accuracy, test split,
number of training examples) go in one safetensors file, ``{dataset}-{recipe}.safetensors``
(``genzoo.checkpoint``, nothing pickled). ``load_feature_net`` looks for it

1. in the package (``genzoo/feature_nets/``: shipped for digits, mnist and binarized_mnist),
2. in the cache, ``$GENZOO_CACHE/feature_nets`` or ``~/.cache/genzoo/feature_nets``,
3. else it is an error that says how to build it: evaluation never trains a network.

Rebuild the shipped files (``--data-root`` is searched for ``mnist/`` too; prints the accuracy)::

    python -m genzoo.train.feature_net --dataset all --data-root ../shared/data --out src/genzoo/feature_nets/
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from genzoo import checkpoint
from genzoo.data.core import DataInfo

FEATURE_LAYER = "fc1"  # the layer whose (post-ReLU) activations are the features
FORMAT = "genzoo-feature-net/1"  # the "kind" in a feature-net file's metadata
PACKAGE_DIR = "feature_nets"  # inside the genzoo package
EVAL_BATCH_SIZE = 1000


@dataclass(frozen=True)
class Recipe:
    """How one feature network is built and trained; ``name`` carries the version."""

    name: str  # e.g. "lenet-v1"; part of the file name and cache key
    train_data: str  # the labelled dataset whose train split is learnt (and whose test split is scored)
    binarize: bool  # train on fresh Bernoulli(level / (K-1)) draws, test on the static binarisation
    widths: tuple[int, ...]  # channels of each conv stage (two 3x3 convs, then a 2x2 max-pool)
    pooled_size: int  # adaptive max-pool to pooled_size x pooled_size before fc1
    feature_dim: int  # units of fc1, the feature layer
    dropout: float  # before fc2, in training
    max_shift: int  # augmentation: random integer shifts in [-max_shift, max_shift] px, both axes
    max_rotation: float  # augmentation: random rotations in [-max_rotation, max_rotation] degrees ...
    max_scale: float  # ... and zooms by a factor in [1 - max_scale, 1 + max_scale]; 0 and 0: none
    epochs: int
    batch_size: int
    lr: float  # AdamW peak learning rate
    weight_decay: float  # AdamW decoupled weight decay
    warmup_epochs: float  # linear warm-up, then cosine decay to 0
    seed: int = 0

    def to_dict(self) -> dict:
        """As stored in a file's JSON metadata (tuples as lists)."""
        return {**dataclasses.asdict(self), "widths": list(self.widths)}


_LENET_28 = dict(widths=(32, 64), pooled_size=3, feature_dim=128, dropout=0.3, max_shift=2, max_rotation=10.0,
                 max_scale=0.1, epochs=30, batch_size=128, lr=2e-3, weight_decay=5e-4, warmup_epochs=1.0)
RECIPES: dict[str, Recipe] = {
    "digits": Recipe("lenet-v1", "digits", False, widths=(32, 64), pooled_size=2, feature_dim=128, dropout=0.3,
                     max_shift=1, max_rotation=0.0, max_scale=0.0, epochs=60, batch_size=64, lr=2e-3,
                     weight_decay=5e-4, warmup_epochs=2.0),
    "mnist": Recipe("lenet-v1", "mnist", False, **_LENET_28),
    "binarized_mnist": Recipe("lenet-v1", "mnist", True, **_LENET_28),
}


def recipe_for(dataset: str) -> Recipe:
    if dataset not in RECIPES:
        raise ValueError(f"no feature network for dataset {dataset!r}; genzoo has one for: "
                         f"{', '.join(sorted(RECIPES))}")
    return RECIPES[dataset]


# --- the network ---------------------------------------------------------------------------------
class DigitClassifier(nn.Module):
    """Images (B, C, H, W) in [0, 1] -> logits (B, K); ``features`` is the fc1 layer (B, F).

    ``metadata`` describes where the weights came from (dataset, recipe, test accuracy, ...).
    """

    def __init__(self, shape: tuple[int, int, int], num_classes: int, widths: tuple[int, ...],
                 pooled_size: int, feature_dim: int, dropout: float = 0.0, metadata: dict | None = None):
        super().__init__()
        c, h, w = shape
        layers: list[nn.Module] = []
        for width in widths:
            for c_in in (c, width):
                layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))  # (B, width, H/2, W/2)
            c, h, w = width, h // 2, w // 2
        if min(h, w) < pooled_size:
            raise ValueError(f"images of shape {shape} are too small for {len(widths)} stages and a "
                             f"{pooled_size}x{pooled_size} grid")
        layers.append(nn.AdaptiveMaxPool2d(pooled_size))  # (B, width, P, P)
        self.conv = nn.Sequential(*layers)
        self.fc1 = nn.Linear(c * pooled_size * pooled_size, feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(feature_dim, num_classes)
        self.shape = tuple(shape)
        self.metadata = dict(metadata or {})

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> fc1 activations after ReLU (B, feature_dim)."""
        return F.relu(self.fc1(self.conv(x - 0.5).flatten(1)))  # centred input

    def head(self, features: Tensor) -> Tensor:
        """fc1 activations (B, feature_dim) -> logits (B, num_classes)."""
        return self.fc2(self.dropout(features))

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) in [0, 1] -> logits (B, num_classes)."""
        return self.head(self.features(x))

    @property
    def dataset(self) -> str:
        return self.metadata.get("dataset", "?")

    def describe(self) -> str:
        """One line for reports: network, layer, feature size and test accuracy."""
        m = self.metadata
        accuracy = m.get("test_accuracy")
        tail = "" if accuracy is None else f", test accuracy {100 * accuracy:.1f}%"
        return (f"genzoo digit classifier {m.get('dataset', '?')}-{m.get('recipe', '?')}, layer "
                f"{FEATURE_LAYER} ({self.fc1.out_features}-d){tail}")


def build_network(dataset: str, info: DataInfo, metadata: dict | None = None) -> DigitClassifier:
    """An untrained network of ``dataset``'s recipe for images of ``info.shape``."""
    r = recipe_for(dataset)
    return DigitClassifier(info.shape, 10, r.widths, r.pooled_size, r.feature_dim, r.dropout, metadata)


def check_feature_net(net: DigitClassifier, info: DataInfo) -> None:
    """Raise ValueError unless ``net`` was trained for the dataset and image shape of ``info``."""
    if net.dataset != info.name:
        raise ValueError(f"the feature network was trained for dataset {net.dataset!r}, but the images to "
                         f"evaluate are {info.name!r}; use the {info.name!r} network (load_feature_net({info.name!r}))")
    if tuple(net.shape) != tuple(info.shape):
        raise ValueError(f"the feature network takes images of shape {tuple(net.shape)}, but {info.name} "
                         f"images are {tuple(info.shape)}")


# --- files ----------------------------------------------------------------------------------------
def file_name(dataset: str) -> str:
    return f"{dataset}-{recipe_for(dataset).name}.safetensors"


def cache_dir() -> Path:
    """``$GENZOO_CACHE/feature_nets``, else ``~/.cache/genzoo/feature_nets``."""
    root = os.environ.get("GENZOO_CACHE") or Path.home() / ".cache" / "genzoo"
    return Path(root).expanduser() / "feature_nets"


def save_feature_net(net: DigitClassifier, path: Path) -> Path:
    """Weights and metadata in one safetensors file, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return checkpoint.write_tensors(path, net.state_dict(), net.metadata)


def read_feature_net(path: Path) -> DigitClassifier:
    """A network from a file written by ``save_feature_net``, in eval mode."""
    tensors, meta = checkpoint.read_tensors(path)
    if meta.get("kind") != FORMAT:
        raise checkpoint.CheckpointError(f"{path} is not a genzoo feature network (kind {meta.get('kind')!r}, "
                                         f"expected {FORMAT!r})")
    dataset = meta["dataset"]
    if meta.get("recipe_config") != recipe_for(dataset).to_dict():
        raise checkpoint.CheckpointError(f"{path} was trained with another recipe than genzoo's current "
                                         f"{dataset}-{recipe_for(dataset).name}; delete it to retrain")
    info = DataInfo(dataset, tuple(meta["shape"]), meta["num_classes"], "discrete", None)
    net = build_network(dataset, info, meta)
    checkpoint.load_state_dict_checked(net, tensors, path, f"the {dataset} feature network")
    return net.eval()


def load_feature_net(dataset: str, *, path: str | Path | None = None) -> DigitClassifier:
    """The feature network of ``dataset``, in eval mode on the CPU.

    ``path`` reads that file (and checks it was trained for ``dataset``); otherwise the shipped
    weights, then the cache. Evaluation never trains a network: a missing one is an error that
    says how to build it (``python -m genzoo.train.feature_net``).
    """
    recipe = recipe_for(dataset)
    if path is not None:
        net = read_feature_net(Path(path))
    else:
        shipped = importlib.resources.files("genzoo") / PACKAGE_DIR / file_name(dataset)
        cached = cache_dir() / file_name(dataset)
        if shipped.is_file():
            with importlib.resources.as_file(shipped) as shipped_path:
                net = read_feature_net(shipped_path)
        elif cached.is_file():
            net = read_feature_net(cached)
        else:
            raise FileNotFoundError(
                f"no {dataset}-{recipe.name} feature network is shipped or in {cached.parent}; build it once with "
                f"`python -m genzoo.train.feature_net --dataset {dataset} --data-root DIR` (about a minute on a CPU "
                f"for digits), or evaluate without sample metrics (--metrics nll)")
    if net.dataset != dataset:
        raise ValueError(f"the feature network in {path} was trained for dataset {net.dataset!r}, "
                         f"not {dataset!r}")
    return net
