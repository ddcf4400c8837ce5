"""SMILE and the variational mutual-information lower bounds, over one critic score matrix.

References: Understanding the Limitations of Variational Mutual Information Estimators, 2020 (Song, Ermon; ICLR).

All estimators read one score matrix ``T`` of shape ``(..., N, N)`` with ``T[i, j] = T(x_i, y_j)`` for a batch of
joint samples ``(x_i, y_i) ~ P = p(x, y)``: the diagonal holds the ``N`` joint pairs, the ``N (N - 1)``
off-diagonal entries stand for samples of ``Q = p(x) p(y)``. With ``E_P`` the mean of the diagonal and ``E_Q``
the mean of the off-diagonal (the paper's unified view, Section 3), the estimators are

    nwj      I_NWJ   = E_P[T] - e^{-1} E_Q[e^T]                                    (NWJ, critic optimum 1 + log r)
    dv       I_DV    = E_P[T] - log E_Q[e^T]                                       (Donsker-Varadhan)
    mine     I_MINE  = I_DV in value; gradient  grad E_P[T] - grad E_Q[e^T] / EMA(E_Q[e^T])
    infonce  I_CPC   = log N + 1/N sum_i [T_ii - log sum_j e^{T_ij}]              (<= log N)
    js       I_JS    = E_P[T] + 1 - E_Q[e^T]  in value; gradient of the f-GAN JS bound
                       -E_P[softplus(-T)] - E_Q[softplus(T)]                       (critic optimum log r)
    smile    I_SMILE = E_P[T] - log E_Q[clip(e^T, e^{-tau}, e^{tau})]  in value    (the SMILE estimator)
                       = E_P[T] - log E_Q[e^{clamp(T, -tau, tau)}]; gradient of the JS bound, as in the paper

where ``r = p(x, y) / (p(x) p(y))``. ``tau`` is ``clip``; ``clip=None`` means ``tau = inf`` (DV value on a
JS-trained critic). The paper reports ``tau`` in {1, 5, inf}; the default here is ``5.0``.

:func:`mi_lower_bound` returns a tensor whose *value* is the estimate and whose *autograd gradient* is the one the
paper trains the critic with (for ``js``, ``smile`` and ``mine`` the two differ: the value is assembled as
``objective + (estimate - objective).detach()``), so ``(-mi_lower_bound(T, est)).mean().backward()`` is one
training step of any estimator and the returned value can be compared across estimators at once.

The variance of the ``E_Q[e^T]`` term at the optimal critic is ``Var_Q[r] / n = (e^{2 I} - 1) / n`` for the
Gaussian benchmark (:mod:`paperzoo.data.gaussian_mi`): exponential in the true MI, as the paper's variance analysis
of MINE/NWJ predicts (Section 4); clipping keeps every summand in ``[e^-tau, e^tau]``, so that term's variance is
at most ``(e^tau - e^{-tau})^2 / (4 n)`` for ``n`` independent summands, whatever the MI (the paper's argument
for SMILE, Section 5).

Critics: :class:`SeparableCritic` ``T(x, y) = g(x)^T h(y)`` and :class:`ConcatCritic` ``T(x, y) = f([x, y])``,
both ReLU MLPs (the paper's benchmark: width 256, 3 hidden layers, embedding 32) mapping ``x (N, dx)`` and
``y (N, dy)`` to the ``(N, N)`` score matrix.

Deviations: (1) ``js`` evaluates NWJ at ``T + 1`` (the NWJ-optimal critic for a JS-optimal ``T = log r``), which is
the bound's definition; the reference code evaluates NWJ at ``T`` itself, an estimate lower by ``1/e`` at the
optimum. (2) ``infonce`` normalises over ``y_j`` for each ``x_i`` (rows); the reference code normalises the other
axis, an equally valid bound. (3) MINE's moving average starts from the first batch's value instead of 1.0.

Example:
    >>> import torch
    >>> from paperzoo.data.gaussian_mi import sample_correlated_gaussian, gaussian_log_density_ratio, mi_to_rho
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = sample_correlated_gaussian(64, dim=20, mi=4.0, generator=g, dtype=torch.float64)
    >>> T = gaussian_log_density_ratio(x, y, mi_to_rho(4.0, 20))     # the optimal critic
    >>> est = {e: float(mi_lower_bound(T, e)) for e in ("smile", "infonce", "dv")}
    >>> est["infonce"] <= torch.log(torch.tensor(64.0)).item()
    True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from paperzoo.core.accepts import Choice, Instance, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_choice, check_int, check_positive, check_probability, check_tensor

__all__ = [
    "ESTIMATORS",
    "mi_lower_bound",
    "logmeanexp_offdiag",
    "MINEMovingAverage",
    "SeparableCritic",
    "ConcatCritic",
    "mlp",
]

ESTIMATORS = ("smile", "infonce", "nwj", "dv", "mine", "js")

_SCORES = Tensor(..., "N", "N", degenerate=("constant",))


def _check_scores(scores) -> torch.Tensor:
    scores = check_tensor("scores", scores)
    if scores.dim() < 2 or scores.shape[-1] != scores.shape[-2]:
        raise ValueError(f"scores must have shape (..., N, N), got {tuple(scores.shape)}")
    if scores.shape[-1] < 2:
        raise ValueError(f"scores must have N >= 2 samples, got {tuple(scores.shape)}")
    return scores


def _diag_mask(scores: torch.Tensor) -> torch.Tensor:
    n = scores.shape[-1]
    return torch.eye(n, dtype=torch.bool, device=scores.device)


@accepts(scores=_SCORES)
def logmeanexp_offdiag(scores: torch.Tensor) -> torch.Tensor:
    """``log( 1/(N(N-1)) sum_{i != j} exp(T_ij) )`` over the last two dims of ``scores (..., N, N)``."""
    scores = _check_scores(scores)
    n = scores.shape[-1]
    masked = scores.masked_fill(_diag_mask(scores), float("-inf"))
    return torch.logsumexp(masked.flatten(-2), dim=-1) - math.log(n * (n - 1))


def _diag_mean(scores: torch.Tensor) -> torch.Tensor:
    return torch.diagonal(scores, dim1=-2, dim2=-1).mean(-1)


def _js_fgan(scores: torch.Tensor) -> torch.Tensor:
    """The f-GAN Jensen-Shannon bound ``-E_P[softplus(-T)] - E_Q[softplus(T)]`` (its maximiser is ``log r``)."""
    n = scores.shape[-1]
    diag = torch.diagonal(scores, dim1=-2, dim2=-1)
    off = F.softplus(scores).masked_fill(_diag_mask(scores), 0.0).sum((-2, -1)) / (n * (n - 1))
    return -F.softplus(-diag).mean(-1) - off


def _with_value(objective: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A tensor equal to ``value`` whose gradient is ``objective``'s."""
    return objective + (value - objective).detach()


class MINEMovingAverage:
    """The moving average of ``E_Q[e^T]`` that MINE divides its gradient by (bias-corrected DV gradient).

    ``m <- momentum * m + (1 - momentum) * E_Q[e^T]`` (detached), started at the first batch's value. Pass the
    same instance to every :func:`mi_lower_bound` call with ``estimator="mine"`` during training; its ``value``
    has the batch shape of the scores (a 0-dim tensor for one ``(N, N)`` matrix).

    Args:
        momentum: decay in ``[0, 1)``; 0.9 as in the SMILE paper's reference code.
    """

    @accepts(momentum=Real(ge=0, lt=1))
    def __init__(self, momentum: float = 0.9):
        self.momentum = check_probability("momentum", momentum)
        self.value: torch.Tensor | None = None

    def update(self, batch_value: torch.Tensor) -> torch.Tensor:
        batch_value = batch_value.detach()
        if self.value is None or self.value.shape != batch_value.shape:
            self.value = batch_value.clone()
        else:
            self.value = self.momentum * self.value.to(batch_value) + (1.0 - self.momentum) * batch_value
        return self.value


@accepts(scores=_SCORES, estimator=Choice(*ESTIMATORS), clip=Real(gt=0, optional=True),
         moving_average=Instance(MINEMovingAverage, what="MINEMovingAverage", optional=True))
def mi_lower_bound(
    scores: torch.Tensor,
    estimator: str = "smile",
    *,
    clip: float | None = 5.0,
    moving_average: MINEMovingAverage | None = None,
) -> torch.Tensor:
    """Variational MI estimate of ``estimator`` from a critic score matrix (module docstring has the formulas).

    Args:
        scores: ``(..., N, N)`` with ``scores[..., i, j] = T(x_i, y_j)``; joint pairs on the diagonal, ``N >= 2``.
        estimator: one of ``"smile"``, ``"infonce"``, ``"nwj"``, ``"dv"``, ``"mine"``, ``"js"``.
        clip: SMILE's ``tau > 0`` (``None``: no clipping); read only by ``"smile"``.
        moving_average: MINE's running ``E_Q[e^T]`` (:class:`MINEMovingAverage`), updated in place; read only by
            ``"mine"``. Without it ``"mine"`` equals ``"dv"`` (plain, biased minibatch gradient).

    Returns:
        The estimate in nats, shape ``scores.shape[:-2]``, differentiable with the paper's training gradient.
    """
    scores = _check_scores(scores)
    check_choice("estimator", estimator, ESTIMATORS)
    if clip is not None:
        clip = check_positive("clip", clip)
    if moving_average is not None and not isinstance(moving_average, MINEMovingAverage):
        raise TypeError(f"moving_average must be a MINEMovingAverage, got {type(moving_average).__name__}")
    if moving_average is not None and estimator != "mine":
        raise ValueError(f"moving_average is only used by estimator 'mine', got estimator={estimator!r}")
    n = scores.shape[-1]
    joint = _diag_mean(scores)
    if estimator == "infonce":
        return math.log(n) + (joint - torch.logsumexp(scores, dim=-1).mean(-1))
    if estimator == "nwj":
        return joint - torch.exp(logmeanexp_offdiag(scores) - 1.0)
    if estimator == "js":
        return _with_value(_js_fgan(scores), joint + 1.0 - torch.exp(logmeanexp_offdiag(scores)))
    if estimator == "smile":
        clipped = scores if clip is None else scores.clamp(-clip, clip)
        return _with_value(_js_fgan(scores), joint - logmeanexp_offdiag(clipped))
    dv = joint - logmeanexp_offdiag(scores)
    if estimator == "dv" or moving_average is None:
        return dv
    partition = torch.exp(logmeanexp_offdiag(scores))
    ema = moving_average.update(partition)
    return _with_value(joint - partition / ema, dv)


def mlp(in_dim: int, hidden_dim: int, out_dim: int, depth: int) -> nn.Sequential:
    """ReLU MLP with ``depth`` hidden layers of width ``hidden_dim``."""
    in_dim = check_int("in_dim", in_dim, low=1)
    hidden_dim = check_int("hidden_dim", hidden_dim, low=1)
    out_dim = check_int("out_dim", out_dim, low=1)
    depth = check_int("depth", depth, low=1)
    layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
    layers.append(nn.Linear(hidden_dim, out_dim))
    return nn.Sequential(*layers)


def _check_pair(x, y, x_dim: int, y_dim: int) -> None:
    check_tensor("x", x, ndim=2, finite=False)
    check_tensor("y", y, ndim=2, finite=False)
    if x.shape[1] != x_dim:
        raise ValueError(f"x must have shape (N, {x_dim}), got {tuple(x.shape)}")
    if y.shape != (x.shape[0], y_dim):
        raise ValueError(f"y must have shape ({x.shape[0]}, {y_dim}), got {tuple(y.shape)}")


class SeparableCritic(nn.Module):
    """Separable critic ``T(x_i, y_j) = g(x_i)^T h(y_j)`` with MLP embeddings ``g``, ``h`` of size ``embed_dim``.

    ``forward(x (N, dx), y (N, dy)) -> (N, N)``; costs ``2 N`` network evaluations. ``pair_scores(x, y)`` gives the
    ``(N,)`` matched scores ``T(x_i, y_i)`` (what a gradient penalty differentiates).
    """

    @accepts(x_dim=Int(ge=1), y_dim=Int(ge=1), hidden_dim=Int(ge=1), embed_dim=Int(ge=1), depth=Int(ge=1),
             example=lambda ctx: {"hidden_dim": 8, "embed_dim": 4})
    def __init__(self, x_dim: int, y_dim: int, hidden_dim: int = 256, embed_dim: int = 32, depth: int = 3):
        super().__init__()
        self.x_dim, self.y_dim = check_int("x_dim", x_dim, low=1), check_int("y_dim", y_dim, low=1)
        self.g = mlp(x_dim, hidden_dim, embed_dim, depth)
        self.h = mlp(y_dim, hidden_dim, embed_dim, depth)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(x, y, self.x_dim, self.y_dim)
        return self.g(x) @ self.h(y).T

    def pair_scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``T(x_i, y_i)`` for matched rows only: ``(N,)``, the diagonal without the ``N^2`` matrix."""
        _check_pair(x, y, self.x_dim, self.y_dim)
        return (self.g(x) * self.h(y)).sum(-1)


class ConcatCritic(nn.Module):
    """Joint critic ``T(x_i, y_j) = f([x_i, y_j])``, one MLP on all ``N^2`` concatenated pairs.

    ``forward(x (N, dx), y (N, dy)) -> (N, N)``; ``pair_scores(x, y) -> (N,)``. The first layer is linear, so
    ``W [x_i; y_j] + b = (W_x x_i + b) + W_y y_j`` is formed from ``2 N`` products instead of ``N^2``
    concatenations; only the layers after it run on all ``N^2`` pairs (same function, same parameters).
    """

    @accepts(x_dim=Int(ge=1), y_dim=Int(ge=1), hidden_dim=Int(ge=1), depth=Int(ge=1),
             example=lambda ctx: {"hidden_dim": 8})
    def __init__(self, x_dim: int, y_dim: int, hidden_dim: int = 256, depth: int = 3):
        super().__init__()
        self.x_dim, self.y_dim = check_int("x_dim", x_dim, low=1), check_int("y_dim", y_dim, low=1)
        self.f = mlp(x_dim + y_dim, hidden_dim, 1, depth)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_pair(x, y, self.x_dim, self.y_dim)
        first = self.f[0]
        hx = F.linear(x, first.weight[:, :self.x_dim], first.bias)  # (N, H)
        hy = F.linear(y, first.weight[:, self.x_dim:])  # (N, H)
        return self.f[1:](hx[:, None, :] + hy[None, :, :]).squeeze(-1)

    def pair_scores(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``T(x_i, y_i)`` for matched rows only: ``(N,)``, the diagonal without the ``N^2`` matrix."""
        _check_pair(x, y, self.x_dim, self.y_dim)
        return self.f(torch.cat([x, y], dim=-1)).squeeze(-1)
