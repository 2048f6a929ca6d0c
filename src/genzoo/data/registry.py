"""The dataset registry: every dataset by name, and ``load_split``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from genzoo.data import toy2d
from genzoo.data.core import SPLITS, DataInfo, Split
from genzoo.data.images import Arrays, load_binarized_mnist, load_digits, load_mnist


# --- the registry ------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: what it is and how to load all its splits."""

    name: str
    description: str  # one line
    info: DataInfo
    default_epochs: int
    load: Callable[[str | None, bool], dict[str, Arrays]]  # (data_root, download) -> split -> arrays


TOY2D_EPOCHS = 20  # 7,800 steps of 128 points

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "binarized_mnist", "MNIST statically binarised by Larochelle & Murray (2011), 28x28, no labels",
            DataInfo("binarized_mnist", (1, 28, 28), 0, "binary", 2), 20, load_binarized_mnist,
        ),
        DatasetSpec(
            "digits", "scikit-learn's 1,797 handwritten digits, 8x8, 17 gray levels; works offline",
            DataInfo("digits", (1, 8, 8), 10, "discrete", 17), 100, load_digits,
        ),
        DatasetSpec(
            "mnist", "MNIST handwritten digits, 28x28, 256 gray levels, from IDX files",
            DataInfo("mnist", (1, 28, 28), 10, "discrete", 256), 20, load_mnist,
        ),
    ]
}


def _load_toy2d(name: str) -> Callable[[str | None, bool], dict[str, Arrays]]:
    """The arena's fixed splits of 2-D points (``toy2d.splits``): no files, no labels."""

    def load(data_root: str | None, download: bool) -> dict[str, Arrays]:
        return {split: (points, None, f"genzoo.data.toy2d {name!r}, {split} split: {len(points):,} points drawn "
                                      f"with seed {toy2d.SPLIT_SEEDS[split]}")
                for split, points in toy2d.splits(name).items()}

    return load


for _density in toy2d.TOY2D.values():  # the 2-D density arena: exact densities, 50,000 training points
    DATASETS[_density.name] = DatasetSpec(_density.name, f"2-D: {_density.description}",
                                          DataInfo(_density.name, (2,), 0, "continuous", None),
                                          TOY2D_EPOCHS, _load_toy2d(_density.name))


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


