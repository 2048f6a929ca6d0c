"""Recipes of the energy family (``genzoo.models.recipes``).

Binarized MNIST has 50,000 training images: an epoch is 500 steps of batch 100. For H = 25, 60 epochs
of persistent CD-1 at Adam 3e-3 reached 134.81 nats (exact), CD-1 at 1e-2 153.42, both with cosine decay
(version 1 of ``rbm-25-exact``, CD-1 for 20 epochs: 154.26). For H = 500, 100 epochs of persistent CD-1 at
Adam 1e-3 with cosine decay took 14.6 minutes on one thread and reached 89.24 nats by AIS.

The deep EBM on MNIST (9,000 training images after the validation tenth, 141 steps of batch 64 an epoch)
trains at the image defaults, short-run chains: the budget, 2,600 steps (18.6 epochs), is what a 55-minute
cap on one thread reached beside other jobs. The noise-conditional energy (``ebm-mnist-dsm``) trains by denoising
score matching, 2.3-3.4 s a step of 64 at width 24 on one thread (double back-propagation through a U-Net), as
machines vary: 950 steps filled the 59-minute cap on the slower. At sigma_max = 1, width 24 for 950 steps drew
better samples than width 16 for 1,650 (FD 296 against 685 on 250 validation samples); at sigma_max = 10 it
reached FD 259 on the protocol's 1,000 samples from annealed Langevin (version 1), its loss still falling.
Version 2 is the same training sampled ancestrally, one step a level (FD 211 against 259 on the protocol).
Version 3 trains 1,400 steps, 53 minutes on one thread beside another job on a faster machine (2.3 s a step):
FD 158. Version 4 is version 3's training sampled by
predictor-corrector (one Langevin corrector step a level, twice the gradients): FD 133.5 on the protocol, and
133.1 against ancestral's 175.7 on 250 validation images. Version 5 spends the same hour on 2,500 steps of batch
32 (1.3 s a step against 2.3 for 64: 25 examples a second against 28, 80,000 examples against 90,000, 1.8x the
updates): FD 118.6 on the protocol, and 113.3 against version 4's 133.1 on the 250 validation images. On the
arena, the vector defaults.
"""

from genzoo.models.recipes import ARENA, Recipe, Reference

NOISE_CONDITIONAL = ("--set", "objective=dsm", "--set", "noise_levels=150", "--set", "sigma=0.01", "--set", "sigma_max=10",
                     "--lr", "5e-4", "--betas", "0.9,0.999", "--lr-schedule", "cosine", "--warmup-steps", "100",
                     "--ema-decay", "0.999", "--grad-clip", "1")
SALAKHUTDINOV_MURRAY = "Salakhutdinov & Murray 2008, Table 2: RBM on binarized MNIST, test log-likelihood"

RECIPES = [
    Recipe("rbm-25-exact", "rbm", ("binarized_mnist",), 60 * 500,
           ("--set", "hidden_dim=25", "--set", "training=pcd", "--lr", "3e-3", "--lr-schedule", "cosine"),
           "H = 25, persistent CD-1 (100 chains), Adam 3e-3 with cosine decay; log Z enumerated (2^25 states)",
           version=2, sets=("short",), eval_metrics="nll",
           reference=Reference(143.2, "nll_nats", SALAKHUTDINOV_MURRAY, "25 hidden, CD-1, exact")),
    Recipe("rbm-500-pcd", "rbm", ("binarized_mnist",), 100 * 500,
           ("--set", "hidden_dim=500", "--set", "training=pcd", "--lr", "1e-3", "--lr-schedule", "cosine"),
           "H = 500, persistent CD-1 (100 chains), Adam 1e-3 with cosine decay; log Z by AIS (14,500 temperatures, "
           "100 runs), RAISE beside it on 1,000 test images",
           sets=("short",), eval_metrics="nll",
           reference=Reference(86.34, "nll_nats", SALAKHUTDINOV_MURRAY, "500 hidden, CD-25, AIS")),
    Recipe("ebm-mnist", "ebm", ("mnist",), 2600, ("--set", "buffer_size=0", "--lr", "3e-4", "--checkpoint-every", "250"),
           "conv energy 16-32-64 (SiLU), short-run chains of 40 Langevin steps from noise (step 10, noise 0.005, "
           "clamp 0.01), energy penalty 1, Adam 3e-4 with betas (0, 0.999), batch 64; samples: 200 steps",
           sets=("short",), max_minutes=60, eval_metrics="fd,kid,pr,score"),
    Recipe("ebm-mnist-dsm", "ebm", ("mnist",), 2500,
           (*NOISE_CONDITIONAL, "--set", "channels=24", "--batch-size", "32", "--checkpoint-every", "250"),
           "noise-conditional energy on a U-Net 24-48-48 (1 block/level, 0.64M), denoising score matching over sigma "
           "in [0.01, 10], Adam 5e-4 with cosine decay, EMA 0.999, batch 32; samples: predictor-corrector over the "
           "150 levels (an ancestral step after one Langevin corrector step at r = 0.16), the last step Tweedie's",
           version=5,
           sets=("short",), max_minutes=59, eval_metrics="fd,kid,pr,score"),
    Recipe("ebm-arena", "ebm", ARENA, None, (),
           "MLP 3 x 128 (SiLU); persistent chains of exact Langevin (20 steps of 0.01, buffer 10,000), energy "
           "penalty 0.1, Adam 1e-3; density normalised on a 512 x 512 grid", sets=("short",)),
]
