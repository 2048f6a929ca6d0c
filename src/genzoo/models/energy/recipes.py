"""Recipes of the energy family (``genzoo.models.recipes``).

Binarized MNIST has 50,000 training images: an epoch is 500 steps of batch 100.
"""

from genzoo.models.recipes import Recipe, Reference

SALAKHUTDINOV_MURRAY = "Salakhutdinov & Murray 2008, Table 2: RBM on binarized MNIST, test log-likelihood"

RECIPES = [
    Recipe("rbm-25-exact", "rbm", ("binarized_mnist",), 20 * 500,
           ("--set", "hidden_dim=25", "--set", "training=cd", "--lr", "1e-2", "--lr-schedule", "cosine"),
           "H = 25, CD-1, Adam 1e-2 with cosine decay; log Z enumerated (2^25 states)", sets=("short",),
           eval_metrics="nll,fd,kid,pr,score",
           reference=Reference(143.2, "nll_nats", SALAKHUTDINOV_MURRAY, "25 hidden, CD-1, exact")),
]
