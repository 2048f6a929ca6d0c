"""Statically binarized MNIST: train recipes of the likelihood models and report test NLL in nats.

Each recipe is a `genzoo train` command line; after training, `genzoo eval` computes the test
NLL on the whole test split: exactly for the autoregressive models, and for the VAE family as an
importance-sampled estimate with K=1000 samples beside the negative ELBO. Prints a markdown
table with each recipe's budget (epochs, wall-clock minutes on this machine).

    python benchmarks/likelihood_binarized_mnist.py --recipes vae-short,vae-long --data-root ../shared/data/binarized_mnist
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

from genzoo.checkpoint import TRAIN_STATE_FILE
from genzoo.cli import main as genzoo

# name -> `genzoo train` arguments (the data arguments are added below)
RECIPES: dict[str, list[str]] = {
    # ~10 CPU-minutes on 2 cores
    "vae-short": ["vae", "--epochs", "20", "--batch-size", "100", "--latent-dim", "32", "--lr-schedule", "cosine"],
    "iwae-short": ["iwae", "--epochs", "4", "--batch-size", "100", "--hidden-dim", "200", "--latent-dim", "50",
                   "--set", "k=50", "--precision", "bf16", "--lr-schedule", "cosine"],
    # the autoregressive family: short CPU recipes (one thread each, about 20-30 minutes)
    "pixelcnn-short": ["pixelcnn", "--epochs", "6", "--batch-size", "64", "--precision", "bf16", "--lr-schedule", "cosine"],
    "gated-pixelcnn-short": ["gated-pixelcnn", "--epochs", "3", "--batch-size", "64", "--precision", "bf16",
                             "--lr-schedule", "cosine"],
    "pixelrnn-short": ["pixelrnn", "--epochs", "1", "--batch-size", "64", "--precision", "bf16", "--lr-schedule", "cosine",
                       "--set", "layer=diagonal_bilstm"],
    "nade-short": ["nade", "--epochs", "7", "--batch-size", "20", "--lr-schedule", "cosine"],
    "made-short": ["made", "--epochs", "20", "--batch-size", "100", "--hidden-dims", "1000", "--set", "direct=true"],
    # longer budgets
    "vae-long": ["vae", "--epochs", "80", "--batch-size", "100", "--latent-dim", "32", "--lr-schedule", "cosine"],
    "iwae-long": ["iwae", "--epochs", "45", "--batch-size", "100", "--hidden-dim", "200", "--latent-dim", "50",
                  "--set", "k=50", "--precision", "bf16", "--lr-schedule", "cosine"],
    # about 100 minutes each, one thread beside the other
    "vae-conv": ["vae", "--epochs", "100", "--batch-size", "100", "--architecture", "conv", "--channels", "64",
                 "--latent-dim", "32", "--precision", "bf16", "--lr-schedule", "cosine"],
    "iwae-batch20": ["iwae", "--epochs", "36", "--batch-size", "20", "--hidden-dim", "200", "--latent-dim", "50",
                     "--set", "k=50", "--lr-schedule", "cosine"],
    # early stopping on 10,000 held-out training images (Tomczak & Welling's VampPrior set-up: 300-300
    # hidden units, z 40, lr 5e-4, KL warm-up over 100 epochs, patience 50), ReLU and gated units
    "vae-selected": ["vae", "--epochs", "1000", "--batch-size", "100", "--hidden-dim", "300", "--latent-dim", "40",
                     "--lr", "5e-4", "--set", "kl_warmup_steps=40000", "--holdout", "10000", "--patience", "50"],
    "vae-gated-selected": ["vae", "--epochs", "1000", "--batch-size", "100", "--hidden-dim", "300", "--latent-dim", "40",
                           "--activation", "gated", "--lr", "5e-4", "--set", "kl_warmup_steps=40000",
                           "--holdout", "10000", "--patience", "50"],
    # the same network in one run: a cosine learning rate instead of a second pass
    "vae-gated-cosine": ["vae", "--epochs", "300", "--batch-size", "100", "--hidden-dim", "300", "--latent-dim", "40",
                         "--activation", "gated", "--lr", "5e-4", "--lr-schedule", "cosine",
                         "--set", "kl_warmup_steps=40000", "--holdout", "10000", "--patience", "50"],
    # from the selected gated VAE ("{runs}": --out-dir, so run vae-gated-selected first): a lower
    # learning rate for the VAE, then the k=50 bound for the IWAE, both still early-stopped
    "vae-gated-finetuned": ["vae", "--init-from", "{runs}/vae-gated-selected", "--epochs", "100", "--batch-size", "100",
                            "--hidden-dim", "300", "--latent-dim", "40", "--activation", "gated", "--lr", "1e-4",
                            "--lr-schedule", "cosine", "--holdout", "10000", "--patience", "20"],
    "iwae-gated-finetuned": ["iwae", "--init-from", "{runs}/vae-gated-finetuned", "--epochs", "40", "--batch-size", "100",
                             "--hidden-dim", "300", "--latent-dim", "40", "--activation", "gated", "--set", "k=50",
                             "--lr", "1e-4", "--lr-schedule", "cosine", "--precision", "bf16", "--holdout", "10000",
                             "--holdout-iw-samples", "50", "--patience", "10"],
    # vae-gated-cosine and iwae-gated-finetuned with the VampPrior (500 pseudo-inputs) in place of N(0, I)
    "vae-vamp-cosine": ["vae", "--epochs", "300", "--batch-size", "100", "--hidden-dim", "300", "--latent-dim", "40",
                        "--activation", "gated", "--set", "prior=vamp", "--lr", "5e-4", "--lr-schedule", "cosine",
                        "--set", "kl_warmup_steps=40000", "--holdout", "10000", "--patience", "50"],
    "iwae-vamp-finetuned": ["iwae", "--init-from", "{runs}/vae-vamp-cosine", "--epochs", "40", "--batch-size", "100",
                            "--hidden-dim", "300", "--latent-dim", "40", "--activation", "gated", "--set", "prior=vamp",
                            "--set", "k=50", "--lr", "1e-4", "--lr-schedule", "cosine", "--precision", "bf16",
                            "--holdout", "10000", "--holdout-iw-samples", "50", "--patience", "10"],
    # the same with a gentler step: at lr 1e-4 the held-out bound was best after one epoch
    "iwae-vamp-gentle": ["iwae", "--init-from", "{runs}/vae-vamp-cosine", "--epochs", "20", "--batch-size", "100",
                         "--hidden-dim", "300", "--latent-dim", "40", "--activation", "gated", "--set", "prior=vamp",
                         "--set", "k=50", "--lr", "3e-5", "--lr-schedule", "cosine", "--precision", "bf16",
                         "--holdout", "10000", "--holdout-iw-samples", "50", "--patience", "5"],
    # the gated network trained on the k=50 bound from the start, cosine learning rate (several hours here)
    "iwae-gated-cosine": ["iwae", "--epochs", "300", "--batch-size", "100", "--hidden-dim", "300", "--latent-dim", "40",
                          "--activation", "gated", "--set", "k=50", "--lr", "5e-4", "--lr-schedule", "cosine",
                          "--precision", "bf16", "--holdout", "10000", "--holdout-iw-samples", "50",
                          "--checkpoint-every", "2000", "--patience", "10"],
    # Burda et al.'s network trained until the held-out k=50 bound stops improving (scored every 5 epochs)
    "iwae-selected": ["iwae", "--epochs", "1000", "--batch-size", "100", "--hidden-dim", "200", "--latent-dim", "50",
                      "--set", "k=50", "--precision", "bf16", "--holdout", "10000", "--holdout-iw-samples", "50",
                      "--checkpoint-every", "2000", "--patience", "10"],
}


def run_recipe(name: str, data_root: str, out_dir: Path, iw_samples: int) -> dict:
    run_dir = out_dir / name
    recipe = [arg.replace("{runs}", str(out_dir)) for arg in RECIPES[name]]
    # the NLL comes from `genzoo eval` below; sample quality is benchmarks/sample_quality_mnist.py's
    no_evaluation = ["--eval-iw-samples", "0", "--eval-metrics", ""]
    args = ["train", *recipe, "--data", "binarized_mnist", "--data-root", data_root, "--out", str(run_dir),
            *no_evaluation]
    if (run_dir / "metrics.json").exists():
        print(f"{name}: already trained in {run_dir}; evaluating it again")
    elif (run_dir / TRAIN_STATE_FILE).exists():  # a long recipe stopped part-way: continue it
        print(f"{name}: resuming the run in {run_dir}")
        if genzoo(["train", recipe[0], "--out", str(run_dir), "--resume", *no_evaluation]) != 0:
            raise SystemExit(f"recipe {name} failed to resume")
    elif genzoo(args) != 0:
        raise SystemExit(f"recipe {name} failed to train")
    trained = json.loads((run_dir / "metrics.json").read_text())
    selection = trained.get("selection")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = genzoo(["eval", str(run_dir), "--split", "test", "--draws", str(iw_samples), "--metrics", "nll", "--json"])
    if code != 0:
        raise SystemExit(f"recipe {name} failed to evaluate")
    metrics = json.loads(stdout.getvalue())
    return {"recipe": name, "command": "genzoo " + " ".join(args[:len(recipe) + 1]),
            "minutes": trained["train_seconds"] / 60, "epochs": trained["train_epochs"],
            "selected_epoch": None if selection is None else selection["best_epoch"],
            "neg_elbo_nats": metrics.get("neg_elbo_nats"),  # only the latent models report an ELBO
            **{k: metrics[k] for k in ("nll_nats", "bits_per_dim", "num_examples", "split_source")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", default="vae-short,iwae-short", help=f"comma-separated, from {', '.join(RECIPES)}")
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[2] / "shared/data/binarized_mnist"))
    parser.add_argument("--out-dir", default="runs/bench-likelihood")
    parser.add_argument("--iw-samples", type=int, default=1000)
    args = parser.parse_args()
    rows = [run_recipe(name, args.data_root, Path(args.out_dir), args.iw_samples) for name in args.recipes.split(",")]
    print("| recipe | -ELBO (nats) | NLL (nats; latent models: IS, K=%d) | bits/dim | epochs (selected) "
          "| train minutes | command |" % args.iw_samples)
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        neg_elbo = "exact NLL" if r["neg_elbo_nats"] is None else f"{r['neg_elbo_nats']:.2f}"
        selected = "" if r["selected_epoch"] is None else f" ({r['selected_epoch']:.0f})"
        print(f"| {r['recipe']} | {neg_elbo} | {r['nll_nats']:.2f} | {r['bits_per_dim']:.4f} | "
              f"{r['epochs']:.0f}{selected} | {r['minutes']:.1f} | `{r['command']}` |")
    print(f"\ntest split: {rows[0]['num_examples']:,} examples ({rows[0]['split_source']})")


if __name__ == "__main__":
    main()
