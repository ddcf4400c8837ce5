import numpy as np
import ot
import pytest
import torch
from torch import nn

from paperzoo.data.digits import digits_split
from paperzoo.data.multi_digits import spatial_multi_digits
from paperzoo.divergences import (SeparableCritic, gradient_penalty, mi_lower_bound, spectral_normalize,
                                  wasserstein_dependency, wpc_loss)


def _joint_product_w1(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact W1 (Euclidean ground cost) between the empirical joint {(x_i, y_i)} and the off-diagonal product
    {(x_i, y_j), i != j}, the two measures the score-matrix dual compares; solved by POT's network simplex."""
    n = x.shape[0]
    joint = torch.cat([x, y], 1).numpy()
    ii, jj = np.where(~np.eye(n, dtype=bool))
    prod = np.concatenate([x.numpy()[ii], y.numpy()[jj]], 1)
    M = ot.dist(joint, prod, metric="euclidean")
    return float(ot.emd2(np.full(n, 1 / n), np.full(len(ii), 1 / len(ii)), M))


def test_dual_closed_form_and_batched():
    T = torch.randn(2, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = ~torch.eye(6, dtype=torch.bool)
    ref = torch.stack([t.diagonal().mean() - t[mask].mean() for t in T])
    torch.testing.assert_close(wasserstein_dependency(T), ref)
    torch.testing.assert_close(wasserstein_dependency(T, "contrastive"), mi_lower_bound(T, "infonce"))
    # A critic that ignores its inputs' dependence scores zero.
    assert wasserstein_dependency(torch.ones(5, 5, dtype=torch.float64)).item() == pytest.approx(0.0)


def test_dual_is_below_exact_w1_for_lipschitz_critics():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 2, generator=g, dtype=torch.float64)
    y = x + 0.3 * torch.randn(12, 2, generator=g, dtype=torch.float64)
    w1 = _joint_product_w1(x, y)
    # f(x, y) = -||x - y|| is 1-Lipschitz in (x, y) up to sqrt(2): divide by it.
    f = -torch.cdist(x, y) / np.sqrt(2)
    assert wasserstein_dependency(f).item() <= w1 + 1e-12
    assert wasserstein_dependency(f).item() > 0.3 * w1  # and it is a useful fraction of the exact value
    # Spectral normalisation gives a 1-Lipschitz MLP in z = (x, y); the dual of any such critic is below W1.
    torch.manual_seed(0)
    net = spectral_normalize(nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))).double()
    for _ in range(30):  # let power iteration converge
        net(torch.zeros(1, 4, dtype=torch.float64))
    net.eval()
    z = torch.cat([x[:, None, :].expand(12, 12, 2), y[None, :, :].expand(12, 12, 2)], -1)
    scores = net(z).squeeze(-1)
    assert wasserstein_dependency(scores).item() <= w1 + 1e-9
    zr = torch.randn(200, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(net(zr).sum(), zr)
    assert grad.norm(dim=1).max().item() <= 1.0 + 1e-6


def test_gradient_penalty_on_linear_critic():
    a, b = torch.tensor([0.6, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.2], dtype=torch.float64)
    f = lambda x, y: x @ a + y @ b  # noqa: E731, gradient norm sqrt(0.36 + 1.44) everywhere
    x, y = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64)
    norm = (0.36 + 1.44) ** 0.5
    assert gradient_penalty(f, x, y).item() == pytest.approx((norm - 1) ** 2)
    assert gradient_penalty(lambda x, y: 0.5 * (x @ a), x, y, one_sided=True).item() == 0.0


def test_wpc_loss_trains_and_penalty_matches_separable_pair_scores():
    torch.manual_seed(0)
    critic = SeparableCritic(3, 3, hidden_dim=16, embed_dim=4, depth=2).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    y = x + 0.1 * torch.randn(16, 3, dtype=torch.float64)
    torch.testing.assert_close(critic.pair_scores(x, y), critic(x, y).diagonal())
    loss0 = wpc_loss(critic, x, y, gp_weight=0.0)
    torch.testing.assert_close(loss0, -mi_lower_bound(critic(x, y), "infonce"))
    loss = wpc_loss(critic, x, y, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in critic.parameters())


def test_spatial_multi_digits_factors_and_shift():
    split = digits_split(0.3, generator=torch.Generator().manual_seed(0))
    x, y, c = spatial_multi_digits(split.train_x, split.train_y, 50, 3, shift=1,
                                   generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (50, 192) and c.shape == (50, 3)
    # Each 64-pixel block is an image of the stated class (x) and of the next class (y).
    lookup = {tuple(np.round(img.numpy(), 6)): int(lbl) for img, lbl in zip(split.train_x, split.train_y)}
    for j in range(3):
        xs = [lookup[tuple(np.round(v.numpy(), 6))] for v in x[:, 64 * j:64 * (j + 1)]]
        ys = [lookup[tuple(np.round(v.numpy(), 6))] for v in y[:, 64 * j:64 * (j + 1)]]
        assert xs == c[:, j].tolist()
        assert ys == ((c[:, j] + 1) % 10).tolist()


def test_errors():
    with pytest.raises(ValueError, match=r"form must be one of \['dual', 'contrastive'\], got 'kl'"):
        wasserstein_dependency(torch.zeros(3, 3), "kl")
    with pytest.raises(ValueError, match=r"scores must have at least 2 dimension\(s\) \(\.\.\., N, N\), got shape \(3,\)"):
        wasserstein_dependency(torch.zeros(3))
    with pytest.raises(ValueError, match=r"gp_weight must be >= 0.0, got -1.0"):
        wpc_loss(SeparableCritic(2, 2, hidden_dim=4), torch.zeros(4, 2), torch.zeros(4, 2), gp_weight=-1.0)
    with pytest.raises(ValueError, match=r"pair_scores must return shape \(4,\)"):
        gradient_penalty(lambda x, y: x, torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(TypeError, match=r"module must be a torch.nn.Module"):
        spectral_normalize(3)
    split = digits_split(0.3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"n_positions must be >= 1, got 0"):
        spatial_multi_digits(split.train_x, split.train_y, 4, 0)
    with pytest.raises(ValueError, match=r"labels must cover every class"):
        spatial_multi_digits(split.train_x[:5], split.train_y[:5] * 0, 4, 2)


# --- what the declarations and the bodies reject or handle (issue 9) ------------------------------------------------

def test_spectral_normalize_refuses_nan_and_all_zero_weights():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"module must have finite parameters, got NaN or inf entries in 0.weight"):
        spectral_normalize(net)
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    nn.init.zeros_(net[2].weight)  # W / ||W|| would be 0 / 0: NaN weights on the first forward
    with pytest.raises(ValueError, match=r"module must have nonzero nn.Linear weights to normalise \(spectral norm 0\), "
                                         r"got an all-zero weight in 2.weight"):
        spectral_normalize(net)
    assert not any(hasattr(m, "parametrizations") for m in net.modules())  # nothing half-normalised


def test_wpc_loss_checks_the_critic():
    x, y = torch.randn(4, 2), torch.randn(4, 2)
    critic = SeparableCritic(2, 2, hidden_dim=4)
    with torch.no_grad():
        critic.g[0].weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"critic must have finite parameters, got NaN or inf entries in g.0.weight"):
        wpc_loss(critic, x, y)
    with pytest.raises(TypeError, match=r"x must have the dtype of critic.g.0.weight \(torch.float32\), got torch.float64"):
        wpc_loss(SeparableCritic(2, 2, hidden_dim=4), x.double(), y.double())
    with pytest.raises(TypeError, match=r"critic must have a pair_scores\(x, y\) method when gp_weight > 0"):
        wpc_loss(nn.Bilinear(2, 2, 1), x, y)
    with pytest.raises(ValueError, match=r"critic must return the \(4, 4\) score matrix, got \(4, 1\)"):
        wpc_loss(nn.Bilinear(2, 2, 1), x, y, gp_weight=0.0)


def test_gradient_penalty_needs_differentiable_scores():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"pair_scores must return scores differentiable in its inputs"):
        gradient_penalty(lambda a, b: torch.zeros(4), x, x)
    with pytest.raises(ValueError, match=r"x must have N >= 2 rows"):
        gradient_penalty(lambda a, b: a.sum(1), x[:1], x[:1])
