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

import functools
import gzip
import hashlib
import math
import os
import shutil
import tempfile
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

ValueType = Literal["binary", "discrete", "continuous"]
InputKind = Literal["binary", "discrete", "continuous"]
SPLITS = ("train", "valid", "test")

STATIC_BINARIZATION_SEED = 0  # evaluation binarises 8-bit data once, with this seed
SPLIT_SEED = 0  # seed of every permutation that carves or subsets a split
VALID_FRACTION = 0.1  # held out of the training file when there is no validation file

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
BINARIZED_MNIST_ROWS = {"train": 50_000, "valid": 10_000, "test": 10_000}
DOWNLOAD_TIMEOUT_S = 10.0
IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC = 2051, 2049

# One split as loaded: images (N, C, H, W) uint8 levels, labels (N,) int64 or None, source sentence.
Arrays = tuple[Tensor, Tensor | None, str]


@dataclass(frozen=True)
class DataInfo:
    """What a dataset is: enough for a model to choose its likelihood and for bits/dim."""

    name: str
    shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int  # 0 when the dataset has no labels
    value_type: ValueType
    num_levels: int | None  # 2 for binary, 17 for digits, 256 for 8-bit; None if continuous

    @property
    def dim(self) -> int:
        c, h, w = self.shape
        return c * h * w

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

    images: Tensor  # (N, C, H, W) uint8 levels
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


# --- file readers ------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in .gz; a bad gzip raises ValueError."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # bad header, truncated stream, bad data
        raise ValueError(f"{path}: not a readable gzip file ({e})") from e


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (MNIST format), checking its header against its size.

    ``magic`` is 2051 for images (N, H, W) or 2049 for labels (N,).
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: bad magic number {found}, expected {magic}")
    ndim = magic & 0xFF  # the last header byte is the number of dimensions; 0x08 before it = ubyte
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated header ({len(data)} bytes, expected {header})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + math.prod(dims)
    if len(data) != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes) but the file has {len(data)} bytes")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_amat(path: Path, rows: int | None = None) -> np.ndarray:
    """Read a binarized-MNIST ``.amat`` file: one image per line, 784 values 0/1 -> (N, 784) uint8.

    Checked and parsed with bytes methods and numpy over the whole file (no per-value Python), so
    a 50,000-line file takes about a second. ``rows``, if given, is the number of lines required.
    """
    data = _read_bytes(path).rstrip()
    if not data:
        raise ValueError(f"{path}: empty file")

    def line_of(position: int) -> int:
        return data.count(b"\n", 0, position) + 1

    bad = data.translate(None, b"01 \t\r\n")  # every character that is neither a value nor a space
    if bad:
        position = data.index(bad[:1])
        raise ValueError(f"{path}, line {line_of(position)}: unexpected {chr(bad[0])!r}; values are 0 or 1")
    is_value = np.frombuffer(data, np.uint8) >= ord("0")  # (bytes,) only 0/1 and spaces are left
    joined = np.flatnonzero(is_value[1:] & is_value[:-1])  # e.g. "10": not single values
    if joined.size:
        line = line_of(int(joined[0]))
        raise ValueError(f"{path}, line {line}: values must be single 0/1 separated by spaces")
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        count = len(line.translate(None, b" \t\r"))
        if count != 784:
            raise ValueError(f"{path}, line {number}: {count} values, expected 784")
    if rows is not None and len(lines) != rows:
        raise ValueError(f"{path}: {len(lines)} lines, expected {rows}")
    values = np.frombuffer(data.translate(None, b" \t\r\n"), np.uint8) - ord("0")  # (N * 784,)
    return values.reshape(len(lines), 784)


# --- directories and downloads -----------------------------------------------------------------
def default_data_dir(name: str) -> Path:
    """Where a dataset is looked for and downloaded to when no ``data_root`` is given."""
    return Path(os.environ.get("GENZOO_DATA", "~/.cache/genzoo/data")).expanduser() / name


def _search_dirs(name: str, data_root: str | None) -> list[Path]:
    """The directories to look in, in order; the first is also where downloads go."""
    if data_root is None:
        return [default_data_dir(name)]
    return [Path(data_root), Path(data_root) / name]


def _find(dirs: list[Path], *names: str) -> Path | None:
    """The first existing file among ``names`` (in order of preference) in ``dirs``."""
    for directory in dirs:
        for file_name in names:
            if (directory / file_name).is_file():
                return directory / file_name
    return None


def _download(url: str, dest: Path, verify: Callable[[Path], None]) -> None:
    """Fetch ``url`` to ``dest`` through a temporary file; ``dest`` appears only once verified."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            shutil.copyfileobj(response, f)
        try:
            verify(Path(tmp))
        except ValueError as e:
            raise ValueError(f"download of {url} is corrupt, so it was deleted: {e}") from e
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _download_all(
    name: str,
    dirs: list[Path],
    urls: dict[str, str],  # file name -> url
    verify: dict[str, Callable[[Path], None]],  # file name -> check that raises ValueError
    download: bool,
    help_files: str,  # the files to name in the error message
) -> None:
    """Download ``urls`` (file name -> url) into ``dirs[0]``, or raise one clear FileNotFoundError."""
    where = " or ".join(str(d) for d in dirs)
    base = next(iter(urls.values())).rsplit("/", 1)[0] + "/"
    advice = f"Put {help_files} in {dirs[0]} (get them from {base}), or pass data_root= a directory with them."
    if not download:
        raise FileNotFoundError(f"dataset {name!r}: no data files in {where} and download=False. {advice}")
    for file_name, url in urls.items():
        try:
            _download(url, dirs[0] / file_name, verify[file_name])
        except OSError as e:  # offline, refused, timed out (urllib's URLError is an OSError)
            raise FileNotFoundError(
                f"dataset {name!r}: no data files in {where}, and downloading {url} failed ({e}). {advice}"
            ) from e


def _check_md5(expected: str) -> Callable[[Path], None]:
    def verify(path: Path) -> None:
        found = hashlib.md5(path.read_bytes()).hexdigest()
        if found != expected:
            raise ValueError(f"MD5 {found}, expected {expected}")

    return verify


# --- splits ------------------------------------------------------------------------------------
def _standard_splits(train: Arrays, valid: Arrays | None, test: Arrays | None) -> dict[str, Arrays]:
    """Apply the split rule of the module docstring to whichever official files exist.

    Each argument's source names its file ("official training file PATH"); counts are added here.
    """
    images, labels, source = train
    n = len(images)
    if valid is None:
        n_valid = round(n * VALID_FRACTION)
        order = split_order(n)
        held, kept = order[:n_valid].sort().values, order[n_valid:].sort().values
        held_out = f"a fixed random {VALID_FRACTION:.0%} held out for validation (seed {SPLIT_SEED})"
        valid = (
            images[held], None if labels is None else labels[held],
            f"{held_out} of the {source} (validation file absent): {n_valid:,} of {n:,} images",
        )
        train = (
            images[kept], None if labels is None else labels[kept],
            f"{source} minus {held_out}: {n - n_valid:,} of {n:,} images",
        )
    else:
        train = images, labels, f"{source}, {n:,} images"
        valid = valid[0], valid[1], f"{valid[2]}, {len(valid[0]):,} images"
    if test is None:
        stand_in = "the validation split stands in (test file absent; never trained on)"
        test = valid[0], valid[1], f"{stand_in}: {valid[2]}"
    else:
        test = test[0], test[1], f"{test[2]}, {len(test[0]):,} images"
    return {"train": train, "valid": valid, "test": test}


# --- the datasets ------------------------------------------------------------------------------
def _load_digits(data_root: str | None, download: bool) -> dict[str, Arrays]:
    """scikit-learn's digits: no files; a fixed seed-0 split into test 360, valid 180, train 1,257."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.uint8)).unsqueeze(1)  # (1797, 1, 8, 8) levels 0..16
    labels = torch.from_numpy(digits.target.astype(np.int64))  # (1797,)
    order = split_order(len(images))
    parts = {"test": order[:360], "valid": order[360:540], "train": order[540:]}
    splits = {}
    for split, index in parts.items():
        index = index.sort().values
        source = f"sklearn.datasets.load_digits(), fixed random split (seed {SPLIT_SEED})"
        splits[split] = images[index], labels[index], f"{source}: {len(index):,} of {len(images):,} images"
    return splits


def _mnist_pair(dirs: list[Path], stem: str) -> tuple[Path, Path] | None:
    """(images, labels) paths for the canonical ``{stem}-images-idx3-ubyte[.gz]``, if present."""
    images = _find(dirs, f"{stem}-images-idx3-ubyte.gz", f"{stem}-images-idx3-ubyte")
    if images is None:
        return None
    return images, _labels_path(images)


def _labels_path(images: Path) -> Path:
    labels = images.with_name(images.name.replace("-images-idx3-", "-labels-idx1-"))
    if not labels.is_file():
        raise FileNotFoundError(f"{images} has no labels file: expected {labels}")
    return labels


def _mnist_train_pair(dirs: list[Path]) -> tuple[Path, Path] | None:
    """The canonical training files, else any ``*train*-images-idx3-ubyte[.gz]`` (e.g. train10k)."""
    pair = _mnist_pair(dirs, "train")
    if pair is not None:
        return pair
    for directory in dirs:
        pattern = "*train*-images-idx3-ubyte"
        found = sorted(directory.glob(pattern + ".gz")) or sorted(directory.glob(pattern))
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ValueError(f"several MNIST training files in {directory}: {names}; keep one")
        if found:
            return found[0], _labels_path(found[0])
    return None


def _read_mnist(kind: str, pair: tuple[Path, Path]) -> Arrays:
    images_path, labels_path = pair
    images = read_idx(images_path, IDX_IMAGES_MAGIC)  # (N, 28, 28)
    labels = read_idx(labels_path, IDX_LABELS_MAGIC)  # (N,)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.max(initial=0) > 9:
        raise ValueError(f"{labels_path}: label {labels.max()} is outside 0..9")
    images_t = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, 28, 28) uint8
    return images_t, torch.from_numpy(labels.astype(np.int64)), f"official {kind} file {images_path}"


def _load_mnist(data_root: str | None, download: bool) -> dict[str, Arrays]:
    dirs = _search_dirs("mnist", data_root)
    train = _mnist_train_pair(dirs)
    if train is None:
        urls = {f: MNIST_URL + f for f in MNIST_MD5}
        verify = {f: _check_md5(md5) for f, md5 in MNIST_MD5.items()}
        _download_all("mnist", dirs, urls, verify, download, ", ".join(MNIST_MD5) + " (the t10k pair is optional)")
        train = _mnist_train_pair(dirs)
    test = _mnist_pair(dirs, "t10k")
    return _standard_splits(_read_mnist("training", train), None, None if test is None else _read_mnist("test", test))


def _amat_path(dirs: list[Path], split: str) -> Path | None:
    return _find(dirs, f"binarized_mnist_{split}.amat.gz", f"binarized_mnist_{split}.amat")


def _read_binarized(kind: str, path: Path) -> Arrays:
    images = torch.from_numpy(read_amat(path)).reshape(-1, 1, 28, 28)  # (N, 1, 28, 28) in {0, 1}
    return images, None, f"official {kind} file {path}"


def _load_binarized_mnist(data_root: str | None, download: bool) -> dict[str, Arrays]:
    dirs = _search_dirs("binarized_mnist", data_root)
    if _amat_path(dirs, "train") is None:
        files = {f"binarized_mnist_{s}.amat": s for s in SPLITS}
        # No trusted checksums are published for these files: verify their structure instead
        # (the expected number of lines, each of 784 binary values).
        verify = {f: functools.partial(read_amat, rows=BINARIZED_MNIST_ROWS[s]) for f, s in files.items()}
        urls = {f: BINARIZED_MNIST_URL + f for f in files}
        help_files = ", ".join(files) + " (or .amat.gz; valid and test are optional)"
        _download_all("binarized_mnist", dirs, urls, verify, download, help_files)
    paths = {split: _amat_path(dirs, split) for split in SPLITS}
    kinds = {"train": "training", "valid": "validation", "test": "test"}
    loaded = {s: _read_binarized(kinds[s], p) if p else None for s, p in paths.items()}
    return _standard_splits(loaded["train"], loaded["valid"], loaded["test"])


# --- the registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: what it is and how to load all its splits."""

    name: str
    description: str  # one line
    info: DataInfo
    default_epochs: int
    load: Callable[[str | None, bool], dict[str, Arrays]]  # (data_root, download) -> split -> arrays


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "binarized_mnist", "MNIST statically binarised by Larochelle & Murray (2011), 28x28, no labels",
            DataInfo("binarized_mnist", (1, 28, 28), 0, "binary", 2), 20, _load_binarized_mnist,
        ),
        DatasetSpec(
            "digits", "scikit-learn's 1,797 handwritten digits, 8x8, 17 gray levels; works offline",
            DataInfo("digits", (1, 8, 8), 10, "discrete", 17), 100, _load_digits,
        ),
        DatasetSpec(
            "mnist", "MNIST handwritten digits, 28x28, 256 gray levels, from IDX files",
            DataInfo("mnist", (1, 28, 28), 10, "discrete", 256), 20, _load_mnist,
        ),
    ]
}


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def list_datasets() -> list[tuple[str, str]]:
    """(name, one-line description) of every registered dataset."""
    return [(spec.name, spec.description) for spec in DATASETS.values()]


def dataset_info(name: str) -> DataInfo:
    return _spec(name).info


@functools.lru_cache(maxsize=None)
def _load_cached(name: str, data_root: str | None, download: bool) -> dict[str, Arrays]:
    return DATASETS[name].load(data_root, download)


def load_split(
    name: str, split: str, data_root: str | None = None, download: bool = True
) -> tuple[DataInfo, Split]:
    """Load one split of a registered dataset (see the module docstring for files and splits)."""
    spec = _spec(name)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    root = None if data_root is None else str(Path(data_root).expanduser().resolve())
    images, labels, source = _load_cached(name, root, download)[split]
    return spec.info, Split(images, labels, split, source)


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
