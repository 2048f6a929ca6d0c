"""Recipes of the adversarial family (``genzoo.models.recipes``).

The MNIST subset of the sample-quality table has 9,000 training images: an epoch of batch 64
(the GANs' default) is 140 steps. The 2-D arena has 50,000 points: an epoch of batch 64 is 781 steps.
"""

from genzoo.models.recipes import ARENA, Recipe

SAMPLES = "fd,kid,pr,score"
EPOCHS_10 = 10 * 140
DCGAN = "DCGAN, 28x28, bf16"


def dcgan_loss(name: str, loss: str, noise: bool) -> Recipe:
    """The two generator losses, with and without instance noise, on the same DCGAN and budget."""
    flags = ("--precision", "bf16", "--set", f"loss={loss}", *(("--set", "instance_noise=0.1") if noise else ()))
    what = f"{DCGAN}, {loss.replace('_', '-')} generator loss" + (", instance noise 0.1" if noise else "")
    return Recipe(name, "dcgan", ("mnist",), EPOCHS_10, flags, what, eval_metrics=SAMPLES)


RECIPES = [
    Recipe("dcgan-10ep", "dcgan", ("mnist",), EPOCHS_10, ("--precision", "bf16"), DCGAN, sets=("short",),
           eval_metrics=SAMPLES),
    Recipe("wgan-gp-10ep", "wgan-gp", ("mnist",), EPOCHS_10, ("--precision", "bf16"),
           "WGAN-GP, layer-norm critic, n_critic 5, bf16", sets=("short",), eval_metrics=SAMPLES),
    Recipe("cgan-10ep", "cgan", ("mnist",), EPOCHS_10, ("--precision", "bf16"),
           "conditional DCGAN, projection discriminator, bf16", sets=("short",), eval_metrics=SAMPLES),
    dcgan_loss("dcgan-minimax", "minimax", noise=False),
    dcgan_loss("dcgan-minimax-noise", "minimax", noise=True),
    dcgan_loss("dcgan-non-saturating", "non_saturating", noise=False),
    dcgan_loss("dcgan-non-saturating-noise", "non_saturating", noise=True),
    # the 2-D arena: 5 epochs, cosine learning rate, default networks
    Recipe("gan-arena", "gan", ARENA, 5 * 781,
           ("--lr-schedule", "cosine"), "MLP players, linear generator output, R1", sets=("short",)),
    # one epoch, as the README's row: five critic updates with a gradient penalty per step are slow on a CPU
    Recipe("wgan-gp-arena", "wgan-gp", ARENA, 1 * 781,
           ("--lr-schedule", "cosine"), "MLP players (3 x 1024), five critic updates per step", sets=("short",)),
]
