import math

import numpy as np
import pytest
import torch

from paperzoo.diffusion.f_distill import OneStepGenerator
from paperzoo.diffusion.mixture import GaussianMixture
from paperzoo.diffusion.uni_instruct import uni_instruct_distill, uni_instruct_loss

B = 0.5  # student x0 = theta + B z
DT = torch.float64


def _gm(mean, var):
    return GaussianMixture(torch.tensor([[float(mean)]], dtype=DT), torch.tensor([[[float(var)]]], dtype=DT))


def _quad_grad(theta, sigmas, divergence, n=40):
    """sum_j c_j d/dtheta E[S_f] at levels sigmas (coefficients c_j), by Gauss-Hermite over (z, eps)."""
    nodes, w = np.polynomial.hermite_e.hermegauss(n)
    nodes, w = torch.tensor(nodes, dtype=DT), torch.tensor(w / math.sqrt(2 * math.pi), dtype=DT)
    z, e = torch.meshgrid(nodes, nodes, indexing="ij")
    wz = (w[:, None] * w[None, :]).reshape(-1)
    z, e = z.reshape(-1), e.reshape(-1)
    th = torch.tensor(theta, dtype=DT, requires_grad=True)
    sig = sigmas.repeat_interleave(z.numel())
    zz, ee = z.repeat(len(sigmas)), e.repeat(len(sigmas))
    x = (th + B * zz + sig * ee)[:, None]
    return th, x, ee[:, None], sig, wz.repeat(len(sigmas))


def _surrogate_grad(theta, sigmas, coef, divergence):
    th, x, ee, sig, wz = _quad_grad(theta, sigmas, divergence)
    # uni_instruct_loss averages; weight each point by its quadrature weight times its level coefficient
    c = coef.repeat_interleave(wz.numel() // len(sigmas))
    n = x.shape[0]  # the loss is a mean of per-sample terms: weight each by n * quadrature weight * coefficient
    loss = uni_instruct_loss(x, ee, sig, _gm(0.0, 1.0), _gm(theta, B**2), divergence, normalize=False,
                             weighting=lambda s: n * wz * c)
    (g,) = torch.autograd.grad(loss, th)
    return float(g)


def _fisher(theta, sigma, divergence):
    """F_f(sigma) = E_q[h(r) (s_p - s_q)^2] on a grid, exact Gaussians p = N(0, 1+s^2), q = N(theta, B^2+s^2)."""
    vp, vq = 1 + sigma**2, B**2 + sigma**2
    x = torch.linspace(-14, 14, 40001, dtype=DT)
    lp = -0.5 * x**2 / vp - 0.5 * math.log(2 * math.pi * vp)
    lq = -0.5 * (x - theta) ** 2 / vq - 0.5 * math.log(2 * math.pi * vq)
    r = torch.exp(lp - lq)
    h = {"reverse_kl": torch.ones_like(r), "forward_kl": r, "js": r / (r + 1), "squared_hellinger": r.sqrt() / 4}
    d = -x / vp + (x - theta) / vq
    return float(torch.trapezoid(lq.exp() * h[divergence] * d**2, x))


@pytest.mark.parametrize("divergence", ["reverse_kl", "forward_kl", "js", "squared_hellinger"])
def test_single_level_gradient_matches_finite_difference(divergence):
    theta, sigma, eps = 0.6, 0.8, 1e-4
    fd = (_fisher(theta + eps, sigma, divergence) - _fisher(theta - eps, sigma, divergence)) / (2 * eps)
    g = _surrogate_grad(theta, torch.tensor([sigma], dtype=DT), torch.ones(1, dtype=DT), divergence)
    assert g == pytest.approx(fd, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("divergence", ["reverse_kl", "forward_kl"])
def test_level_integral_reduces_to_f_distill_end_gradients(divergence):
    # int_a^b sigma dF_f/dtheta dsigma = d/dtheta [D_f(sigma_a) - D_f(sigma_b)]; for Gaussian KLs d/dm = m / v
    theta, a, b = 0.6, 0.3, 2.0
    nodes, w = np.polynomial.legendre.leggauss(16)
    s = torch.tensor(a + (b - a) * (nodes + 1) / 2, dtype=DT)
    coef = torch.tensor(w * (b - a) / 2, dtype=DT) * s
    g = _surrogate_grad(theta, s, coef, divergence)
    v = (lambda sg: 1 + sg**2) if divergence == "reverse_kl" else (lambda sg: B**2 + sg**2)
    assert g == pytest.approx(theta * (1 / v(a) - 1 / v(b)), rel=1e-5)


def test_reverse_kl_is_the_score_identity_form():
    g = torch.Generator().manual_seed(0)
    teacher = GaussianMixture(torch.randn(3, 2, generator=g, dtype=DT), 0.3 * torch.eye(2, dtype=DT).expand(3, 2, 2).clone())
    student = GaussianMixture(torch.randn(4, 2, generator=g, dtype=DT), 0.2 * torch.eye(2, dtype=DT).expand(4, 2, 2).clone())
    x0, eps = torch.randn(7, 2, generator=g, dtype=DT), torch.randn(7, 2, generator=g, dtype=DT)
    sigma = torch.rand(7, generator=g, dtype=DT) + 0.2
    x = x0 + sigma[:, None] * eps
    dp, dq = teacher.denoise(x, sigma), student.denoise(x, sigma)
    want = ((dp - dq) * (dp + dq - 2 * x0)).sum(-1).mean()
    torch.testing.assert_close(uni_instruct_loss(x, eps, sigma, teacher, student, "reverse_kl"), want)
    # h = 1: normalisation is a no-op for the reverse KL
    torch.testing.assert_close(uni_instruct_loss(x, eps, sigma, teacher, student, "reverse_kl", normalize=False), want)


def test_errors():
    gm2 = GaussianMixture(torch.zeros(1, 2, dtype=DT), torch.eye(2, dtype=DT)[None].clone())
    x, s = torch.zeros(4, 2, dtype=DT), torch.ones(4, dtype=DT)
    with pytest.raises(ValueError, match="noise must have d = 2"):
        uni_instruct_loss(x, torch.zeros(4, 3, dtype=DT), s, gm2, gm2)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        uni_instruct_loss(x, x, torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=DT), gm2, gm2)
    with pytest.raises(ValueError, match="student has dimension 1"):
        uni_instruct_loss(x, x, s, gm2, _gm(0.0, 1.0))
    with pytest.raises(ValueError, match="weighting must return a tensor of shape"):
        uni_instruct_loss(x, x, s, gm2, gm2, weighting=lambda sg: sg[:2])
    with pytest.raises(ValueError, match="sigma_max must be > sigma_min"):
        uni_instruct_distill(gm2, OneStepGenerator(2, 4, 1).double(), sigma_min=1.0, sigma_max=0.5)
    with pytest.raises((ValueError, TypeError), match="divergence"):
        uni_instruct_loss(x, x, s, gm2, gm2, "kl")


def test_distill_runs_and_is_reproducible():
    teacher = GaussianMixture(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), 0.1 * torch.eye(2).expand(2, 2, 2).clone())
    outs = []
    for _ in range(2):
        torch.manual_seed(0)
        net = uni_instruct_distill(teacher, OneStepGenerator(2, 16, 1), "forward_kl", steps=5, batch_size=32,
                                   generator=torch.Generator().manual_seed(1))
        outs.append(net(torch.ones(3, 2)).detach())
    assert bool(torch.isfinite(outs[0]).all())
    torch.testing.assert_close(outs[0], outs[1])


def test_kde_fast_path_matches_student_density():
    from paperzoo.diffusion.f_distill import _log_prob_and_score, student_density
    from paperzoo.diffusion.uni_instruct import _kde_log_prob_and_score
    g = torch.Generator().manual_seed(3)
    pts, x = torch.randn(9, 2, generator=g, dtype=DT), torch.randn(5, 2, generator=g, dtype=DT)
    sigma = torch.rand(5, generator=g, dtype=DT) + 0.05
    want = _log_prob_and_score(student_density(pts, 0.3), x, sigma)
    for a, b in zip(_kde_log_prob_and_score(pts, 0.3, x, sigma), want):
        torch.testing.assert_close(a, b)
