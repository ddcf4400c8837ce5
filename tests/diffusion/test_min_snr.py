"""Min-SNR-gamma weighting: diffusers' training-script weights, the official code's conventions, the closed form
that makes the three parametrizations one x0 loss, and pinned errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from paperzoo.diffusion.min_snr import min_snr_weight, min_snr_weighting
from paperzoo.diffusion.mixture import mixture_on_circle
from paperzoo.diffusion.schedules import (alphas_cumprod_from_betas, betas_cosine, betas_linear,
                                          sigmas_from_alphas_cumprod)
from paperzoo.diffusion.training import denoising_loss

D = torch.float64
GAMMA = 5.0


def _scheduler(**config):
    diffusers = pytest.importorskip("diffusers")
    return diffusers.DDPMScheduler(**config)


def _script_weights(snr: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """The snr_gamma weights of diffusers' example training scripts, per prediction type: the clamped SNR,
    divided by SNR (``epsilon``) or SNR + 1 (``v_prediction``, since PR #6307), unchanged for ``sample``."""
    clamped = torch.minimum(snr, torch.full_like(snr, gamma))
    if prediction_type == "epsilon":
        return clamped / snr
    if prediction_type == "v_prediction":
        return clamped / (snr + 1)
    return clamped


@pytest.mark.parametrize("schedule", [{}, {"beta_schedule": "scaled_linear", "beta_start": 0.00085,
                                            "beta_end": 0.012}, {"beta_schedule": "squaredcos_cap_v2"}])
@pytest.mark.parametrize("prediction,prediction_type", [("eps", "epsilon"), ("v", "v_prediction"),
                                                        ("x0", "sample")])
def test_weights_equal_diffusers_training_script(schedule, prediction, prediction_type):
    from diffusers.training_utils import compute_snr

    sched = _scheduler(**schedule)
    t = torch.arange(sched.config.num_train_timesteps)
    expected = _script_weights(compute_snr(sched, t), GAMMA, prediction_type).double()
    sigma = sigmas_from_alphas_cumprod(sched.alphas_cumprod.double())[t]
    torch.testing.assert_close(min_snr_weight(sigma, GAMMA, prediction), expected, rtol=1e-6, atol=1e-6)
    # the hook gives the same weights
    torch.testing.assert_close(min_snr_weighting(GAMMA, prediction)(sigma), expected, rtol=1e-6, atol=1e-6)


def test_paperzoo_schedules_give_diffusers_weights():
    from diffusers.training_utils import compute_snr

    cosine = _scheduler(beta_schedule="squaredcos_cap_v2")
    for ours, sched in ((betas_linear(), _scheduler()), (betas_cosine(), cosine)):
        sigma = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(ours))
        t = torch.arange(1000)
        # diffusers keeps its schedule in float32: its cumulative product carries ~1e-6 relative rounding
        expected = _script_weights(compute_snr(sched, t), GAMMA, "epsilon").double()
        torch.testing.assert_close(min_snr_weight(sigma, GAMMA), expected, rtol=1e-5, atol=1e-6)


def test_zero_terminal_snr_weight_is_one_as_in_the_official_code():
    # TiankaiHang/Min-SNR-Diffusion-Training @ 1cadf4560b5e31f8c918f2de2a2eb094f5d9b10d,
    # guided_diffusion/gaussian_diffusion.py, training_losses: the weight is set to 1 where snr == 0.
    from diffusers.training_utils import compute_snr

    sched = _scheduler(rescale_betas_zero_snr=True)
    t = torch.arange(1000)
    snr = compute_snr(sched, t)
    sigma = sigmas_from_alphas_cumprod(sched.alphas_cumprod.double())
    assert float(snr[-1]) == 0.0 and torch.isinf(sigma[-1])
    for prediction, prediction_type in (("eps", "epsilon"), ("v", "v_prediction"), ("x0", "sample")):
        w = min_snr_weight(sigma, GAMMA, prediction)
        expected = _script_weights(snr, GAMMA, prediction_type).double()
        torch.testing.assert_close(w[:-1], expected[:-1], rtol=1e-6, atol=1e-6)
        assert float(w[-1]) == 1.0  # diffusers' script gives 0/0 = NaN (eps) or 0 here
    assert torch.isnan(_script_weights(snr, GAMMA, "epsilon")[-1])


def test_limits_and_paper_values():
    sigma = torch.tensor([0.0, 0.1, 0.5, 1 / 5**0.5, 2.0, float("inf")], dtype=D)   # SNR inf, 100, 4, 5, 1/4, 0
    torch.testing.assert_close(min_snr_weight(sigma, GAMMA, "eps"), torch.tensor([0, 0.05, 1, 1, 1, 1], dtype=D))
    torch.testing.assert_close(min_snr_weight(sigma, GAMMA, "x0"), torch.tensor([5, 5, 4, 5, 0.25, 1], dtype=D))
    torch.testing.assert_close(min_snr_weight(sigma, GAMMA, "v"),
                               torch.tensor([0, 5 / 101, 4 / 5, 5 / 6, 0.2, 1], dtype=D))
    # a gamma above every SNR of the schedule leaves the eps loss uniform (DDPM's L_simple)
    sig = sigmas_from_alphas_cumprod(alphas_cumprod_from_betas(betas_linear()))
    assert torch.equal(min_snr_weight(sig, float(sig.min() ** -2) * 1.01), torch.ones_like(sig))
    assert min_snr_weight(torch.zeros(0, dtype=D)).shape == (0,)
    assert min_snr_weight(torch.tensor(0.3, dtype=torch.float32)).dtype == torch.float32


class _FromDenoiser(torch.nn.Module):
    """A network predicting ``prediction`` whose VE denoiser is the given function ``D``."""

    def __init__(self, denoise, prediction, space):
        super().__init__()
        self.denoise, self.prediction, self.space = denoise, prediction, space

    def forward(self, x_in, s):
        s = s[:, None]
        alpha = (1 + s.square()).rsqrt() if self.space == "vp" else torch.ones_like(s)
        x = x_in / alpha
        x0 = self.denoise(x, s[:, 0])
        eps = (x - x0) / s
        return {"eps": eps, "x0": x0, "v": alpha * eps - s * alpha * x0}[self.prediction]


@pytest.mark.parametrize("gamma", [1.0, 5.0, 20.0])
def test_weighted_losses_are_one_clamped_x0_loss(gamma):
    # Min-SNR makes every parametrization the x0 loss weighted by min(SNR, gamma): equal losses for one denoiser
    gm = mixture_on_circle(4, 2, radius=1.5, std=0.3)
    g = torch.Generator().manual_seed(0)
    n = 64
    x0 = gm.sample(n, generator=g)
    sigma = torch.logspace(-2, 2, n, dtype=D)
    noise = torch.randn(n, 2, generator=g, dtype=D)

    def denoise(x, s):  # an imperfect denoiser, so the loss is not zero
        return gm.denoise(x, s) + 0.1 * torch.tanh(x)

    x = x0 + sigma[:, None] * noise
    closed = (torch.minimum(sigma**-2, torch.full_like(sigma, gamma))
              * (denoise(x, sigma) - x0).square().mean(-1)).mean()
    for prediction, space in (("eps", "ve"), ("eps", "vp"), ("x0", "ve"), ("v", "vp")):
        net = _FromDenoiser(denoise, prediction, space)
        loss = denoising_loss(net, x0, sigma, weighting=min_snr_weighting(gamma, prediction), noise=noise)
        torch.testing.assert_close(loss, closed, rtol=1e-10, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=20), st.floats(0.1, 100.0))
def test_property_one_x0_weight_in_three_targets(sigmas, gamma):
    sigma = torch.tensor(sigmas, dtype=D)
    snr = sigma**-2
    w_eps, w_x0, w_v = (min_snr_weight(sigma, gamma, p) for p in ("eps", "x0", "v"))
    torch.testing.assert_close(w_eps * snr, w_x0, rtol=1e-12, atol=0)
    torch.testing.assert_close(w_v * (snr + 1), w_x0, rtol=1e-12, atol=0)
    assert bool(((w_eps >= 0) & (w_eps <= 1) & (w_v <= w_eps) & (w_x0 <= gamma)).all())
    order = sigma.argsort()  # eps weight rises and x0 weight falls with the noise level
    assert bool((w_eps[order].diff() >= 0).all()) and bool((w_x0[order].diff() <= 0).all())


def test_bad_input():
    s = torch.ones(3, dtype=D)
    with pytest.raises(ValueError, match="sigma must not contain NaN"):
        min_snr_weight(torch.tensor([1.0, float("nan")], dtype=D))
    with pytest.raises(ValueError, match="sigma must be >= 0 entrywise"):
        min_snr_weight(torch.tensor([1.0, -1.0], dtype=D))
    with pytest.raises(ValueError, match=r"gamma must be > 0.0, got 0.0"):
        min_snr_weight(s, 0.0)
    with pytest.raises(ValueError, match=r"prediction must be one of \['eps', 'x0', 'v'\], got 'flow'"):
        min_snr_weight(s, 5.0, "flow")
    with pytest.raises(TypeError, match="sigma must be a torch.Tensor"):
        min_snr_weight([1.0, 2.0])
    with pytest.raises(ValueError, match=r"prediction must be one of \['eps', 'x0', 'v'\], got 'epsilon'"):
        min_snr_weighting(5.0, "epsilon")
    with pytest.raises(ValueError, match="gamma must be > 0.0"):
        min_snr_weighting(-1.0)
