"""Adaptive Guidance: exact CFG above gamma_bar > 1, the per-sample switch, evaluation counts, the similarity."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.adaptive_guidance import GAMMA_BAR, adaptive_guidance, noise_cosine_similarity
from paperzoo.diffusion.guidance import class_conditional, classifier_free_guidance
from paperzoo.diffusion.mixture import GaussianMixture
from paperzoo.diffusion.samplers import sample_euler, sample_heun
from paperzoo.diffusion.schedules import get_sigmas_karras

D = torch.float64


def _problem():
    means = torch.tensor([[4.0, 1.5], [4.0, -1.5], [-4.0, 1.5], [-4.0, -1.5]], dtype=D)
    gm = GaussianMixture(means, 0.36 * torch.eye(2, dtype=D).expand(4, 2, 2).clone())
    c0, _ = class_conditional(gm, [0, 0, 1, 1])
    return gm, c0


class _Counting:
    def __init__(self, fn):
        self.fn, self.rows = fn, 0

    def __call__(self, x, s):
        self.rows += x.shape[0]
        return self.fn(x, s)


def _noise(n, seed=0):
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=D)


def test_gamma_bar_above_one_is_exactly_cfg_with_two_evaluations_per_step():
    gm, c0 = _problem()
    sigmas = get_sigmas_karras(12, 0.01, 20.0)
    x0 = 20.0 * _noise(50)
    ag = adaptive_guidance(c0.denoise, gm.denoise, 3.0, gamma_bar=1.01)
    out = sample_euler(ag, x0, sigmas)
    ref = sample_euler(classifier_free_guidance(c0.denoise, gm.denoise, 3.0), x0, sigmas)
    assert torch.equal(out, ref)
    assert ag.nfe == 24.0 and ag.evaluations == 24 * 50 and not bool(ag.switched.any())
    # and CFG is the denoiser of the score (1 - w) grad log p_u + w grad log p_c
    ag.reset()
    s = torch.full((50,), 1.3, dtype=D)
    torch.testing.assert_close(ag(x0 / 10, s), x0 / 10 + 1.3**2 * (-2.0 * gm.score(x0 / 10, s) + 3.0 *
                                                                   c0.score(x0 / 10, s)), rtol=1e-10, atol=1e-10)


def test_switch_is_per_sample_permanent_and_counted():
    gm, c0 = _problem()
    cond, uncond = _Counting(c0.denoise), _Counting(gm.denoise)
    ag = adaptive_guidance(cond, uncond, 3.0)
    sigmas = get_sigmas_karras(16, 0.01, 20.0)
    sample_heun(ag, 20.0 * _noise(40, 1), sigmas)
    calls = 2 * 16 - 1
    assert len(ag.similarities) == calls
    assert torch.equal(ag.cond_evaluations, torch.full((40,), calls))
    assert cond.rows == 40 * calls and uncond.rows == int(ag.uncond_evaluations.sum())
    assert ag.evaluations == cond.rows + uncond.rows and ag.nfe == pytest.approx(ag.evaluations / 40)
    gam = torch.stack(ag.similarities)  # (calls, N), NaN once switched
    for i in range(40):
        measured = ~gam[:, i].isnan()
        k = int(measured.sum())
        assert k == int(ag.uncond_evaluations[i]) and bool(measured[:k].all())  # a prefix, then never again
        first = (gam[:, i] > GAMMA_BAR).nonzero()
        if ag.switched[i]:
            assert int(first[0]) == k - 1  # guided through the crossing step, conditional after it
        else:
            assert k == calls and first.numel() == 0
    assert 0 < int(ag.switched.sum())


def test_switched_rows_get_the_conditional_model_and_the_rest_cfg():
    gm, c0 = _problem()
    ag = adaptive_guidance(c0.denoise, gm.denoise, 2.5, gamma_bar=0.99)
    x = 3.0 * _noise(30, 2)
    s = torch.full((30,), 1.0, dtype=D)
    first = ag(x, s)
    torch.testing.assert_close(first, classifier_free_guidance(c0.denoise, gm.denoise, 2.5)(x, s))
    gamma = ag.similarities[0]
    assert torch.equal(ag.switched, gamma > 0.99) and 0 < int(ag.switched.sum()) < 30
    second = ag(x, s)
    torch.testing.assert_close(second[ag.switched], c0.denoise(x, s)[ag.switched], rtol=0, atol=0)
    torch.testing.assert_close(second[~ag.switched], first[~ag.switched], rtol=0, atol=0)
    assert ag.reset().switched is None and ag.nfe == 0.0 and ag.evaluations == 0


def test_similarity_is_the_cosine_of_the_noise_predictions():
    gm, c0 = _problem()
    x = 2.0 * _noise(9, 3)
    s = torch.full((9,), 0.7, dtype=D)
    d_c, d_u = c0.denoise(x, s), gm.denoise(x, s)
    ref = torch.nn.functional.cosine_similarity((x - d_c) / 0.7, (x - d_u) / 0.7, dim=1)
    torch.testing.assert_close(noise_cosine_similarity(x, d_c, d_u), ref, rtol=1e-12, atol=1e-12)
    # closed form on a hand example: eps_c = (1, 0), eps_u = (1, 1) -> 1/sqrt 2; flattened over image dims
    xi = torch.zeros(1, 1, 2, dtype=D)
    got = noise_cosine_similarity(xi, -torch.tensor([[[1.0, 0.0]]], dtype=D), -torch.tensor([[[1.0, 1.0]]], dtype=D))
    torch.testing.assert_close(got, torch.tensor([2**-0.5], dtype=D))
    assert float(noise_cosine_similarity(xi, xi, -xi - 1)) == 0.0  # no direction: cosine 0, not NaN


@settings(max_examples=25, deadline=None)
@given(scale=st.floats(0.0, 8.0), gamma_bar=st.floats(-1.5, 1.5), seed=st.integers(0, 10_000))
def test_every_row_is_cfg_or_conditional(scale, gamma_bar, seed):
    gm, c0 = _problem()
    ag = adaptive_guidance(c0.denoise, gm.denoise, scale, gamma_bar)
    x = 4.0 * _noise(6, seed)
    s = torch.full((6,), 0.8, dtype=D)
    ag(x, s)
    out = ag(x, s)
    cfg = classifier_free_guidance(c0.denoise, gm.denoise, scale)(x, s)
    expect = torch.where(ag.switched[:, None], c0.denoise(x, s), cfg)
    torch.testing.assert_close(out, expect, rtol=1e-12, atol=1e-12)
    if gamma_bar < -1:
        assert bool(ag.switched.all())  # every cosine is >= -1
    if gamma_bar > 1:
        assert not bool(ag.switched.any())


def test_bad_input():
    gm, c0 = _problem()
    ag = adaptive_guidance(c0.denoise, gm.denoise, 2.0)
    ag(_noise(4), torch.ones(4, dtype=D))
    with pytest.raises(ValueError, match=r"x must keep the batch size of the run in progress \(4\), got 5: call "
                                         r"reset\(\) before a new sampling run"):
        ag(_noise(5), torch.ones(5, dtype=D))
    with pytest.raises(TypeError, match="scale must be a real number"):
        adaptive_guidance(c0.denoise, gm.denoise, "2")
    with pytest.raises(TypeError, match="cond must be"):
        adaptive_guidance(None, gm.denoise, 2.0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        adaptive_guidance(c0.denoise, gm.denoise, 2.0, eps=0.0)
    with pytest.raises(ValueError, match="gamma_bar must be finite"):
        adaptive_guidance(c0.denoise, gm.denoise, 2.0, gamma_bar=float("nan"))
    x = _noise(3)
    with pytest.raises(ValueError, match=r"denoised_cond and denoised_uncond must have the shape of x \(3, 2\)"):
        noise_cosine_similarity(x, x, x[:, :1])
