import json
import math
from pathlib import Path

import numpy as np
import ot
import pytest
import scipy.stats
import torch

from paperzoo.transport.sliced import (
    _cv_parts,
    projected_wasserstein,
    random_projections,
    sliced_wasserstein,
    sliced_wasserstein_cv,
)

F64 = torch.float64
# Numbers from the official CV-SW code (github.com/khainb/CV-SW @ faee4a83, GradientFlow/utils.py: SW, LCVSW, UCVSW
# at p = 2 on the fixed inputs and directions stored with them; the official functions return square roots).
OFFICIAL = json.loads((Path(__file__).parent / "fixtures" / "cv_sw_official.json").read_text())


def _clouds(n=40, m=60, d=4, seed=0, dtype=F64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, dtype=dtype, generator=g)
    y = 0.5 * torch.randn(m, d, dtype=dtype, generator=g) + 1.0
    a = torch.rand(n, dtype=dtype, generator=g) + 0.1
    b = torch.rand(m, dtype=dtype, generator=g) + 0.1
    return x, y, a, b, g


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("case", ["equal", "unequal", "weighted"])
def test_matches_pot_with_same_projections(p, case):
    x, y, a, b, g = _clouds()
    if case == "equal":
        y, a, b = y[:40], None, None
    elif case == "unequal":
        a, b = None, None
    theta = random_projections(25, 4, dtype=F64, generator=g)
    ours = float(sliced_wasserstein(x, y, p=p, a=a, b=b, projections=theta))
    an = None if a is None else (a / a.sum()).numpy()
    bn = None if b is None else (b / b.sum()).numpy()
    pot = ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), an, bn, projections=theta.T.numpy(), p=p)
    assert ours == pytest.approx(pot ** p, rel=1e-10)


def test_one_dimensional_closed_form():
    x, y, a, b, _ = _clouds(d=1)
    theta = torch.tensor([[1.0], [-1.0]], dtype=F64)
    w1 = scipy.stats.wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy(), a.numpy(), b.numpy())
    assert float(sliced_wasserstein(x, y, p=1, a=a, b=b, projections=theta)) == pytest.approx(w1, rel=1e-10)
    # Equal-size uniform: W_2^2 = mean of squared differences of order statistics.
    xs, ys = torch.sort(x[:40, 0]).values, torch.sort(y[:40, 0]).values
    exact = float(((xs - ys) ** 2).mean())
    assert float(sliced_wasserstein(x, y[:40], n_projections=3)) == pytest.approx(exact, rel=1e-12)
    # Two Diracs in 1-D: |x - y|^p.
    assert float(sliced_wasserstein(torch.tensor([[0.0]]), torch.tensor([[3.0]]), n_projections=2, p=3)) == 27.0


def test_translation_lower_cv_closed_form():
    # y = x + c: every projected W_2^2 equals (theta^T c)^2 = C_low, so with the closed-form centring of the official
    # code, gamma_hat = 1 - L e^2 / sum_l (C_l - E C)^2 with e = mean(C) - E C, and the estimate is
    # E C + L e^3 / sum_l (C_l - E C)^2: the plain Monte Carlo error e times a factor O(1/L). (The sample-mean
    # centring of the earlier version had gamma_hat = 1 and returned E C exactly.)
    x, _, _, _, g = _clouds(d=6)
    c = torch.randn(6, dtype=F64, generator=g)
    theta = random_projections(10, 6, dtype=F64, generator=g)
    exact = float(c.pow(2).sum()) / 6
    C = (theta @ c).pow(2)
    e = float(C.mean()) - exact
    expected = exact + 10 * e ** 3 / float((C - exact).pow(2).sum())
    est = sliced_wasserstein_cv(x, x + c, projections=theta)
    assert float(est) == pytest.approx(expected, rel=1e-10)
    plain = float(sliced_wasserstein(x, x + c, projections=theta))
    assert plain == pytest.approx(exact + e, rel=1e-10)
    assert abs(float(est) - exact) < 0.5 * abs(plain - exact)


def test_cv_expectations_closed_form():
    # E_theta C_up = (||dm||^2 + tr S_x + tr S_y) / d: check by MC over many directions.
    x, y, a, b, g = _clouds(d=5)
    theta = random_projections(200_000, 5, dtype=F64, generator=g)
    px, py = x @ theta.T, y @ theta.T
    aw, bw = a / a.sum(), b / b.sum()
    c_up = (aw @ px - bw @ py) ** 2 + aw @ (px - aw @ px) ** 2 + bw @ (py - bw @ py) ** 2
    mx, my = aw @ x, bw @ y
    expected = (float((mx - my).pow(2).sum()) + float(aw @ (x - mx).pow(2).sum(1)) + float(bw @ (y - my).pow(2).sum(1))) / 5
    assert float(c_up.mean()) == pytest.approx(expected, rel=1e-2)


@pytest.mark.parametrize("variant", ["lower", "upper"])
def test_cv_unbiased_and_lower_variance(variant):
    x, y, a, b, g = _clouds(n=80, m=80, d=5)
    reps, L = 200, 50
    thetas = random_projections(reps * L, 5, dtype=F64, generator=g).reshape(reps, L, 5)
    mc = torch.stack([sliced_wasserstein(x, y, projections=t) for t in thetas])
    cv = torch.stack([sliced_wasserstein_cv(x, y, projections=t, variant=variant) for t in thetas])
    # Reference value from 100k independent directions, with its own Monte Carlo error in the error bar.
    w = projected_wasserstein(x, y, random_projections(100_000, 5, dtype=F64, generator=g))
    truth = w.mean()
    se = math.sqrt(float(cv.var()) / reps + float(w.var()) / w.numel())
    assert abs(float(cv.mean() - truth)) < 4 * se
    assert float(cv.var()) < float(mc.var())


def test_weighted_cv_and_gradients_float32():
    x, y, a, b, g = _clouds(dtype=torch.float32)
    x.requires_grad_(True)
    est = sliced_wasserstein_cv(x, y, a=a, b=b, n_projections=20, variant="upper", generator=g)
    assert est.dtype == torch.float32 and est.dim() == 0
    est.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    x2 = x.detach().clone().requires_grad_(True)
    sliced_wasserstein(x2, y, a=a, b=b, n_projections=20, generator=g).backward()
    assert torch.isfinite(x2.grad).all()


def test_seeded_generator_reproducible():
    x, y, *_ = _clouds()
    r1 = sliced_wasserstein(x, y, n_projections=10, generator=torch.Generator().manual_seed(3))
    r2 = sliced_wasserstein(x, y, n_projections=10, generator=torch.Generator().manual_seed(3))
    assert float(r1) == float(r2)
    per = projected_wasserstein(x, y, random_projections(10, 4, dtype=F64, generator=torch.Generator().manual_seed(3)))
    assert per.shape == (10,) and float(per.mean()) == pytest.approx(float(r1), rel=1e-12)


def test_bad_inputs():
    x, y, a, b, _ = _clouds()
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got ndarray"):
        sliced_wasserstein(x.numpy(), y, n_projections=3)
    with pytest.raises(ValueError, match=r"y must have d = 4 \(from x\) in its shape \(m, d\), got shape \(60, 3\)"):
        sliced_wasserstein(x, y[:, :3], n_projections=3)
    with pytest.raises(TypeError, match="y must have the dtype of x"):
        sliced_wasserstein(x, y.float(), n_projections=3)
    with pytest.raises(ValueError, match="n_projections must be >= 1, got 0"):
        sliced_wasserstein(x, y, n_projections=0)
    with pytest.raises(ValueError, match="n_projections must be given when projections is None"):
        sliced_wasserstein(x, y)
    with pytest.raises(ValueError, match="p must be >= 1.0, got 0.5"):
        sliced_wasserstein(x, y, n_projections=3, p=0.5)
    with pytest.raises(ValueError, match=r"a must have n = 40 \(from x\) in its shape \(n,\), got shape \(60,\)"):
        sliced_wasserstein(x, y, n_projections=3, a=b)
    with pytest.raises(ValueError, match="b must be >= 0 entrywise"):
        sliced_wasserstein(x, y, n_projections=3, b=-b)
    with pytest.raises(ValueError, match="a must have positive total mass"):
        sliced_wasserstein(x, y, n_projections=3, a=torch.zeros_like(a))
    with pytest.raises(ValueError, match="x must be finite"):
        sliced_wasserstein(x * float("nan"), y, n_projections=3)
    with pytest.raises(ValueError, match=r"projections must have d = 4 \(from x\) in its shape \(L, d\), got shape \(5, 3\)"):
        sliced_wasserstein(x, y, projections=torch.ones(5, 3, dtype=F64))
    with pytest.raises(ValueError, match=r"variant must be one of \['lower', 'upper'\], got 'mid'"):
        sliced_wasserstein_cv(x, y, n_projections=3, variant="mid")
    with pytest.raises(ValueError, match="n_projections must be >= 2, got 1"):
        sliced_wasserstein_cv(x, y, n_projections=1)
    with pytest.raises(ValueError, match="projections must have at least 2 rows .directions. for a control variate, got 1"):
        sliced_wasserstein_cv(x, y, projections=torch.ones(1, 4, dtype=F64))


def test_ties_and_zero_weights_match_pot():
    # Duplicate points, zero weights and equal uniform CDF breakpoints (n = 2 m) exercise the merge's tie rule.
    x, y, a, b, g = _clouds(n=40, m=20)
    x = torch.cat([x[:20], x[:20]])
    a = a.clone()
    a[::3] = 0.0
    theta = random_projections(15, 4, dtype=F64, generator=g)
    for aa, bb in [(a, b), (None, None), (a, None)]:
        ours = float(sliced_wasserstein(x, y, a=aa, b=bb, projections=theta))
        an = None if aa is None else (aa / aa.sum()).numpy()
        bn = None if bb is None else (bb / bb.sum()).numpy()
        pot = ot.sliced_wasserstein_distance(x.numpy(), y.numpy(), an, bn, projections=theta.T.numpy())
        assert ours == pytest.approx(pot ** 2, rel=1e-10)


def _official_case(i):
    case = OFFICIAL["cases"][i]
    x, y, theta = (torch.tensor(case[k], dtype=F64) for k in ("x", "y", "theta"))
    return x, y, theta, case["official"]


@pytest.mark.parametrize("i", range(len(OFFICIAL["cases"])))
def test_matches_official_code_numbers(i):
    x, y, theta, official = _official_case(i)
    assert float(sliced_wasserstein(x, y, projections=theta)) == pytest.approx(official["SW"] ** 2, rel=1e-12)
    for variant, key in (("lower", "LCVSW"), ("upper", "UCVSW")):
        ours = float(sliced_wasserstein_cv(x, y, projections=theta, variant=variant))
        assert ours == pytest.approx(official[key] ** 2, rel=1e-12), variant


@pytest.mark.parametrize("i", range(len(OFFICIAL["cases"])))
def test_sample_mean_centring_is_told_apart_by_the_official_numbers(i):
    # The earlier estimator centred C at its sample mean inside gamma_hat; the fixture must reject that version.
    x, y, theta, official = _official_case(i)
    w, controls = _cv_parts(x, y, theta, None, None)
    for variant, key in (("lower", "LCVSW"), ("upper", "UCVSW")):
        c, expected = controls[variant]
        dc = c - c.mean()
        gamma = ((w - w.mean()) * dc).sum() / dc.pow(2).sum()
        sample_centred = float(w.mean() - gamma * (c.mean() - expected))
        assert abs(sample_centred - official[key] ** 2) > 1e-6 * official[key] ** 2, variant
