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
3. else trains it now (a one-line note on stderr) and writes it to the cache atomically.

Rebuild the shipped files (``--data-root`` is searched for ``mnist/`` too; prints the accuracy)::

    python -m genzoo.feature_net --dataset all --data-root ../shared/data --out src/genzoo/feature_nets/
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genzoo import checkpoint
from genzoo.data.core import DataInfo, prepare, static_binarize
from genzoo.data.registry import load_split
from genzoo.nn.mode import eval_mode

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


def _recipe(dataset: str) -> Recipe:
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
    r = _recipe(dataset)
    return DigitClassifier(info.shape, 10, r.widths, r.pooled_size, r.feature_dim, r.dropout, metadata)


def check_feature_net(net: DigitClassifier, info: DataInfo) -> None:
    """Raise ValueError unless ``net`` was trained for the dataset and image shape of ``info``."""
    if net.dataset != info.name:
        raise ValueError(f"the feature network was trained for dataset {net.dataset!r}, but the images to "
                         f"evaluate are {info.name!r}; use the {info.name!r} network (load_feature_net({info.name!r}))")
    if tuple(net.shape) != tuple(info.shape):
        raise ValueError(f"the feature network takes images of shape {tuple(net.shape)}, but {info.name} "
                         f"images are {tuple(info.shape)}")


# --- training -------------------------------------------------------------------------------------
def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Shift each image (B, C, H, W) by its own integer offset in [-max_shift, max_shift]^2, filling with 0."""
    b, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))  # (B, C, H+2s, W+2s)
    dy, dx = torch.randint(0, 2 * s + 1, (2, b, 1), generator=generator, device=x.device)  # (B, 1) each
    rows = dy + torch.arange(h, device=x.device)  # (B, H)
    cols = dx + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def random_rotate_zoom(x: Tensor, max_rotation: float, max_scale: float, generator: torch.Generator) -> Tensor:
    """Rotate each image (B, C, H, W) about its centre by its own angle and zoom it by its own factor.

    Bilinear resampling, zeros outside; angles uniform in +-max_rotation degrees, factors in 1 +- max_scale.
    """
    b = len(x)
    angle = (2 * torch.rand(b, generator=generator) - 1) * math.radians(max_rotation)  # (B,)
    zoom = 1 + (2 * torch.rand(b, generator=generator) - 1) * max_scale  # (B,)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # the grid maps output to input coordinates
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def held_out_data(dataset: str, data_root: str | None, download: bool) -> tuple[Tensor, Tensor, str]:
    """Test inputs (N, C, H, W) in [0, 1], labels (N,) and the split's source for ``dataset``'s net."""
    recipe = _recipe(dataset)
    info, split = load_split(recipe.train_data, "test", data_root, download)
    if recipe.binarize:
        info, split = static_binarize(split, info)
    return prepare(split.images, info, "discrete", train=False), split.labels, split.source


@torch.no_grad()
def accuracy(net: DigitClassifier, x: Tensor, labels: Tensor, batch_size: int = EVAL_BATCH_SIZE) -> float:
    """Share of images (N, C, H, W) whose argmax logit is the label; fp32, eval mode."""
    with eval_mode(net):
        correct = sum((net(x[i:i + batch_size].float()).argmax(1) == labels[i:i + batch_size]).sum().item()
                      for i in range(0, len(x), batch_size))
    return correct / len(x)


def train_feature_net(dataset: str, data_root: str | None = None, download: bool = True,
                      log=None) -> DigitClassifier:
    """Train ``dataset``'s network with its fixed recipe; return it in eval mode with its metadata.

    Deterministic given the recipe's seed (on one machine and thread count): the seed drives the
    initial weights and dropout (in a forked RNG, leaving the global one untouched), and explicit
    generators drive the data order, the augmentation and the binarisation (the shipped digits
    file was rebuilt byte for byte). ``log(str)`` gets one line per epoch when given.
    """
    from genzoo.train.loop import TrainConfig, epoch_shard, lr_factor

    recipe = _recipe(dataset)
    info, train = load_split(recipe.train_data, "train", data_root, download)
    if info.num_classes != 10 or train.labels is None:
        raise ValueError(f"the feature network of {dataset!r} needs 10 labelled classes in {recipe.train_data!r}")
    test_x, test_y, test_source = held_out_data(dataset, data_root, download)
    images = train.images.float() / (info.num_levels - 1)  # (N, C, H, W) in [0, 1]: probabilities if binarized
    steps_per_epoch = len(images) // recipe.batch_size
    total_steps = recipe.epochs * steps_per_epoch
    schedule = TrainConfig(lr_schedule="cosine", warmup_steps=round(recipe.warmup_epochs * steps_per_epoch))
    generator = torch.Generator().manual_seed(recipe.seed)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)  # initial weights and dropout
        net = build_network(dataset, info).to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, schedule))
        net.train()
        for epoch in range(recipe.epochs):
            order = epoch_shard(len(images), recipe.batch_size, epoch, recipe.seed, 0, 1)
            total = 0.0
            for step in range(steps_per_epoch):
                idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
                x = images[idx]  # (B, C, H, W)
                if recipe.max_rotation or recipe.max_scale:  # before binarising: resampling makes grays
                    x = random_rotate_zoom(x, recipe.max_rotation, recipe.max_scale, generator)
                if recipe.binarize:
                    x = torch.bernoulli(x, generator=generator)  # a fresh binarisation every epoch
                x = random_shift(x, recipe.max_shift, generator).contiguous(memory_format=torch.channels_last)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    logits = net(x)
                loss = F.cross_entropy(logits.float(), train.labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += loss.item()
            if log is not None:
                log(f"epoch {epoch + 1}/{recipe.epochs}: train loss {total / steps_per_epoch:.4f}, "
                    f"{time.perf_counter() - started:.0f} s")
    net = net.to(memory_format=torch.contiguous_format).eval()
    net.metadata = {
        "kind": FORMAT,
        "dataset": dataset,
        "recipe": recipe.name,
        "recipe_config": recipe.to_dict(),
        "layer": FEATURE_LAYER,
        "feature_dim": recipe.feature_dim,
        "shape": list(info.shape),
        "num_classes": 10,
        "train_data": recipe.train_data,
        "binarize": recipe.binarize,
        "train_split_source": train.source,
        "num_train_examples": len(images),
        "test_split_source": test_source,
        "num_test_examples": len(test_x),
        "test_accuracy": accuracy(net, test_x, test_y),
    }
    return net


# --- files ----------------------------------------------------------------------------------------
def file_name(dataset: str) -> str:
    return f"{dataset}-{_recipe(dataset).name}.safetensors"


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
    if meta.get("recipe_config") != _recipe(dataset).to_dict():
        raise checkpoint.CheckpointError(f"{path} was trained with another recipe than genzoo's current "
                                         f"{dataset}-{_recipe(dataset).name}; delete it to retrain")
    info = DataInfo(dataset, tuple(meta["shape"]), meta["num_classes"], "discrete", None)
    net = build_network(dataset, info, meta)
    checkpoint.load_state_dict_checked(net, tensors, path, f"the {dataset} feature network")
    return net.eval()


def load_feature_net(dataset: str, data_root: str | None = None, *, path: str | Path | None = None,
                     train: bool = True, download: bool = True) -> DigitClassifier:
    """The feature network of ``dataset``, in eval mode on the CPU.

    ``path`` reads that file (and checks it was trained for ``dataset``); otherwise the lookup
    order of the module docstring: shipped weights, the cache, then training now (unless ``train``
    is false: FileNotFoundError). ``data_root`` and ``download`` are passed to ``load_split`` for
    training (for ``binarized_mnist`` the MNIST files are needed: ``data_root`` or ``data_root/mnist``).
    """
    recipe = _recipe(dataset)
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
        elif not train:
            raise FileNotFoundError(f"no {dataset}-{recipe.name} feature network shipped or in {cached.parent}")
        else:
            print(f"genzoo: training the {dataset}-{recipe.name} feature network (once; cached in {cached})",
                  file=sys.stderr)
            net = train_feature_net(dataset, data_root, download)
            save_feature_net(net, cached)
    if net.dataset != dataset:
        raise ValueError(f"the feature network in {path} was trained for dataset {net.dataset!r}, "
                         f"not {dataset!r}")
    return net


# --- command line: (re)build the shipped weights --------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genzoo.feature_net",
                                     description="Train genzoo's feature networks and print their test accuracy.")
    parser.add_argument("--dataset", default="all", choices=[*RECIPES, "all"])
    parser.add_argument("--data-root", help="data directory (searched, then DATA_ROOT/<dataset>)")
    parser.add_argument("--out", default=str(cache_dir()), help="output directory (default: the cache)")
    args = parser.parse_args(argv)
    for dataset in RECIPES if args.dataset == "all" else [args.dataset]:
        started = time.perf_counter()
        net = train_feature_net(dataset, args.data_root, download=False,
                                log=lambda line: print(f"{dataset}: {line}", file=sys.stderr, flush=True))
        path = save_feature_net(net, Path(args.out) / file_name(dataset))
        m = net.metadata
        print(f"{dataset}-{m['recipe']}: test accuracy {100 * m['test_accuracy']:.2f}% on {m['num_test_examples']:,} "
              f"images ({m['test_split_source']}); {m['num_train_examples']:,} training examples; "
              f"{time.perf_counter() - started:.0f} s; {path} ({path.stat().st_size / 1024:.0f} KiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
