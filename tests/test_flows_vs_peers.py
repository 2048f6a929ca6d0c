"""genzoo's Glow parts against normflows' (1.7.3) on the same weights: an independent reference.

A step of Glow on an image is ActNorm, the LU-parameterised invertible 1x1 convolution and a coupling;
an image flow starts with the logit. genzoo's ``Logit``, ``ActNorm`` and ``InvertibleLinear`` go from
data to noise in ``forward``; normflows' ``transforms.Logit``, ``flows.ActNorm`` and
``flows.Invertible1x1Conv`` go from noise to data in ``forward`` and from data to noise in ``inverse``
(what ``MultiscaleFlow.log_prob`` runs). With genzoo's parameters copied into normflows' (moved away
from their initial values, on a 6x5 image so that the pixel count in the log-dets matters), both must
give the same outputs and log|det| in both directions, the chain's total included, and ActNorm's
data-dependent initialisation on one batch must give the same location and log-scale.
"""

from __future__ import annotations

import pytest
import torch

nf = pytest.importorskip("normflows")

from genzoo.models.flows.transforms import (
    ActNorm,
    Compose,
    InvertibleLinear,
    Logit,
    data_dependent_init,
)

C, H, W = 4, 6, 5
ALPHA = 0.05


def perturb_(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.3) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))


@pytest.mark.filterwarnings("ignore:torch.lu is deprecated")  # normflows' Invertible1x1Conv calls Q.lu()
def test_glow_parts_match_normflows_on_the_same_weights():
    generator = torch.Generator().manual_seed(0)
    x = (torch.randint(0, 256, (8, C, H, W), generator=generator) + torch.rand(8, C, H, W, generator=generator)) / 256

    # ActNorm's data-dependent initialisation, each library from the same (logit) batch
    logit, peer_logit = Logit(ALPHA), nf.transforms.Logit(alpha=ALPHA)
    h, _ = logit(x)
    actnorm, peer_actnorm = ActNorm(C, image=True), nf.flows.ActNorm((C, 1, 1))
    with torch.no_grad(), data_dependent_init(actnorm):
        actnorm(h)
        peer_actnorm.inverse(h)  # normflows initialises on its first call, here in the density direction
    assert bool(actnorm.initialized) and bool(peer_actnorm.data_dep_init_done)
    torch.testing.assert_close(actnorm.loc, peer_actnorm.t, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(actnorm.log_scale, peer_actnorm.s, rtol=1e-5, atol=1e-6)

    # the same weights, away from their initial values
    conv = InvertibleLinear(C, image=True, seed=3)
    perturb_(actnorm, generator)
    perturb_(conv, generator)
    peer_conv = nf.flows.Invertible1x1Conv(C, use_lu=True)
    with torch.no_grad():
        peer_actnorm.t.copy_(actnorm.loc)
        peer_actnorm.s.copy_(actnorm.log_scale)
        peer_conv.P.copy_(conv.permutation)
        peer_conv.L.copy_(conv.lower)  # normflows reads tril(L, -1) + I, genzoo lower * strict-lower mask + I
        peer_conv.U.copy_(conv.upper)
        peer_conv.log_S.copy_(conv.log_abs_s)
        peer_conv.sign_S.copy_(conv.sign_s)
    assert torch.linalg.slogdet(conv.weight().double())[1].item() != pytest.approx(0.0, abs=1e-3)  # not a rotation

    parts = [(logit, peer_logit), (actnorm, peer_actnorm), (conv, peer_conv)]
    h = x
    with torch.no_grad():
        for ours, theirs in parts:  # data -> noise, part by part on the same input
            y, log_det = ours(h)
            peer_y, peer_log_det = theirs.inverse(h)
            name = type(ours).__name__
            assert y.shape == peer_y.shape == h.shape, name
            torch.testing.assert_close(y, peer_y, rtol=1e-5, atol=1e-5, msg=f"{name}: outputs differ")
            torch.testing.assert_close(log_det, peer_log_det.expand(len(h)).to(log_det.dtype), rtol=1e-5, atol=1e-3,
                                       msg=f"{name}: log|det| differs")
            back, peer_back = ours.inverse(y), theirs(y)[0]  # noise -> data
            torch.testing.assert_close(back, peer_back, rtol=1e-4, atol=1e-4, msg=f"{name}: inverses differ")
            torch.testing.assert_close(back, h, rtol=1e-4, atol=1e-4, msg=f"{name}: no round trip")
            h = y  # the next part reads this part's output, in both libraries

        z, total = Compose([ours for ours, _ in parts])(x)
        peer_z, peer_total = x, torch.zeros(len(x))
        for _, theirs in parts:
            peer_z, log_det = theirs.inverse(peer_z)
            peer_total = peer_total + log_det
        torch.testing.assert_close(z, peer_z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(total, peer_total, rtol=1e-5, atol=1e-3)
