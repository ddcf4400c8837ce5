"""Loss-input sensitivity: per-feature first, second and third derivatives of the loss with respect to the inputs.

References: Sensitivity Analysis On Loss Landscape (Faroz), 2024; Random Forests (Breiman), 2001 (the
permutation-importance baseline).

For a trained model :math:`f` and a per-sample loss :math:`\\ell(x, y) = \\texttt{loss\\_fn}(f(x), y)` (the mean
loss of a batch of one sample), :func:`loss_input_derivatives` returns, for every sample :math:`i` and input
feature :math:`j`, the diagonal derivatives

.. math:: D^{(k)}_{ij} = \\frac{\\partial^k \\ell(x_i, y_i)}{\\partial x_{ij}^k}, \\qquad k \\in \\{1, 2, 3\\},

computed with ``torch.func``: :math:`D^{(1)}` is ``grad``; :math:`D^{(2)}_{\\cdot j}` a ``jvp`` of ``grad`` along
the coordinate direction :math:`e_j` read at :math:`j`; :math:`D^{(3)}` one more ``jvp`` of that along
:math:`e_j`; samples and directions are mapped with ``vmap`` (no Python loop over either).
:func:`sensitivity_scores` reduces them over samples to one score per feature (mean, mean absolute value or root
mean square), and :func:`permutation_importance` is the baseline: the rise of the mean loss when one feature's
column is shuffled.

Why the second derivative ranks features (our reading, for the squared loss
:math:`\\ell = (f(x) - y)^2` the paper uses): :math:`D^{(2)}_{ij} = 2 (\\partial_j f)^2 + 2 (f - y)\\,\\partial_j^2 f`,
so near a fit (small residuals) its mean over the data is about :math:`2\\,\\mathbb{E}[(\\partial_j f)^2]`, a
squared-sensitivity importance; :math:`D^{(1)} = 2 (f - y)\\,\\partial_j f` and
:math:`D^{(3)} = 6\\,\\partial_j f\\,\\partial_j^2 f + 2 (f - y)\\,\\partial_j^3 f` mix the residual, or the
curvature, with the same sensitivity. The paper's text was only readable in its abstract and introduction, so the
aggregation (which statistic over samples) is our choice, listed as a deviation in the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Function, Generator, Int, Ints, Module, Tensor, accepts

__all__ = ["InputDerivatives", "loss_input_derivatives", "sensitivity_scores", "permutation_importance",
           "PermutationImportance"]

_ORDERS = (1, 2, 3)


class InputDerivatives(NamedTuple):
    """Result of :func:`loss_input_derivatives`.

    Attributes:
        first, second, third: :math:`\\partial^k \\ell_i / \\partial x_{ij}^k`, each of the shape of ``inputs``
            ``(N, *feature_shape)``, or ``None`` for an order not asked for.
        loss: the per-sample losses :math:`\\ell_i`, shape ``(N,)``.
        mode: the differentiation route used (``"forward"`` or ``"reverse"``).
    """

    first: torch.Tensor | None
    second: torch.Tensor | None
    third: torch.Tensor | None
    loss: torch.Tensor
    mode: str


class PermutationImportance(NamedTuple):
    """Result of :func:`permutation_importance`.

    Attributes:
        importance: mean over repeats of the loss rise, shape ``feature_shape``.
        std: its standard deviation over repeats (0 for one repeat), shape ``feature_shape``.
        base_loss: the unpermuted mean loss.
        n_repeats: shuffles per feature.
    """

    importance: torch.Tensor
    std: torch.Tensor
    base_loss: float
    n_repeats: int


def _example_regression(ctx):
    """A tiny tanh MLP regressor with the squared loss on six points."""
    g = ctx.generator
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).to(ctx.dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=ctx.dtype))
    return {"model": model, "loss_fn": lambda out, t: ((out - t) ** 2).mean(),
            "inputs": torch.randn(6, 3, generator=g, dtype=ctx.dtype),
            "targets": torch.randn(6, 1, generator=g, dtype=ctx.dtype)}


def _per_sample_loss(model, loss_fn, inputs, targets):
    """``(loss_one(x, t), dtype)``: the loss of one sample (a batch of one) through ``functional_call``; validates."""
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating tensor (derivatives are taken with respect to it), got "
                        f"{inputs.dtype}")
    if targets.dim() < 1 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(f"targets must have {inputs.shape[0]} rows (one per row of inputs), got shape "
                         f"{tuple(targets.shape)}")
    params = dict(model.named_parameters())
    floating = [p for p in params.values() if p.is_floating_point()]
    if floating and floating[0].dtype != inputs.dtype:
        raise TypeError(f"inputs must have the dtype of the model's parameters ({floating[0].dtype}), got "
                        f"{inputs.dtype}")
    state = {name: p.detach() for name, p in params.items()}
    state.update(dict(model.named_buffers()))

    def loss_one(x, t):
        out = torch.func.functional_call(model, state, (x.unsqueeze(0),))
        return loss_fn(out, t.unsqueeze(0)).reshape(())

    with torch.no_grad():
        probe = loss_fn(model(inputs), targets)  # the batch loss: a per-sample (unreduced) loss shows here
    if not isinstance(probe, torch.Tensor) or probe.numel() != 1:
        got = f"shape {tuple(probe.shape)}" if isinstance(probe, torch.Tensor) else type(probe).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {got}")
    return loss_one


def _diagonal_kernel(loss_one, orders: tuple[int, ...], mode: str):
    """``(x, t, directions) -> tuple of (d,)`` diagonal derivatives for one sample; ``directions`` is ``(d, d)``."""
    top = max(orders)

    def along(e):
        # h_1(x) = <grad l(x), e>; h_{k+1}(x) = <grad h_k(x), e> (reverse) or d/ds h_k(x + s e) (forward, k >= 1).
        def first(x, t):
            return torch.dot(torch.func.grad(loss_one)(x, t).reshape(-1), e.reshape(-1))

        levels = [first]
        for _ in range(top - 1):
            prev = levels[-1]
            if mode == "forward":
                def nxt(x, t, prev=prev):
                    return torch.func.jvp(lambda z: prev(z, t), (x,), (e,))[1]
            else:
                def nxt(x, t, prev=prev):
                    return torch.dot(torch.func.grad(prev)(x, t).reshape(-1), e.reshape(-1))
            levels.append(nxt)
        return levels

    def kernel(x, t, directions):
        def one_direction(e):
            levels = along(e)
            return tuple(levels[k - 1](x, t) for k in orders)
        return torch.func.vmap(one_direction)(directions)

    return kernel


def _derivatives(loss_one, inputs, targets, orders, mode):
    feature_shape = inputs.shape[1:]
    d = int(torch.tensor(feature_shape).prod()) if feature_shape else 1
    directions = torch.eye(d, dtype=inputs.dtype, device=inputs.device).reshape(d, *feature_shape)
    kernel = _diagonal_kernel(loss_one, orders, mode)
    per = torch.func.vmap(kernel, in_dims=(0, 0, None))(inputs.detach(), targets, directions)
    return {k: v.reshape(inputs.shape) for k, v in zip(orders, per)}


@accepts(model=Module(bind_dtype=True), loss_fn=Function(), inputs=Tensor(ndims=tuple(range(2, 9))),
         targets=Tensor(ndims=tuple(range(1, 9)), dtype="any"), orders=Ints(ge=1, le=3, min_length=1),
         mode=Choice("auto", "forward", "reverse"), example=_example_regression)
def loss_input_derivatives(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           inputs: torch.Tensor, targets: torch.Tensor, orders: Sequence[int] = (1, 2, 3), *,
                           mode: str = "auto") -> InputDerivatives:
    """Per-sample, per-feature diagonal loss-input derivatives :math:`\\partial^k \\ell_i / \\partial x_{ij}^k`.

    References: Sensitivity Analysis On Loss Landscape (Faroz), 2024.

    :math:`\\ell_i = \\texttt{loss\\_fn}(f(x_i), y_i)` on the batch of the single sample :math:`i` (for a mean
    loss, ``N`` times the sample's share of the batch-mean loss' derivative). The model is run as it is (put it in
    ``eval()`` first) and its parameters are held fixed.

    Args:
        model: maps ``inputs`` (a batch) to outputs; floating parameters in the dtype of ``inputs``.
        loss_fn: ``loss_fn(outputs, targets)`` -> scalar (the mean over the batch), smooth to the highest order.
        inputs: floating, shape ``(N, *feature_shape)``; every entry of ``feature_shape`` is one feature.
        targets: shape ``(N, ...)``, any dtype the loss takes.
        orders: which of 1, 2, 3 to return (distinct).
        mode: ``"forward"`` (``jvp`` nests over ``grad``: one reverse pass, then forward passes along each
            coordinate), ``"reverse"`` (``grad`` nests: works for losses with no forward-mode derivative of their
            backward, as ``F.mse_loss`` in torch 2.x), or ``"auto"`` (forward, and reverse where forward mode
            raises).

    Returns:
        :class:`InputDerivatives` (each requested order of shape ``(N, *feature_shape)``).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> with torch.no_grad(): _ = model.weight.copy_(torch.tensor([[1.0, -3.0]]))
        >>> x, y = torch.tensor([[1.0, 1.0]], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64)
        >>> r = loss_input_derivatives(model, lambda o, t: ((o - t) ** 2).mean(), x, y)
        >>> r.first.tolist(), r.second.tolist(), r.third.tolist()   # 2 r w_j, 2 w_j^2, 0 with r = -2
        ([[-4.0, 12.0]], [[2.0, 18.0]], [[0.0, 0.0]])
    """
    orders = tuple(int(k) for k in orders)
    if len(set(orders)) != len(orders):
        raise ValueError(f"orders must be distinct, got {list(orders)}")
    orders = tuple(sorted(orders))
    loss_one = _per_sample_loss(model, loss_fn, inputs, targets)
    used = "forward" if mode == "auto" else mode
    try:
        out = _derivatives(loss_one, inputs, targets, orders, used)
    except RuntimeError:
        if mode != "auto":
            raise
        used = "reverse"
        out = _derivatives(loss_one, inputs, targets, orders, used)
    with torch.no_grad():
        loss = torch.func.vmap(loss_one)(inputs.detach(), targets)
    return InputDerivatives(out.get(1), out.get(2), out.get(3), loss, used)


_REDUCTIONS = ("mean", "mean_abs", "rms")


@accepts(derivatives=Tensor(ndims=tuple(range(2, 9))), reduction=Choice(*_REDUCTIONS),
         example=lambda ctx: {"derivatives": torch.randn(5, 3, generator=ctx.generator, dtype=ctx.dtype)})
def sensitivity_scores(derivatives: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per-feature sensitivity score: a reduction over samples of one order of :func:`loss_input_derivatives`.

    References: Sensitivity Analysis On Loss Landscape (Faroz), 2024.

    ``"mean"``: :math:`s_j = \\frac1N \\sum_i D_{ij}` (for the second order of a squared loss near a fit, about
    :math:`2\\,\\mathbb{E}[(\\partial_j f)^2]`); ``"mean_abs"``: :math:`\\frac1N \\sum_i |D_{ij}|`; ``"rms"``:
    :math:`(\\frac1N \\sum_i D_{ij}^2)^{1/2}`.

    Args:
        derivatives: shape ``(N, *feature_shape)``, finite.
        reduction: one of ``"mean"``, ``"mean_abs"``, ``"rms"``.

    Returns:
        shape ``feature_shape``.

    Example:
        >>> import torch
        >>> sensitivity_scores(torch.tensor([[1.0, -2.0], [3.0, 2.0]]), "mean_abs").tolist()
        [2.0, 2.0]
    """
    if reduction == "mean":
        return derivatives.mean(0)
    if reduction == "mean_abs":
        return derivatives.abs().mean(0)
    return derivatives.pow(2).mean(0).sqrt()


@accepts(model=Module(bind_dtype=True), loss_fn=Function(), inputs=Tensor(ndims=tuple(range(2, 9))),
         targets=Tensor(ndims=tuple(range(1, 9)), dtype="any"), n_repeats=Int(ge=1), generator=Generator(),
         example=_example_regression)
def permutation_importance(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                           inputs: torch.Tensor, targets: torch.Tensor, *, n_repeats: int = 5,
                           generator: torch.Generator | None = None) -> PermutationImportance:
    """Permutation importance: the rise of the mean loss when one feature's column is shuffled across samples.

    References: Random Forests (Breiman), 2001.

    :math:`I_j = \\frac1R \\sum_{r=1}^R \\big[L(X^{(j, \\pi_r)}) - L(X)\\big]` with :math:`X^{(j,\\pi)}` the inputs
    with feature :math:`j` permuted by :math:`\\pi` and :math:`L` the mean ``loss_fn``; all features of one repeat
    share :math:`\\pi_r` and run as one batched (``vmap``) call.

    Args:
        model: maps a batch of ``inputs`` to outputs.
        loss_fn: ``loss_fn(outputs, targets)`` -> scalar mean loss.
        inputs: floating, shape ``(N, *feature_shape)``, ``N >= 2``.
        targets: shape ``(N, ...)``.
        n_repeats: shuffles per feature ``R``.
        generator: for the permutations.

    Returns:
        :class:`PermutationImportance` (``importance`` and ``std`` of shape ``feature_shape``).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> with torch.no_grad(): _ = model.weight.copy_(torch.tensor([[1.0, 0.0]]))
        >>> x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> r = permutation_importance(model, lambda o, t: ((o - t) ** 2).mean(), x, x[:, :1])
        >>> bool(r.importance[0] > 0.5), float(r.importance[1])
        (True, 0.0)
    """
    _per_sample_loss(model, loss_fn, inputs, targets)  # validates
    n = inputs.shape[0]
    if n < 2:
        raise ValueError(f"inputs must have at least 2 rows (a permutation needs two samples), got {n}")
    feature_shape = inputs.shape[1:]
    flat = inputs.detach().reshape(n, -1)
    d = flat.shape[1]
    eye = torch.eye(d, dtype=torch.bool, device=inputs.device)

    def batch_loss(x):
        return loss_fn(model(x.reshape(n, *feature_shape)), targets).reshape(())

    with torch.no_grad():
        base = batch_loss(flat)
        rises = []
        for _ in range(n_repeats):  # a handful of repeats; features and samples are vectorised
            perm = torch.randperm(n, generator=generator).to(inputs.device)
            shuffled = torch.where(eye[:, None, :], flat[perm][None], flat[None])  # (d, N, d)
            rises.append(torch.func.vmap(batch_loss)(shuffled) - base)
        rises = torch.stack(rises)
    std = rises.std(0) if n_repeats > 1 else torch.zeros_like(rises[0])
    return PermutationImportance(rises.mean(0).reshape(feature_shape), std.reshape(feature_shape), float(base),
                                 n_repeats)
