"""SSO: closed forms in target space, the full-batch majorisation guarantee, the optimizer contract, errors."""

from __future__ import annotations


import pytest
import torch

from paperzoo.optim import SSO, target_surrogate
from tests.optim.checkpoint import reload_checkpoint


def _ce(y):
    return lambda z: torch.nn.functional.cross_entropy(z, y, reduction="sum")


def test_surrogate_minimiser_is_the_target_space_gradient_step():
    g = torch.Generator().manual_seed(0)
    z_t, grad = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    eta = 0.7
    best = target_surrogate(z_t - eta * grad, z_t, grad, eta)
    assert torch.allclose(best, -0.5 * eta * grad.pow(2).sum())
    for _ in range(5):
        other = z_t - eta * grad + 0.1 * torch.randn(4, 3, generator=g, dtype=torch.float64)
        assert target_surrogate(other, z_t, grad, eta) > best


def test_identity_targets_inner_gd_has_closed_form():
    # With z = theta, inner GD with step a contracts towards theta_t - eta g by (1 - a/eta) per step.
    theta0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    theta = torch.nn.Parameter(theta0.clone())
    target = torch.tensor([0.3, 0.1, -1.0], dtype=torch.float64)
    loss = lambda z: 0.5 * (z - target).pow(2).sum()  # noqa: E731
    eta, a, m = 0.8, 0.2, 7
    opt = SSO([theta], lr=a, eta=eta, inner_steps=m, line_search=False)
    opt.step(lambda: theta, loss)
    g = theta0 - target
    expected = theta0 - eta * g * (1 - (1 - a / eta) ** m)
    assert torch.allclose(theta.detach(), expected, atol=1e-12)
    assert opt.state[theta]["step"].item() == 1 and opt.state[theta]["inner_step"].item() == m


def test_identity_targets_one_exact_inner_step_is_sgd():
    torch.manual_seed(0)
    y = torch.tensor([0, 2, 1])
    z0 = torch.randn(3, 3, dtype=torch.float64)
    ours, ref = torch.nn.Parameter(z0.clone()), torch.nn.Parameter(z0.clone())
    opt = SSO([ours], lr=0.5, eta=0.5, inner_steps=1, line_search=False)
    sgd = torch.optim.SGD([ref], lr=0.5)
    for _ in range(5):
        opt.step(lambda: ours, _ce(y))
        sgd.zero_grad()
        _ce(y)(ref).backward()
        sgd.step()
    assert torch.allclose(ours.detach(), ref.detach(), atol=1e-12)


def test_full_batch_loss_decreases_monotonically_when_eta_is_below_one_over_l():
    # Summed softmax cross-entropy is 1/2-smooth per example in the logits: eta = 1 makes the surrogate an upper
    # bound, so every outer step of the majorisation-minimisation cannot increase the loss.
    g = torch.Generator().manual_seed(1)
    X = torch.randn(64, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    model = torch.nn.Linear(5, 3).double()
    opt = SSO(model.parameters(), lr=1.0, eta=1.0, inner_steps=5)
    losses = [float(opt.step(lambda: model(X), _ce(y))) for _ in range(15)]
    assert all(b <= a + 1e-10 for a, b in zip(losses, losses[1:]))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_converges_to_sklearn_logistic_regression_optimum(dtype):
    from sklearn.linear_model import LogisticRegression

    g = torch.Generator().manual_seed(2)
    X = torch.randn(80, 3, generator=g, dtype=torch.float64)
    y = (X[:, 0] - X[:, 1] + 1.0 * torch.randn(80, generator=g, dtype=torch.float64) > 0).long()
    ref = LogisticRegression(C=float("inf"), tol=1e-12, max_iter=100_000).fit(X.numpy(), y.numpy())
    w = torch.nn.Parameter(torch.zeros(3, dtype=dtype))
    b = torch.nn.Parameter(torch.zeros(1, dtype=dtype))
    Xd, yd = X.to(dtype), y.to(dtype)
    # Binary logistic loss is 1/4-smooth per example in its score: eta = 4 still majorises.
    opt = SSO([w, b], lr=1.0, eta=4.0, inner_steps=10)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    for _ in range(100):
        opt.step(lambda: Xd @ w + b, lambda z: bce(z, yd, reduction="sum"))
    tol = 1e-3 if dtype == torch.float32 else 1e-4
    assert torch.allclose(w.detach().double(), torch.tensor(ref.coef_[0]), atol=tol)
    assert torch.allclose(b.detach().double(), torch.tensor(ref.intercept_), atol=tol)


def test_state_dict_round_trip_and_scheduler_on_inner_lr():
    def fresh():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3).double()
        opt = SSO(model.parameters(), lr=0.5, eta=1.0, inner_steps=3)
        return model, opt, torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)

    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)

    def run(model, opt, sched, n):
        for _ in range(n):
            opt.step(lambda: model(X), _ce(y))
            sched.step()

    ref = fresh()
    run(*ref, 8)
    model, opt, sched = fresh()
    run(model, opt, sched, 5)
    new = reload_checkpoint(model, opt, sched, fresh)
    assert new[1].param_groups[0]["lr"] == 0.5 * 0.5 ** 2
    run(*new, 3)
    for a, b in zip(new[0].parameters(), ref[0].parameters()):
        assert torch.equal(a, b)


def test_maximize_ascends_and_lazy_state():
    z = torch.nn.Parameter(torch.zeros(3))
    unused = torch.nn.Parameter(torch.zeros(2))
    opt = SSO([z, unused], lr=0.1, eta=0.5, inner_steps=2, maximize=True)
    assert len(opt.state) == 0
    gain = lambda v: -(v - 1.0).pow(2).sum()  # noqa: E731
    before = float(gain(z.detach()))
    opt.step(lambda: z, gain)
    assert float(gain(z.detach())) > before
    assert torch.equal(unused.detach(), torch.zeros(2))


def test_errors():
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="eta must be > 0.0, got 0.0"):
        SSO([p], eta=0.0)
    with pytest.raises(ValueError, match="lr must be >= 0.0, got -1.0"):
        SSO([p], lr=-1.0)
    with pytest.raises(ValueError, match="inner_steps must be >= 0, got -1"):
        SSO([p], inner_steps=-1)
    with pytest.raises(ValueError, match=r"armijo_c must be < 1.0, got 1.0"):
        SSO([p], armijo_c=1.0)
    with pytest.raises(TypeError, match="line_search must be a bool"):
        SSO([p], line_search=1)
    opt = SSO([p])
    with pytest.raises(TypeError, match="SSO.step needs targets and loss callables"):
        opt.step()
    with pytest.raises(ValueError, match="loss\\(z\\) must return a scalar tensor"):
        opt.step(lambda: p, lambda z: z)
    q = torch.nn.Parameter(torch.zeros(1))
    two = SSO([{"params": [p]}, {"params": [q], "eta": 2.0}])
    with pytest.raises(ValueError, match=r"eta must be the same in every parameter group, got \[1.0, 2.0\]"):
        two.step(lambda: p, lambda z: z.sum())


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_nonfinite_surrogate_gradient_puts_the_parameters_back(policy):
    from paperzoo.optim import NonFiniteGradientError
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = SSO([p], lr=0.1, eta=1.0, inner_steps=3, line_search=False, nonfinite=policy)
    calls = []

    def targets():
        # A finite target gradient, then a NaN surrogate gradient at the third inner step (after two moves).
        calls.append(1)
        return p * 1.0 if len(calls) != 4 else p * float("nan")

    if policy == "raise":
        with pytest.raises(NonFiniteGradientError, match="NaN or inf"):
            opt.step(targets, lambda z: (z ** 2).sum())
    else:
        opt.step(targets, lambda z: (z ** 2).sum())
        assert opt.skipped_steps == 1
    assert len(calls) == 4
    assert torch.equal(p.detach(), torch.tensor([1.0, -2.0]))
    assert len(opt.state) == 0
