"""Sample quality on MNIST (the 10k training subset): every family on one ruler.

Each recipe is a `genzoo train` command line with its budget; after training, `genzoo eval
--metrics fd,kid,pr,score` compares the whole test split with as many samples, in the feature
space of genzoo's MNIST classifier (see genzoo.evaluate.feature_net). Prints a markdown table with the
training minutes on this machine next to each number.

    python benchmarks/sample_quality_mnist.py --recipes dcgan,vae --data-root ../shared/data/mnist
    python benchmarks/sample_quality_mnist.py --group losses   # both GAN losses, with and without instance noise
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

from genzoo.cli import main as genzoo

EPOCHS = "10"  # 10 x 9,000 images for every recipe: a similar CPU budget (minutes in the table)
# name -> `genzoo train` arguments (the data arguments are added below)
RECIPES: dict[str, list[str]] = {
    "dcgan": ["dcgan", "--epochs", EPOCHS, "--precision", "bf16"],
    "wgan-gp": ["wgan-gp", "--epochs", EPOCHS, "--precision", "bf16"],
    "cgan": ["cgan", "--epochs", EPOCHS, "--precision", "bf16"],
    "aae": ["aae", "--epochs", EPOCHS, "--architecture", "conv", "--precision", "bf16"],
    "vae": ["vae", "--epochs", EPOCHS, "--architecture", "conv", "--precision", "bf16"],
    "vae-mlp": ["vae", "--epochs", EPOCHS, "--precision", "bf16"],
    "cvae": ["cvae", "--epochs", EPOCHS, "--architecture", "conv", "--precision", "bf16"],
    # the VAE at about the DCGAN's CPU minutes (it takes 6x fewer per epoch), with both likelihoods
    "vae-60ep": ["vae", "--epochs", "60", "--architecture", "conv", "--precision", "bf16"],
    "vae-60ep-bernoulli": ["vae", "--epochs", "60", "--architecture", "conv", "--precision", "bf16",
                           "--likelihood", "bernoulli"],
    # the two generator losses, with and without instance noise, on the same DCGAN
    "dcgan-minimax": ["dcgan", "--epochs", EPOCHS, "--precision", "bf16", "--set", "loss=minimax"],
    "dcgan-minimax-noise": ["dcgan", "--epochs", EPOCHS, "--precision", "bf16", "--set", "loss=minimax",
                            "--set", "instance_noise=0.1"],
    "dcgan-non-saturating": ["dcgan", "--epochs", EPOCHS, "--precision", "bf16", "--set", "loss=non_saturating"],
    "dcgan-non-saturating-noise": ["dcgan", "--epochs", EPOCHS, "--precision", "bf16", "--set", "loss=non_saturating",
                                   "--set", "instance_noise=0.1"],
}
GROUPS = {
    "families": "dcgan,wgan-gp,cgan,aae,vae,vae-mlp,cvae,vae-60ep,vae-60ep-bernoulli",
    "losses": "dcgan-minimax,dcgan-minimax-noise,dcgan-non-saturating,dcgan-non-saturating-noise",
}
KEYS = ("fd", "kid", "kid_std", "precision", "recall", "classifier_score", "conditional_accuracy")


def run_recipe(name: str, data_root: str, out_dir: Path) -> dict:
    run_dir = out_dir / name
    args = ["train", *RECIPES[name], "--data", "mnist", "--data-root", data_root, "--out", str(run_dir),
            "--eval-metrics", ""]
    if not (run_dir / "metrics.json").exists() and genzoo(args) != 0:
        raise SystemExit(f"recipe {name} failed to train")
    train_seconds = json.loads((run_dir / "metrics.json").read_text())["train_seconds"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = genzoo(["eval", str(run_dir), "--split", "test", "--metrics", "fd,kid,pr,score", "--json"])
    if code != 0:
        raise SystemExit(f"recipe {name} failed to evaluate")
    metrics = json.loads(stdout.getvalue())
    return {"recipe": name, "command": "genzoo " + " ".join(args[1:len(RECIPES[name]) + 1]),
            "minutes": train_seconds / 60, **{k: metrics.get(k) for k in KEYS},
            **{k: metrics[k] for k in ("num_samples", "num_real", "split_source", "feature_net")}}


def cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", help=f"comma-separated, from {', '.join(RECIPES)}")
    parser.add_argument("--group", choices=GROUPS, default="families", help="a named set of recipes")
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared/data/mnist"))
    parser.add_argument("--out-dir", default="runs/bench-sample-quality")
    args = parser.parse_args()
    names = (args.recipes or GROUPS[args.group]).split(",")
    rows = [run_recipe(name, args.data_root, Path(args.out_dir)) for name in names]
    print("| recipe | FD | KID | precision | recall | classifier score | conditional accuracy | train minutes | command |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kid = None if r["kid"] is None else f"{r['kid']:.1f} ± {r['kid_std']:.1f}"
        print(f"| {r['recipe']} | {cell(r['fd'], '.2f')} | {kid or '-'} | {cell(r['precision'], '.3f')} | "
              f"{cell(r['recall'], '.3f')} | {cell(r['classifier_score'], '.2f')} | "
              f"{cell(r['conditional_accuracy'], '.3f')} | {r['minutes']:.1f} | `{r['command']}` |")
    r = rows[0]
    print(f"\n{r['num_samples']:,} samples against {r['num_real']:,} test images ({r['split_source']}); "
          f"features: {r['feature_net']}")


if __name__ == "__main__":
    main()
