"""Mixtures fitted by EM: Gaussian mixtures, mixtures of Bernoullis and of factor analysers.

They train in the closed-form mode (``genzoo.models.base.ClosedFormModel``): no optimizer, EM's own
update until its convergence criterion, sufficient statistics all-reduced across processes.
"""

from genzoo.models.mixtures.gmm import GMM
from genzoo.models.mixtures.mfa import MFA
from genzoo.models.mixtures.mob import MoB
from genzoo.models.mixtures.recipes import RECIPES

MODELS = [GMM, MoB, MFA]
