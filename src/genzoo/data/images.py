"""Image datasets: file readers, downloads and the standard splits of digits, MNIST and binarized MNIST."""

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
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from genzoo.data.core import SPLIT_SEED, SPLITS, VALID_FRACTION, split_order

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


def check_data_root(data_root: str | None) -> None:
    """A data root that is given must be an existing directory: a mistyped one is an error, never
    created (downloads go into it, so creating it would leave a stray directory behind)."""
    if data_root is not None and not Path(data_root).is_dir():
        what = "is not a directory" if Path(data_root).exists() else "does not exist"
        raise FileNotFoundError(f"data root {data_root} {what}: give --data-root (data_root= in the Python API) "
                                "an existing directory, or leave it out to use the cache")


def _search_dirs(name: str, data_root: str | None) -> list[Path]:
    """The directories to look in, in order; the first is also where downloads go."""
    check_data_root(data_root)
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
    advice = (f"Put {help_files} in {dirs[0]} (get them from {base}), or give --data-root (data_root= in the "
              "Python API) a directory with them.")
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
def load_digits(data_root: str | None, download: bool) -> dict[str, Arrays]:
    """scikit-learn's digits: no files; a fixed seed-0 split into test 360, valid 180, train 1,257."""
    from sklearn.datasets import load_digits

    check_data_root(data_root)  # digits need no files, but a mistyped directory is still a mistake
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


def load_mnist(data_root: str | None, download: bool) -> dict[str, Arrays]:
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


def load_binarized_mnist(data_root: str | None, download: bool) -> dict[str, Arrays]:
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


