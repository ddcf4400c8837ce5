"""Neural-tangent-kernel view of score estimation: denoising score matching as kernel regression on noisy labels.

References: Neural Network-Based Score Estimation in Diffusion Models: Optimization and Generalization, 2024
(Han, Razaviyayn, Xu, ICLR 2024).

The paper's reading of denoising score matching (DSM) at noise level :math:`\\sigma` (VE convention here,
:math:`x = x_0 + \\sigma\\varepsilon`): it is least-squares *regression with noisy labels*. The inputs are
:math:`z_i = (x_i, \\sigma_i)` (state and time), the labels :math:`y_i = -\\varepsilon_i / \\sigma_i`, and the
regression function, :math:`E[y \\mid z] = \\nabla_x \\log p_\\sigma(x)`, is the score; the label noise
:math:`y - E[y \\mid z]` is unbounded and heteroscedastic. A wide network :math:`f_\\theta` trained on

.. math::
    L(\\theta) = \\frac{1}{2n}\\sum_{i=1}^n \\|f_\\theta(z_i) - y_i\\|^2

by full-batch gradient descent :math:`\\theta_{s+1} = \\theta_s - \\eta \\nabla L(\\theta_s)` stays close to its
linearization at :math:`\\theta_0`, whose predictions follow kernel regression with the empirical neural tangent
kernel :math:`K(z, z') = J_\\theta f(z)\\, J_\\theta f(z')^\\top` (a ``k x k`` block for ``k`` outputs). With
:math:`K = K(Z, Z)`, :math:`K_* = K(Z_*, Z)` (flattened over outputs) and residual :math:`r_0 = y - f_0(Z)`:

.. math::
    f_s(Z) = y - (I - \\tfrac{\\eta}{n} K)^s r_0, \\qquad
    f_s(Z_*) = f_0(Z_*) + K_* K^{-1}\\bigl(I - (I - \\tfrac{\\eta}{n} K)^s\\bigr) r_0

(discrete GD; gradient flow at time :math:`t` replaces :math:`(I - \\frac{\\eta}{n}K)^s` by
:math:`e^{-K t / n}`), evaluated through the eigendecomposition of :math:`K` with the :math:`\\lambda \\to 0`
limits taken exactly, so a singular kernel is fine. Trained to convergence the network interpolates the noisy
labels (:math:`K^{-1}` applied to the noise); the paper's generalization bound therefore stops early. The
stopping rule it builds on is the one of Raskutti, Wainwright and Yu (2014) for kernel gradient descent: with
empirical eigenvalues :math:`\\hat\\mu_j = \\lambda_j(K)/n` and
:math:`\\hat R(\\epsilon) = (\\frac1n \\sum_j \\min(\\hat\\mu_j, \\epsilon^2))^{1/2}`, stop at the first time
:math:`t` (:math:`= \\eta s`) with :math:`\\hat R(t^{-1/2}) > (2 e \\sigma_y t)^{-1}`,
:math:`\\sigma_y` the label-noise scale (:func:`early_stopping_time`).

Pieces:

* :class:`TwoLayerReLU`: :math:`f(z) = m^{-1/2} A\\, \\mathrm{relu}(W z + b)` in the NTK scaling, Gaussian
  :math:`W, b`, Rademacher :math:`A` fixed (only the hidden layer trains) and, by default, the antisymmetric
  initialization (neurons in pairs with opposite output weights) so that :math:`f_0 \\equiv 0`.
* :func:`empirical_ntk`: :math:`K(Z_1, Z_2)` of any module, by :func:`torch.func.jacrev` under
  :func:`torch.func.vmap`, shape ``(n1, n2, k, k)``.
* :func:`ntk_predictions`: the closed forms above at many times at once.
* :func:`dsm_regression_data`: inputs and noisy labels from a sampler of :math:`x_0`.
* :func:`train_gd`: the full-batch GD the theory analyses, with a checkpoint callback.
* :func:`early_stopping_time`: the rule above.

Shapes: inputs ``(n, p)`` (``p = d + 1`` for DSM data), labels ``(n, k)``, kernels ``(n1, n2, k, k)``.

Example:
    >>> import torch
    >>> from paperzoo.diffusion.mixture import GaussianMixture
    >>> from paperzoo.diffusion.ntk_score import (TwoLayerReLU, dsm_regression_data, empirical_ntk,
    ...                                           ntk_predictions, train_gd)
    >>> g = torch.Generator().manual_seed(0)
    >>> gm = GaussianMixture(torch.tensor([[-2.0], [2.0]], dtype=torch.float64),
    ...                      torch.full((2, 1, 1), 0.25, dtype=torch.float64))
    >>> data = dsm_regression_data(gm.sample, 32, 0.5, generator=g)
    >>> net = TwoLayerReLU(2, 1, 2048, generator=g)
    >>> K = empirical_ntk(net, data.inputs)
    >>> pred = ntk_predictions(K, data.labels, times=torch.tensor([10.0], dtype=torch.float64),
    ...                        lr=0.5).train[-1]
    >>> _ = train_gd(net, data.inputs, data.labels, 10, 0.5)
    >>> with torch.no_grad():   # the wide net tracks its kernel over these 10 steps
    ...     bool((net(data.inputs) - pred).norm() < 0.05 * pred.norm())
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from paperzoo.core.accepts import FloatDType, Function, Generator, Int, Module, OneOf, Real, Tensor, accepts

__all__ = ["TwoLayerReLU", "empirical_ntk", "KernelPredictions", "ntk_predictions", "DSMRegressionData",
           "dsm_regression_data", "train_gd", "early_stopping_time"]


# -- the network -------------------------------------------------------------------------------------------------


class TwoLayerReLU(nn.Module):
    r"""Two-layer ReLU network in the NTK scaling, :math:`f(z) = m^{-1/2} A\,\mathrm{relu}(W z + b)`.

    Args:
        in_dim: input size :math:`p` (``d + 1`` for a score network on :math:`(x, \sigma)`).
        out_dim: output size :math:`k` (``d``).
        width: hidden width :math:`m` (even when ``symmetric``).
        symmetric: antisymmetric initialization: neurons ``r`` and ``r + m/2`` share :math:`(w_r, b_r)` and have
            opposite output weights, so :math:`f_0 \equiv 0` and kernel regression starts from zero.
        train_outer: also train :math:`A` (default: fixed, as in the two-layer NTK analyses).
        generator: draws :math:`W, b \sim \mathcal N(0, 1)` and :math:`A \in \{\pm 1\}`.
        dtype: parameter dtype (default float64).

    Example:
        >>> net = TwoLayerReLU(2, 1, 64, generator=torch.Generator().manual_seed(0))
        >>> float(net(torch.randn(5, 2, dtype=torch.float64)).detach().abs().max()) < 1e-12   # 0 up to rounding
        True
    """

    @accepts(in_dim=Int(ge=1), out_dim=Int(ge=1), width=Int(ge=1), generator=Generator(), dtype=FloatDType(),
             example=lambda ctx: {"in_dim": 2, "out_dim": 1, "width": 8, "generator": ctx.generator,
                                  "dtype": ctx.dtype})
    def __init__(self, in_dim: int, out_dim: int, width: int, *, symmetric: bool = True, train_outer: bool = False,
                 generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64):
        super().__init__()
        if symmetric and width % 2:
            raise ValueError(f"width must be even with symmetric=True, got {width}")
        half = width // 2 if symmetric else width
        W = torch.randn(half, in_dim, generator=generator, dtype=dtype)
        b = torch.randn(half, generator=generator, dtype=dtype)
        A = 2.0 * torch.randint(0, 2, (out_dim, half), generator=generator).to(dtype) - 1.0
        if symmetric:
            W, b, A = torch.cat([W, W]), torch.cat([b, b]), torch.cat([A, -A], dim=1)
        self.weight = nn.Parameter(W)
        self.bias = nn.Parameter(b)
        self.outer = nn.Parameter(A, requires_grad=bool(train_outer))
        self.width = width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.relu(z @ self.weight.T + self.bias) @ self.outer.T / math.sqrt(self.width)


def _example_net(ctx) -> TwoLayerReLU:
    return TwoLayerReLU(2, 1, 8, generator=ctx.generator, dtype=ctx.dtype)


# -- empirical NTK -----------------------------------------------------------------------------------------------


def _jacobian(model: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Per-example Jacobian of the outputs in the trainable parameters, ``(n, k, P)``."""
    from torch.func import functional_call, jacrev, vmap

    params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    frozen.update(dict(model.named_buffers()))

    def f(ps, zi):
        return functional_call(model, {**ps, **frozen}, (zi.unsqueeze(0),)).squeeze(0)

    jac = vmap(jacrev(f), in_dims=(None, 0))(params, z)
    return torch.cat([j.reshape(z.shape[0], j.shape[1], -1) for j in jac.values()], dim=-1)


def _ntk(model, z1, z2, chunk=64):
    # Jacobians are (rows x parameters): build them a chunk of rows at a time so wide networks fit in memory.
    j2 = _jacobian(model, z1 if z2 is None else z2)
    if z2 is None and z1.shape[0] <= chunk:
        return torch.einsum("akp,blp->abkl", j2, j2)
    blocks = [torch.einsum("akp,blp->abkl", _jacobian(model, z1[i:i + chunk]), j2)
              for i in range(0, z1.shape[0], chunk)]
    return torch.cat(blocks, dim=0)


@accepts(model=Module(bind_dtype=True), z1=Tensor("n", "p"), z2=Tensor("m", "p", optional=True),
         example=lambda ctx: {"model": _example_net(ctx), "z1": torch.randn(4, 2, generator=ctx.generator,
                                                                             dtype=ctx.dtype)})
def empirical_ntk(model: nn.Module, z1: torch.Tensor, z2: torch.Tensor | None = None) -> torch.Tensor:
    r"""The empirical NTK :math:`K(z, z') = J_\theta f(z) J_\theta f(z')^\top` over the trainable parameters.

    Args:
        model: maps inputs ``(n, p)`` to outputs ``(n, k)``; parameters with ``requires_grad=False`` are frozen.
        z1: inputs ``(n, p)``.
        z2: inputs ``(m, p)``; default ``z1`` (the Gram matrix).

    Returns:
        ``(n, m, k, k)``: entry ``[a, b, i, j]`` is
        :math:`\langle \nabla_\theta f_i(z_a), \nabla_\theta f_j(z_b)\rangle`.
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model must have at least one parameter with requires_grad=True")
    return _ntk(model, z1, z2)


# -- closed-form kernel gradient descent -------------------------------------------------------------------------


class KernelPredictions(NamedTuple):
    """Predictions of kernel GD / gradient flow: ``train`` ``(T, n, k)``, ``test`` ``(T, m, k)`` or ``None``."""

    train: torch.Tensor
    test: torch.Tensor | None


def _flat(K: torch.Tensor) -> torch.Tensor:
    a, b, k, l = K.shape
    return K.permute(0, 2, 1, 3).reshape(a * k, b * l)


def _ntk_predictions(K, labels, K_test, times, f0, f0_test, lr):
    n, k = labels.shape
    lam, V = torch.linalg.eigh(0.5 * (_flat(K) + _flat(K).T))
    lam = lam.clamp_min(0.0)
    r0 = V.T @ (labels - f0).reshape(-1)                      # residual in the eigenbasis, (nk,)
    t = times.reshape(-1, 1)
    if lr is None:                                            # gradient flow at time t
        decay = torch.exp(-lam * t / n)
        gain = torch.where(lam > 0, -torch.expm1(-lam * t / n) / lam.clamp_min(1e-300), t / n)
    else:                                                     # s = t steps of GD with step size lr
        a = lr * lam / n
        decay = torch.pow(1.0 - a, t)
        gain = torch.where(lam > 0, (1.0 - decay) / lam.clamp_min(1e-300), t * lr / n)
    train = labels.reshape(1, -1) - (decay * r0) @ V.T
    test = None
    if K_test is not None:
        test = f0_test.reshape(1, -1) + (gain * r0) @ V.T @ _flat(K_test).T
        test = test.reshape(len(times), -1, k)
    return KernelPredictions(train.reshape(len(times), n, k), test)


@accepts(K=Tensor("n", "n", "k", "k"), labels=Tensor("n", "k"), K_test=Tensor("m", "n", "k", "k", optional=True),
         times=Tensor("T", nonnegative=True), f0=Tensor("n", "k", optional=True),
         f0_test=Tensor("m", "k", optional=True), lr=Real(gt=0, optional=True),
         example=lambda ctx: {"K": torch.eye(3, dtype=ctx.dtype).reshape(3, 3, 1, 1),
                              "labels": torch.randn(3, 1, generator=ctx.generator, dtype=ctx.dtype),
                              "times": torch.tensor([0.0, 1.0, 10.0], dtype=ctx.dtype)})
def ntk_predictions(K: torch.Tensor, labels: torch.Tensor, K_test: torch.Tensor | None = None, *,
                    times: torch.Tensor, f0: torch.Tensor | None = None, f0_test: torch.Tensor | None = None,
                    lr: float | None = None) -> KernelPredictions:
    r"""Closed-form predictions of the linearized network under GD on :math:`\frac{1}{2n}\sum\|f - y\|^2`.

    Args:
        K: training Gram kernel ``(n, n, k, k)`` (:func:`empirical_ntk`), symmetric positive semidefinite.
        labels: :math:`y`, ``(n, k)``.
        K_test: cross kernel :math:`K(Z_*, Z)`, ``(m, n, k, k)``; gives ``test`` predictions.
        times: ``(T,)``: gradient-flow times :math:`t` (``lr=None``) or step counts :math:`s` (``lr`` given;
            GD with step size :math:`\eta` = ``lr``, which follows the flow at :math:`t = \eta s` as
            :math:`\eta \to 0`).
        f0, f0_test: the network's outputs at initialization (default 0, the antisymmetric initialization).
        lr: :math:`\eta` for discrete GD; :math:`\eta\lambda_{\max}/n > 2` diverges, as GD would.

    Returns:
        :class:`KernelPredictions` with ``train`` ``(T, n, k)`` and ``test`` ``(T, m, k)``.
    """
    if (f0_test is not None) and K_test is None:
        raise ValueError("f0_test needs K_test")
    f0 = torch.zeros_like(labels) if f0 is None else f0
    if K_test is not None and f0_test is None:
        f0_test = torch.zeros(K_test.shape[0], labels.shape[1], dtype=labels.dtype, device=labels.device)
    return _ntk_predictions(K, labels, K_test, times, f0, f0_test, lr)


# -- DSM as regression with noisy labels -------------------------------------------------------------------------


class DSMRegressionData(NamedTuple):
    """DSM regression data: ``inputs`` ``(n, d + 1)`` = :math:`(x, \\sigma)`, ``labels`` ``(n, d)`` =
    :math:`-\\varepsilon/\\sigma`, the clean ``x0`` ``(n, d)``, the ``noise`` :math:`\\varepsilon` ``(n, d)`` and the
    levels ``sigma`` ``(n,)``."""

    inputs: torch.Tensor
    labels: torch.Tensor
    x0: torch.Tensor
    noise: torch.Tensor
    sigma: torch.Tensor


def _example_sampler(n, generator=None):
    return torch.randn(n, 2, generator=generator, dtype=torch.float64)


@accepts(sample_x0=Function(), n=Int(ge=1), sigma=OneOf(Real(gt=0), Tensor("n", positive_mass=True)),
         generator=Generator(), example=lambda ctx: {"sample_x0": _example_sampler, "n": 5, "sigma": 0.5,
                                                     "generator": ctx.generator})
def dsm_regression_data(sample_x0: Callable[..., torch.Tensor], n: int, sigma: float | torch.Tensor, *,
                        generator: torch.Generator | None = None) -> DSMRegressionData:
    r"""Draw :math:`x_0 \sim` ``sample_x0(n, generator=generator)`` ``(n, d)`` and :math:`\varepsilon \sim
    \mathcal N(0, I)`; return inputs :math:`(x_0 + \sigma\varepsilon, \sigma)` and labels
    :math:`-\varepsilon/\sigma`, whose conditional mean is the score :math:`\nabla_x \log p_\sigma(x)`.

    ``sigma``: one level (a number > 0) or one per sample, ``(n,)``, all > 0.
    """
    x0 = sample_x0(n, generator=generator)
    if not isinstance(x0, torch.Tensor) or x0.ndim != 2 or x0.shape[0] != n or not x0.is_floating_point():
        raise ValueError(f"sample_x0 must return a floating tensor of shape (n, d) = ({n}, d), got "
                         f"{getattr(x0, 'shape', type(x0).__name__)}")
    if isinstance(sigma, torch.Tensor):
        if sigma.shape[0] != n:
            raise ValueError(f"sigma must have n = {n} entries, got {sigma.shape[0]}")
        if bool((sigma <= 0).any()):
            raise ValueError("sigma must be > 0 everywhere")
        s = sigma.to(x0.dtype)
    else:
        s = torch.full((n,), float(sigma), dtype=x0.dtype, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x = x0 + s[:, None] * noise
    return DSMRegressionData(torch.cat([x, s[:, None]], dim=1), -noise / s[:, None], x0, noise, s)


# -- gradient descent and early stopping -------------------------------------------------------------------------


def _train_gd(model, inputs, labels, steps, lr, callback):
    params = [p for p in model.parameters() if p.requires_grad]
    losses = torch.empty(steps, dtype=inputs.dtype)
    for step in range(1, steps + 1):
        loss = 0.5 * (model(inputs) - labels).pow(2).sum(-1).mean()
        grads = torch.autograd.grad(loss, params)
        loss = loss.detach()
        with torch.no_grad():
            for p, g in zip(params, grads):
                p.sub_(lr * g)
        losses[step - 1] = loss
        if not math.isfinite(float(loss)):
            raise FloatingPointError(f"GD diverged at step {step} (loss {float(loss)}); lower lr")
        if callback is not None:
            callback(step, model, float(loss))
    return losses


@accepts(model=Module(bind_dtype=True), inputs=Tensor("n", "p"), labels=Tensor("n", "k"), steps=Int(ge=0),
         lr=Real(gt=0), callback=Function(optional=True), mutates=("model",),
         example=lambda ctx: {"model": _example_net(ctx), "inputs": torch.randn(4, 2, generator=ctx.generator,
                                                                                  dtype=ctx.dtype),
                              "labels": torch.randn(4, 1, generator=ctx.generator, dtype=ctx.dtype),
                              "steps": 3, "lr": 0.1})
def train_gd(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, steps: int, lr: float, *,
             callback: Callable[[int, nn.Module, float], None] | None = None) -> torch.Tensor:
    r"""Full-batch gradient descent :math:`\theta \leftarrow \theta - \eta\nabla_\theta \frac{1}{2n}\sum_i
    \|f_\theta(z_i) - y_i\|^2` on the trainable parameters, in place. ``callback(step, model, loss)`` runs after
    each step (from 1). Returns the loss before each step, ``(steps,)``."""
    return _train_gd(model, inputs, labels, steps, lr, callback)


@accepts(K=Tensor("n", "n", "k", "k"), noise_std=Real(gt=0),
         example=lambda ctx: {"K": torch.eye(4, dtype=ctx.dtype).reshape(4, 4, 1, 1), "noise_std": 0.5})
def early_stopping_time(K: torch.Tensor, noise_std: float) -> float:
    r"""The kernel-GD stopping time :math:`\hat T` (module docstring): the first :math:`t` with
    :math:`t\,\hat R(t^{-1/2}) > 1/(2 e \sigma_y)`, in gradient-flow time (steps = :math:`\hat T/\eta`).

    ``K`` ``(n, n, k, k)``, scaled as the rule assumes (:math:`\sup_z K(z, z) \le 1`; divide by its largest
    diagonal entry and time by the same factor otherwise). ``noise_std``: :math:`\sigma_y`. :math:`t \hat R` grows
    in :math:`t`, so the crossing is found by bisection; ``inf`` when the kernel is zero.
    """
    n = K.shape[0]
    mu = torch.linalg.eigvalsh(0.5 * (_flat(K) + _flat(K).T)).clamp_min(0.0) / n
    target = 1.0 / (2.0 * math.e * noise_std)

    def lhs(t):
        return t * math.sqrt(float(torch.minimum(mu, torch.as_tensor(1.0 / t, dtype=mu.dtype)).sum()) / n)

    if float(mu.max()) <= 0:
        return math.inf
    lo, hi = 1e-12, 1.0
    while lhs(hi) <= target:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if lhs(mid) <= target else (lo, mid)
        if hi / lo < 1 + 1e-12:
            break
    return hi
