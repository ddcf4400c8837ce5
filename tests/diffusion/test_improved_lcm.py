"""Improved latent consistency training: the Cauchy metric's closed forms and limits, the adaptive c schedule, exact
reduction to iCT (loss and training run), the OT pairing, the diffusion term's closed form, and pinned errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.consistency import (ConsistencyModel, _lognormal_probs, _sample_indices,
                                            consistency_training_loss, ict_discretization_steps, karras_levels,
                                            pseudo_huber_c, train_consistency)
from paperzoo.diffusion.improved_lcm import adaptive_c, cauchy_loss, improved_lcm_loss, train_improved_lcm
from paperzoo.diffusion.multisample_flow_matching import batch_ot_coupling
from paperzoo.diffusion.training import MLPDenoiser

D = torch.float64


def _model(seed=0):
    torch.manual_seed(seed)
    return ConsistencyModel(MLPDenoiser(2, 16, 2, prediction="x0", space="ve")).to(D)


# -- the Cauchy metric ---------------------------------------------------------------------------------------------------
def test_cauchy_closed_form_and_limits():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=D)
    y = torch.zeros(2, 2, dtype=D)
    out = cauchy_loss(x, y, 0.5)
    assert out.shape == (2,)
    assert float(out[0]) == pytest.approx(math.log(1 + 25 / 0.5), rel=1e-14)
    assert float(out[1]) == 0.0
    small = torch.tensor([[1e-4, 0.0]], dtype=D)
    assert float(cauchy_loss(small, y[:1], 1.0)) == pytest.approx(1e-8 / 2, rel=1e-6)       # ~ r^2 / (2 c^2)
    big = torch.tensor([[1e6, 0.0]], dtype=D)
    assert float(cauchy_loss(big, y[:1], 1.0)) == pytest.approx(2 * math.log(1e6) - math.log(2), rel=1e-10)


@settings(max_examples=25, deadline=None)
@given(r=st.floats(1e-3, 1e3), c=st.floats(1e-2, 1e2))
def test_cauchy_gradient_bounded_by_its_closed_form(r, c):
    x = torch.tensor([[r, 0.0]], dtype=D, requires_grad=True)
    cauchy_loss(x, torch.zeros(1, 2, dtype=D), c).sum().backward()
    g = float(x.grad.norm())
    assert g == pytest.approx(2 * r / (r * r + 2 * c * c), rel=1e-9)
    assert g <= 1 / (math.sqrt(2) * c) * (1 + 1e-12)


# -- adaptive c ------------------------------------------------------------------------------------------------------------
def test_adaptive_c_tracks_the_curriculum():
    c_ict = pseudo_huber_c(2)
    assert adaptive_c(1281, 2) == pytest.approx(c_ict, rel=1e-15)
    assert adaptive_c(11, 2) == pytest.approx(128 * c_ict, rel=1e-15)
    ns = [ict_discretization_steps(k, 700) for k in range(0, 700, 100)]
    cs = [adaptive_c(n, 2) for n in ns]
    assert all(b <= a for a, b in zip(cs, cs[1:]))
    assert adaptive_c(21, 2, c_end=0.01) == pytest.approx(0.01 * 1280 / 20)


# -- reduction to iCT --------------------------------------------------------------------------------------------------------
def test_reduces_to_ict_loss_exactly():
    model = _model()
    x0 = torch.randn(32, 2, dtype=D)
    sigmas = karras_levels(21)
    kw = dict(metric="pseudo_huber", diffusion_weight=0.0, coupling="independent")
    ours = improved_lcm_loss(model, x0, sigmas, generator=torch.Generator().manual_seed(5), **kw)
    ict = consistency_training_loss(model, x0, sigmas, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ours, ict)
    z = torch.randn(32, 2, dtype=D)
    ours = improved_lcm_loss(model, x0, sigmas, noise=z, generator=torch.Generator().manual_seed(6), **kw)
    ict = consistency_training_loss(model, x0, sigmas, noise=z, generator=torch.Generator().manual_seed(6))
    assert torch.equal(ours, ict)


def test_training_reduces_to_train_consistency():
    data = lambda n, g: 0.5 * torch.randn(n, 2, generator=g, dtype=D)  # noqa: E731
    a, b = _model(1), _model(1)
    ha = train_improved_lcm(a, data, steps=6, batch_size=16, lr=1e-3, metric="pseudo_huber", adaptive="fixed",
                            coupling="independent", diffusion_weight=0.0, generator=torch.Generator().manual_seed(2))
    hb = train_consistency(b, data, steps=6, batch_size=16, lr=1e-3, generator=torch.Generator().manual_seed(2))
    assert torch.equal(ha, hb)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_cauchy_metric_is_the_ct_term():
    model = _model()
    x0 = torch.randn(16, 2, dtype=D)
    sigmas = karras_levels(11)
    g = torch.Generator().manual_seed(3)
    idx = _sample_indices(16, 11, _lognormal_probs(sigmas, -1.1, 2.0), g)
    z = torch.randn(16, 2, generator=g, dtype=D)
    lo, hi = sigmas[idx], sigmas[idx + 1]
    with torch.no_grad():
        per = cauchy_loss(model(x0 + hi[:, None] * z, hi), model(x0 + lo[:, None] * z, lo), 0.3) / (hi - lo)
    ours = improved_lcm_loss(model, x0, sigmas, metric="cauchy", c=0.3, coupling="independent",
                             diffusion_weight=0.0, generator=torch.Generator().manual_seed(3))
    assert float(ours.detach()) == pytest.approx(float(per.mean()), rel=1e-12)


# -- diffusion term and OT pairing -----------------------------------------------------------------------------------------------
def test_diffusion_term_closed_form():
    model = _model()
    x0 = torch.randn(16, 2, dtype=D)
    sigmas = karras_levels(11)
    kw = dict(metric="cauchy", c=0.3, coupling="independent")
    base = improved_lcm_loss(model, x0, sigmas, diffusion_weight=0.0, generator=torch.Generator().manual_seed(4), **kw)
    full = improved_lcm_loss(model, x0, sigmas, diffusion_weight=2.0, diffusion_sigma_max=1.0,
                             generator=torch.Generator().manual_seed(4), **kw)
    g = torch.Generator().manual_seed(4)
    idx = _sample_indices(16, 11, _lognormal_probs(sigmas, -1.1, 2.0), g)
    z = torch.randn(16, 2, generator=g, dtype=D)
    hi = sigmas[idx + 1]
    with torch.no_grad():
        err = (model(x0 + hi[:, None] * z, hi) - x0).square().mean(-1) * (hi <= 1.0)
    assert bool((hi <= 1.0).any()) and bool((hi > 1.0).any())
    assert float((full - base).detach()) == pytest.approx(2.0 * float(err.mean()), rel=1e-10)


def test_ot_coupling_permutes_the_noise():
    model = _model()
    x0 = torch.randn(24, 2, dtype=D)
    z = torch.randn(24, 2, dtype=D)
    sigmas = karras_levels(11)
    perm = batch_ot_coupling(x0, z)
    kw = dict(metric="cauchy", c=0.3, diffusion_weight=1.0)
    ot = improved_lcm_loss(model, x0, sigmas, noise=z, coupling="ot", generator=torch.Generator().manual_seed(1), **kw)
    ind = improved_lcm_loss(model, x0, sigmas, noise=z[perm], coupling="independent",
                            generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(ot, ind)
    cost = lambda p: float((x0 - z[p]).square().sum())  # noqa: E731
    assert cost(perm) <= cost(torch.arange(24)) + 1e-12


def test_gradient_flows_and_training_runs():
    model = _model()
    before = copy.deepcopy(model)
    h = train_improved_lcm(model, lambda n, g: 0.5 * torch.randn(n, 2, generator=g, dtype=D), steps=4, batch_size=16,
                           lr=1e-3, generator=torch.Generator().manual_seed(0))
    assert h.shape == (4,) and bool(torch.isfinite(h).all())
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before.parameters()))


# -- errors --------------------------------------------------------------------------------------------------------------
def test_errors_are_pinned():
    model = _model()
    x0 = torch.randn(4, 2, dtype=D)
    with pytest.raises(ValueError, match="c must be > 0"):
        cauchy_loss(x0, x0, 0.0)
    with pytest.raises(ValueError, match="metric"):
        improved_lcm_loss(model, x0, karras_levels(11), metric="huber")
    with pytest.raises(ValueError, match="coupling"):
        improved_lcm_loss(model, x0, karras_levels(11), coupling="sinkhorn")
    with pytest.raises(ValueError, match="diffusion_weight"):
        improved_lcm_loss(model, x0, karras_levels(11), diffusion_weight=-1.0)
    with pytest.raises(TypeError, match="model must be a ConsistencyModel"):
        improved_lcm_loss(MLPDenoiser(2, 8, 1), x0, karras_levels(11))
    with pytest.raises(ValueError, match="sigmas must be >= model.sigma_min"):
        improved_lcm_loss(model, x0, torch.tensor([0.001, 1.0], dtype=D))
    with pytest.raises(ValueError, match="n_levels must be <= s1"):
        adaptive_c(1300, 2)
    with pytest.raises(ValueError, match="sigma_max must be > model.sigma_min"):
        train_improved_lcm(model, lambda n, g: x0, steps=1, sigma_max=0.001)
