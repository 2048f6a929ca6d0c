"""Recipes of the diffusion family (``genzoo.models.recipes``).

The MNIST subset (``mnist``) trains on 9,000 images: an epoch is 140 steps of batch 64; binarized MNIST
has 50,000 (781 steps of batch 64); the 2-D arena 50,000 points (390 steps of batch 128). The image
recipes are CPU budgets of about an hour on one idle thread (1.8 s per step of 64; the time caps of
120 minutes leave room for a shared machine): U-Nets of ~1.2M parameters (base width 32,
widths 32-64-64 at 28-14-7, one residual block per level, attention in the middle at 7x7) trained for
about 13 epochs, where the papers train 35.7M parameters for 800k steps on GPUs.

The unconditional MNIST recipe is trained by the hybrid loss with a learned variance (Nichol &
Dhariwal): L_simple trains the mean (the samples), L_vlb the variance (the bound), so one run gives
both the sample-metric rows and the bits/dim row. Of its bound's 927 nats (32 test images), the decoder
-log p(x_0 | x_1) takes 406: the cosine schedule's first step, sigma_1 = 0.0064, is wider than the half bin 1/255,
so an exact mean still leaves a background pixel 0.73 of its bin. ``ddpm-mnist-bound`` moves that step inside the
bin (s = 0.001): its decoder takes 135 nats on the same images, but its KL terms rise from 521 to 715 (the mean is
trained by L_simple, which weighs small t far less than the bound does), 850 in all; 1.70 bits/dim on the test split.
``ddpm-mnist-vlb`` trains the mean on the bound too, with t importance-sampled where the bound's terms are: 677 ± 18
nats, 1.25 bits/dim (32 draws), at the price of blotchier samples; ``ddpm-mnist-vlb-finetuned`` continues it for as
many steps again at lr 2e-4: 633 ± 17 nats, 1.165 bits/dim.
"""

from genzoo.models.recipes import ARENA, Recipe

UNET_SMALL = ("--blocks", "1", "--set", "attention_resolutions=0")
IMAGE_SCHEDULE = ("--batch-size", "64", "--lr-schedule", "cosine", "--warmup-steps", "100")
IMAGE_SHORT = (*IMAGE_SCHEDULE, "--lr", "5e-4")
HYBRID = ("--set", "loss=hybrid", "--set", "variance=learned")
# the mean and the variance trained on the bound, t importance-sampled where its terms are, a first step inside the bin
VLB = (*UNET_SMALL, "--set", "loss=vlb", "--set", "variance=learned", "--set", "cosine_offset=0.001",
       "--set", "timestep_sampling=importance")

RECIPES = [
    Recipe("ddpm-mnist-short", "ddpm", ("mnist",), 13 * 140, (*IMAGE_SHORT, *UNET_SMALL, *HYBRID),
           "U-Net 32-64-64, 1 block/level (1.2M), v-prediction, hybrid loss, learned variance", sets=("short",),
           max_minutes=120, eval_draws=8),
    Recipe("ddpm-mnist-bound", "ddpm", ("mnist",), 13 * 140,
           (*IMAGE_SHORT, *UNET_SMALL, *HYBRID, "--set", "cosine_offset=0.001"),
           "as ddpm-mnist-short with the cosine schedule's s = 0.001: a first step inside the 8-bit bin "
           "(sigma_1 = 0.0027 against 0.0064)", sets=("short",), max_minutes=120, eval_metrics="nll", eval_draws=8),
    Recipe("ddpm-mnist-vlb", "ddpm", ("mnist",), 13 * 140, (*IMAGE_SHORT, *VLB),
           "as ddpm-mnist-bound trained on the bound itself (L_vlb: mean and variance), t drawn from the bound's "
           "proposal and reweighted", sets=("short",), max_minutes=120, eval_metrics="nll", eval_draws=32),
    Recipe("ddpm-mnist-vlb-finetuned", "ddpm", ("mnist",), 13 * 140,
           (*IMAGE_SCHEDULE, *VLB, "--lr", "2e-4"),
           "ddpm-mnist-vlb, then as many steps again on the bound at lr 2e-4 (cosine)", init_from="ddpm-mnist-vlb",
           sets=("full",), max_minutes=120, eval_metrics="nll", eval_draws=32),
    Recipe("ddpm-cond-mnist-short", "ddpm", ("mnist",), 13 * 140,
           (*IMAGE_SHORT, *UNET_SMALL, "--set", "class_conditional=true"),
           "class-conditional, labels dropped 10% (guidance); U-Net as ddpm-mnist-short, L_simple",
           sets=("short",), max_minutes=120, eval_metrics="fd,kid,pr,score"),
    Recipe("ddpm-binarized-short", "ddpm", ("binarized_mnist",), 781, (*IMAGE_SHORT, *UNET_SMALL, *HYBRID),
           "2-level decoder (a probit Bernoulli); U-Net as ddpm-mnist-short, hybrid loss, one epoch",
           sets=("short",), max_minutes=60, eval_metrics="nll", eval_draws=8, eval_minutes=15),
    Recipe("d3pm-binarized-short", "d3pm", ("binarized_mnist",), 3 * 781, (*IMAGE_SHORT, *UNET_SMALL),
           "uniform D3PM on the 2 states, T = 1000, hybrid loss (lambda 0.01); U-Net as ddpm-mnist-short, three epochs",
           sets=("short",), max_minutes=120, eval_metrics="nll", eval_draws=4, eval_minutes=30),
    Recipe("ddpm-digits", "ddpm", ("digits",), None,
           ("--lr", "1e-3", "--set", "channel_mult=1,2", "--set", "attention_resolutions=4", *HYBRID),
           "U-Net 32-64 at 8-4, hybrid loss, learned variance", sets=("short",)),
    Recipe("ddpm-arena", "ddpm", ARENA, 20 * 390, ("--lr", "1e-3", "--lr-schedule", "cosine", *HYBRID),
           "MLP 3 residual blocks x 128, v-prediction, hybrid loss, learned variance", sets=("short",),
           eval_draws=64),
]
