"""The conversion layer: every prediction target of the exact mixture becomes the exact denoiser again."""

from __future__ import annotations

import pytest
import torch

from paperzoo.diffusion import (denoiser_from_prediction, flow_time_from_ve, mixture_on_circle, network_input_scale,
                                prediction_target, ve_sigma, vp_from_ve)

D = torch.float64


def _exact_network(gm, prediction, space):
    """The network an exact fit would be: its output for input ``c_in x`` at level sigma."""
    def network(x_in, sigma):
        s = torch.as_tensor(sigma, dtype=D).view(-1, 1)
        x = x_in / network_input_scale(s, space)
        x0 = gm.denoise(x, s.view(-1))
        eps = (x - x0) / s
        return prediction_target(x0, eps, s.view(-1), prediction)
    return network


@pytest.mark.parametrize("prediction,space", [("eps", "ve"), ("eps", "vp"), ("x0", "ve"), ("x0", "flow"),
                                              ("v", "vp"), ("flow", "flow")])
def test_every_prediction_round_trips_to_the_denoiser(prediction, space):
    gm = mixture_on_circle(3, 2, radius=2.0, std=0.4)
    g = torch.Generator().manual_seed(0)
    sigma = torch.rand(20, generator=g, dtype=D) * 10 + 0.01
    x = gm.sample(20, generator=g) + sigma[:, None] * torch.randn(20, 2, generator=g, dtype=D)
    model = denoiser_from_prediction(_exact_network(gm, prediction, space), prediction, space=space)
    torch.testing.assert_close(model(x, sigma), gm.denoise(x, sigma), rtol=1e-9, atol=1e-9)


def test_level_conversions():
    alpha, sig_t = vp_from_ve(torch.tensor([0.0, 1.0, 3.0], dtype=D))
    torch.testing.assert_close(alpha**2 + sig_t**2, torch.ones(3, dtype=D))
    torch.testing.assert_close(ve_sigma(alpha, sig_t), torch.tensor([0.0, 1.0, 3.0], dtype=D))
    t = flow_time_from_ve(torch.tensor(3.0, dtype=D))
    torch.testing.assert_close(ve_sigma(1 - t, t), torch.tensor(3.0, dtype=D))


def test_v_target_is_alpha_eps_minus_sigma_x0():
    x0, eps, s = torch.randn(4, 3, dtype=D), torch.randn(4, 3, dtype=D), torch.rand(4, dtype=D) + 0.1
    alpha, sig_t = vp_from_ve(s)
    torch.testing.assert_close(prediction_target(x0, eps, s, "v"), alpha[:, None] * eps - sig_t[:, None] * x0)


def test_bad_input():
    with pytest.raises(ValueError, match="space must be 'vp' for prediction='v'"):
        denoiser_from_prediction(lambda x, s: x, "v", space="ve")
    with pytest.raises(ValueError, match="prediction must be one of"):
        denoiser_from_prediction(lambda x, s: x, "score")
    with pytest.raises(ValueError, match="noise must have the shape of x0"):
        prediction_target(torch.zeros(3, 2, dtype=D), torch.zeros(3, 1, dtype=D), 1.0, "eps")
    model = denoiser_from_prediction(lambda x, s: x, "eps")
    with pytest.raises(ValueError, match=r"sigma must be a number or have shape \(3,\)"):
        model(torch.zeros(3, 2, dtype=D), torch.ones(2, dtype=D))
