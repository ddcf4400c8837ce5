import pytest
import torch

from paperzoo.diffusion.f_distill import (F_DIVERGENCES, OneStepGenerator, distill_one_step, f_distill_direction,
                                          f_distill_loss, f_divergence_function, f_divergence_weight, student_density)
from paperzoo.diffusion.mixture import GaussianMixture


@pytest.mark.parametrize("divergence", F_DIVERGENCES)
def test_weight_is_f_second_derivative_times_r_squared(divergence):
    r = torch.linspace(0.05, 20.0, 57, dtype=torch.float64, requires_grad=True)
    f = f_divergence_function(r, divergence)
    (df,) = torch.autograd.grad(f.sum(), r, create_graph=True)
    (d2f,) = torch.autograd.grad(df.sum(), r)
    h = f_divergence_weight(r.detach().log(), divergence)
    torch.testing.assert_close(h, d2f * r.detach() ** 2)
    assert float(f_divergence_function(torch.ones(1, dtype=torch.float64), divergence)) == pytest.approx(0.0, abs=1e-12)


def test_closed_forms():
    lr = torch.tensor([-1.5, 0.0, 2.0], dtype=torch.float64)
    r = lr.exp()
    torch.testing.assert_close(f_divergence_weight(lr, "reverse_kl"), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(f_divergence_weight(lr, "forward_kl"), r)
    torch.testing.assert_close(f_divergence_weight(lr, "js"), r / (r + 1))
    torch.testing.assert_close(f_divergence_weight(lr, "jeffreys"), r + 1)


def test_reverse_kl_direction_is_dmd():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(5, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64)
    sigma = torch.rand(5, generator=g, dtype=torch.float64) + 0.1
    out = f_distill_direction(real, fake, torch.randn(5, generator=g, dtype=torch.float64), sigma, "reverse_kl")
    torch.testing.assert_close(out, sigma[:, None] ** 2 * (fake - real))  # D_fake - D_real by Tweedie


def test_exact_ratio_on_gaussians_forward_kl_gradient():
    # p = N(0, 1), q = N(m, 1) in 1-D at sigma = 0+: d/dm KL(p||q) = m. Exact ratio and scores, no normalisation.
    m = 0.7
    g = torch.Generator().manual_seed(1)
    x = m + torch.randn(400_000, 1, generator=g, dtype=torch.float64)
    log_ratio = (-0.5 * x**2 + 0.5 * (x - m) ** 2)[:, 0]
    sigma = torch.ones(x.shape[0], dtype=torch.float64)
    d = f_distill_direction(-x, -(x - m), log_ratio, sigma, "forward_kl", normalize=False)
    assert float(d.mean()) == pytest.approx(m, abs=0.02)          # dx/dm = 1
    d = f_distill_direction(-x, -(x - m), log_ratio, sigma, "reverse_kl", normalize=False)
    assert float(d.mean()) == pytest.approx(m, abs=1e-9)          # d/dm KL(q||p) = m too


def test_normalized_weights_are_finite_for_huge_ratios():
    out = f_distill_direction(torch.zeros(3, 2), torch.ones(3, 2), torch.tensor([-500.0, 0.0, 500.0]), torch.ones(3),
                              "forward_kl")
    torch.testing.assert_close(out, torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 3.0]]))


def test_loss_gradient_is_direction():
    x = torch.randn(4, 2, requires_grad=True)
    d = torch.randn(4, 2)
    f_distill_loss(x, d).backward()
    torch.testing.assert_close(x.grad, d / 4)


def test_student_density_is_kernel_mixture():
    s = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    q = student_density(s, 0.5)
    x = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    var = 0.25 + 0.3**2
    expected = torch.logsumexp(-((x - s) ** 2).sum(-1) / (2 * var), 0) - torch.log(torch.tensor(2 * 2 * torch.pi * var,
                                                                                              dtype=torch.float64))
    assert float(q.log_prob(x, 0.3)) == pytest.approx(float(expected))


def test_distill_moves_generator_to_teacher():
    teacher = GaussianMixture(torch.tensor([[3.0, 0.0]]), 0.1 * torch.eye(2).expand(1, 2, 2).clone())
    torch.manual_seed(0)
    net = distill_one_step(teacher, OneStepGenerator(2, 16, 1), "js", steps=150, lr=1e-2, batch_size=64,
                           generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = net(torch.randn(500, 2))
    assert float((x.mean(0) - teacher.means[0]).norm()) < 0.5


def test_errors():
    with pytest.raises(ValueError, match="divergence"):
        f_divergence_weight(torch.zeros(2), "tv")
    with pytest.raises(ValueError, match="r must be > 0"):
        f_divergence_function(torch.tensor([1.0, 0.0]), "js")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        f_distill_direction(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="weighting must return"):
        f_distill_direction(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2), torch.ones(2),
                            weighting=lambda s: 1.0)
    teacher = GaussianMixture(torch.zeros(1, 2), torch.eye(2)[None].clone())
    with pytest.raises(ValueError, match="sigma_max must be > sigma_min"):
        distill_one_step(teacher, OneStepGenerator(2), sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(TypeError, match="teacher must be a GaussianMixture"):
        distill_one_step("x", OneStepGenerator(2))
