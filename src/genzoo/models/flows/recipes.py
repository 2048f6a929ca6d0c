"""Recipes of the flow family (``genzoo.models.recipes``).

The MNIST subset (``mnist``) trains on 9,000 images (1,000 of the 10k file are held out as its test
split): an epoch is 140 steps of batch 64. Binarized MNIST has 50,000: 781 steps of batch 64. The
2-D arena has 50,000 points: 390 steps of batch 128. The published image numbers were trained on the
full 60k training set for GPU-days; the recipes here are CPU budgets of under an hour, one thread.
"""

from genzoo.models.recipes import ARENA, Recipe, Reference

MNIST = ("mnist",)
BINARIZED = ("binarized_mnist",)
IMAGE_SHORT = ("--batch-size", "64", "--lr-schedule", "cosine", "--warmup-steps", "200", "--grad-clip", "100")
ARENA_SHORT = ("--lr-schedule", "cosine")
FULL_MNIST = "full 60k training set, converged on GPUs"

TABLE = "Chen et al. 2019 (Residual Flows), Table 2"

RECIPES = [
    # 8-bit MNIST, uniform dequantisation: a bound on the discrete NLL in bits/dim
    Recipe("glow-mnist-short", "glow", MNIST, 30 * 140, (*IMAGE_SHORT, "--steps", "8", "--hidden", "128"),
           "L = 2 levels of K = 8 steps, 128 channels (607k parameters)", sets=("short",), max_minutes=75,
           eval_metrics="nll", reference=Reference(1.05, "bits_per_dim", "Kingma & Dhariwal 2018, Table 2", FULL_MNIST)),
    Recipe("realnvp-mnist-short", "realnvp", MNIST, 30 * 140, (*IMAGE_SHORT, "--hidden", "64"),
           "2 levels, 3+3 / 4 couplings, 64 channels (124k parameters)", sets=("short",), max_minutes=75,
           eval_metrics="nll", reference=Reference(1.06, "bits_per_dim", TABLE, FULL_MNIST)),
    Recipe("nice-mnist-short", "nice", MNIST, 15 * 140, IMAGE_SHORT,
           "4 additive couplings, MLPs 5 x 1000, scaling (the paper's; 22M parameters)", sets=("short",),
           max_minutes=60, eval_metrics="nll", reference=Reference(4.36, "bits_per_dim", TABLE, FULL_MNIST)),
    Recipe("maf-mnist-short", "maf", MNIST, 15 * 140, (*IMAGE_SHORT, "--hidden", "128"),
           "5 MADE layers 2 x 128, actnorm, orders reversed (1.6M parameters)", version=2, sets=("short",),
           max_minutes=60,
           eval_metrics="nll", reference=Reference(1.89, "bits_per_dim", TABLE, FULL_MNIST)),
    Recipe("nsf-mnist-short", "nsf", MNIST, 20 * 140,
           (*IMAGE_SHORT, "--steps", "4", "--hidden", "32", "--blocks", "1", "--bins", "4"),
           "L = 2 levels of K = 4 spline-coupling steps (4 bins), 32 channels", sets=("short",), max_minutes=60,
           eval_metrics="nll"),
    # binarized MNIST, dequantised: bounds in nats beside the VAE and autoregressive rows
    Recipe("glow-binarized-short", "glow", BINARIZED, 2 * 781,
           (*IMAGE_SHORT, "--steps", "4", "--hidden", "64", "--set", "dequantization=variational"),
           "variational dequantisation (4 couplings); L = 2, K = 4, 64 channels", sets=("short",), max_minutes=45,
           eval_metrics="nll"),
    Recipe("glow-binarized-uniform-short", "glow", BINARIZED, 2 * 781,
           (*IMAGE_SHORT, "--steps", "4", "--hidden", "64"),
           "uniform dequantisation; L = 2, K = 4, 64 channels", sets=("short",), max_minutes=45, eval_metrics="nll"),
    # the 8x8 digits at the dataset's default 100 epochs, unconditional and class-conditional (scored by the
    # conditional accuracy of their samples: the label's one-hot enters every conditioner and learned prior)
    Recipe("glow-digits", "glow", ("digits",), None, ("--hidden", "64"), "L = 2, K = 8, 64 channels", sets=("short",)),
    Recipe("glow-cond-digits", "glow", ("digits",), None, ("--hidden", "64", "--set", "class_conditional=true"),
           "class-conditional; L = 2, K = 8, 64 channels", sets=("short",)),
    Recipe("realnvp-digits", "realnvp", ("digits",), None, (), "2 levels, 64 channels", sets=("short",)),
    Recipe("realnvp-cond-digits", "realnvp", ("digits",), None, ("--set", "class_conditional=true"),
           "class-conditional; 2 levels, 64 channels", sets=("short",)),
    # the 2-D arena: 10 epochs, cosine learning rate
    Recipe("nice-arena", "nice", ARENA, 10 * 390, (*ARENA_SHORT, "--hidden", "64", "--layers", "2", "--couplings", "8"),
           "8 additive couplings, MLPs 2 x 64, scaling", sets=("short",)),
    Recipe("realnvp-arena", "realnvp", ARENA, 10 * 390, (*ARENA_SHORT, "--hidden", "64"),
           "8 affine couplings, MLPs 2 x 64", sets=("short",)),
    Recipe("glow-arena", "glow", ARENA, 10 * 390, (*ARENA_SHORT, "--hidden", "64", "--blocks", "2"),
           "8 steps: actnorm, 2x2 LU linear, affine coupling, MLPs 2 x 64", sets=("short",)),
    Recipe("maf-arena", "maf", ARENA, 10 * 390, (*ARENA_SHORT, "--hidden", "64"),
           "5 MADE affine layers 2 x 64, actnorm, orders reversed", sets=("short",)),
    Recipe("nsf-arena", "nsf", ARENA, 10 * 390, (*ARENA_SHORT, "--steps", "6"),
           "6 steps: actnorm, LU linear, spline coupling (8 bins, B = 3), MLPs 2 x 64", sets=("short",)),
]
