import math

import pytest
import torch

from paperzoo.diffusion.reflected_diffusion import (CosineSeriesDensity, cosine_series_estimate, minimax_terms,
                                                    neumann_heat_kernel, reflect_unit, sample_reflected_em)

F64 = torch.float64


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.2])
def test_heat_kernel_images_equal_series_integrate_to_one_and_neumann(sigma):
    y = torch.tensor([0.0, 0.2, 0.77, 1.0], dtype=F64)
    x = (torch.arange(4000, dtype=F64) + 0.5) / 4000
    q = neumann_heat_kernel(x, y, sigma)
    torch.testing.assert_close(q, neumann_heat_kernel(x, y, sigma, method="series"), rtol=0, atol=1e-10)
    torch.testing.assert_close(q.mean(0), torch.ones(4, dtype=F64), rtol=0, atol=1e-6)  # midpoint rule
    h = 1e-6  # one-sided difference at the walls: zero flux
    ends = torch.tensor([0.0, h, 1.0 - h, 1.0], dtype=F64)
    qe = neumann_heat_kernel(ends, y, sigma)
    assert float((qe[1] - qe[0]).abs().max()) / h < 1e-3 * float(qe.max())
    assert float((qe[3] - qe[2]).abs().max()) / h < 1e-3 * float(qe.max())


def test_series_marginal_is_heat_kernel_convolution():
    p = CosineSeriesDensity(torch.tensor([0.4, -0.3, 0.2], dtype=F64))
    y = (torch.arange(4000, dtype=F64) + 0.5) / 4000
    x = torch.tensor([0.0, 0.3, 0.9], dtype=F64)
    conv = (neumann_heat_kernel(x, y, 0.2) * p.density(y)).mean(1)
    torch.testing.assert_close(p.density(x, 0.2), conv, rtol=0, atol=1e-6)
    # score is the log-derivative of the marginal
    h = 1e-6
    fd = (p.density(x + h, 0.2).log() - p.density(x - h, 0.2).log()) / (2 * h)
    torch.testing.assert_close(p.score(x, 0.2)[1:], fd[1:], rtol=1e-6, atol=1e-6)


def test_reflect_unit_folds_onto_interval():
    x = torch.tensor([-0.25, 0.5, 1.25, 2.1, -3.7], dtype=F64)
    torch.testing.assert_close(reflect_unit(x), torch.tensor([0.25, 0.5, 0.75, 0.1, 0.3], dtype=F64))


def test_exact_score_sampler_reproduces_density_and_stays_inside():
    truth = CosineSeriesDensity(torch.tensor([0.6, -0.3, 0.25, 0.1], dtype=F64))
    g = torch.Generator().manual_seed(1)
    sigmas = torch.cat([torch.logspace(math.log10(1.5), -3, 150, dtype=F64), torch.zeros(1, dtype=F64)])
    x = sample_reflected_em(truth.denoise, torch.rand(5000, 1, generator=g, dtype=F64), sigmas, generator=g)
    assert bool(((x >= 0) & (x <= 1)).all())
    ks = float(truth.ks_distance(x.squeeze(1)))
    assert ks < 0.03  # about 1.5/sqrt(m) plus discretisation
    # the uniform start without the score is not the data law (the test can fail)
    assert float(truth.ks_distance(torch.rand(5000, generator=g, dtype=F64))) > 0.1


def test_projection_estimate_is_unbiased_and_minimax_terms():
    truth = CosineSeriesDensity(torch.tensor([0.5, -0.2], dtype=F64))
    g = torch.Generator().manual_seed(0)
    est = cosine_series_estimate(truth.sample(10000, generator=g), 4)
    torch.testing.assert_close(est.coefficients, torch.tensor([0.5, -0.2, 0.0, 0.0], dtype=F64), rtol=0, atol=0.04)
    assert minimax_terms(1000, 1.0) == 10 and minimax_terms(8000, 1.0) == 20 and minimax_terms(1, 3.0) == 1
    assert float(truth.tv_distance(truth.coefficients)) == 0.0


def test_errors():
    with pytest.raises(ValueError, match="sigma must be > 0"):
        neumann_heat_kernel(torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), 0.0)
    with pytest.raises(ValueError, match="x must lie in \\[0, 1\\]"):
        neumann_heat_kernel(torch.tensor([1.5], dtype=F64), torch.zeros(2, dtype=F64), 0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        neumann_heat_kernel(torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), 0.1, method="fft")
    with pytest.raises(ValueError, match="samples must lie in \\[0, 1\\]"):
        cosine_series_estimate(torch.tensor([-0.1, 0.5], dtype=F64), 3)
    with pytest.raises(ValueError, match="terms must be >= 1"):
        cosine_series_estimate(torch.tensor([0.1, 0.5], dtype=F64), 0)
    with pytest.raises(ValueError, match="nonnegative density"):
        CosineSeriesDensity(torch.tensor([2.0], dtype=F64)).sample(3)
    p = CosineSeriesDensity(torch.tensor([0.3], dtype=F64))
    sig = torch.tensor([1.0, 0.0], dtype=F64)
    with pytest.raises(ValueError, match="x must lie in \\[0, 1\\]"):
        sample_reflected_em(p.denoise, torch.full((3, 1), 2.0, dtype=F64), sig)
    with pytest.raises(ValueError, match="finite"):
        sample_reflected_em(p.denoise, torch.rand(3, 1, dtype=F64), torch.tensor([math.inf, 0.0], dtype=F64))
    with pytest.raises(ValueError, match="smoothness must be > 0"):
        minimax_terms(10, 0.0)
