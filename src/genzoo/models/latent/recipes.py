"""Recipes of the latent-variable family (``genzoo.models.recipes``).

Statically binarized MNIST (50,000 training images; 40,000 when 10,000 are held out for early
stopping): epochs of batch 100 are 500 steps, or 400 with the hold-out. The MNIST subset of
the sample-quality table (9,000 training images): an epoch of batch 128 is 70 steps. The 2-D
arena (50,000 points): an epoch of batch 128 is 390 steps.
"""

from genzoo.models.recipes import ARENA, Recipe, Reference

BINARIZED = ("binarized_mnist",)
PYTHAE = "pythae's reproductions, Chadebec et al. 2022"
THOUSANDS = "trained for thousands of GPU epochs"
MLP_512 = "MLP 784-512-512-(2x32), ReLU, Bernoulli"
MLP_200 = "MLP 784-200-200-(2x50) (Burda et al.'s sizes), k = 50, bf16 training"
GATED_300 = "MLP 784-300-300-(2x40), gated units, KL warm-up over 100 epochs, lr 5e-4, early stopping on 10,000 held-out"
VAE_REFERENCE = Reference(89.78, "nll_nats", PYTHAE, f"VAE, N(0, I) prior; {THOUSANDS}")
IWAE_REFERENCE = Reference(86.82, "nll_nats", PYTHAE, f"IWAE k = 50, N(0, I) prior; {THOUSANDS}")
VAMP_REFERENCE = Reference(85.57, "nll_nats", "Tomczak & Welling 2018, Table 2",
                           "VAE + VampPrior, one stochastic layer, static MNIST; converged on a GPU")
SELECTED = ("--holdout", "10000", "--patience", "50", "--set", "kl_warmup_steps=40000")
GATED = ("--batch-size", "100", "--hidden-dim", "300", "--latent-dim", "40", "--activation", "gated")

RECIPES = [
    # short CPU budgets (minutes on 2 cores)
    Recipe("vae-short", "vae", BINARIZED, 20 * 500, ("--batch-size", "100", "--latent-dim", "32", "--lr-schedule", "cosine"),
           MLP_512, sets=("short",), eval_metrics="nll", eval_draws=1000, reference=VAE_REFERENCE),
    Recipe("iwae-short", "iwae", BINARIZED, 4 * 500,
           ("--batch-size", "100", "--hidden-dim", "200", "--latent-dim", "50", "--set", "k=50", "--precision", "bf16",
            "--lr-schedule", "cosine"),
           MLP_200, sets=("short",), eval_metrics="nll", eval_draws=1000, reference=IWAE_REFERENCE),
    # longer budgets
    Recipe("vae-long", "vae", BINARIZED, 80 * 500, ("--batch-size", "100", "--latent-dim", "32", "--lr-schedule", "cosine"),
           MLP_512, eval_metrics="nll", eval_draws=1000, reference=VAE_REFERENCE),
    Recipe("iwae-long", "iwae", BINARIZED, 45 * 500,
           ("--batch-size", "100", "--hidden-dim", "200", "--latent-dim", "50", "--set", "k=50", "--precision", "bf16",
            "--lr-schedule", "cosine"),
           MLP_200, eval_metrics="nll", eval_draws=1000, reference=IWAE_REFERENCE),
    # K = 100: 1000 draws through the conv decoder take over an hour on one thread (a looser bound)
    Recipe("vae-conv", "vae", BINARIZED, 100 * 500,
           ("--batch-size", "100", "--architecture", "conv", "--channels", "64", "--latent-dim", "32",
            "--precision", "bf16", "--lr-schedule", "cosine"),
           "conv: 4x4 stride-2 convs (64, 128 channels), FC 512, z 32, mirrored decoder; bf16 training",
           eval_metrics="nll", eval_draws=100, eval_minutes=120, reference=VAE_REFERENCE),
    Recipe("iwae-batch20", "iwae", BINARIZED, 36 * 2500,
           ("--batch-size", "20", "--hidden-dim", "200", "--latent-dim", "50", "--set", "k=50", "--lr-schedule", "cosine"),
           "MLP 784-200-200-(2x50), k = 50, batch 20 as in Burda et al.", eval_metrics="nll", eval_draws=1000,
           reference=IWAE_REFERENCE),
    # early stopping on 10,000 held-out training images (Tomczak & Welling's VampPrior set-up:
    # 300-300 hidden units, z 40, lr 5e-4, KL warm-up over 100 epochs, patience 50); ReLU and gated units
    Recipe("vae-selected", "vae", BINARIZED, 1000 * 400,
           ("--batch-size", "100", "--hidden-dim", "300", "--latent-dim", "40", "--lr", "5e-4", *SELECTED),
           GATED_300.replace("gated units", "ReLU"), eval_metrics="nll", eval_draws=1000, reference=VAE_REFERENCE),
    Recipe("vae-gated-selected", "vae", BINARIZED, 1000 * 400, (*GATED, "--lr", "5e-4", *SELECTED),
           GATED_300, eval_metrics="nll", eval_draws=1000, reference=VAE_REFERENCE),
    # the same network in one run: a cosine learning rate instead of a second pass
    Recipe("vae-gated-cosine", "vae", BINARIZED, 300 * 400, (*GATED, "--lr", "5e-4", "--lr-schedule", "cosine", *SELECTED),
           GATED_300 + ", cosine learning rate", eval_metrics="nll", eval_draws=1000, reference=VAE_REFERENCE),
    # from the selected gated VAE: a lower learning rate for the VAE, then the k=50 bound for the IWAE
    Recipe("vae-gated-finetuned", "vae", BINARIZED, 100 * 400,
           (*GATED, "--lr", "1e-4", "--lr-schedule", "cosine", "--holdout", "10000", "--patience", "20"),
           "vae-gated-selected, then lr 1e-4 (cosine), early stopping", init_from="vae-gated-selected",
           eval_metrics="nll", eval_draws=1000, reference=VAE_REFERENCE),
    Recipe("iwae-gated-finetuned", "iwae", BINARIZED, 40 * 400,
           (*GATED, "--set", "k=50", "--lr", "1e-4", "--lr-schedule", "cosine", "--precision", "bf16",
            "--holdout", "10000", "--holdout-iw-samples", "50", "--patience", "10"),
           "vae-gated-finetuned, then the k = 50 bound, bf16, early stopping on the held-out k = 50 bound",
           init_from="vae-gated-finetuned", eval_metrics="nll", eval_draws=1000, reference=IWAE_REFERENCE),
    # vae-gated-cosine and iwae-gated-finetuned with the VampPrior (500 pseudo-inputs) in place of N(0, I)
    Recipe("vae-vamp-cosine", "vae", BINARIZED, 300 * 400,
           (*GATED, "--set", "prior=vamp", "--lr", "5e-4", "--lr-schedule", "cosine", *SELECTED),
           GATED_300 + ", cosine learning rate, VampPrior (500 pseudo-inputs)", sets=("full",), eval_metrics="nll",
           eval_draws=1000, reference=VAMP_REFERENCE),
    Recipe("iwae-vamp-finetuned", "iwae", BINARIZED, 40 * 400,
           (*GATED, "--set", "prior=vamp", "--set", "k=50", "--lr", "1e-4", "--lr-schedule", "cosine",
            "--precision", "bf16", "--holdout", "10000", "--holdout-iw-samples", "50", "--patience", "10"),
           "vae-vamp-cosine, then the k = 50 bound at lr 1e-4, bf16, early stopping", init_from="vae-vamp-cosine",
           eval_metrics="nll", eval_draws=1000, reference=IWAE_REFERENCE),
    # the same with a gentler step: at lr 1e-4 the held-out bound was best after one epoch
    Recipe("iwae-vamp-gentle", "iwae", BINARIZED, 20 * 400,
           (*GATED, "--set", "prior=vamp", "--set", "k=50", "--lr", "3e-5", "--lr-schedule", "cosine",
            "--precision", "bf16", "--holdout", "10000", "--holdout-iw-samples", "50", "--patience", "5"),
           "vae-vamp-cosine, then the k = 50 bound at lr 3e-5, bf16, early stopping", init_from="vae-vamp-cosine",
           sets=("full",), eval_metrics="nll", eval_draws=1000, reference=IWAE_REFERENCE),
    # the gated network trained on the k=50 bound from the start, cosine learning rate (several hours here)
    Recipe("iwae-gated-cosine", "iwae", BINARIZED, 300 * 400,
           (*GATED, "--set", "k=50", "--lr", "5e-4", "--lr-schedule", "cosine", "--precision", "bf16",
            "--holdout", "10000", "--holdout-iw-samples", "50", "--checkpoint-every", "2000", "--patience", "10"),
           "784-300-300-(2x40), gated, the k = 50 bound from the start, cosine, bf16, early stopping",
           eval_metrics="nll", eval_draws=1000, reference=IWAE_REFERENCE),
    # Burda et al.'s network trained until the held-out k=50 bound stops improving (scored every 5 epochs)
    Recipe("iwae-selected", "iwae", BINARIZED, 1000 * 400,
           ("--batch-size", "100", "--hidden-dim", "200", "--latent-dim", "50", "--set", "k=50", "--precision", "bf16",
            "--holdout", "10000", "--holdout-iw-samples", "50", "--checkpoint-every", "2000", "--patience", "10"),
           MLP_200 + ", early stopping on the held-out k = 50 bound", eval_metrics="nll", eval_draws=1000,
           reference=IWAE_REFERENCE),

    # sample quality on the MNIST subset: 10 epochs (9,000 images each) for every family
    Recipe("aae-10ep", "aae", ("mnist",), 10 * 70, ("--architecture", "conv", "--precision", "bf16"),
           "conv encoder/decoder, N(0, I) prior, bf16", sets=("short",), eval_metrics="fd,kid,pr,score"),
    Recipe("vae-conv-10ep", "vae", ("mnist",), 10 * 70, ("--architecture", "conv", "--precision", "bf16"),
           "conv, discretised logistic, bf16", sets=("short",), eval_metrics="fd,kid,pr,score"),
    Recipe("vae-mlp-10ep", "vae", ("mnist",), 10 * 70, ("--precision", "bf16"),
           "MLP, discretised logistic, bf16", sets=("short",), eval_metrics="fd,kid,pr,score"),
    Recipe("cvae-10ep", "cvae", ("mnist",), 10 * 70, ("--architecture", "conv", "--precision", "bf16"),
           "conv, discretised logistic, bf16", sets=("short",), eval_metrics="fd,kid,pr,score"),
    # the VAE at about the DCGAN's CPU minutes (it takes 6x fewer per epoch), with both likelihoods
    Recipe("vae-conv-60ep", "vae", ("mnist",), 60 * 70, ("--architecture", "conv", "--precision", "bf16"),
           "conv, discretised logistic, bf16", sets=("full",), eval_metrics="fd,kid,pr,score"),
    Recipe("vae-conv-60ep-bernoulli", "vae", ("mnist",), 60 * 70,
           ("--architecture", "conv", "--precision", "bf16", "--likelihood", "bernoulli"),
           "conv, Bernoulli on binarised pixels, bf16", sets=("full",), eval_metrics="fd,kid,pr,score"),

    # the 2-D density arena: 5 epochs, cosine learning rate, default networks; 100 importance samples
    # per test point (1000 take about 100 s for the 10,000 points)
    *[Recipe(f"{model}-arena", model, ARENA, 5 * 390, ("--lr-schedule", "cosine"), description, sets=("short",),
             eval_draws=100 if model != "ae" else None)
      for model, description in [("vae", "MLP, unbounded Gaussian decoder"), ("iwae", "MLP, unbounded Gaussian decoder"),
                                 ("ae", "MLP, squared error, codes' Gaussian mixture")]],
]
