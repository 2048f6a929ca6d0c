"""The data layer: splits, file readers and their errors, downloads offline, model inputs."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import pytest
import torch

from genzoo import data
from genzoo.data import images, registry
from genzoo.data.toy2d import TOY2D
from genzoo.data.core import bits_per_dim, check_finite, DataInfo, nats_offset, prepare, scale_from_symmetric, scale_to_symmetric, Split, static_binarize
from genzoo.data.registry import dataset_info, list_datasets, load_split

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_mnist = pytest.mark.skipif(
    not (SHARED / "mnist").is_dir(), reason=f"local MNIST subset absent: {SHARED / 'mnist'}"
)
needs_binarized = pytest.mark.skipif(
    not (SHARED / "binarized_mnist").is_dir(), reason=f"local binarized MNIST absent: {SHARED / 'binarized_mnist'}"
)
MNIST_INFO = DataInfo("mnist", (1, 28, 28), 10, "discrete", 256)


# --- registry ----------------------------------------------------------------------------------
def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'x'; choose one of: binarized_mnist, checkerboard, digits, eight-gaussians, mnist, rings, two-moons$"):
        load_split("x", "train")
    with pytest.raises(ValueError, match="unknown dataset 'x'"):
        dataset_info("x")
    with pytest.raises(ValueError, match="unknown split 'val'; choose one of: train, valid, test"):
        load_split("digits", "val")


def test_list_datasets_and_info():
    assert [name for name, _ in list_datasets()] == list(data.DATASETS)  # images, then the 2-D arena
    assert {name for name in data.DATASETS if dataset_info(name).kind == "vector"} == set(TOY2D)
    assert all(description for _, description in list_datasets())
    assert dataset_info("digits") == DataInfo("digits", (1, 8, 8), 10, "discrete", 17)
    assert dataset_info("binarized_mnist").num_classes == 0


# --- digits ------------------------------------------------------------------------------------
def test_digits_splits_are_fixed_disjoint_and_complete():
    splits = {s: load_split("digits", s)[1] for s in data.SPLITS}
    assert {s: len(split) for s, split in splits.items()} == {"train": 1257, "valid": 180, "test": 360}
    # a partition: together the splits hold every image exactly once
    images = torch.cat([split.images for split in splits.values()]).flatten(1)  # (1797, 64)
    assert sorted(map(tuple, images.tolist())) == sorted(map(tuple, load_digits_all().tolist()))
    train = splits["train"]
    assert train.images.shape == (1257, 1, 8, 8) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and set(train.labels.tolist()) == set(range(10))
    assert int(train.images.min()) == 0 and int(train.images.max()) == 16
    registry._load_cached.cache_clear()
    again = load_split("digits", "train")[1]
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)


def load_digits_all() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.from_numpy(load_digits().images.astype("uint8")).flatten(1)


# --- MNIST -------------------------------------------------------------------------------------
@needs_mnist
def test_mnist_subset_carves_valid_and_test_stands_in():
    info, train = load_split("mnist", "train", data_root=str(SHARED / "mnist"))
    _, valid = load_split("mnist", "valid", data_root=str(SHARED / "mnist"))
    _, test = load_split("mnist", "test", data_root=str(SHARED))  # also found under data_root/mnist
    assert info == MNIST_INFO
    assert (len(train), len(valid)) == (9000, 1000)
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255
    counts = torch.bincount(torch.cat([train.labels, valid.labels]), minlength=10)
    assert counts.tolist() == [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]
    assert torch.equal(test.images, valid.images) and torch.equal(test.labels, valid.labels)
    assert "train10k-images-idx3-ubyte.gz" in train.source
    assert "held out for validation (seed 0)" in valid.source and "validation file absent" in valid.source
    assert "test file absent" in test.source and "validation split" in test.source


@needs_mnist
def test_mnist_data_root_from_environment(monkeypatch):
    monkeypatch.setenv("GENZOO_DATA", str(SHARED))
    assert len(load_split("mnist", "train")[1]) == 9000


def idx_bytes(magic: int, dims: list[int], payload: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + payload


def write_mnist(root: Path, images: bytes, labels: bytes) -> Path:
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    return root / "train-images-idx3-ubyte.gz"


def test_mnist_canonical_names_and_official_test_file(tmp_path):
    images = idx_bytes(2051, [32, 28, 28], bytes(range(256)) * 98)  # 32 * 784 bytes
    labels = idx_bytes(2049, [32], bytes(i % 10 for i in range(32)))
    write_mnist(tmp_path, images, labels)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(images)  # un-gzipped names are read too
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(labels)
    _, test = load_split("mnist", "test", data_root=str(tmp_path), download=False)
    _, valid = load_split("mnist", "valid", data_root=str(tmp_path), download=False)
    assert len(test) == 32 and test.source.startswith(f"official test file {tmp_path / 't10k-images-idx3-ubyte'}")
    assert len(valid) == 3 and "validation file absent" in valid.source


@pytest.mark.parametrize(
    "images, labels, problem",
    [
        (None, idx_bytes(2049, [2], bytes(2)), "not a readable gzip file"),  # truncated gzip
        (idx_bytes(2050, [2, 28, 28], bytes(2 * 784)), idx_bytes(2049, [2], bytes(2)), "bad magic number 2050"),
        (idx_bytes(2051, [2, 28, 28], bytes(784)), idx_bytes(2049, [2], bytes(2)), "header says"),  # short data
        (idx_bytes(2051, [2, 28, 28], bytes(2 * 784)), idx_bytes(2049, [3], bytes(3)), "2 images but"),
    ],
)
def test_corrupt_mnist_files_name_the_file(tmp_path, images, labels, problem):
    if images is None:  # a gzip stream cut in half
        path = write_mnist(tmp_path, b"", labels)
        whole = gzip.compress(idx_bytes(2051, [2, 28, 28], bytes(range(256)) * 6 + bytes(32)))
        path.write_bytes(whole[: len(whole) // 2])
    else:
        write_mnist(tmp_path, images, labels)
    with pytest.raises(ValueError, match=problem) as error:
        load_split("mnist", "train", data_root=str(tmp_path), download=False)
    assert str(tmp_path / "train-") in str(error.value)


# --- binarized MNIST ---------------------------------------------------------------------------
@needs_binarized
def test_binarized_mnist_official_splits():
    info, train = load_split("binarized_mnist", "train", data_root=str(SHARED / "binarized_mnist"))
    _, valid = load_split("binarized_mnist", "valid", data_root=str(SHARED / "binarized_mnist"))
    _, test = load_split("binarized_mnist", "test", data_root=str(SHARED / "binarized_mnist"))
    assert info.value_type == "binary" and info.num_levels == 2 and train.labels is None
    assert (len(train), len(valid)) == (50000, 10000) and train.images.shape[1:] == (1, 28, 28)
    assert set(torch.unique(train.images).tolist()) == {0, 1}
    assert train.images.float().mean().item() == pytest.approx(0.1306, abs=5e-5)
    assert valid.images.float().mean().item() == pytest.approx(0.1311, abs=5e-5)
    assert valid.source.startswith("official validation file") and "binarized_mnist_valid.amat.gz" in valid.source
    assert torch.equal(test.images, valid.images)
    assert "test file absent" in test.source and "binarized_mnist_valid.amat.gz" in test.source


@pytest.mark.parametrize(
    "line, problem",
    [("0 " * 783, "line 2: 783 values, expected 784"), ("0 " * 783 + "2", "line 2: unexpected '2'"),
     ("0 " * 782 + "10", "line 2: values must be single")],
)
def test_corrupt_amat_names_file_and_line(tmp_path, line, problem):
    good = " ".join(["1"] * 784)
    path = tmp_path / "binarized_mnist_train.amat"
    path.write_text(f"{good}\n{line.strip()}\n{good}\n")
    with pytest.raises(ValueError, match=problem) as error:
        load_split("binarized_mnist", "train", data_root=str(tmp_path), download=False)
    assert str(path) in str(error.value)


def test_amat_plain_text_and_carved_valid(tmp_path):
    rows = torch.randint(0, 2, (20, 784))
    text = "\n".join(" ".join(map(str, row.tolist())) for row in rows) + "\n"
    (tmp_path / "binarized_mnist_train.amat").write_text(text)
    _, train = load_split("binarized_mnist", "train", data_root=str(tmp_path), download=False)
    _, valid = load_split("binarized_mnist", "valid", data_root=str(tmp_path), download=False)
    assert (len(train), len(valid)) == (18, 2)
    both = torch.cat([train.images, valid.images]).flatten(1)  # (20, 784)
    assert sorted(map(tuple, both.tolist())) == sorted(map(tuple, rows.tolist()))


# --- downloads, offline ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, url_attr, file",
    [("mnist", "MNIST_URL", "train-images-idx3-ubyte.gz"),
     ("binarized_mnist", "BINARIZED_MNIST_URL", "binarized_mnist_train.amat")],
)
def test_offline_download_says_what_to_put_where(tmp_path, monkeypatch, name, url_attr, file):
    monkeypatch.setattr(images, url_attr, "http://127.0.0.1:9/")
    with pytest.raises(FileNotFoundError) as error:
        load_split(name, "train", data_root=str(tmp_path))
    message = str(error.value)
    assert str(tmp_path) in message and file in message and "http://127.0.0.1:9/" in message
    assert list(tmp_path.iterdir()) == []  # no partial file left behind
    with pytest.raises(FileNotFoundError, match="download=False"):
        load_split(name, "train", data_root=str(tmp_path), download=False)


# --- model inputs ------------------------------------------------------------------------------
def levels(n: int = 64, k: int = 256) -> torch.Tensor:
    return torch.randint(0, k, (n, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_binary_inputs():
    binary = DataInfo("b", (1, 28, 28), 0, "binary", 2)
    x = levels(k=2)
    assert torch.equal(prepare(x, binary, "binary", train=False), x.float())
    images = levels()
    b = prepare(images, MNIST_INFO, "binary", train=True, generator=torch.Generator().manual_seed(0))
    assert b.dtype == torch.float32 and set(b.unique().tolist()) <= {0.0, 1.0}
    assert b.mean().item() == pytest.approx((images.float() / 255).mean().item(), abs=0.01)  # dynamic
    with pytest.raises(ValueError, match="static_binarize"):
        prepare(images, MNIST_INFO, "binary", train=False)


def test_static_binarization_is_fixed_per_image():
    split = Split(levels(), None, "test", "random levels")
    info, first = static_binarize(split, MNIST_INFO)
    _, second = static_binarize(split, MNIST_INFO)
    assert info.value_type == "binary" and info.num_levels == 2 and "statically binarised" in first.source
    assert torch.equal(first.images, second.images)
    batches = [prepare(b, info, "binary", train=False) for b in first.images.split(7)]
    assert torch.equal(torch.cat(batches), prepare(first.images, info, "binary", train=False))
    assert first.images.float().mean().item() == pytest.approx((split.images.float() / 255).mean().item(), abs=0.01)


def test_discrete_and_dequantised_inputs():
    images = levels()
    assert torch.equal(prepare(images, MNIST_INFO, "discrete", train=True), images.float() / 255)
    x = prepare(images, MNIST_INFO, "continuous", train=False, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() < 1
    assert torch.equal(torch.floor(x * 256).to(torch.uint8), images)
    continuous = DataInfo("c", (1, 28, 28), 0, "continuous", None)
    with pytest.raises(ValueError, match="continuous data"):
        prepare(x, continuous, "discrete", train=True)
    with pytest.raises(ValueError, match="unknown input kind"):
        prepare(images, MNIST_INFO, "gaussian", train=True)


def test_nats_offset_and_bits_per_dim():
    assert nats_offset(MNIST_INFO, "continuous") == pytest.approx(784 * math.log(256))
    assert nats_offset(MNIST_INFO, "discrete") == 0.0 and nats_offset(MNIST_INFO, "binary") == 0.0
    assert nats_offset(DataInfo("c", (1, 2, 2), 0, "continuous", None), "continuous") == 0.0
    assert bits_per_dim(784 * math.log(2), MNIST_INFO) == pytest.approx(1.0)
    # a uniform density on [0, 1]^D (0 nats) costs exactly log2(256) = 8 bits per dimension
    assert bits_per_dim(0.0 + nats_offset(MNIST_INFO, "continuous"), MNIST_INFO) == pytest.approx(8.0)


def test_symmetric_scaling_and_finite_check():
    x = torch.rand(5)
    assert torch.allclose(scale_from_symmetric(scale_to_symmetric(x)), x)
    assert scale_to_symmetric(torch.tensor([0.0, 1.0])).tolist() == [-1.0, 1.0]
    check_finite(x, "images")
    with pytest.raises(ValueError, match="images contains NaN or infinite values"):
        check_finite(torch.tensor([0.0, float("nan")]), "images")


# --- subsets -----------------------------------------------------------------------------------
def test_subset_is_fixed_and_says_so():
    _, train = load_split("digits", "train")
    a, b = train.subset(100), train.subset(100)
    assert len(a) == 100 and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.source.endswith("fixed random subset of 100 of 1257 (seed 0)")
    assert train.subset(None) is train and train.subset(5000) is train
    with pytest.raises(ValueError, match="positive"):
        train.subset(0)


def test_hold_out_splits_off_the_subset_and_keeps_the_rest_disjoint():
    _, train = load_split("digits", "train")
    kept, held = train.hold_out(100)
    assert torch.equal(held.images, train.subset(100).images) and torch.equal(held.labels, train.subset(100).labels)
    assert len(kept) + len(held) == len(train)
    def counted(images):  # each distinct image with its count: equal multisets of images
        return torch.unique(images.flatten(1), dim=0, return_counts=True)

    for a, b in zip(counted(torch.cat([kept.images, held.images])), counted(train.images)):
        assert torch.equal(a, b)
    assert "held out for model selection: fixed random 100 of 1,257 (seed 0)" in held.source
    for n in (0, len(train)):
        with pytest.raises(ValueError, match="cannot hold out"):
            train.hold_out(n)


def test_split_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        Split(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "train", "x")
