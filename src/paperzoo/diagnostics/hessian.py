"""Hessian spectra through Hessian-vector products: Lanczos, power iteration, and class-wise extremes.

References: Escaping Saddle Points for Effective Generalization on Class-Imbalanced Data (Rangwani et al.), 2022
(the class-wise Hessian spectra whose large negative eigenvalues mark a saddle of the minority-class loss);
The Lanczos algorithm: An iteration method for the solution of the eigenvalue problem of linear differential and
integral operators (Lanczos), 1950.

Everything works on the flattened parameter vector of a list of tensors and never forms the Hessian:
:func:`hvp_operator` differentiates the loss once with ``create_graph=True`` and returns
:math:`v \\mapsto Hv`; :func:`lanczos` runs ``num_iters`` Lanczos steps (full reorthogonalisation) and returns
the Ritz values and their weights, whose extremes converge to :math:`\\lambda_{\\max}` and
:math:`\\lambda_{\\min}` first and whose weighted histogram is the stochastic-Lanczos spectral density estimate;
:func:`top_eigenvalue` is plain power iteration; :func:`class_wise_hessian_extremes` applies Lanczos to each
class's mean loss.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from paperzoo.core.accepts import (FloatDType, Function, Generator, Int, Ints, Module, Real, Tensor, Tensors,
                                   accepts)

__all__ = ["LanczosResult", "PowerResult", "hvp_operator", "lanczos", "top_eigenvalue",
           "class_wise_hessian_extremes"]


class LanczosResult(NamedTuple):
    """Result of :func:`lanczos`.

    Attributes:
        eigenvalues: Ritz values, ascending, shape ``(m,)`` with ``m <= num_iters``.
        weights: squared first components of the Ritz vectors, shape ``(m,)`` (sum to one): the quadrature
            weights of the spectral density estimate.
        n_iter: Lanczos steps taken (fewer than asked when an invariant subspace was found).
    """

    eigenvalues: torch.Tensor
    weights: torch.Tensor
    n_iter: int


class PowerResult(NamedTuple):
    """Result of :func:`top_eigenvalue`: the eigenvalue of largest magnitude, its vector, and diagnostics."""

    eigenvalue: float
    vector: torch.Tensor
    n_iter: int
    converged: bool


def _example_loss(ctx):
    """A small nonquadratic loss of two parameter tensors (a tuple: the closure must see the very tensors passed)."""
    g = ctx.generator
    w = torch.randn(3, generator=g, dtype=ctx.dtype).requires_grad_(True)
    b = torch.randn(2, 2, generator=g, dtype=ctx.dtype).requires_grad_(True)
    return {"loss_fn": lambda: (w ** 2).sum() + torch.tanh(b).sum() * w.sum(), "params": (w, b)}


@accepts(loss_fn=Function(), params=Tensors(), example=_example_loss)
def hvp_operator(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor]
                 ) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """``(matvec, n)``: :math:`v \\mapsto \\nabla^2 L\\, v` on flat vectors of length ``n`` (the parameter count).

    ``loss_fn()`` is evaluated once, its gradient kept with its graph, and each product is one more backward
    pass (double backpropagation).

    Args:
        loss_fn: ``() -> L``, a finite scalar tensor computed from ``params``.
        params: the tensors :math:`\\theta` (each requiring grad) the Hessian is taken with respect to; the flat
            vector is their concatenation in order. A tensor the loss does not use has zero rows.

    Returns:
        ``matvec`` (``v`` of shape ``(n,)`` to :math:`Hv` of shape ``(n,)``, in the dtype of ``v``) and ``n``.

    Example:
        >>> import torch
        >>> w = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
        >>> matvec, n = hvp_operator(lambda: (w ** 3).sum(), [w])
        >>> matvec(torch.ones(2, dtype=torch.float64)).tolist(), n
        ([6.0, 12.0], 2)
    """
    params = list(params)
    if not params:
        raise ValueError("params must contain at least one tensor, got an empty sequence")
    for i, p in enumerate(params):
        if not p.requires_grad:
            raise ValueError(f"params[{i}] must require grad (the Hessian is taken with respect to it), got a "
                             "tensor with requires_grad=False")
    with torch.enable_grad():
        loss = loss_fn()
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            got = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar tensor, got {got}")
        if not bool(torch.isfinite(loss.detach()).all()):
            raise ValueError(f"loss_fn must return a finite loss, got {float(loss.detach())!r}")
        if not loss.requires_grad:
            raise ValueError("loss_fn must return a loss computed from params, got a tensor that does not require "
                             "grad")
        grads = torch.autograd.grad(loss.reshape(()), params, create_graph=True, allow_unused=True)
    if all(g is None for g in grads):
        # Not a zero Hessian: the loss was built from other tensors (copies, or a detached graph).
        raise ValueError("loss_fn must return a loss computed from params, got one that uses none of them")
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    sizes = [p.numel() for p in params]
    n = sum(sizes)
    dtype = params[0].dtype

    def matvec(v: torch.Tensor) -> torch.Tensor:
        if not isinstance(v, torch.Tensor) or v.shape != (n,):
            got = f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"v must be a tensor of shape ({n},) (the parameter count), got {got}")
        chunks = torch.split(v.to(dtype), sizes)
        with torch.enable_grad():
            dot = sum((g * c.view_as(g)).sum() for g, c in zip(grads, chunks) if g.requires_grad)
            if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
                return torch.zeros_like(v)
            hv = torch.autograd.grad(dot, params, retain_graph=True, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if h is None else h).reshape(-1) for p, h in zip(params, hv)]
                         ).to(v.dtype)

    return matvec, n


def _example_operator(v: torch.Tensor) -> torch.Tensor:
    """:math:`A = \\operatorname{diag}(1, \\dots, n) + \\mathbf{1}\\mathbf{1}^\\top / n`: symmetric, any ``n``."""
    return torch.arange(1, v.numel() + 1, dtype=v.dtype, device=v.device) * v + v.sum() / v.numel()


def _apply(matvec, v: torch.Tensor, dtype: torch.dtype, step: int) -> torch.Tensor:
    """``matvec(v)`` in ``dtype``, or a ValueError/TypeError naming ``matvec`` when its output cannot be used."""
    w = matvec(v)
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"matvec must return a torch.Tensor, got {type(w).__name__} at step {step}")
    if w.shape != v.shape:
        raise ValueError(f"matvec must return a tensor of the shape of its input {tuple(v.shape)}, got "
                         f"{tuple(w.shape)} at step {step}")
    if w.is_complex():
        raise TypeError(f"matvec must return a real tensor, got {w.dtype} at step {step}")
    w = w.to(dtype=dtype, device=v.device)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"matvec must return finite values, got NaN or inf entries at step {step}")
    return w


def _check_precision(dtype: torch.dtype) -> None:
    # torch.linalg has no half-precision eigensolvers, and Lanczos at half precision loses orthogonality at once.
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")


def _device(device) -> torch.device | None:
    if device is None:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch.device or a device string such as 'cpu', got {device!r}") from None


@accepts(matvec=Function(), n=Int(ge=1), num_iters=Int(ge=1), generator=Generator(), dtype=FloatDType(),
         breakdown_tol=Real(ge=0),
         example=lambda ctx: {"matvec": _example_operator, "n": 4, "num_iters": 3, "dtype": ctx.dtype})
def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, num_iters: int = 30, *,
            generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
            device: torch.device | str | None = None, breakdown_tol: float = 1e-10) -> LanczosResult:
    """Lanczos tridiagonalisation of a symmetric operator from a random unit start, with full reorthogonalisation.

    Args:
        matvec: :math:`v \\mapsto Av` for :math:`A` symmetric, on vectors of shape ``(n,)``; it must return a
            finite real tensor of shape ``(n,)`` (ValueError otherwise).
        n: dimension ``>= 1``.
        num_iters: Lanczos steps :math:`m \\le n` (clipped to ``n``).
        generator: for the start vector.
        dtype, device: of the Lanczos vectors: ``torch.float32`` or ``torch.float64`` (float64 keeps the
            reorthogonalisation accurate).
        breakdown_tol: stop when the next residual norm falls below this (an invariant subspace: exact Ritz values).

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([-2.0, 0.5, 1.0, 3.0], dtype=torch.float64))
        >>> res = lanczos(lambda v: A @ v, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> [round(float(x), 6) for x in res.eigenvalues]
        [-2.0, 0.5, 1.0, 3.0]
    """
    _check_precision(dtype)
    device = _device(device)
    num_iters = min(num_iters, n)
    q = torch.randn(n, generator=generator, dtype=dtype)
    if device is not None:
        q = q.to(device)
    q = q / torch.linalg.vector_norm(q)
    Q = [q]
    alphas, betas = [], []
    for j in range(num_iters):
        w = _apply(matvec, Q[j], dtype, j)
        alpha = torch.dot(w, Q[j])
        alphas.append(alpha)
        basis = torch.stack(Q)
        # Two passes of classical Gram-Schmidt against every previous vector (numerically orthogonal basis).
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        beta = torch.linalg.vector_norm(w)
        if j == num_iters - 1 or float(beta) <= breakdown_tol:
            break
        betas.append(beta)
        Q.append(w / beta)
    m = len(alphas)
    T = torch.diag(torch.stack(alphas))
    if m > 1:
        off = torch.stack(betas[: m - 1])
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    evals, evecs = torch.linalg.eigh(T)
    return LanczosResult(evals, evecs[0] ** 2, m)


@accepts(matvec=Function(), n=Int(ge=1), max_iter=Int(ge=1), tol=Real(ge=0), generator=Generator(),
         dtype=FloatDType(),
         example=lambda ctx: {"matvec": _example_operator, "n": 4, "max_iter": 5, "dtype": ctx.dtype})
def top_eigenvalue(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, *, max_iter: int = 100,
                   tol: float = 1e-6, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float64) -> PowerResult:
    """Eigenvalue of largest magnitude by power iteration (Rayleigh quotient), warning on non-convergence.

    Iterates :math:`v_{k+1} = Av_k / \\|Av_k\\|` from a random unit :math:`v_0` and returns
    :math:`\\lambda = v_k^\\top A v_k`; stops when :math:`\\lambda` changes by less than ``tol`` times its magnitude.
    A zero product (:math:`Av = 0`) returns the eigenvalue 0.

    Args:
        matvec: :math:`v \\mapsto Av` for :math:`A` symmetric, on vectors of shape ``(n,)``; it must return a
            finite real tensor of shape ``(n,)`` (ValueError otherwise).
        n: dimension ``>= 1``.
        max_iter: iterations ``>= 1``.
        tol: relative tolerance ``>= 0`` on the change of the Rayleigh quotient.
        generator: for the start vector.
        dtype: ``torch.float32`` or ``torch.float64``, of the iterates.

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([5.0, 1.0, -2.0], dtype=torch.float64))
        >>> res = top_eigenvalue(lambda v: A @ v, 3, max_iter=200, tol=1e-12,
        ...                      generator=torch.Generator().manual_seed(0))
        >>> round(res.eigenvalue, 8), res.converged
        (5.0, True)
    """
    _check_precision(dtype)
    v = torch.randn(n, generator=generator, dtype=dtype)
    v = v / torch.linalg.vector_norm(v)
    lam, converged, it = 0.0, False, 0
    for it in range(1, max_iter + 1):
        w = _apply(matvec, v, dtype, it)
        new = float(torch.dot(v, w))
        norm = torch.linalg.vector_norm(w)
        if float(norm) == 0.0:
            return PowerResult(0.0, v, it, True)
        v = w / norm
        if it > 1 and abs(new - lam) <= tol * max(abs(new), 1e-300):
            lam, converged = new, True
            break
        lam = new
    if not converged:
        warnings.warn(f"top_eigenvalue did not reach tol={tol} in max_iter={max_iter}; raise max_iter (or use "
                      "lanczos when the top eigenvalues are close)", RuntimeWarning, stacklevel=3)
    return PowerResult(lam, v, it, converged)


def _example_classifier(ctx):
    g = ctx.generator
    model = torch.nn.Linear(2, 3).to(ctx.dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=ctx.dtype))
    return {"model": model, "loss_fn": torch.nn.functional.cross_entropy,
            "x": torch.randn(6, 2, generator=g, dtype=ctx.dtype), "y": torch.tensor([0, 1, 2, 0, 1, 2]),
            "classes": [0, 2], "num_iters": 3}


@accepts(model=Module(bind_dtype=True), loss_fn=Function(),
         x=Tensor(ndims=tuple(range(1, 9)), dtype="any", degenerate=("coincident",)),
         y=Tensor("N", dtype="int", low=0), classes=Ints(ge=0, optional=True), num_iters=Int(ge=1),
         generator=Generator(), example=_example_classifier)
def class_wise_hessian_extremes(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                                x: torch.Tensor, y: torch.Tensor, classes: Sequence[int] | None = None,
                                num_iters: int = 30, *, generator: torch.Generator | None = None
                                ) -> dict[int, tuple[float, float]]:
    """``{class: (lambda_max, lambda_min)}`` of the Hessian of each class's mean loss w.r.t. the model parameters.

    Args:
        model: maps ``x`` to logits; its floating parameters share one dtype, that of a floating ``x``.
        loss_fn: ``loss_fn(logits, targets)`` returns the mean loss (e.g. ``torch.nn.functional.cross_entropy``).
        x: inputs, shape ``(N, ...)``, finite (integer inputs, token ids, are passed as they are).
        y: integer labels ``>= 0``, shape ``(N,)``.
        classes: which classes (default: every label present); each must occur in ``y``.
        num_iters: Lanczos steps per class.
        generator: for the Lanczos start vectors.

    A clearly negative :math:`\\lambda_{\\min}` with a small :math:`\\lambda_{\\max}` is the saddle signature the
    paper reports for minority classes under re-weighting.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> model = torch.nn.Linear(2, 2).double()
        >>> x, y = torch.randn(8, 2, dtype=torch.float64), torch.tensor([0, 1] * 4)
        >>> ext = class_wise_hessian_extremes(model, F.cross_entropy, x, y, num_iters=6)
        >>> sorted(ext), all(hi >= lo for hi, lo in ext.values())
        ([0, 1], True)
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"y must have shape ({x.shape[0]},) (one label per row of x), got {tuple(y.shape)}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model must have parameters that require grad, got none")
    if x.is_floating_point() and x.dtype != params[0].dtype:
        raise TypeError(f"x must have the dtype of the model's parameters ({params[0].dtype}), got {x.dtype}")
    classes = sorted(int(c) for c in torch.unique(y)) if classes is None else [int(c) for c in classes]
    out = {}
    for c in classes:
        mask = y == c
        if not bool(mask.any()):
            raise ValueError(f"classes must be present in y, got class {c} with no samples")
        xc, yc = x[mask], y[mask]
        matvec, n = hvp_operator(lambda: loss_fn(model(xc), yc), params)
        res = lanczos(matvec, n, num_iters, generator=generator)
        out[c] = (float(res.eigenvalues[-1]), float(res.eigenvalues[0]))
    return out
