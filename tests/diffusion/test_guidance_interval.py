"""Limited-interval guidance: exact conditional outside (sigma_lo, sigma_hi], CFG inside, the official step mapping."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.guidance import class_conditional, classifier_free_guidance
from paperzoo.diffusion.guidance_interval import (EDM2_XXL_FID, guidance_interval_from_steps,
                                                  guidance_interval_scale, limited_interval_guidance)
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.samplers import sample_euler, sample_heun
from paperzoo.diffusion.schedules import get_sigmas_karras

D = torch.float64

# Official code: kynkaat/guidance-interval @ be70a2334f7ebf4e55fec981d518d5036a2ca19b, generate_zip.py and README:
# EDM2-XXL FID-optimal "--guidance_interval=[17, 22] --guidance_scale=2.0" with 32 EDM steps (0.002, 80, rho 7),
# reported in the paper's Table 1 as sigma in (0.19, 1.61], w = 2.0; steps i with start <= i <= stop are guided.
OFFICIAL_STEPS = (17, 22)


def _problem():
    gm = mixture_on_circle(4, 2, radius=3.0, std=0.4)
    c0, _ = class_conditional(gm, [0, 0, 1, 1])
    return gm, c0


class _Counting:
    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, x, s):
        self.calls += 1
        return self.fn(x, s)


def test_outside_the_interval_is_exactly_the_conditional_and_inside_is_cfg():
    gm, c0 = _problem()
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=D) * 2
    uncond = _Counting(gm.denoise)
    guided = limited_interval_guidance(c0.denoise, uncond, 4.0, sigma_lo=0.3, sigma_hi=2.0)
    for s in (0.0, 0.1, 0.3, 2.0001, 5.0, 80.0):  # sigma_lo itself is outside (open end)
        sigma = torch.full((7,), s, dtype=D)
        assert torch.equal(guided(x, sigma), c0.denoise(x, sigma))
    assert uncond.calls == 0  # outside: no unconditional evaluation at all
    for s in (0.3001, 1.0, 2.0):  # sigma_hi itself is inside (closed end)
        sigma = torch.full((7,), s, dtype=D)
        assert torch.equal(guided(x, sigma), classifier_free_guidance(c0.denoise, gm.denoise, 4.0)(x, sigma))
        # and the closed form: the denoiser of the score (1 - w) grad log p_u + w grad log p_c
        score = -3.0 * gm.score(x, sigma) + 4.0 * c0.score(x, sigma)
        torch.testing.assert_close(guided(x, sigma), x + s**2 * score, rtol=1e-10, atol=1e-10)


def test_a_batch_across_a_boundary_gets_one_weight_per_sample():
    gm, c0 = _problem()
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=D)
    sigma = torch.tensor([0.1, 0.5, 2.0, 3.0], dtype=D)
    w = guidance_interval_scale(3.0, 0.2, 2.0)
    assert w(sigma).tolist() == [1.0, 3.0, 3.0, 1.0] and w(sigma[1:3]) == 3.0 and w(sigma[::3]) == 1.0
    out = limited_interval_guidance(c0.denoise, gm.denoise, 3.0, 0.2, 2.0)(x, sigma)
    for i in range(4):
        si = sigma[i:i + 1]
        ref = (classifier_free_guidance(c0.denoise, gm.denoise, 3.0) if i in (1, 2) else c0.denoise)(x[i:i + 1], si)
        torch.testing.assert_close(out[i:i + 1], ref, rtol=1e-12, atol=1e-12)


def test_paper_interval_reproduces_the_official_step_indices():
    sigmas = get_sigmas_karras(32, 0.002, 80.0)
    lo, hi = guidance_interval_from_steps(sigmas, *OFFICIAL_STEPS)
    assert (round(lo, 2), round(hi, 2)) == (EDM2_XXL_FID["sigma_lo"], EDM2_XXL_FID["sigma_hi"]) == (0.19, 1.61)
    for bounds in ((lo, hi), (EDM2_XXL_FID["sigma_lo"], EDM2_XXL_FID["sigma_hi"])):
        w = guidance_interval_scale(2.0, *bounds)
        guided_steps = [i for i in range(32) if w(sigmas[i:i + 1]) == 2.0]
        assert guided_steps == list(range(17, 23))  # 6 of the 32 steps, as the paper says


def test_euler_sampling_matches_the_official_step_rule_and_saves_evaluations():
    gm, c0 = _problem()
    sigmas = get_sigmas_karras(32, 0.002, 80.0)
    x0 = sigmas[0] * torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=D)
    uncond = _Counting(gm.denoise)
    out = sample_euler(limited_interval_guidance(c0.denoise, uncond, **EDM2_XXL_FID), x0, sigmas)
    assert uncond.calls == 6
    # The official loop's rule, written independently: step i uses CFG iff start <= i <= stop.
    x = x0.clone()
    for i in range(32):
        s = sigmas[i] * torch.ones(64, dtype=D)
        d_c = c0.denoise(x, s)
        d = gm.denoise(x, s).lerp(d_c, 2.0) if OFFICIAL_STEPS[0] <= i <= OFFICIAL_STEPS[1] else d_c
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - d) / sigmas[i]
    torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-12)


def _heun_loop(x0, sigmas, cond, uncond, guided):
    """EDM's Heun loop written independently; ``guided(i, level)`` says whether step i's evaluation at ``level``
    uses CFG with w = 2."""
    x, n = x0.clone(), sigmas.shape[0] - 1
    for i in range(n):
        s, t = sigmas[i], sigmas[i + 1]

        def den(y, level):
            lv = level * torch.ones(y.shape[0], dtype=D)
            return uncond(y, lv).lerp(cond(y, lv), 2.0) if guided(i, float(level)) else cond(y, lv)
        d = (x - den(x, s)) / s
        x_next = x + (t - s) * d
        if i < n - 1:
            x_next = x + (t - s) * 0.5 * (d + (x_next - den(x_next, t)) / t)
        x = x_next
    return x


def test_heun_applies_eq6_per_level_and_differs_from_the_official_step_rule_only_at_the_boundary_corrections():
    gm, c0 = _problem()
    sigmas = get_sigmas_karras(32, 0.002, 80.0)
    x0 = sigmas[0] * torch.randn(16, 2, generator=torch.Generator().manual_seed(3), dtype=D)
    uncond = _Counting(gm.denoise)
    out = sample_heun(limited_interval_guidance(c0.denoise, uncond, **EDM2_XXL_FID), x0, sigmas)
    assert uncond.calls == 12  # as many guided evaluations as the official rule: 6 steps x 2
    lo, hi = EDM2_XXL_FID["sigma_lo"], EDM2_XXL_FID["sigma_hi"]
    per_level = _heun_loop(x0, sigmas, c0.denoise, gm.denoise, lambda i, level: lo < level <= hi)
    torch.testing.assert_close(out, per_level, rtol=1e-12, atol=1e-12)
    # The official rule (step i guided for both evaluations iff 17 <= i <= 22) differs from Eq. 6 per level only
    # at the corrections of steps 16 (at sigma_hi) and 22 (at sigma_lo): switching those two reproduces it.
    official = _heun_loop(x0, sigmas, c0.denoise, gm.denoise, lambda i, level: 17 <= i <= 22)
    assert not torch.allclose(out, official, atol=1e-6)
    swapped = _heun_loop(x0, sigmas, c0.denoise, gm.denoise,
                         lambda i, level: (lo < level <= hi) != ((i, level) in ((16, float(sigmas[17])),
                                                                                (22, float(sigmas[23])))))
    torch.testing.assert_close(official, swapped, rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(lo=st.floats(0.0, 5.0), width=st.floats(1e-3, 10.0), w=st.floats(-5.0, 20.0),
       s=st.floats(0.0, 20.0))
def test_weight_is_w_exactly_on_the_half_open_interval(lo, width, w, s):
    hi = lo + width
    got = guidance_interval_scale(w, lo, hi)(torch.tensor([s], dtype=D))
    assert got == (w if lo < s <= hi else 1.0)


def test_bad_input():
    gm, c0 = _problem()
    with pytest.raises(ValueError, match=r"sigma_lo must be < sigma_hi \(1.0\), got 2.0"):
        limited_interval_guidance(c0.denoise, gm.denoise, 2.0, sigma_lo=2.0, sigma_hi=1.0)
    with pytest.raises(ValueError, match="sigma_lo must be >= 0"):
        guidance_interval_scale(2.0, -0.1, 1.0)
    with pytest.raises(ValueError, match="sigma_hi must be finite"):
        guidance_interval_scale(2.0, 0.1, float("inf"))
    with pytest.raises(TypeError, match="scale must be a real number"):
        limited_interval_guidance(c0.denoise, gm.denoise, "2", 0.1, 1.0)
    sigmas = get_sigmas_karras(8, 0.002, 80.0)
    with pytest.raises(ValueError, match=r"stop must be >= start \(3\), got 2"):
        guidance_interval_from_steps(sigmas, 3, 2)
    with pytest.raises(ValueError, match=r"stop must be < 8 \(the number of steps in sigmas\), got 8"):
        guidance_interval_from_steps(sigmas, 0, 8)
    with pytest.raises(ValueError, match="sigmas must be nonincreasing"):
        guidance_interval_from_steps(sigmas.flip(0), 0, 2)
