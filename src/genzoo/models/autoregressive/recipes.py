"""Recipes of the autoregressive family (``genzoo.models.recipes``).

Statically binarized MNIST has 50,000 training images: an epoch is 500 steps of batch 100, 781
of batch 64, 2,500 of batch 20. The 2-D arena has 50,000 points: 390 steps of batch 128.
"""

from genzoo.models.recipes import ARENA, Recipe, Reference

BINARIZED = ("binarized_mnist",)
CONVERGED = "converged: hundreds of GPU epochs"
CONV_SHORT = ("--batch-size", "64", "--precision", "bf16", "--lr-schedule", "cosine")  # the conv and recurrent models

# short CPU recipes (one thread each, about 20-60 minutes)
RECIPES = [
    Recipe("nade-short", "nade", BINARIZED, 7 * 2500, ("--batch-size", "20", "--lr-schedule", "cosine"),
           "H = 500, raster order (785k parameters)", sets=("short",), eval_metrics="nll",
           reference=Reference(88.33, "nll_nats", "Larochelle & Murray 2011, Table 2", CONVERGED)),
    Recipe("made-short", "made", BINARIZED, 20 * 500,
           ("--batch-size", "100", "--hidden-dims", "1000", "--set", "direct=true"),
           "one hidden layer of 1000, direct connections, 1 ordering (2.2M parameters)", sets=("short",), eval_metrics="nll",
           reference=Reference(86.64, "nll_nats", "Germain et al. 2015, Table 6", "32 masks; " + CONVERGED)),
    Recipe("pixelcnn-short", "pixelcnn", BINARIZED, 6 * 781, CONV_SHORT,
           "7x7 mask A, 8 residual blocks, 2h = 64 (115k parameters), bf16", sets=("short",), eval_metrics="nll",
           reference=Reference(81.30, "nll_nats", "van den Oord et al. 2016a, Table 4", CONVERGED)),
    Recipe("gated-pixelcnn-short", "gated-pixelcnn", BINARIZED, 3 * 781, CONV_SHORT,
           "8 gated layers, h = 32, skips (169k parameters), bf16", sets=("short",), eval_metrics="nll",
           reference=Reference(81.50, "nll_nats", "pytorch-generative", "dynamic binarisation; " + CONVERGED)),
    Recipe("pixelrnn-short", "pixelrnn", BINARIZED, 1 * 781, (*CONV_SHORT, "--set", "layer=diagonal_bilstm"),
           "Diagonal BiLSTM, 4 layers, h = 16 (38k parameters), bf16", sets=("short",), eval_metrics="nll",
           reference=Reference(79.20, "nll_nats", "van den Oord et al. 2016a, Table 4", "7 layers; " + CONVERGED)),
    # the 2-D arena: 5 epochs, cosine learning rate, default networks (a Gaussian mixture per dimension)
    Recipe("made-arena", "made", ARENA, 5 * 390, ("--lr-schedule", "cosine"), "masked MLP, RNADE-style mixtures",
           sets=("short",)),
    Recipe("nade-arena", "nade", ARENA, 5 * 2500, ("--lr-schedule", "cosine"), "H = 500, RNADE-style mixtures",
           sets=("short",)),
]
