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

from paperzoo.core.accepts import (Choice, FloatDType, Function, Generator, Int, Ints, Module, OneOf, Real, Tensor,
                                   Tensors, accepts)

__all__ = ["LanczosResult", "PowerResult", "hvp_operator", "lanczos", "top_eigenvalue",
           "class_wise_hessian_extremes", "hessian_operator", "gauss_newton_operator", "top_eigenpairs",
           "TopEigenpairs", "hutchinson_trace", "TraceEstimate", "spectral_density", "SpectralDensity",
           "gradient_eigenspace_overlap", "sharpness_threshold", "stability_ratio"]


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
    q = torch.randn(n, generator=generator, dtype=dtype)
    if device is not None:
        q = q.to(device)
    alphas, betas, _ = _lanczos_steps(matvec, q, min(num_iters, n), dtype, breakdown_tol)
    evals, evecs = torch.linalg.eigh(_tridiagonal(alphas, betas))
    return LanczosResult(evals, evecs[0] ** 2, len(alphas))


def _lanczos_steps(matvec, q: torch.Tensor, num_iters: int, dtype: torch.dtype, breakdown_tol: float,
                   restart: torch.Generator | None | bool = False):
    """The unchecked Lanczos kernel: ``(alphas, betas, Q)`` from the start ``q`` (normalised here).

    ``Q`` is the ``(m, n)`` orthonormal Lanczos basis (rows). On breakdown (an invariant subspace) it stops, unless
    ``restart`` is a generator or ``None`` (the global one): then it continues from a fresh random vector orthogonal
    to ``Q`` with a zero off-diagonal entry, so that later eigenvalues outside the first Krylov space are reached.
    """
    q = q / torch.linalg.vector_norm(q)
    Q = [q]
    alphas, betas = [], []
    n = q.numel()
    for j in range(num_iters):
        w = _apply(matvec, Q[j], dtype, j)
        alphas.append(torch.dot(w, Q[j]))
        basis = torch.stack(Q)
        # Two passes of classical Gram-Schmidt against every previous vector (numerically orthogonal basis).
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        beta = torch.linalg.vector_norm(w)
        if j == num_iters - 1:
            break
        if float(beta) <= breakdown_tol:
            if restart is False or len(Q) >= n:
                break
            w = torch.randn(n, generator=restart, dtype=dtype).to(q.device)
            for _ in range(2):
                w = w - basis.T @ (basis @ w)
            norm = torch.linalg.vector_norm(w)
            if float(norm) <= breakdown_tol:
                break
            betas.append(torch.zeros((), dtype=dtype, device=q.device))
            Q.append(w / norm)
            continue
        betas.append(beta)
        Q.append(w / beta)
    return alphas, betas[: len(alphas) - 1], torch.stack(Q[: len(alphas)])


def _tridiagonal(alphas, betas) -> torch.Tensor:
    T = torch.diag(torch.stack(alphas))
    if betas:
        off = torch.stack(betas)
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    return T


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


# -- the curvature toolkit: model-level operators, eigenpairs, trace, density, Gauss-Newton, overlap, stability --


class TopEigenpairs(NamedTuple):
    """Result of :func:`top_eigenpairs`.

    Attributes:
        eigenvalues: the ``k`` selected Ritz values, shape ``(k,)``, in the order of ``which`` (largest first for
            ``"largest"`` and ``"magnitude"``, smallest first for ``"smallest"``).
        eigenvectors: the matching Ritz vectors as rows, shape ``(k, n)``, orthonormal.
        residuals: the Lanczos residual norms :math:`\\|Ay_i - \\theta_i y_i\\|` of each pair, shape ``(k,)``.
        n_iter: Lanczos steps (operator products) taken.
        converged: whether every residual met ``tol``.
    """

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    residuals: torch.Tensor
    n_iter: int
    converged: bool


class TraceEstimate(NamedTuple):
    """Result of :func:`hutchinson_trace`: the estimate, its standard error, and the per-probe values.

    Attributes:
        trace: the mean of the probe values :math:`z_i^\\top A z_i`.
        std_error: their sample standard deviation over :math:`\\sqrt{m}` (``ddof=1``).
        samples: the values :math:`z_i^\\top A z_i`, shape ``(num_samples,)``.
        num_samples: :math:`m`.
    """

    trace: float
    std_error: float
    samples: torch.Tensor
    num_samples: int


class SpectralDensity(NamedTuple):
    """Result of :func:`spectral_density`.

    Attributes:
        grid: evaluation points ``t``, shape ``(g,)``.
        density: the broadened density at ``grid``, shape ``(g,)`` (integrates to one over the real line).
        nodes: Ritz values of each probe, shape ``(num_probes, m)`` (quadrature nodes).
        weights: their quadrature weights, shape ``(num_probes, m)``; each row sums to one.
        sigma: the Gaussian broadening width used.
        n_iter: Lanczos steps per probe (``m``).
    """

    grid: torch.Tensor
    density: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float
    n_iter: int


def _example_mlp(ctx):
    """A tiny tanh MLP with a cross-entropy loss on six points: the model-level operators' example call."""
    g = ctx.generator
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).to(ctx.dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=ctx.dtype))
    return {"model": model, "loss_fn": torch.nn.functional.cross_entropy,
            "inputs": torch.randn(6, 2, generator=g, dtype=ctx.dtype), "targets": torch.tensor([0, 1, 0, 1, 1, 0])}


def _functional_model(model, loss_fn, inputs, targets):
    """``(theta0, sizes, shapes, out_fn, loss_of_out)`` for the trainable parameters of ``model``; validates."""
    if targets.dim() >= 1 and targets.shape[0] != inputs.shape[0]:
        raise ValueError(f"targets must have {inputs.shape[0]} rows (one per row of inputs), got shape "
                         f"{tuple(targets.shape)}")
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model must have parameters that require grad, got none")
    dtype = named[0][1].dtype
    if inputs.is_floating_point() and inputs.dtype != dtype:
        raise TypeError(f"inputs must have the dtype of the model's parameters ({dtype}), got {inputs.dtype}")
    names = [name for name, _ in named]
    theta0 = [p.detach() for _, p in named]
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    frozen.update(dict(model.named_buffers()))

    def out_fn(theta):
        return torch.func.functional_call(model, {**frozen, **dict(zip(names, theta))}, (inputs,))

    def loss_of_out(out):
        return loss_fn(out, targets)

    with torch.no_grad():
        loss = loss_of_out(out_fn(theta0))
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor, got {got}")
    if not bool(torch.isfinite(loss).all()):
        raise ValueError(f"loss_fn must return a finite loss, got {float(loss)!r}")
    return theta0, [p.numel() for p in theta0], [p.shape for p in theta0], dtype, out_fn, loss_of_out


def _batched_operator(single, n: int, dtype: torch.dtype):
    """A matvec on ``(n,)`` or ``(b, n)`` (rows mapped with ``torch.func.vmap``) from the kernel ``single``."""
    batched = torch.func.vmap(single)

    def matvec(v: torch.Tensor) -> torch.Tensor:
        if not isinstance(v, torch.Tensor) or v.dim() not in (1, 2) or v.shape[-1] != n:
            got = f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"v must be a tensor of shape ({n},) or (b, {n}) (the parameter count), got {got}")
        w = v.to(dtype)
        return (single(w) if v.dim() == 1 else batched(w)).to(v.dtype)

    return matvec


@accepts(model=Module(bind_dtype=True), loss_fn=Function(),
         inputs=Tensor(ndims=tuple(range(1, 9)), dtype="any"), targets=Tensor(ndims=tuple(range(0, 9)), dtype="any"),
         mode=Choice("auto", "forward", "reverse"), example=_example_mlp)
def hessian_operator(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     inputs: torch.Tensor, targets: torch.Tensor, *, mode: str = "auto"
                     ) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """``(matvec, n)``: the Hessian-vector product :math:`v \\mapsto \\nabla^2_\\theta L\\, v` of a model's loss,
    by ``torch.func`` (a ``vjp`` or a ``jvp`` of ``torch.func.grad``; ``mode``).

    References: Fast Exact Multiplication by the Hessian (Pearlmutter), 1994.

    :math:`L(\\theta) = \\texttt{loss\\_fn}(f_\\theta(\\texttt{inputs}), \\texttt{targets})` with :math:`\\theta` the
    parameters of ``model`` that require grad, flattened in ``named_parameters`` order (as :func:`hvp_operator`
    flattens ``list(model.parameters())``); frozen parameters and buffers are held fixed. A block ``(b, n)``
    of vectors is mapped with ``torch.func.vmap`` in one call. The model is run as it is (put
    dropout and batch-norm models in ``eval()`` mode first).

    Args:
        model: maps ``inputs`` to outputs; its floating parameters share the dtype of a floating ``inputs``.
        loss_fn: ``loss_fn(outputs, targets)`` -> finite scalar (the mean loss over the batch).
        inputs: shape ``(N, ...)``; integer inputs (token ids) are passed as they are.
        targets: shape ``(N, ...)`` (or a scalar), any dtype the loss takes.
        mode: ``"forward"`` (forward-over-reverse: ``torch.func.jvp`` of the gradient, no graph kept between
            calls), ``"reverse"`` (reverse-over-reverse: ``torch.func.vjp`` of the gradient, its graph built at the
            first product and reused, as :func:`hvp_operator` does), or
            ``"auto"`` (reverse: on CPU one reverse product through the kept graph costs about a third of a
            forward-over-reverse one, measured on the benchmark MLPs, and every loss has one; forward mode fails
            on losses without a forward-mode derivative of their backward, as ``F.mse_loss`` in torch 2.x).

    Returns:
        ``matvec`` (``v`` of shape ``(n,)`` or ``(b, n)`` to :math:`Hv` of the same shape and dtype) and ``n``.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)
        >>> matvec, n = hessian_operator(model, torch.nn.functional.mse_loss, x, y)
        >>> matvec(torch.eye(2, dtype=torch.float64)).tolist(), n   # H = X^T X / N * 2 / 1
        ([[1.0, 0.0], [0.0, 4.0]], 2)
    """
    theta0, sizes, shapes, dtype, out_fn, loss_of_out = _functional_model(model, loss_fn, inputs, targets)
    n = sum(sizes)

    def flat_loss(theta):
        return loss_of_out(out_fn(theta)).reshape(())

    gradient = torch.func.grad(flat_loss)
    state = {"mode": mode, "pullback": None}

    def reverse(tangents):
        if state["pullback"] is None:
            _, state["pullback"] = torch.func.vjp(gradient, theta0)
        (hv,) = state["pullback"](tangents)
        return hv

    def single(v):
        tangents = [c.view(s) for c, s in zip(torch.split(v, sizes), shapes)]
        if state["mode"] == "forward":
            _, hv = torch.func.jvp(gradient, (theta0,), (tangents,))
        else:
            hv = reverse(tangents)
        return torch.cat([h.reshape(-1) for h in hv])

    return _batched_operator(single, n, dtype), n


@accepts(model=Module(bind_dtype=True), loss_fn=Function(),
         inputs=Tensor(ndims=tuple(range(1, 9)), dtype="any"), targets=Tensor(ndims=tuple(range(0, 9)), dtype="any"),
         example=_example_mlp)
def gauss_newton_operator(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                          inputs: torch.Tensor, targets: torch.Tensor
                          ) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """``(matvec, n)``: the generalised Gauss-Newton product :math:`v \\mapsto J^\\top H_{\\mathrm{out}} J v`.

    References: Fast Curvature Matrix-Vector Products for Second-Order Gradient Descent (Schraudolph), 2002.

    :math:`J = \\partial f_\\theta(\\texttt{inputs}) / \\partial \\theta` is the Jacobian of all model outputs
    (every row of the batch) and :math:`H_{\\mathrm{out}} = \\partial^2 \\texttt{loss\\_fn}(z, \\texttt{targets}) /
    \\partial z^2` the Hessian of the loss in the outputs :math:`z`: the Hessian of :func:`hessian_operator` without
    the term :math:`\\sum_j (\\partial L / \\partial z_j) \\nabla^2_\\theta z_j`, so the two agree for a model linear
    in :math:`\\theta` and :math:`G` is positive semi-definite for a convex loss. One product is a ``jvp`` of the
    model (:math:`Jv`), a product with the output-space Hessian (reverse over reverse), and a ``vjp`` through the
    model linearised once at construction; ``(b, n)`` blocks are mapped with ``vmap``. Parameters, flattening and
    shapes as in :func:`hessian_operator`.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64), torch.zeros(2, 1, dtype=torch.float64)
        >>> matvec, n = gauss_newton_operator(model, torch.nn.functional.mse_loss, x, y)
        >>> matvec(torch.eye(2, dtype=torch.float64)).tolist()   # linear model: G = H
        [[1.0, 0.0], [0.0, 4.0]]
    """
    theta0, sizes, shapes, dtype, out_fn, loss_of_out = _functional_model(model, loss_fn, inputs, targets)
    n = sum(sizes)
    out0, pullback = torch.func.vjp(out_fn, theta0)
    out0 = out0.detach()
    if not out0.is_floating_point():
        raise TypeError(f"model must return floating outputs (the loss is differentiated in them), got {out0.dtype}")
    # H_out is symmetric, so its product is the vjp of the output-space gradient (reverse mode: every loss has one).
    _, loss_pullback = torch.func.vjp(torch.func.grad(lambda z: loss_of_out(z).reshape(())), out0)

    def single(v):
        tangents = [c.view(s) for c, s in zip(torch.split(v, sizes), shapes)]
        _, jv = torch.func.jvp(out_fn, (theta0,), (tangents,))
        (hjv,) = loss_pullback(jv)
        (g,) = pullback(hjv)
        return torch.cat([t.reshape(-1) for t in g])

    return _batched_operator(single, n, dtype), n


_WHICH = ("largest", "smallest", "magnitude")


def _select(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    key = {"largest": -theta, "smallest": theta, "magnitude": -theta.abs()}[which]
    return torch.argsort(key, stable=True)[:k]


@accepts(matvec=Function(), n=Int(ge=1), k=Int(ge=1), which=Choice(*_WHICH), max_iter=Int(ge=1, optional=True),
         tol=Real(ge=0), generator=Generator(), dtype=FloatDType(),
         example=lambda ctx: {"matvec": _example_operator, "n": 5, "k": 2, "dtype": ctx.dtype})
def top_eigenpairs(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, k: int = 1, *, which: str = "largest",
                   max_iter: int | None = None, tol: float = 1e-8, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> TopEigenpairs:
    """The ``k`` extreme eigenvalues and eigenvectors of a symmetric operator, by Lanczos with full
    reorthogonalisation and Ritz vectors.

    References: The Lanczos algorithm: An iteration method for the solution of the eigenvalue problem of linear
    differential and integral operators (Lanczos), 1950; PyHessian: Neural Networks Through the Lens of the Hessian
    (Yao et al.), 2020 (the top-k Hessian eigenvalues it computes by deflated power iteration).

    After each step :math:`j` the tridiagonal :math:`T_j = S \\Theta S^\\top` gives Ritz pairs
    :math:`(\\theta_i, y_i = Q_j^\\top s_i)` with residual :math:`\\|Ay_i - \\theta_i y_i\\| = \\beta_j |s_{ji}|`;
    it stops when the ``k`` selected pairs all have residual :math:`\\le \\texttt{tol} \\cdot \\max_i |\\theta_i|`
    (or :math:`n` steps: then exact up to rounding), and warns if ``max_iter`` steps do not get there. On an
    invariant subspace (breakdown) it restarts from a fresh random vector orthogonal to the basis and stops only
    when the restart leaves the selected values unchanged, so a repeated eigenvalue is found with its multiplicity.

    Args:
        matvec: :math:`v \\mapsto Av`, :math:`A` symmetric, on ``(n,)`` vectors (finite real output, same shape).
        n: dimension ``>= 1``.
        k: how many eigenpairs, ``1 <= k <= n``.
        which: ``"largest"`` (algebraic, the default: the sharpness of a Hessian), ``"smallest"`` or
            ``"magnitude"`` (as power iteration finds).
        max_iter: Lanczos steps at most (default ``min(n, max(20 k, 100))``), clipped to ``n``.
        tol: relative residual tolerance ``>= 0``.
        generator: for the start vector (and restarts).
        dtype, device: of the Lanczos vectors (``torch.float32`` or ``torch.float64``).

    Returns:
        :class:`TopEigenpairs`; ``eigenvectors`` has shape ``(k, n)`` (rows).

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([3.0, -5.0, 1.0, 2.0], dtype=torch.float64))
        >>> res = top_eigenpairs(lambda v: A @ v, 4, 2, generator=torch.Generator().manual_seed(0))
        >>> [round(float(x), 8) for x in res.eigenvalues], res.eigenvectors.shape, res.converged
        ([3.0, 2.0], torch.Size([2, 4]), True)
    """
    _check_precision(dtype)
    device = _device(device)
    if k > n:
        raise ValueError(f"k must be <= n ({n}), got {k}")
    steps = min(n, max(20 * k, 100)) if max_iter is None else min(max_iter, n)
    q = torch.randn(n, generator=generator, dtype=dtype)
    q = q.to(device) if device is not None else q
    return _top_eigenpairs(matvec, q, k, which, steps, tol, generator, dtype)


def _top_eigenpairs(matvec, q, k, which, steps, tol, generator, dtype) -> TopEigenpairs:
    n = q.numel()
    q = q / torch.linalg.vector_norm(q)
    Q, alphas, betas = [q], [], []
    found, last_break = False, None
    for j in range(steps):
        w = _apply(matvec, Q[j], dtype, j)
        alphas.append(torch.dot(w, Q[j]))
        basis = torch.stack(Q)
        for _ in range(2):  # full reorthogonalisation (two classical Gram-Schmidt passes)
            w = w - basis.T @ (basis @ w)
        beta = torch.linalg.vector_norm(w)
        breakdown = float(beta) <= 1e-10 * max(float(torch.stack(alphas).abs().max()), 1.0)
        if j + 1 >= k:
            theta, S = torch.linalg.eigh(_tridiagonal(alphas, betas))
            idx = _select(theta, k, which)
            res = float(beta) * S[-1, idx].abs()
            scale = max(float(theta.abs().max()), torch.finfo(dtype).tiny)
            done = bool((res <= tol * scale).all())
            if breakdown:
                # An invariant subspace converges every Ritz pair but can miss a repeated eigenvalue: accept only
                # when a restart from a fresh direction leaves the selected values unchanged.
                done = done and last_break is not None and torch.allclose(
                    theta[idx], last_break, rtol=0, atol=max(tol, 1e-10) * scale)
                last_break = theta[idx]
            if done or j + 1 == n:
                found = True
                break
        if j == steps - 1:
            break
        if breakdown:
            # Continue from a fresh direction orthogonal to the basis (a zero off-diagonal entry in T).
            w = torch.randn(n, generator=generator, dtype=dtype).to(q.device)
            for _ in range(2):
                w = w - basis.T @ (basis @ w)
            beta = torch.zeros((), dtype=dtype, device=q.device)
            w = w / torch.linalg.vector_norm(w)
            betas.append(beta)
            Q.append(w)
            continue
        betas.append(beta)
        Q.append(w / beta)
    m = len(alphas)
    if m < k:  # fewer steps than pairs asked (max_iter < k): the Ritz pairs of what was built
        theta, S = torch.linalg.eigh(_tridiagonal(alphas, betas))
        idx = _select(theta, m, which)
        res = float(beta) * S[-1, idx].abs()
    vectors = S[:, idx].T @ torch.stack(Q[:m])
    if not found:
        warnings.warn(f"top_eigenpairs did not reach tol={tol} in max_iter={steps} Lanczos steps; raise max_iter "
                      "(or loosen tol)", RuntimeWarning, stacklevel=3)
    return TopEigenpairs(theta[idx], vectors, res, m, found)


@accepts(matvec=Function(), n=Int(ge=1), num_samples=Int(ge=2), batch_size=Int(ge=1), generator=Generator(),
         dtype=FloatDType(),
         example=lambda ctx: {"matvec": _example_operator, "n": 4, "num_samples": 6, "dtype": ctx.dtype})
def hutchinson_trace(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, num_samples: int = 100, *,
                     batch_size: int = 1, generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> TraceEstimate:
    """Hutchinson's estimate of :math:`\\operatorname{tr}(A)` from Rademacher probes, with its standard error.

    References: A Stochastic Estimator of the Trace of the Influence Matrix for Laplacian Smoothing Splines
    (Hutchinson), 1989.

    :math:`\\widehat{\\operatorname{tr}} = \\frac1m \\sum_{i=1}^m z_i^\\top A z_i` with :math:`z_i` i.i.d. uniform on
    :math:`\\{-1, 1\\}^n` (:math:`m` = ``num_samples``); unbiased, with variance
    :math:`2(\\|A\\|_F^2 - \\sum_j A_{jj}^2)/m`, estimated by the sample standard error (``ddof=1``).

    Args:
        matvec: :math:`v \\mapsto Av` on ``(n,)`` vectors; with ``batch_size > 1`` it is called on ``(b, n)`` blocks
            of probes (rows) and must return :math:`(Az_i)_i` as rows (the operators of :func:`hessian_operator`
            and :func:`gauss_newton_operator` do, through ``vmap``).
        n: dimension ``>= 1``.
        num_samples: probes :math:`m \\ge 2`.
        batch_size: probes per call of ``matvec``.
        generator: for the probes.
        dtype, device: of the probes.

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
        >>> est = hutchinson_trace(lambda v: A @ v, 3, 10, generator=torch.Generator().manual_seed(0))
        >>> est.trace, est.std_error   # a diagonal A: every probe gives the trace exactly
        (6.0, 0.0)
    """
    _check_precision(dtype)
    device = _device(device)
    z = torch.randint(0, 2, (num_samples, n), generator=generator).to(dtype) * 2 - 1
    z = z.to(device) if device is not None else z
    values = []
    for start in range(0, num_samples, batch_size):
        block = z[start:start + batch_size]
        if batch_size == 1:
            values.append(torch.dot(block[0], _apply(matvec, block[0], dtype, start)).reshape(1))
        else:
            values.append((block * _apply(matvec, block, dtype, start)).sum(-1))
    samples = torch.cat(values)
    se = float(samples.std(correction=1)) / num_samples ** 0.5
    return TraceEstimate(float(samples.mean()), se, samples, num_samples)


@accepts(matvec=Function(), n=Int(ge=1), num_probes=Int(ge=1), num_iters=Int(ge=1),
         grid=OneOf(Tensor("g"), Int(ge=2), optional=True), sigma=Real(gt=0, optional=True), generator=Generator(),
         dtype=FloatDType(),
         example=lambda ctx: {"matvec": _example_operator, "n": 5, "num_probes": 2, "num_iters": 4,
                              "dtype": ctx.dtype})
def spectral_density(matvec: Callable[[torch.Tensor], torch.Tensor], n: int, num_probes: int = 1,
                     num_iters: int = 30, grid: torch.Tensor | int | None = None, sigma: float | None = None, *,
                     generator: torch.Generator | None = None, dtype: torch.dtype = torch.float64,
                     device: torch.device | str | None = None) -> SpectralDensity:
    """The eigenvalue density of a symmetric operator by stochastic Lanczos quadrature, Gaussian-broadened.

    References: Fast Estimation of tr(f(A)) via Stochastic Lanczos Quadrature (Ubaru, Chen, Saad), 2017;
    An Investigation into Neural Net Optimization via Hessian Eigenvalue Density (Ghorbani, Krishnan, Xiao), 2019.

    For each of ``num_probes`` random unit start vectors :math:`q_\\ell`, :func:`lanczos` (``num_iters`` steps) gives
    nodes :math:`\\theta_{\\ell i}` and weights :math:`w_{\\ell i} = s_{\\ell,1i}^2`, a quadrature of the spectral
    measure :math:`q_\\ell^\\top \\delta(t - A) q_\\ell`, whose expectation is
    :math:`\\frac1n \\sum_j \\delta(t - \\lambda_j)`. The estimate is

    .. math:: \\rho(t) = \\frac{1}{L} \\sum_\\ell \\sum_i w_{\\ell i}\\,
              \\frac{1}{\\sigma\\sqrt{2\\pi}} e^{-(t - \\theta_{\\ell i})^2 / (2\\sigma^2)},

    a probability density with mean :math:`\\frac1L \\sum_\\ell q_\\ell^\\top A q_\\ell` (an unbiased estimate of
    :math:`\\operatorname{tr}(A)/n`).

    Args:
        matvec: :math:`v \\mapsto Av` on ``(n,)`` vectors.
        n: dimension ``>= 1``.
        num_probes: :math:`L \\ge 1`.
        num_iters: Lanczos steps per probe (clipped to ``n``).
        grid: points ``t`` of shape ``(g,)``, or a number of points ``>= 2`` (default 1000) spread evenly over
            :math:`[\\theta_{\\min} - 5\\sigma, \\theta_{\\max} + 5\\sigma]`.
        sigma: broadening width :math:`\\sigma > 0` (default: 1% of the node range, or 1e-3 when that is zero).
        generator: for the start vectors.
        dtype, device: of the Lanczos vectors.

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64))
        >>> sd = spectral_density(lambda v: A @ v, 4, 8, 4, 2001, 0.05, generator=torch.Generator().manual_seed(0))
        >>> round(float(torch.trapezoid(sd.density, sd.grid)), 6)
        1.0
    """
    _check_precision(dtype)
    device = _device(device)
    steps = min(num_iters, n)
    nodes, weights = [], []
    for p in range(num_probes):
        q = torch.randn(n, generator=generator, dtype=dtype)
        q = q.to(device) if device is not None else q
        alphas, betas, _ = _lanczos_steps(matvec, q, steps, dtype, 1e-10)
        theta, S = torch.linalg.eigh(_tridiagonal(alphas, betas))
        # A probe that breaks down early (an invariant subspace) pads with zero-weight copies of its last node.
        pad = steps - theta.numel()
        nodes.append(torch.cat([theta, theta[-1:].expand(pad)]))
        weights.append(torch.cat([S[0] ** 2, theta.new_zeros(pad)]))
    nodes, weights = torch.stack(nodes), torch.stack(weights)
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        sigma = 0.01 * (hi - lo) if hi > lo else 1e-3 * max(abs(hi), 1.0)
    if grid is None or isinstance(grid, int):
        grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, 1000 if grid is None else grid, dtype=dtype,
                              device=nodes.device)
    elif grid.dtype != dtype or grid.device != nodes.device:
        raise TypeError(f"grid must have dtype {dtype} on {nodes.device} (that of the Lanczos vectors), got "
                        f"{grid.dtype} on {grid.device}")
    z = (grid[:, None, None] - nodes[None]) / sigma
    density = (weights[None] * torch.exp(-0.5 * z ** 2)).sum((1, 2)) / (num_probes * sigma * (2 * torch.pi) ** 0.5)
    return SpectralDensity(grid, density, nodes, weights, float(sigma), steps)


def _example_overlap(ctx):
    g = ctx.generator
    V = torch.linalg.qr(torch.randn(5, 2, generator=g, dtype=ctx.dtype)).Q.T.contiguous()
    return {"gradient": torch.randn(5, generator=g, dtype=ctx.dtype), "eigenvectors": V}


@accepts(gradient=Tensor(..., "n"), eigenvectors=Tensor("k", "n"), example=_example_overlap)
def gradient_eigenspace_overlap(gradient: torch.Tensor, eigenvectors: torch.Tensor) -> torch.Tensor:
    """The fraction of the gradient's squared norm in the top Hessian eigenspace, :math:`\\|P_k g\\|^2 / \\|g\\|^2`.

    References: Gradient Descent Happens in a Tiny Subspace (Gur-Ari, Roberts, Dyer), 2018.

    :math:`P_k = V^\\top V` projects onto the span of the rows of :math:`V` = ``eigenvectors`` (orthonormal, e.g.
    :attr:`TopEigenpairs.eigenvectors`), so the overlap is :math:`\\|Vg\\|^2/\\|g\\|^2 \\in [0, 1]`; the paper finds it
    near one for the top-:math:`k` eigenspace with :math:`k` the number of classes, soon after training starts.

    Args:
        gradient: :math:`g`, shape ``(..., n)`` (e.g. ``(T, n)`` for a trajectory of gradients); none may be zero.
        eigenvectors: :math:`V`, shape ``(k, n)`` with orthonormal rows (to ``1e-4`` in float32, ``1e-8`` in float64).

    Returns:
        The overlap, shape ``(...)`` (``()`` for one gradient).

    Example:
        >>> import torch
        >>> V = torch.eye(3, dtype=torch.float64)[:1]
        >>> float(gradient_eigenspace_overlap(torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64), V))
        0.36
    """
    k = eigenvectors.shape[0]
    if k > eigenvectors.shape[1]:
        raise ValueError(f"eigenvectors must have at most n = {eigenvectors.shape[1]} rows (an orthonormal set), got "
                         f"{k}")
    gram = eigenvectors @ eigenvectors.T
    dev = float((gram - torch.eye(k, dtype=gram.dtype, device=gram.device)).abs().max())
    if dev > (1e-8 if eigenvectors.dtype == torch.float64 else 1e-4):
        raise ValueError(f"eigenvectors must have orthonormal rows (V V^T = I), got a deviation of {dev:.3g}")
    sq = gradient.square().sum(-1)
    if bool((sq == 0).any()):
        raise ValueError("gradient must be nonzero (the overlap is a fraction of its norm), got a zero vector")
    return (gradient @ eigenvectors.T).square().sum(-1) / sq


@accepts(lr=Real(gt=0), example=lambda ctx: {"lr": 0.1})
def sharpness_threshold(lr: float) -> float:
    """The stability threshold :math:`2/\\eta` of gradient descent on the sharpness :math:`\\lambda_{\\max}`.

    References: Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability (Cohen et al.), 2021.

    On a quadratic with curvature :math:`\\lambda`, gradient descent with step :math:`\\eta` (``lr``) multiplies the
    error along that eigenvector by :math:`1 - \\eta\\lambda`, which diverges exactly when :math:`\\lambda > 2/\\eta`.

    Example:
        >>> sharpness_threshold(0.01)
        200.0
    """
    return 2.0 / lr


@accepts(top_eigenvalue=Real(), lr=Real(gt=0), example=lambda ctx: {"top_eigenvalue": 150.0, "lr": 0.01})
def stability_ratio(top_eigenvalue: float, lr: float) -> float:
    """The sharpness against the edge of stability, :math:`\\eta\\lambda_{\\max}/2`: above 1 gradient descent is
    unstable along the top eigenvector.

    References: Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability (Cohen et al.), 2021.

    ``top_eigenvalue`` is :math:`\\lambda_{\\max}` (e.g. ``top_eigenpairs(...).eigenvalues[0]``), ``lr`` the step
    :math:`\\eta`; the ratio is :math:`\\lambda_{\\max}` / :func:`sharpness_threshold` ``(lr)``.

    Example:
        >>> stability_ratio(150.0, 0.01)
        0.75
    """
    return lr * top_eigenvalue / 2.0
