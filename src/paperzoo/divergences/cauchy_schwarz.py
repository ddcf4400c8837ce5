"""Cauchy-Schwarz divergence, conditional CS divergence, CS quadratic MI and the CS-IB objective.

References: Cauchy-Schwarz Divergence Information Bottleneck for Regression, 2024 (Yu, Yu, Løkse, Jenssen,
Príncipe; ICLR).

Cauchy-Schwarz divergence between densities ``p`` and ``q``:

    D_CS(p || q) = -log( (int p q)^2 / (int p^2 int q^2) )
                 = log int p^2 + log int q^2 - 2 log int p q   >= 0, symmetric, 0 iff p = q.

Sample estimator (:func:`cs_divergence`). With Parzen windows of width ``sigma`` on ``x_1..x_n ~ p`` and
``y_1..y_m ~ q`` every integral of a product of two Gaussian windows is a Gaussian of width ``sqrt(2) sigma`` in
the difference, so with ``G(u) = exp(-||u||^2 / (4 sigma^2))`` (normalising constants cancel)

    D_CS = log(1/n^2 sum_ij G(x_i - x_j)) + log(1/m^2 sum_ij G(y_i - y_j)) - 2 log(1/(nm) sum_ij G(x_i - y_j)).

For Gaussians ``p = N(mu_p, S_p)``, ``q = N(mu_q, S_q)`` the integrals are Gaussian densities,
``int p q = N(mu_p; mu_q, S_p + S_q)`` and ``int p^2 = N(0; 0, 2 S_p)`` (:func:`gaussian_cs_divergence`); the
Parzen estimate converges to the closed form of the smoothed pair ``S + sigma^2 I``.

CS-IB (the paper's IB Lagrangian with both terms in CS form) trains an encoder ``t = f(x)`` and a decoder ``y_hat = g(t)`` by minimising

    L = D_CS( p(y | x) || q_theta(y_hat | x) ) + beta * I_CS(x; t).

Prediction term (:func:`conditional_cs_divergence`, the paper's conditional CS estimator, Eq. (18) in the
as the official code labels it): with the Gram matrices ``K_ji = k_{sigma_x}(x_j - x_i)``,
``L1_ji = k_{sigma_y}(y_j - y_i)``, ``L2_ji = k_{sigma_y}(y_hat_j - y_hat_i)``, ``L21_ji = k_{sigma_y}(y_hat_j - y_i)``
and ``k_s(u) = exp(-||u||^2 / (2 s^2))``,

    D_CS(p(y|x) || q(y_hat|x)) ~ log sum_j (sum_i K_ji L1_ji) / (sum_i K_ji)^2
                                + log sum_j (sum_i K_ji L2_ji) / (sum_i K_ji)^2
                                - 2 log sum_j (sum_i K_ji L21_ji) / (sum_i K_ji)^2.

Compression term (:func:`cs_qmi`, the CS quadratic mutual information): with
``K^x_ij = k_{sigma_x}(x_i - x_j)`` and ``K^t_ij = k_{sigma_t}(t_i - t_j)``,

    I_CS(x; t) = log( (1/n^2 sum_ij K^x_ij K^t_ij) (1/n^4 sum_ij K^x_ij sum_ij K^t_ij)
                      / (1/n^3 sum_i (sum_j K^x_ij)(sum_j K^t_ij))^2 ).

All estimators are evaluated in the log domain (log-sum-exp of the kernel exponents), so far-apart samples give
large finite values instead of ``log 0``.

Shapes: ``x`` (n, d_x); ``y``, ``y_hat`` (n,) or (n, d_y); ``t`` (n, d_t); for :func:`cs_divergence` ``x`` (n, d)
and ``y`` (m, d). Any floating dtype and device; results are 0-dim tensors differentiable in every input.

Deviations and choices:

* Logarithms are natural (nats); the official code uses ``log2`` (bits), a constant factor ``1 / log 2``.
* The paper's estimator normalises each conditional term by ``(sum_i K_ji)^2``; the official code divides by
  ``sum_i K_ji^2`` instead. We follow the paper. With the near-diagonal ``K`` that ``sigma_x = 1`` gives on
  standardised multi-dimensional inputs, both are ``~1`` and agree.
* Kernel widths default to ``1`` for x, y and t, the official training script's setting on standardised data.
  The official script minimises the normalised CS-QMI ``I_CS(x;t) / sqrt(I_CS(x;x) I_CS(t;t))``; the paper's
  objective uses ``I_CS(x;t)`` itself. ``cs_ib_loss(normalized=False)`` (default) follows the paper,
  ``normalized=True`` the code.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(500, 1, generator=g, dtype=torch.float64)
    >>> y = torch.randn(500, 1, generator=g, dtype=torch.float64) + 1.0
    >>> d = cs_divergence(x, y, sigma=0.3)     # close to gaussian_cs_divergence at S = 1 + 0.3**2
    >>> t = torch.tanh(x)
    >>> out = cs_ib_loss(x, y[:, 0], x[:, 0] * 0.5, t, beta=0.01)
    >>> out.loss.shape
    torch.Size([])
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Flag, Real, Tensor, accepts
from paperzoo.core.checks import check_nonnegative, check_positive, check_tensor
from paperzoo.transport.entropic import pairwise_cost  # squared distances by direct differences: exact 0 diagonal

__all__ = ["cs_divergence", "gaussian_cs_divergence", "conditional_cs_divergence", "cs_qmi", "cs_ib_loss",
           "CSIBLoss"]


def _as_2d(name: str, z: torch.Tensor) -> torch.Tensor:
    check_tensor(name, z)
    if z.dim() == 1:
        return z[:, None]
    if z.dim() != 2:
        raise ValueError(f"{name} must have 1 or 2 dimension(s), got shape {tuple(z.shape)}")
    return z


def _check_rows(names: tuple[str, ...], tensors: tuple[torch.Tensor, ...]) -> int:
    n = tensors[0].shape[0]
    for name, z in zip(names[1:], tensors[1:]):
        if z.shape[0] != n:
            raise ValueError(f"{name} must have {n} rows (as {names[0]}), got shape {tuple(z.shape)}")
    if n < 2:
        raise ValueError(f"{names[0]} must have at least 2 rows, got shape {tuple(tensors[0].shape)}")
    return n


def _randn(ctx, *shape):
    return torch.randn(*shape, generator=ctx.generator, dtype=ctx.dtype)


# Samples are (n, d) or (n,): sizes are checked in the bodies (a spec cannot say "(n,) or (n, d)" with symbols).
_SAMPLES = Tensor(ndims=(1, 2), degenerate=("coincident",))


@accepts(x=_SAMPLES, y=_SAMPLES, sigma=Real(gt=0),
         example=lambda ctx: {"x": _randn(ctx, 5, 2), "y": _randn(ctx, 4, 2)})
def cs_divergence(x: torch.Tensor, y: torch.Tensor, *, sigma: float = 1.0) -> torch.Tensor:
    """Cauchy-Schwarz divergence ``D_CS(p || q)`` estimated with Gaussian Parzen windows of width ``sigma``.

    Args:
        x: (n, d) samples of ``p`` (or (n,) for 1-D data).
        y: (m, d) samples of ``q``.
        sigma: Parzen window width (pairwise kernels have width ``sqrt(2) * sigma``).

    Returns:
        0-dim tensor ``log mean G_xx + log mean G_yy - 2 log mean G_xy`` (nats), >= 0 up to round-off.
    """
    x, y = _as_2d("x", x), _as_2d("y", y)
    sigma = check_positive("sigma", sigma)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"y must have {x.shape[1]} columns (as x), got shape {tuple(y.shape)}")
    if x.shape[0] < 1 or y.shape[0] < 1:
        raise ValueError(f"x and y must be non-empty, got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    scale = 4.0 * sigma ** 2

    def log_mean(a, b):
        return torch.logsumexp((-pairwise_cost(a, b) / scale).flatten(), 0) - math.log(a.shape[0] * b.shape[0])

    return log_mean(x, x) + log_mean(y, y) - 2.0 * log_mean(x, y)


@accepts(mean_p=Tensor("d", degenerate=("zeros",)), cov_p=Tensor("d", "d", symmetric=True), mean_q=Tensor("d"),
         cov_q=Tensor("d", "d", symmetric=True))
def gaussian_cs_divergence(mean_p: torch.Tensor, cov_p: torch.Tensor, mean_q: torch.Tensor,
                           cov_q: torch.Tensor) -> torch.Tensor:
    """Closed-form ``D_CS(N(mean_p, cov_p) || N(mean_q, cov_q))``.

    ``log N(0; 0, 2 cov_p) + log N(0; 0, 2 cov_q) - 2 log N(mean_p; mean_q, cov_p + cov_q)``.

    Args:
        mean_p, mean_q: (d,) means.
        cov_p, cov_q: (d, d) symmetric positive-definite covariances.
    """
    d = mean_p.shape[0]
    for name, c in (("cov_p", cov_p), ("cov_q", cov_q)):
        if int(torch.linalg.cholesky_ex(c).info) != 0:
            raise ValueError(f"{name} must be symmetric positive definite, got a matrix whose Cholesky factorisation "
                             f"fails (smallest eigenvalue {float(torch.linalg.eigvalsh(c).min())!r})")

    def log_gauss_at(delta, cov):
        # cov is 2 cov_p, 2 cov_q or cov_p + cov_q: positive definite when cov_p and cov_q are (checked above)
        chol = torch.linalg.cholesky(cov)
        sol = torch.cholesky_solve(delta[:, None], chol)[:, 0]
        logdet = 2.0 * chol.diagonal().log().sum()
        return -0.5 * (d * math.log(2 * math.pi) + logdet + delta @ sol)

    zero = torch.zeros_like(mean_p)
    return (log_gauss_at(zero, 2 * cov_p) + log_gauss_at(zero, 2 * cov_q)
            - 2 * log_gauss_at(mean_p - mean_q, cov_p + cov_q))


@accepts(x=_SAMPLES, y=Tensor(ndims=(1, 2), degenerate=("constant",)), y_hat=Tensor(ndims=(1, 2), degenerate=("constant",)),
         sigma_x=Real(gt=0), sigma_y=Real(gt=0),
         example=lambda ctx: {"x": _randn(ctx, 6, 2), "y": _randn(ctx, 6), "y_hat": _randn(ctx, 6)})
def conditional_cs_divergence(x: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor, *, sigma_x: float = 1.0,
                              sigma_y: float = 1.0) -> torch.Tensor:
    """Conditional CS divergence ``D_CS(p(y | x) || q(y_hat | x))`` from paired samples ``(x_i, y_i, y_hat_i)``.

    The CS-IB prediction term (see the module docstring for the estimator).

    Args:
        x: (n, d_x) inputs (or (n,)).
        y: (n,) or (n, d_y) targets.
        y_hat: predictions, same shape as ``y``.
        sigma_x: Gaussian kernel width on ``x``.
        sigma_y: Gaussian kernel width on ``y`` and ``y_hat``.

    Returns:
        0-dim tensor (nats); exactly 0 when ``y_hat == y``. At finite ``n`` the estimate is neither exactly
        symmetric in ``(y, y_hat)`` (the per-``j`` normalisers weight the cross term asymmetrically) nor
        guaranteed >= 0; both hold for the population quantity.
    """
    x, y2, yh = _as_2d("x", x), _as_2d("y", y), _as_2d("y_hat", y_hat)
    if y_hat.shape != y.shape:
        raise ValueError(f"y_hat must have shape {tuple(y.shape)} (as y), got {tuple(y_hat.shape)}")
    _check_rows(("x", "y"), (x, y2))
    sigma_x, sigma_y = check_positive("sigma_x", sigma_x), check_positive("sigma_y", sigma_y)
    a_x = -pairwise_cost(x, x) / (2 * sigma_x ** 2)                     # log K_ji
    log_norm = 2.0 * torch.logsumexp(a_x, dim=1)                    # log (sum_i K_ji)^2

    def term(u, v):
        # log sum_j [sum_i K_ji exp(-||u_j - v_i||^2 / 2 s^2)] / (sum_i K_ji)^2
        inner = torch.logsumexp(a_x - pairwise_cost(u, v) / (2 * sigma_y ** 2), dim=1)
        return torch.logsumexp(inner - log_norm, dim=0)

    return term(y2, y2) + term(yh, yh) - 2.0 * term(yh, y2)


@accepts(x=_SAMPLES, t=_SAMPLES, sigma_x=Real(gt=0), sigma_t=Real(gt=0), normalized=Flag(),
         example=lambda ctx: {"x": _randn(ctx, 6, 2), "t": _randn(ctx, 6, 3), "normalized": True})
def cs_qmi(x: torch.Tensor, t: torch.Tensor, *, sigma_x: float = 1.0, sigma_t: float = 1.0,
           normalized: bool = False) -> torch.Tensor:
    """Cauchy-Schwarz quadratic mutual information ``I_CS(x; t)`` (the CS-IB compression term).

    Args:
        x: (n, d_x) samples (or (n,)).
        t: (n, d_t) paired samples (or (n,)).
        sigma_x, sigma_t: Gaussian kernel widths.
        normalized: return ``I_CS(x;t) / sqrt(I_CS(x;x) I_CS(t;t))`` as the official code does.

    Returns:
        0-dim tensor (nats), >= 0 (the CS inequality in the product RKHS); 0 for independent samples as n grows.
    """
    x, t = _as_2d("x", x), _as_2d("t", t)
    n = _check_rows(("x", "t"), (x, t))
    sigma_x, sigma_t = check_positive("sigma_x", sigma_x), check_positive("sigma_t", sigma_t)
    a_x = -pairwise_cost(x, x) / (2 * sigma_x ** 2)
    a_t = -pairwise_cost(t, t) / (2 * sigma_t ** 2)

    def qmi(a, b):
        log_n = math.log(n)
        joint = torch.logsumexp((a + b).flatten(), 0) - 2 * log_n
        marg = torch.logsumexp(a.flatten(), 0) + torch.logsumexp(b.flatten(), 0) - 4 * log_n
        cross = torch.logsumexp(torch.logsumexp(a, 1) + torch.logsumexp(b, 1), 0) - 3 * log_n
        return joint + marg - 2 * cross

    value = qmi(a_x, a_t)
    if normalized:
        # I_CS(x; x) = 0 only for a constant sample (all kernel entries equal); then I_CS(x; t) = 0 too and the
        # normalised value is taken as 0 (x carries no information), not 0 / 0. Clamping drops round-off below 0.
        scale = (qmi(a_x, a_x) * qmi(a_t, a_t)).clamp_min(0.0)
        positive = scale > 0
        value = torch.where(positive, value / torch.sqrt(torch.where(positive, scale, torch.ones_like(scale))),
                            torch.zeros_like(value))
    return value


class CSIBLoss(NamedTuple):
    """``loss = prediction + beta * compression`` (0-dim tensors, all differentiable)."""

    loss: torch.Tensor
    prediction: torch.Tensor
    compression: torch.Tensor


@accepts(x=_SAMPLES, y=Tensor(ndims=(1, 2), degenerate=("constant",)), y_hat=Tensor(ndims=(1, 2), degenerate=("constant",)),
         t=_SAMPLES, beta=Real(ge=0), sigma_x=Real(gt=0), sigma_y=Real(gt=0), sigma_t=Real(gt=0), normalized=Flag(),
         example=lambda ctx: {"x": _randn(ctx, 6, 2), "y": _randn(ctx, 6), "y_hat": _randn(ctx, 6),
                              "t": _randn(ctx, 6, 3), "beta": 0.1, "normalized": True})
def cs_ib_loss(x: torch.Tensor, y: torch.Tensor, y_hat: torch.Tensor, t: torch.Tensor, *, beta: float,
               sigma_x: float = 1.0, sigma_y: float = 1.0, sigma_t: float = 1.0,
               normalized: bool = False) -> CSIBLoss:
    """CS-IB objective ``D_CS(p(y|x) || q(y_hat|x)) + beta * I_CS(x; t)`` (prediction + beta * compression).

    Args:
        x: (n, d_x) inputs of the mini-batch.
        y: (n,) or (n, d_y) targets.
        y_hat: decoder outputs, same shape as ``y``.
        t: (n, d_t) bottleneck representation (encoder output).
        beta: compression weight, >= 0.
        sigma_x, sigma_y, sigma_t: kernel widths (default 1, on standardised data).
        normalized: use the normalised CS-QMI of the official code for the compression term.
    """
    beta = check_nonnegative("beta", beta)
    pred = conditional_cs_divergence(x, y, y_hat, sigma_x=sigma_x, sigma_y=sigma_y)
    comp = cs_qmi(x, t, sigma_x=sigma_x, sigma_t=sigma_t, normalized=normalized)
    return CSIBLoss(pred + beta * comp, pred, comp)
