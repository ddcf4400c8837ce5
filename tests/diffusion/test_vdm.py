"""VDM: the continuous-time bound against exact Gaussian likelihoods and VDM's schedule invariance."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.mixture import GaussianMixture, mixture_on_circle
from paperzoo.diffusion.training import MLPDenoiser
from paperzoo.diffusion.vdm import (LearnedLogSNR, LinearLogSNR, bits_per_dim, diagonal_gaussian_eps_model,
                                    eps_model_from_network, gaussian_vdm_terms, mixture_eps_model,
                                    sample_vdm_times, schedule_with_derivative, train_vdm, vdm_diffusion_loss,
                                    vdm_nelbo)

D64 = torch.float64
MU = torch.tensor([1.0, -1.0], dtype=D64)
VAR = torch.tensor([0.5, 2.0], dtype=D64)
ENTROPY = 0.5 * float(torch.log(2 * math.pi * math.e * VAR).sum())


def _gaussian():
    return GaussianMixture(MU[None], torch.diag(VAR)[None])


def _mean_se(v):
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def test_closed_form_bounds_entropy_and_tightens():
    gaps = [float(gaussian_vdm_terms(MU, VAR, -r, r).total) - ENTROPY for r in (3.0, 6.0, 10.0, 16.0)]
    assert all(g > 0 for g in gaps)
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-5


@settings(max_examples=30, deadline=None)
@given(lo=st.floats(-20.0, 2.0), width=st.floats(0.1, 30.0), log_var=st.floats(-4.0, 4.0))
def test_closed_form_is_a_bound_for_any_endpoints(lo, width, log_var):
    var = torch.tensor([math.exp(log_var)], dtype=D64)
    entropy = 0.5 * math.log(2 * math.pi * math.e * float(var))
    assert float(gaussian_vdm_terms(torch.zeros(1, dtype=D64), var, lo, lo + width).total) >= entropy - 1e-9


@pytest.mark.parametrize("lo,hi", [(-4.0, 4.0), (-10.0, 8.0)])
def test_monte_carlo_matches_closed_form_with_exact_predictor(lo, hi):
    gm = _gaussian()
    g = torch.Generator().manual_seed(0)
    x = gm.sample(10000, generator=g)
    terms = vdm_nelbo(mixture_eps_model(gm), LinearLogSNR(lo, hi), x, generator=g)
    exact = gaussian_vdm_terms(MU, VAR, lo, hi)
    m, se = _mean_se(terms.diffusion)
    assert abs(m - float(exact.diffusion)) < 4 * se
    m, se = _mean_se(terms.prior)
    assert abs(m - float(exact.prior)) < 4 * se + 1e-12
    assert torch.allclose(terms.reconstruction, exact.reconstruction.expand(x.shape[0]))
    assert torch.allclose(terms.total, terms.prior + terms.reconstruction + terms.diffusion)


def test_mixture_nelbo_is_an_upper_bound_that_tightens():
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.4)
    g = torch.Generator().manual_seed(1)
    x = gm.sample(10000, generator=g)
    nll = -gm.log_prob(x)
    loose = _mean_se(vdm_nelbo(mixture_eps_model(gm), LinearLogSNR(-2.0, 2.0), x, generator=g).total - nll)
    tight = _mean_se(vdm_nelbo(mixture_eps_model(gm), LinearLogSNR(-8.0, 8.0), x, generator=g).total - nll)
    assert loose[0] > 0.3 and loose[0] > 6 * loose[1]
    assert tight[0] > -4 * tight[1]
    assert tight[0] < loose[0] - 3 * math.hypot(loose[1], tight[1])


def test_diffusion_loss_invariant_to_schedule_interior():
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.3)
    g = torch.Generator().manual_seed(2)
    x = gm.sample(10000, generator=g)
    torch.manual_seed(0)
    curved = LearnedLogSNR(-8.0, 6.0, 32, init_scale=4.0).double()
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=D64)
    assert torch.allclose(curved(t)[[0, 3]], torch.tensor([-8.0, 6.0], dtype=D64))
    assert (curved(t)[1:3] - LinearLogSNR(-8.0, 6.0)(t)[1:3]).abs().max() > 0.5  # a genuinely different interior
    eps = mixture_eps_model(gm)
    with torch.no_grad():
        a = vdm_nelbo(eps, LinearLogSNR(-8.0, 6.0), x, generator=g).diffusion
        b = vdm_nelbo(eps, curved, x, generator=g).diffusion
    (ma, sa), (mb, sb) = _mean_se(a), _mean_se(b)
    assert abs(ma - mb) < 4 * math.hypot(sa, sb)


def test_per_dimension_schedule_matches_per_dimension_closed_form():
    lo, hi = torch.tensor([-9.0, -5.0], dtype=D64), torch.tensor([4.0, 7.0], dtype=D64)

    def schedule(t):  # (N,) -> (N, 2), different curvature per dimension
        return lo + (hi - lo) * t[:, None] ** torch.tensor([1.0, 2.0], dtype=D64)

    g = torch.Generator().manual_seed(3)
    x = MU + VAR.sqrt() * torch.randn(10000, 2, generator=g, dtype=D64)
    terms = vdm_nelbo(diagonal_gaussian_eps_model(MU, VAR), schedule, x, generator=g)
    exact = sum(float(gaussian_vdm_terms(MU[d:d + 1], VAR[d:d + 1], float(lo[d]), float(hi[d])).diffusion)
                for d in range(2))
    m, se = _mean_se(terms.diffusion)
    assert abs(m - exact) < 4 * se
    # the scalar exact predictor agrees with the diagonal one on a scalar schedule
    z, tt = torch.randn(5, 2, dtype=D64), torch.rand(5, dtype=D64)
    gam = LinearLogSNR(-3.0, 3.0)(tt)
    assert torch.allclose(mixture_eps_model(_gaussian())(z, tt, gam), diagonal_gaussian_eps_model(MU, VAR)(z, tt, gam))


def test_learned_schedule_is_monotone_and_learns_endpoints():
    torch.manual_seed(0)
    sched = LearnedLogSNR(-6.0, 4.0, 16, learn_endpoints=True, init_scale=2.0).double()
    t = torch.linspace(0, 1, 2001, dtype=D64)
    gam, dgam = schedule_with_derivative(sched, t)
    assert bool((gam.diff() >= 0).all()) and bool((dgam >= 0).all())
    assert torch.allclose(dgam[1:-1], (gam[2:] - gam[:-2]) / (t[2] - t[0]), rtol=1e-4)
    x = torch.randn(64, 2, dtype=D64)
    vdm_nelbo(lambda z, tt, gg: 0.5 * z, sched, x).total.mean().backward()
    assert sched.gamma_start.grad is not None and sched.log_gap.grad is not None
    assert sched.l2.weight.grad.abs().sum() > 0


def test_antithetic_times_are_stratified():
    t = sample_vdm_times(8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.sort(t).values.diff(), torch.full((7,), 1 / 8, dtype=D64))


def test_train_vdm_lowers_the_bound_and_network_adapter():
    torch.manual_seed(0)
    gm = mixture_on_circle(4, 2, radius=2.0, std=0.4, dtype=torch.float32)
    net = MLPDenoiser(2, 16, 1)
    sched = LinearLogSNR()
    eps = eps_model_from_network(net)
    hist = train_vdm(net, eps, sched, lambda n, g: gm.sample(n, generator=g), steps=50, batch_size=64, lr=1e-2,
                     generator=torch.Generator().manual_seed(0))
    assert hist[-20:].mean() < hist[:10].mean()
    assert float(bits_per_dim(torch.tensor(2 * math.log(2)), 2)) == pytest.approx(1.0)


def test_errors_are_named():
    x = torch.randn(4, 2, dtype=D64)
    with pytest.raises(ValueError, match="gamma_max must be > gamma_min"):
        LinearLogSNR(1.0, 0.0)
    with pytest.raises(ValueError, match="t must lie in"):
        vdm_nelbo(lambda z, t, g: z, LinearLogSNR(), x, t=torch.full((4,), 1.5, dtype=D64))
    with pytest.raises(ValueError, match="schedule must return shape"):
        vdm_diffusion_loss(lambda z, t, g: z, lambda t: torch.zeros(3, dtype=D64) + t.sum(), x,
                           torch.rand(4, dtype=D64), x)
    with pytest.raises(ValueError, match="scalar schedule"):
        mixture_eps_model(_gaussian())(x, x[:, 0], x)
    with pytest.raises(ValueError, match="network must predict eps"):
        eps_model_from_network(MLPDenoiser(2, 8, 1, prediction="x0"))
    with pytest.raises(TypeError, match="noise"):
        vdm_nelbo(lambda z, t, g: z, LinearLogSNR(), x, noise=x.float())
