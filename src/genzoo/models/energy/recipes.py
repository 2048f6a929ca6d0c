"""Recipes of the energy family (``genzoo.models.recipes``).

Binarized MNIST has 50,000 training images: an epoch is 500 steps of batch 100. For H = 25, 60 epochs
of persistent CD-1 at Adam 3e-3 reached 134.81 nats (exact), CD-1 at 1e-2 153.42, both with cosine decay
(version 1 of ``rbm-25-exact``, CD-1 for 20 epochs: 154.26).
"""

from genzoo.models.recipes import Recipe, Reference

SALAKHUTDINOV_MURRAY = "Salakhutdinov & Murray 2008, Table 2: RBM on binarized MNIST, test log-likelihood"

RECIPES = [
    Recipe("rbm-25-exact", "rbm", ("binarized_mnist",), 60 * 500,
           ("--set", "hidden_dim=25", "--set", "training=pcd", "--lr", "3e-3", "--lr-schedule", "cosine"),
           "H = 25, persistent CD-1 (100 chains), Adam 3e-3 with cosine decay; log Z enumerated (2^25 states)",
           version=2, sets=("short",), eval_metrics="nll",
           reference=Reference(143.2, "nll_nats", SALAKHUTDINOV_MURRAY, "25 hidden, CD-1, exact")),
]
