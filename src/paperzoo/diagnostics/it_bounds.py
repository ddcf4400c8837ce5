"""Layerwise information-theoretic generalization bounds (KL and Wasserstein) for a noisy linear network.

References: Information-Theoretic Generalization Bounds for Deep Neural Networks (He, Goldfeld), 2024.

What was read: the paper's abstract and section list (arXiv 2404.03176 v2; the theorem statements were not
reachable here). The bound forms below are the standard individual-sample KL (Bu-Zou-Veeravalli) and
Wasserstein (Rodriguez-Galvez et al.) bounds applied to the internal representation ``T_k`` in the way the paper's
abstract describes; their constants and the linear-Gaussian closed forms are our own derivation.

Setting (binary Gaussian classification, a noisy linear network). Labels :math:`Y = \\pm 1` with equal
probability, :math:`X \\mid Y \\sim N(Y\\mu, \\Sigma)` (``mu`` ``(d,)``, ``Sigma`` ``(d, d)``). Layer ``k`` of the
network (``weights[k-1]`` = :math:`B_k`, shape ``(d_k, d_{k-1})``) is
:math:`T_k = B_k T_{k-1} + s\\,\\xi_k`, :math:`T_0 = X`, :math:`\\xi_k \\sim N(0, I)`, ``s`` = ``noise_std``. With
:math:`A_k = B_k \\cdots B_1` the representation is Gaussian given the label:
:math:`T_k \\mid Y = y \\sim N(y A_k\\mu, S_k)`, :math:`S_k = A_k \\Sigma A_k^\\top + C_k`,
:math:`C_k = B_k C_{k-1} B_k^\\top + s^2 I`, :math:`C_0 = 0`.

The learner. From ``n`` clean training pairs it forms :math:`\\hat m = \\frac1n \\sum_i Y_i X_i` and reads out the
last layer with the direction :math:`\\hat w = A_L \\hat m`, :math:`u = \\hat w / \\|\\hat w\\|`. The loss is the ramp
on the normalised margin :math:`M = y\\,u^\\top t_L`: :math:`\\ell = \\mathrm{clip}((\\gamma - M) / (2\\gamma), 0, 1)`
(``margin`` = :math:`\\gamma`), bounded in [0, 1] (so 1/2-sub-Gaussian) and :math:`1/(2\\gamma)`-Lipschitz in
:math:`t_L`. Training and test losses average over the layers' noise (the learner never sees it), so the layer
noise is a Markov kernel shared by train and test: the data-processing inequality applies layer by layer.

Train vs test representations. :math:`Y_i X_i \\sim N(\\mu, \\Sigma)` independently of :math:`Y_i`, and given
:math:`\\hat m`, :math:`Y_i X_i \\sim N(\\hat m, (1 - 1/n)\\Sigma)`. So the training representation of sample ``i``
given the learner's output is :math:`N(y A_k \\hat m, S_k')`, :math:`S_k' = S_k - A_k\\Sigma A_k^\\top / n`, while the
test one is :math:`N(y A_k\\mu, S_k)`.

KL bound (layer ``k``), closed form:

.. math::
    D_k = \\mathbb E_{\\hat m}\\, D_{KL}\\big(N(yA_k\\hat m, S_k') \\,\\|\\, N(yA_k\\mu, S_k)\\big)
        = -\\tfrac12 \\log\\det\\big(I - S_k^{-1} A_k \\Sigma A_k^\\top / n\\big)
        = I(\\hat m; T_k^{(i)}, Y_i),
    \\qquad |\\mathrm{gen}| \\le \\sqrt{2 \\cdot \\tfrac14 \\cdot D_k} = \\sqrt{D_k / 2}.

(The mean term :math:`\\mathrm{tr}(S_k^{-1}A_k\\Sigma A_k^\\top)/(2n)` cancels against the trace term.) By data
processing :math:`D_{k+1} \\le D_k` for every ``s >= 0``, with equality for an injective noiseless layer
(``s = 0``: :math:`D_k = -\\tfrac{r_k}{2}\\log(1 - 1/n)`, :math:`r_k = \\mathrm{rank}(A_k\\Sigma A_k^\\top)`; a
singular :math:`S_k` is handled on its support).

Wasserstein bound (layer ``k``). As a function of :math:`t_k` the noise-averaged loss is Lipschitz with constant
:math:`L_k(\\hat m) = \\|A_{L\\leftarrow k}^\\top u\\| / (2\\gamma)`, :math:`A_{L\\leftarrow k} = B_L \\cdots B_{k+1}`
(exact for the composite linear readout), so

.. math::
    |\\mathrm{gen}| \\le \\mathbb E_{\\hat m}\\big[L_k(\\hat m)\\, W_1\\big] \\le
    \\mathbb E_{\\hat m}\\big[L_k(\\hat m)\\, W_2\\big(N(yA_k\\hat m, S_k'), N(yA_k\\mu, S_k)\\big)\\big],
    \\quad W_2^2 = \\|A_k(\\hat m - \\mu)\\|^2 + \\mathrm{tr}\\big(S_k' + S_k - 2 (S_k^{1/2} S_k' S_k^{1/2})^{1/2}\\big).

:math:`W_1 \\le W_2` is the only relaxation; the expectation over :math:`\\hat m \\sim N(\\mu, \\Sigma / n)` (its exact
law) is a Monte Carlo average over ``n_draws`` draws. The layer minimising it is the "generalization funnel".
Note: with the submultiplicative constant :math:`\\prod_{j > k}\\|B_j\\|` instead of :math:`L_k`, this bound would be
nonincreasing in ``k`` (``W_2`` contracts by at most :math:`\\|B_k\\|` per layer), so an interior minimiser can only come
from the exact, direction-dependent constant.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> B = [torch.randn(4, 4, generator=g, dtype=torch.float64) / 2 for _ in range(3)]
    >>> mu, Sigma = torch.full((4,), 0.5, dtype=torch.float64), torch.eye(4, dtype=torch.float64)
    >>> b = layerwise_it_bounds(B, mu, Sigma, 50, noise_std=0.5, generator=g)
    >>> bool((b.kl[1:] <= b.kl[:-1] + 1e-12).all()), tuple(b.w_bound.shape)
    (True, (4,))
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Generator, Int, Real, Tensor, Tensors, accepts

__all__ = ["LinearGaussianPushforwards", "ITBounds", "GapEstimate", "linear_gaussian_pushforwards",
           "layerwise_it_bounds", "generalization_gap_monte_carlo", "ramp_loss_expectation"]


class LinearGaussianPushforwards(NamedTuple):
    """Result of :func:`linear_gaussian_pushforwards`: one entry per layer ``k = 0..L`` (``k = 0`` is the input).

    Attributes:
        maps: :math:`A_k = B_k \\cdots B_1`, ``(d_k, d)``.
        test_means: :math:`A_k \\mu` (the class ``+1`` mean; class ``-1`` is its negative), ``(d_k,)``.
        test_covs: :math:`S_k = A_k\\Sigma A_k^\\top + C_k`, ``(d_k, d_k)``.
        train_covs: :math:`S_k' = S_k - A_k\\Sigma A_k^\\top / n`, the covariance of a training sample's
            representation given the learner's output, ``(d_k, d_k)``.
        noise_covs: :math:`C_k`, the accumulated injected noise, ``(d_k, d_k)``.
    """

    maps: list
    test_means: list
    test_covs: list
    train_covs: list
    noise_covs: list


class ITBounds(NamedTuple):
    """Result of :func:`layerwise_it_bounds`; every tensor has shape ``(L + 1,)`` (layer ``k = 0..L``).

    Attributes:
        kl: :math:`D_k = I(\\hat m; T_k^{(i)}, Y_i)` in nats (closed form).
        kl_bound: :math:`\\sqrt{D_k / 2}`.
        w2_cov: the covariance part of :math:`W_2^2` (closed form, the same for every draw).
        w_bound: :math:`\\mathbb E[L_k W_2]` (Monte Carlo over ``n_draws`` exact draws of :math:`\\hat m`).
        w_bound_se: its standard error.
        lipschitz: :math:`\\mathbb E[L_k]`, the mean Lipschitz constant of the loss in :math:`t_k`.
        funnel_layer: ``argmin_k w_bound`` (an int).
    """

    kl: torch.Tensor
    kl_bound: torch.Tensor
    w2_cov: torch.Tensor
    w_bound: torch.Tensor
    w_bound_se: torch.Tensor
    lipschitz: torch.Tensor
    funnel_layer: int


class GapEstimate(NamedTuple):
    """Result of :func:`generalization_gap_monte_carlo`.

    Attributes:
        gap: mean over repetitions of test risk minus training risk (0-d tensor).
        se: its standard error (0-d tensor).
        train_risk: mean training risk (0-d tensor).
        test_risk: mean test risk (0-d tensor).
        gaps: the per-repetition gaps, ``(n_repeats,)``.
    """

    gap: torch.Tensor
    se: torch.Tensor
    train_risk: torch.Tensor
    test_risk: torch.Tensor
    gaps: torch.Tensor


def _example(ctx) -> dict:
    g, d = ctx.generator, ctx.size("d")
    weights = [torch.randn(d, d, generator=g, dtype=ctx.dtype) / math.sqrt(d) for _ in range(2)]
    mu = torch.full((d,), 0.5, dtype=ctx.dtype)
    return {"weights": weights, "mu": mu, "Sigma": torch.eye(d, dtype=ctx.dtype), "n": 20}


def _check_chain(weights, mu, Sigma) -> None:
    width = mu.shape[0]
    for k, B in enumerate(weights):
        if B.ndim != 2:
            raise ValueError(f"weights[{k}] must be a matrix (d_out, d_in), got shape {tuple(B.shape)}")
        if B.shape[1] != width:
            raise ValueError(f"weights[{k}] must have {width} columns (the width of the layer below), "
                             f"got shape {tuple(B.shape)}")
        width = B.shape[0]
    evals = torch.linalg.eigvalsh((Sigma + Sigma.T) / 2)
    if bool((evals <= 0).any()):
        raise ValueError(f"Sigma must be positive definite, got smallest eigenvalue {float(evals.min())!r}")


def _sqrtm(S: torch.Tensor) -> torch.Tensor:
    evals, evecs = torch.linalg.eigh((S + S.T) / 2)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def _pushforwards(weights, mu, Sigma, n, noise_std) -> LinearGaussianPushforwards:
    d = mu.shape[0]
    A = torch.eye(d, dtype=mu.dtype, device=mu.device)
    C = torch.zeros(d, d, dtype=mu.dtype, device=mu.device)
    maps, means, tests, trains, noises = [], [], [], [], []
    for k in range(len(weights) + 1):
        if k > 0:
            B = weights[k - 1]
            A = B @ A
            C = B @ C @ B.T + noise_std ** 2 * torch.eye(B.shape[0], dtype=mu.dtype, device=mu.device)
        M = A @ Sigma @ A.T
        S = M + C
        maps.append(A)
        means.append(A @ mu)
        tests.append(S)
        trains.append(S - M / n)
        noises.append(C)
    return LinearGaussianPushforwards(maps, means, tests, trains, noises)


def _mutual_information(S: torch.Tensor, M: torch.Tensor, n: int) -> torch.Tensor:
    # -1/2 log det(I - S^{-1} M / n) on the support of S (M's range lies in it).
    evals, evecs = torch.linalg.eigh((S + S.T) / 2)
    keep = evals > evals.max().clamp_min(0) * S.shape[0] * torch.finfo(S.dtype).eps * 10
    V = evecs[:, keep] / evals[keep].sqrt()
    lam = torch.linalg.eigvalsh(V.T @ M @ V)
    return -0.5 * torch.log1p(-lam.clamp(0, 1) / n).sum()


def _w2_cov(S1: torch.Tensor, S2: torch.Tensor) -> torch.Tensor:
    r = _sqrtm(S2)
    return torch.trace(S1 + S2 - 2 * _sqrtm(r @ S1 @ r)).clamp_min(0)


def _ramp_expectation(a: torch.Tensor, b: torch.Tensor, margin: float) -> torch.Tensor:
    # E clip((gamma - M) / (2 gamma), 0, 1), M ~ N(a, b^2): [E(gamma - M)_+ - E(-gamma - M)_+] / (2 gamma).
    def hinge(c):
        z = c - a
        safe = torch.where(b > 0, b, torch.ones_like(b))
        t = z / safe
        smooth = z * torch.special.ndtr(t) + safe * torch.exp(-0.5 * t ** 2) / math.sqrt(2 * math.pi)
        return torch.where(b > 0, smooth, z.clamp_min(0))
    return (hinge(torch.tensor(margin, dtype=a.dtype)) - hinge(torch.tensor(-margin, dtype=a.dtype))) / (2 * margin)


@accepts(weights=Tensors(length="L"), mu=Tensor("d"), Sigma=Tensor("d", "d", symmetric=True), n=Int(ge=2),
         noise_std=Real(ge=0), example=_example)
def linear_gaussian_pushforwards(weights: list, mu: torch.Tensor, Sigma: torch.Tensor, n: int, *,
                                 noise_std: float = 0.5) -> LinearGaussianPushforwards:
    """Class-conditional train and test pushforwards of a noisy linear network at every layer (closed form).

    References: Information-Theoretic Generalization Bounds for Deep Neural Networks, 2024.

    ``weights``: ``L`` matrices :math:`B_k` of shapes ``(d_k, d_{k-1})``, ``d_0 = d``; ``mu`` ``(d,)``; ``Sigma``
    ``(d, d)`` positive definite; ``n`` training samples; ``noise_std`` the injected noise ``s``. See the module
    docstring for the formulas.

    Example:
        >>> import torch
        >>> p = linear_gaussian_pushforwards([2 * torch.eye(2)], torch.ones(2), torch.eye(2), 4, noise_std=1.0)
        >>> p.test_covs[1]
        tensor([[5., 0.],
                [0., 5.]])
    """
    _check_chain(weights, mu, Sigma)
    return _pushforwards(weights, mu, Sigma, n, float(noise_std))


@accepts(a=Tensor(ndims=tuple(range(0, 4))), b=Tensor(ndims=tuple(range(0, 4)), nonnegative=True),
         margin=Real(gt=0), example=lambda ctx: {"a": torch.linspace(-2, 2, 5, dtype=ctx.dtype),
                                                  "b": torch.full((5,), 0.5, dtype=ctx.dtype), "margin": 1.0})
def ramp_loss_expectation(a: torch.Tensor, b: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Expected ramp loss :math:`\\mathbb E\\,\\mathrm{clip}((\\gamma - M)/(2\\gamma), 0, 1)` of a Gaussian margin.

    References: Information-Theoretic Generalization Bounds for Deep Neural Networks, 2024.

    :math:`M \\sim N(a, b^2)` elementwise (``a``, ``b`` broadcastable, ``b >= 0``; ``b = 0`` is the point mass),
    :math:`\\gamma` = ``margin``. Closed form through :math:`\\mathbb E(c - M)_+ = (c - a)\\Phi(z) + b\\varphi(z)`,
    :math:`z = (c - a)/b`.

    Example:
        >>> import torch
        >>> ramp_loss_expectation(torch.tensor([0.0, 5.0]), torch.tensor([0.0, 0.0]), 1.0)
        tensor([0.5000, 0.0000])
    """
    return _ramp_expectation(a, b, float(margin))


@accepts(weights=Tensors(length="L"), mu=Tensor("d"), Sigma=Tensor("d", "d", symmetric=True), n=Int(ge=2),
         noise_std=Real(ge=0), margin=Real(gt=0), n_draws=Int(ge=2), generator=Generator(), example=_example)
def layerwise_it_bounds(weights: list, mu: torch.Tensor, Sigma: torch.Tensor, n: int, *, noise_std: float = 0.5,
                        margin: float = 1.0, n_draws: int = 256,
                        generator: torch.Generator | None = None) -> ITBounds:
    """Layerwise KL and Wasserstein generalization bounds of the mean-direction learner on a noisy linear network.

    References: Information-Theoretic Generalization Bounds for Deep Neural Networks, 2024.

    Returns, for every layer ``k = 0..L``, :math:`D_k`, :math:`\\sqrt{D_k/2}` and
    :math:`\\mathbb E[L_k W_2]` (module docstring; ``margin`` = :math:`\\gamma`, ``n_draws`` exact draws of
    :math:`\\hat m \\sim N(\\mu, \\Sigma/n)` for the Wasserstein expectation). Shapes as in
    :func:`linear_gaussian_pushforwards`. Both bounds hold for the expected gap of the ramp loss read out at layer
    ``L``.

    Example:
        >>> import torch
        >>> b = layerwise_it_bounds([torch.eye(2)], torch.ones(2), torch.eye(2), 10, noise_std=0.0)
        >>> round(float(b.kl[0]), 4) == round(float(b.kl[1]), 4)
        True
    """
    _check_chain(weights, mu, Sigma)
    p = _pushforwards(weights, mu, Sigma, n, float(noise_std))
    L = len(weights)
    chol = torch.linalg.cholesky(Sigma)
    noise = torch.randn(n_draws, mu.shape[0], generator=generator, dtype=mu.dtype, device=mu.device)
    delta = noise @ chol.T / math.sqrt(n)  # m_hat - mu
    w_hat = (mu + delta) @ p.maps[L].T
    u = w_hat / w_hat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(mu.dtype).tiny)
    kl, w2c, wb, wse, lip = [], [], [], [], []
    for k in range(L + 1):
        M = p.maps[k] @ Sigma @ p.maps[k].T
        kl.append(_mutual_information(p.test_covs[k], M, n))
        c = _w2_cov(p.train_covs[k], p.test_covs[k])
        w2c.append(c)
        upper = _upper(weights, k)
        Lk = (u @ upper).norm(dim=1) / (2 * margin)
        w2 = ((delta @ p.maps[k].T) ** 2).sum(1) + c
        vals = Lk * w2.sqrt()
        wb.append(vals.mean())
        wse.append(vals.std() / math.sqrt(n_draws))
        lip.append(Lk.mean())
    kl_t = torch.stack(kl)
    w_t = torch.stack(wb)
    return ITBounds(kl_t, (kl_t / 2).sqrt(), torch.stack(w2c), w_t, torch.stack(wse), torch.stack(lip),
                    int(w_t.argmin()))


def _upper(weights, k: int) -> torch.Tensor:
    # A_{L<-k} = B_L ... B_{k+1} (identity of width d_L when k = L).
    width = weights[-1].shape[0]
    out = torch.eye(width, dtype=weights[-1].dtype, device=weights[-1].device)
    for B in reversed(weights[k:]):
        out = out @ B
    return out


@accepts(weights=Tensors(length="L"), mu=Tensor("d"), Sigma=Tensor("d", "d", symmetric=True), n=Int(ge=2),
         noise_std=Real(ge=0), margin=Real(gt=0), n_repeats=Int(ge=2), generator=Generator(), example=_example)
def generalization_gap_monte_carlo(weights: list, mu: torch.Tensor, Sigma: torch.Tensor, n: int, *,
                                   noise_std: float = 0.5, margin: float = 1.0, n_repeats: int = 200,
                                   generator: torch.Generator | None = None) -> GapEstimate:
    """Monte Carlo estimate of the expected generalization gap of the mean-direction learner (ramp loss).

    References: Information-Theoretic Generalization Bounds for Deep Neural Networks, 2024.

    Each of ``n_repeats`` repetitions draws ``n`` training pairs (as :math:`Z_i = Y_i X_i \\sim N(\\mu, \\Sigma)`,
    which is all the learner and the loss depend on), fits :math:`\\hat m`, and takes test risk minus training
    risk, both averaged over the injected noise in closed form (:func:`ramp_loss_expectation`): the training margin
    of sample ``i`` is :math:`N(u^\\top A_L Z_i, u^\\top C_L u)`, the test margin :math:`N(u^\\top A_L\\mu,
    u^\\top S_L u)`. The only Monte Carlo error is over the training sets. Shapes as in
    :func:`linear_gaussian_pushforwards`.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> est = generalization_gap_monte_carlo([torch.eye(3)], torch.ones(3), torch.eye(3), 20, generator=g)
        >>> bool(est.gap > 0)
        True
    """
    _check_chain(weights, mu, Sigma)
    p = _pushforwards(weights, mu, Sigma, n, float(noise_std))
    d = mu.shape[0]
    chol = torch.linalg.cholesky(Sigma)
    Z = mu + torch.randn(n_repeats, n, d, generator=generator, dtype=mu.dtype, device=mu.device) @ chol.T
    A, S, C = p.maps[-1], p.test_covs[-1], p.noise_covs[-1]
    w_hat = Z.mean(1) @ A.T
    u = w_hat / w_hat.norm(dim=1, keepdim=True).clamp_min(torch.finfo(mu.dtype).tiny)
    proj = u @ A  # (R, d): the margin of a clean input is proj . z
    b_train = ((u @ C) * u).sum(1).clamp_min(0).sqrt()
    b_test = ((u @ S) * u).sum(1).clamp_min(0).sqrt()
    train = _ramp_expectation(torch.einsum("rnd,rd->rn", Z, proj), b_train[:, None], float(margin)).mean(1)
    test = _ramp_expectation(proj @ mu, b_test, float(margin))
    gaps = test - train
    return GapEstimate(gaps.mean(), gaps.std() / math.sqrt(n_repeats), train.mean(), test.mean(), gaps)
