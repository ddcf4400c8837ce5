import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from paperzoo.data.digits import single_thread

from paperzoo.divergences import (
    bdkd_student_loss,
    bdkd_weights,
    dml_student_loss,
    expected_calibration_error,
    forward_kl,
    online_distillation_step,
    online_teacher_loss,
    reverse_kl,
)


def _logits(seed=0, b=16, k=5, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, generator=g, dtype=dtype) * 2, torch.randn(b, k, generator=g, dtype=dtype) * 2


@pytest.mark.parametrize("tau", [1.0, 3.0])
def test_kl_directions_match_scipy_and_torch(tau):
    zs, zt = _logits()
    ps, pt = (zs / tau).softmax(1).numpy(), (zt / tau).softmax(1).numpy()
    fwd = forward_kl(zs, zt, temperature=tau)
    rev = reverse_kl(zs, zt, temperature=tau)
    np.testing.assert_allclose(fwd.numpy(), scipy.stats.entropy(pt, ps, axis=1), rtol=1e-10)
    np.testing.assert_allclose(rev.numpy(), scipy.stats.entropy(ps, pt, axis=1), rtol=1e-10)
    torch_fwd = F.kl_div(F.log_softmax(zs / tau, 1), F.softmax(zt / tau, 1), reduction="batchmean")
    assert forward_kl(zs, zt, temperature=tau, reduction="mean").item() == pytest.approx(torch_fwd.item(), rel=1e-10)


def test_bdkd_weights_follow_entropy_gap():
    # Row 0: student flat (higher entropy) -> reverse KL up-weighted; row 1: student sharper -> forward KL.
    zs = torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0]])
    zt = torch.tensor([[3.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    a, b = bdkd_weights(zs, zt, balance=3.0)
    assert a.tolist() == [1.0, 3.0] and b.tolist() == [3.0, 1.0]


def test_bdkd_student_loss_closed_form_and_reduces_to_dml_pieces():
    zs, zt = _logits(1)
    y = torch.arange(16) % 5
    tau, lam = 2.0, 2.0
    a, b = bdkd_weights(zs, zt, temperature=tau, balance=lam)
    expected = F.cross_entropy(zs, y) + tau ** 2 * (a * forward_kl(zs, zt, temperature=tau)
                                                    + b * reverse_kl(zs, zt, temperature=tau)).mean()
    got = bdkd_student_loss(zs, zt, y, temperature=tau, balance=lam)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)
    dml = dml_student_loss(zs, zt, y, temperature=tau)
    assert dml.item() == pytest.approx((F.cross_entropy(zs, y) + tau ** 2 * forward_kl(zs, zt, temperature=tau).mean())
                                       .item(), rel=1e-12)
    # Equal networks: both divergences vanish and only CE remains.
    assert bdkd_student_loss(zs, zs, y).item() == pytest.approx(F.cross_entropy(zs, y).item(), rel=1e-12)


def test_gradients_reach_only_own_network():
    zs, zt = _logits(2)
    zs.requires_grad_(True)
    zt.requires_grad_(True)
    y = torch.arange(16) % 5
    bdkd_student_loss(zs, zt, y).backward()
    assert zt.grad is None and zs.grad.abs().sum() > 0
    zs.grad = None
    online_teacher_loss(zt, zs, y).backward()
    assert zs.grad is None and zt.grad.abs().sum() > 0


def test_online_step_updates_both_networks_and_reduces_loss():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    student = torch.nn.Linear(6, 3)
    opt_t = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    opt_s = torch.optim.Adam(student.parameters(), lr=1e-2)
    with single_thread():
        first = online_distillation_step(teacher, student, x, y, opt_t, opt_s)
        for _ in range(30):
            last = online_distillation_step(teacher, student, x, y, opt_t, opt_s, method="dml")
    assert last.teacher < first.teacher and last.student < first.student


def _naive_ece(probs, labels, n_bins):
    conf, pred = probs.max(1), probs.argmax(1)
    total = 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        mask = (conf > lo) & (conf <= hi) if m > 0 else (conf <= hi)
        if mask.any():
            total += mask.mean() * abs((pred[mask] == labels[mask]).mean() - conf[mask].mean())
    return total


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_matches_naive_binning(n_bins):
    g = torch.Generator().manual_seed(4)
    probs = (torch.randn(300, 7, generator=g, dtype=torch.float64) * 2).softmax(1)
    labels = torch.randint(7, (300,), generator=g)
    got = expected_calibration_error(probs, labels, n_bins=n_bins)
    assert got.item() == pytest.approx(_naive_ece(probs.numpy(), labels.numpy(), n_bins), rel=1e-10)


def test_ece_closed_forms():
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, torch.tensor([0, 1])).item() == 0.0
    assert expected_calibration_error(probs, torch.tensor([1, 0])).item() == 1.0
    # Confidence 0.75 everywhere with 3 of 4 right: calibrated.
    p = torch.tensor([[0.75, 0.25]]).repeat(4, 1)
    assert expected_calibration_error(p, torch.tensor([0, 0, 0, 1])).item() == pytest.approx(0.0, abs=1e-7)


def test_bad_inputs():
    zs, zt = _logits(5)
    y = torch.arange(16) % 5
    with pytest.raises(ValueError, match=r"teacher_logits must have K = 5 \(from student_logits\) in its shape \(B, K\), got shape \(16, 4\)"):
        bdkd_student_loss(zs, zt[:, :4], y)
    with pytest.raises(ValueError, match="temperature must be > 0.0, got 0.0"):
        forward_kl(zs, zt, temperature=0.0)
    with pytest.raises(ValueError, match="balance must be >= 0.0, got -1.0"):
        bdkd_student_loss(zs, zt, y, balance=-1.0)
    with pytest.raises(ValueError, match=r"targets must have B = 16 \(from student_logits\) in its shape \(B,\), got shape \(3,\)"):
        dml_student_loss(zs, zt, y[:3])
    with pytest.raises(ValueError, match=r"method must be one of \['bdkd', 'dml'\], got 'kl'"):
        net = torch.nn.Linear(5, 5)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        online_distillation_step(net, net, zs.float(), y, opt, opt, method="kl")
    with pytest.raises(ValueError, match="rows summing to 1"):
        expected_calibration_error(zs.abs(), y)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\)"):
        expected_calibration_error(zs.softmax(1), y + 1)
    with pytest.raises(ValueError, match="n_bins must be >= 1, got 0"):
        expected_calibration_error(zs.softmax(1), y, n_bins=0)


# --- what the declarations and the bodies reject or handle (issue 9) ------------------------------------------------

def test_empty_batch_is_refused_not_nan():
    z = torch.zeros(0, 5)
    y = torch.zeros(0, dtype=torch.long)
    with pytest.raises(ValueError, match=r"student_logits must not be empty \(B = 0\), got shape \(0, 5\)"):
        forward_kl(z, z, reduction="mean")  # used to return NaN
    with pytest.raises(ValueError, match=r"student_logits must not be empty \(B = 0\)"):
        bdkd_student_loss(z, z, y)
    with pytest.raises(ValueError, match=r"student_logits must not be empty \(B = 0\)"):
        dml_student_loss(z, z, y)
    with pytest.raises(ValueError, match=r"teacher_logits must not be empty \(B = 0\)"):
        online_teacher_loss(z, z, y)


def test_targets_out_of_range_and_other_integer_dtypes():
    zs, zt = _logits(5)
    y = torch.arange(16) % 5
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 5\) \(K = 5 logits\), got values in "
                                         r"\[1, 5\]"):
        bdkd_student_loss(zs, zt, y + 1)  # used to raise IndexError inside torch's cross_entropy
    with pytest.raises(ValueError, match=r"targets must have entries >= 0"):
        dml_student_loss(zs, zt, y - 1)
    with pytest.raises(TypeError, match=r"targets must have an integer dtype, got torch.float64"):
        online_teacher_loss(zt, zs, y.double())
    assert dml_student_loss(zs, zt, y.int()).item() == pytest.approx(dml_student_loss(zs, zt, y).item())
    with pytest.raises(TypeError, match=r"teacher_logits must have the dtype of student_logits"):
        forward_kl(zs, zt.float())


def test_online_step_checks_the_batch_and_the_networks_outputs():
    torch.manual_seed(0)
    teacher, student = torch.nn.Linear(3, 4), torch.nn.Linear(3, 4)
    opt_t = torch.optim.SGD(teacher.parameters(), lr=0.1)
    opt_s = torch.optim.SGD(student.parameters(), lr=0.1)
    x, y = torch.randn(6, 3), torch.arange(6) % 4
    with pytest.raises(ValueError, match=r"x must hold one row per target \(B = 6 from targets\), got shape \(5, 3\)"):
        online_distillation_step(teacher, student, x[:5], y, opt_t, opt_s)
    with pytest.raises(ValueError, match=r"student must map x to floating logits of shape \(6, K\), got shape \(6,\)"):
        online_distillation_step(teacher, lambda v: v.sum(1), x, y, opt_t, opt_s)
    with pytest.raises(TypeError, match=r"teacher_optimizer must be a torch.optim.Optimizer, got str"):
        online_distillation_step(teacher, student, x, y, "sgd", opt_s)
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 4\)"):
        online_distillation_step(teacher, student, x, y + 1, opt_t, opt_s)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.floats(0.1, 10.0), st.floats(0.0, 5.0), st.integers(0, 2 ** 16))
def test_losses_are_finite_and_kl_nonnegative(b, k, tau, lam, seed):
    g = torch.Generator().manual_seed(seed)
    zs = 30 * torch.randn(b, k, generator=g, dtype=torch.float64)
    zt = 30 * torch.randn(b, k, generator=g, dtype=torch.float64)
    y = torch.randint(0, k, (b,), generator=g)
    assert bool((forward_kl(zs, zt, temperature=tau) >= -1e-12).all())
    assert bool((reverse_kl(zs, zt, temperature=tau) >= -1e-12).all())
    for loss in (bdkd_student_loss(zs, zt, y, temperature=tau, balance=lam), dml_student_loss(zs, zt, y, temperature=tau),
                 online_teacher_loss(zt, zs, y, temperature=tau)):
        assert bool(torch.isfinite(loss))
