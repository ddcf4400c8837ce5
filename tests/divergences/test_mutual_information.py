import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softplus

from paperzoo.data.gaussian_mi import gaussian_log_density_ratio, mi_to_rho, sample_correlated_gaussian
from paperzoo.divergences import (ESTIMATORS, ConcatCritic, MINEMovingAverage, SeparableCritic,
                                  logmeanexp_offdiag, mi_lower_bound)
from paperzoo.divergences.mutual_information import _js_fgan

# Numbers from the official estimators (github.com/ermongroup/smile-mi-estimator @ afa72e03, estimators.py) on the
# fixed score matrices stored with them: values, and gradients for SMILE and MINE.
OFFICIAL = json.loads((Path(__file__).parent / "fixtures" / "smile_official.json").read_text())


def _reference(T: np.ndarray, est: str, tau=5.0) -> float:
    """Element-by-element formulas with scipy, written independently of the vectorised code."""
    n = T.shape[0]
    off = np.array([T[i, j] for i in range(n) for j in range(n) if i != j])
    joint = np.mean(np.diag(T))
    lme = logsumexp(off) - math.log(len(off))
    if est == "infonce":
        return math.log(n) + np.mean([T[i, i] - logsumexp(T[i]) for i in range(n)])
    if est == "nwj":
        return joint - math.exp(lme - 1)
    if est in ("dv", "mine"):
        return joint - lme
    if est == "js":
        return joint + 1 - math.exp(lme)
    if est == "smile":
        c = np.clip(off, -tau, tau)
        return joint - (logsumexp(c) - math.log(len(c)))
    raise AssertionError(est)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("est", ESTIMATORS)
def test_values_match_scipy_reference(est, dtype):
    T = torch.randn(7, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 4
    got = mi_lower_bound(T.to(dtype), est, clip=2.0)
    assert got.dtype == dtype and got.shape == ()
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert got.item() == pytest.approx(_reference(T.numpy(), est, tau=2.0), rel=tol, abs=tol)


def test_batched_matches_loop_and_logmeanexp():
    T = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for est in ESTIMATORS:
        out = mi_lower_bound(T, est)
        assert out.shape == (3, 2)
        loop = torch.stack([torch.stack([mi_lower_bound(T[a, b], est) for b in range(2)]) for a in range(3)])
        torch.testing.assert_close(out, loop)
    off = T[0, 0][~torch.eye(5, dtype=torch.bool)]
    torch.testing.assert_close(logmeanexp_offdiag(T[0, 0]), torch.logsumexp(off, 0) - math.log(20))


def test_smile_clip_limits():
    T = torch.randn(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 10
    torch.testing.assert_close(mi_lower_bound(T, "smile", clip=None), mi_lower_bound(T, "dv"))
    torch.testing.assert_close(mi_lower_bound(T, "smile", clip=1e6), mi_lower_bound(T, "dv"))
    # tau -> 0: the partition term vanishes and SMILE reads E_P[T].
    torch.testing.assert_close(mi_lower_bound(T, "smile", clip=1e-9), T.diagonal().mean(), atol=1e-8, rtol=0)


def test_gradients_follow_the_paper():
    T0 = torch.randn(5, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    n = 5
    mask = ~torch.eye(n, dtype=torch.bool)
    # smile and js train with the f-GAN JS bound.
    diag_ref = torch.sigmoid(-T0.diagonal()) / n
    off_ref = -torch.sigmoid(T0) / (n * (n - 1))
    for est in ("smile", "js"):
        T = T0.clone().requires_grad_()
        mi_lower_bound(T, est).backward()
        torch.testing.assert_close(T.grad.diagonal(), diag_ref)
        torch.testing.assert_close(T.grad[mask], off_ref[mask])
    # MINE: grad E_P[T] - grad E_Q[e^T] / m, with m the moving average after this batch.
    ma = MINEMovingAverage(momentum=0.5)
    ma.update(torch.tensor(2.0, dtype=torch.float64))
    T = T0.clone().requires_grad_()
    val = mi_lower_bound(T, "mine", moving_average=ma)
    torch.testing.assert_close(val, mi_lower_bound(T0, "dv"))
    val.backward()
    z = torch.exp(T0[mask]).mean()
    m = 0.5 * 2.0 + 0.5 * z
    assert ma.value.item() == pytest.approx(m.item())
    torch.testing.assert_close(T.grad[mask], -torch.exp(T0[mask]) / (n * (n - 1)) / m)
    torch.testing.assert_close(T.grad.diagonal(), torch.full((n,), 1.0 / n, dtype=torch.float64))


def test_optimal_critic_properties():
    g = torch.Generator().manual_seed(0)
    n, mi = 64, 8.0
    x, y = sample_correlated_gaussian(n * 100, 20, mi=mi, generator=g, dtype=torch.float64)
    T = torch.stack([gaussian_log_density_ratio(x[k * n:(k + 1) * n], y[k * n:(k + 1) * n], mi_to_rho(mi, 20))
                     for k in range(100)])
    est = {e: mi_lower_bound(T, e) for e in ESTIMATORS}
    assert bool((est["infonce"] <= math.log(n) + 1e-12).all())
    # Clipped summands lie in [e^-5, e^5]: SMILE's partition log-estimate varies far less than DV's.
    assert est["smile"].var() < est["dv"].var()
    assert est["js"].mean().item() == pytest.approx(mi, abs=1.5)


@pytest.mark.parametrize("critic_cls", [SeparableCritic, ConcatCritic])
def test_critics_shape_and_orientation(critic_cls):
    torch.manual_seed(0)
    critic = critic_cls(3, 2, hidden_dim=8, depth=2).double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    T = critic(x, y)
    assert T.shape == (4, 4)
    # T[i, j] depends on x_i and y_j only.
    T1 = critic(x[[1, 0, 2, 3]], y)
    torch.testing.assert_close(T1[0], T[1])
    T2 = critic(x, y[[0, 1, 3, 2]])
    torch.testing.assert_close(T2[:, 3], T[:, 2])


def test_concat_critic_equals_the_mlp_on_concatenated_pairs():
    torch.manual_seed(1)
    critic = ConcatCritic(3, 2, hidden_dim=8, depth=2).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    pairs = torch.cat([x[:, None, :].expand(5, 5, 3), y[None, :, :].expand(5, 5, 2)], dim=-1)
    torch.testing.assert_close(critic(x, y), critic.f(pairs).squeeze(-1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(critic.pair_scores(x, y), critic(x, y).diagonal(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("i", range(len(OFFICIAL["cases"])))
def test_matches_official_code_numbers(i):
    case = OFFICIAL["cases"][i]
    off = case["official"]
    T0 = torch.tensor(case["scores"], dtype=torch.float64)
    close = dict(rel=1e-12, abs=1e-12)
    for ours, key in (("nwj", "nwj"), ("dv", "dv")):
        assert mi_lower_bound(T0, ours).item() == pytest.approx(off[key], **close), key
    # The official InfoNCE casts log N to float32 (``.float()``): agreement to that constant's rounding.
    assert mi_lower_bound(T0, "infonce").item() == pytest.approx(off["infonce"], rel=0, abs=1e-7)
    assert _js_fgan(T0).item() == pytest.approx(off["js_fgan"], **close)
    # Deviation (1): our js evaluates NWJ at T + 1, the official one at T, so ours at T - 1 is the official value.
    assert mi_lower_bound(T0 - 1.0, "js").item() == pytest.approx(off["js"], **close)
    for clip, key in ((1.0, "smile_1.0"), (5.0, "smile_5.0"), (None, "smile_None")):
        T = T0.clone().requires_grad_()
        val = mi_lower_bound(T, "smile", clip=clip)
        val.backward()
        assert val.item() == pytest.approx(off[key], **close), key
        torch.testing.assert_close(T.grad, torch.tensor(off[key + "_grad"], dtype=torch.float64), rtol=1e-12,
                                   atol=1e-14)
    # MINE with a running average of 2.0 and momentum 0.9: same value (DV) and same gradient.
    ma = MINEMovingAverage(momentum=0.9)
    ma.value = torch.tensor(2.0, dtype=torch.float64)
    T = T0.clone().requires_grad_()
    val = mi_lower_bound(T, "mine", moving_average=ma)
    val.backward()
    assert val.item() == pytest.approx(off["mine_buffer2"], **close)
    torch.testing.assert_close(T.grad, torch.tensor(off["mine_buffer2_grad"], dtype=torch.float64), rtol=1e-12,
                               atol=1e-14)
    assert math.exp(logmeanexp_offdiag(T0).item()) == pytest.approx(off["mine_batch_partition"], **close)


def test_errors():
    with pytest.raises(ValueError, match=r"scores must have N = 3 \(from scores\) in its shape \(\.\.\., N, N\), got shape \(3, 4\)"):
        mi_lower_bound(torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"scores must have N >= 2 samples"):
        mi_lower_bound(torch.zeros(1, 1))
    with pytest.raises(ValueError, match=r"estimator must be one of"):
        mi_lower_bound(torch.zeros(3, 3), "mint")
    with pytest.raises(ValueError, match=r"clip must be > 0.0, got -1.0"):
        mi_lower_bound(torch.zeros(3, 3), clip=-1.0)
    with pytest.raises(ValueError, match=r"scores must be finite"):
        mi_lower_bound(torch.full((3, 3), float("nan")))
    with pytest.raises(ValueError, match=r"moving_average is only used by estimator 'mine'"):
        mi_lower_bound(torch.zeros(3, 3), "dv", moving_average=MINEMovingAverage())
    with pytest.raises(ValueError, match=r"momentum must be < 1.0, got 1.0"):
        MINEMovingAverage(momentum=1.0)
    with pytest.raises(ValueError, match=r"y must have shape \(4, 2\), got \(3, 2\)"):
        SeparableCritic(3, 2, hidden_dim=4)(torch.zeros(4, 3), torch.zeros(3, 2))
