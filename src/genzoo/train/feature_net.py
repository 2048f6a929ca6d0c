"""Training genzoo's feature networks with their fixed recipes (``genzoo.evaluate.feature_net``).

A separate step, never run by evaluation. Rebuild the shipped files (``--data-root`` is searched for
``mnist/`` too; prints each network's test accuracy)::

    python -m genzoo.train.feature_net --dataset all --data-root ../shared/data --out src/genzoo/feature_nets/
"""


from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from genzoo.data.core import epoch_shard, prepare, static_binarize
from genzoo.data.registry import load_split
from genzoo.evaluate.feature_net import (
    EVAL_BATCH_SIZE,
    FEATURE_LAYER,
    FORMAT,
    RECIPES,
    DigitClassifier,
    build_network,
    cache_dir,
    file_name,
    recipe_for,
    save_feature_net,
)
from genzoo.nn.mode import eval_mode
from genzoo.train.schedules import lr_factor


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
    recipe = recipe_for(dataset)
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
    recipe = recipe_for(dataset)
    info, train = load_split(recipe.train_data, "train", data_root, download)
    if info.num_classes != 10 or train.labels is None:
        raise ValueError(f"the feature network of {dataset!r} needs 10 labelled classes in {recipe.train_data!r}")
    test_x, test_y, test_source = held_out_data(dataset, data_root, download)
    images = train.images.float() / (info.num_levels - 1)  # (N, C, H, W) in [0, 1]: probabilities if binarized
    steps_per_epoch = len(images) // recipe.batch_size
    total_steps = recipe.epochs * steps_per_epoch
    warmup_steps = round(recipe.warmup_epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(recipe.seed)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)  # initial weights and dropout
        net = build_network(dataset, info).to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, warmup_steps, "cosine"))
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



# --- command line: (re)build the shipped weights --------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genzoo.train.feature_net",
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
