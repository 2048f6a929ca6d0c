"""Normalizing flows: exact likelihood by the change of variables, log p(x) = log N(f(x)) + log|det df/dx|."""

from genzoo.models.flows.glow import Glow
from genzoo.models.flows.maf import MAF
from genzoo.models.flows.nice import NICE
from genzoo.models.flows.nsf import NSF
from genzoo.models.flows.realnvp import RealNVP
from genzoo.models.flows.recipes import RECIPES

MODELS = [NICE, RealNVP, Glow, MAF, NSF]
