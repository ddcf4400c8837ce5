"""Tracking the top-Hessian eigenspace and the gradient's share in it over training.

References: Gradient Descent Happens in a Tiny Subspace (Gur-Ari, Roberts, Dyer), 2018.

At a checkpoint :math:`t` with parameters :math:`\\theta_t \\in \\mathbb R^D` let :math:`V_t \\in \\mathbb R^{k \\times D}`
hold the top-:math:`k` eigenvectors of the loss Hessian :math:`H(\\theta_t)` as orthonormal rows and
:math:`P_t = V_t^\\top V_t` the projector onto their span. The paper's two measurements are

.. math::
    f_t = \\frac{\\|P_t g_t\\|^2}{\\|g_t\\|^2} = \\frac{\\|V_t g_t\\|^2}{\\|g_t\\|^2}, \\qquad
    o(t, s) = \\frac{\\operatorname{tr}(P_t P_s)}{k} = \\frac{\\|V_t V_s^\\top\\|_F^2}{k},

the gradient overlap (:math:`g_t` the gradient of the same loss) and the subspace overlap between two checkpoints.
Both lie in :math:`[0, 1]`. For a fixed unit vector and a uniformly random :math:`k`-dimensional subspace, and for two
independent random subspaces, their expectation is :math:`k / D`; the paper finds that, after a short initial phase,
:math:`f_t` is close to one for :math:`k` equal to the number of classes and :math:`o(t, s)` stays high over long
stretches of training.

:class:`SubspaceTracker` (made by :func:`subspace_tracker`) records at every ``every``-th step it is called with:
the top-:math:`k` eigenvalues and eigenvectors (Lanczos with Ritz vectors,
:func:`paperzoo.diagnostics.hessian.top_eigenpairs`, on the Hessian-vector product of
:func:`paperzoo.diagnostics.hessian.hessian_operator`), the full gradient on ``data``, :math:`f_t`, the cumulative
overlaps with the top-:math:`j` eigenspaces for :math:`j = 1, \\dots, k` (so the overlap for any smaller :math:`k` is
read off the same record), the overlap with a fresh uniformly random :math:`k`-dimensional subspace (the chance
level), and in :meth:`SubspaceTracker.result` the matrix :math:`o(t, s)` over all recorded checkpoints, computed at
once. :func:`subspace_overlap` and :func:`random_subspace` are the pieces on their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Function, Generator, Int, Module, Pair, Real, Tensor, accepts
from paperzoo.diagnostics._tracking import CheckpointTracker
from paperzoo.diagnostics.hessian import hessian_operator, top_eigenpairs

__all__ = ["subspace_overlap", "random_subspace", "SubspaceTracker", "subspace_tracker", "SubspaceTrace"]


def _orthonormality_error(V: torch.Tensor) -> float:
    gram = V @ V.transpose(-1, -2)
    eye = torch.eye(V.shape[-2], dtype=V.dtype, device=V.device)
    return float((gram - eye).abs().max()) if V.numel() else 0.0


def _orthonormal_tol(dtype: torch.dtype) -> float:
    return 1e-8 if dtype == torch.float64 else 1e-4


def _example_overlap(ctx):
    g = ctx.generator
    U = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=ctx.dtype)).Q.mT.contiguous()
    V = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=ctx.dtype)).Q.mT.contiguous()
    return {"U": U, "V": V}


@accepts(U=Tensor(..., "k", "n"), V=Tensor(..., "k", "n"),
         example=_example_overlap)
def subspace_overlap(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """The overlap of two ``k``-dimensional subspaces, :math:`\\operatorname{tr}(P_U P_V) / k`.

    References: Gradient Descent Happens in a Tiny Subspace (Gur-Ari, Roberts, Dyer), 2018.

    With orthonormal rows :math:`U, V \\in \\mathbb R^{k \\times n}` and projectors :math:`P_U = U^\\top U`,
    :math:`P_V = V^\\top V`, :math:`\\operatorname{tr}(P_U P_V) = \\|U V^\\top\\|_F^2`: the mean of the squared cosines
    of the principal angles, 1 for the same subspace, 0 for orthogonal ones, :math:`k/n` in expectation for two
    independent uniformly random ones. Leading batch dimensions broadcast.

    Args:
        U, V: shape ``(..., k, n)`` with orthonormal rows (to ``1e-8`` in float64, ``1e-4`` in float32), ``k <= n``.

    Returns:
        The overlap in ``[0, 1]``, shape ``(...)`` (the broadcast batch shape).

    Example:
        >>> import torch
        >>> E = torch.eye(3, dtype=torch.float64)
        >>> float(subspace_overlap(E[:2], E[1:]))   # the spans share one of two directions
        0.5
    """
    k, n = U.shape[-2], U.shape[-1]
    if k > n:
        raise ValueError(f"U must have at most n = {n} rows (an orthonormal set), got {k}")
    for name, W in (("U", U), ("V", V)):
        dev = _orthonormality_error(W)
        if dev > _orthonormal_tol(W.dtype):
            raise ValueError(f"{name} must have orthonormal rows (W W^T = I), got a deviation of {dev:.3g}")
    return _subspace_overlap(U, V)


def _subspace_overlap(U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    return (U @ V.transpose(-1, -2)).square().sum((-1, -2)) / U.shape[-2]


@accepts(n=Int(ge=1), k=Int(ge=1), count=Int(ge=1, optional=True), generator=Generator(),
         example=lambda ctx: {"n": 7, "k": 3})
def random_subspace(n: int, k: int, *, count: int | None = None, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """A uniformly random ``k``-dimensional subspace of :math:`\\mathbb R^n`, as ``k`` orthonormal rows.

    References: Gradient Descent Happens in a Tiny Subspace (Gur-Ari, Roberts, Dyer), 2018 (the chance level
    :math:`k/n` of its overlaps).

    The QR factor of an ``n x k`` standard Gaussian matrix with the signs of ``diag(R)`` fixed positive, which is
    Haar-distributed on the Stiefel manifold; its span is uniform on the Grassmannian.

    Returns:
        Shape ``(k, n)`` (or ``(count, k, n)``: ``count`` independent draws at once), orthonormal rows, in ``dtype``
        (``torch.float32`` or ``torch.float64``).

    Example:
        >>> import torch
        >>> V = random_subspace(5, 2, generator=torch.Generator().manual_seed(0))
        >>> V.shape, torch.allclose(V @ V.T, torch.eye(2, dtype=torch.float64))
        (torch.Size([2, 5]), True)
    """
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if k > n:
        raise ValueError(f"k must be <= n ({n}), got {k}")
    return _random_subspace(n, k, generator, dtype, () if count is None else (count,))


def _random_subspace(n, k, generator, dtype, batch=()) -> torch.Tensor:
    Q, R = torch.linalg.qr(torch.randn(*batch, n, k, generator=generator, dtype=dtype))
    d = torch.diagonal(R, dim1=-2, dim2=-1)
    return (Q * torch.sign(d).where(d != 0, 1.0)[..., None, :]).mT.contiguous()


class SubspaceTrace(NamedTuple):
    """What :class:`SubspaceTracker` recorded, over ``T`` checkpoints (``k`` eigenpairs, ``D`` parameters).

    Attributes:
        steps: the step of each checkpoint, shape ``(T,)`` int64.
        eigenvalues: the top-``k`` Hessian eigenvalues, largest first, shape ``(T, k)``.
        eigenvectors: their eigenvectors as orthonormal rows, shape ``(T, k, D)``.
        gradients: the gradient of the loss on ``data``, shape ``(T, D)``.
        gradient_overlap: :math:`f_t = \\|P_t g_t\\|^2 / \\|g_t\\|^2`, shape ``(T,)``.
        cumulative_overlap: the overlap with the top-``j`` eigenspace for ``j = 1..k`` (column ``j - 1``), shape
            ``(T, k)``; the last column is ``gradient_overlap``.
        random_overlap: the gradient's overlap with a fresh uniformly random ``k``-dimensional subspace at each
            checkpoint (expectation ``k / D``), shape ``(T,)``.
        subspace_overlap: :math:`o(t, s) = \\operatorname{tr}(P_t P_s)/k` for every pair, shape ``(T, T)``.
        losses: the loss on ``data`` at each checkpoint, shape ``(T,)``.
        n_iter: Lanczos steps at each checkpoint, shape ``(T,)`` int64.
        converged: whether Lanczos met its tolerance at each checkpoint, shape ``(T,)`` bool.
    """

    steps: torch.Tensor
    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    gradients: torch.Tensor
    gradient_overlap: torch.Tensor
    cumulative_overlap: torch.Tensor
    random_overlap: torch.Tensor
    subspace_overlap: torch.Tensor
    losses: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor


def _example_tracker(ctx):
    g = ctx.generator
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).to(ctx.dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=ctx.dtype))
    x = torch.randn(8, 3, generator=g, dtype=ctx.dtype)
    return {"model": model, "loss_fn": torch.nn.functional.cross_entropy,
            "data": (x, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])), "k": 3, "every": 1}


_DATA = Pair(Tensor(ndims=tuple(range(0, 9)), dtype="any"), meaning="(inputs, targets)")


class SubspaceTracker(CheckpointTracker):
    """Records the top-``k`` Hessian eigenspace, the gradient's overlap with it, and its drift, during training.

    References: Gradient Descent Happens in a Tiny Subspace (Gur-Ari, Roberts, Dyer), 2018.

    Call it once per training step with the step number (``tracker(step)``, e.g. after ``optimizer.step()``):
    at every step divisible by ``every`` it measures the model as it is then (:meth:`record` measures at once,
    whatever the step). Each measurement builds :func:`~paperzoo.diagnostics.hessian.hessian_operator` at the
    current parameters on ``data`` (its loss :math:`L = \\texttt{loss\\_fn}(f_\\theta(x), y)`), runs
    :func:`~paperzoo.diagnostics.hessian.top_eigenpairs` (``k``, ``which="largest"``) and takes the gradient of
    the same :math:`L`; :meth:`result` returns a :class:`SubspaceTrace` (the formulas are in the module docstring).
    The parameters are those of ``model`` that require grad, flattened in ``named_parameters`` order; the model is
    run as it is (use ``eval()`` for dropout or batch norm).

    Args:
        model: the network being trained (read, never changed).
        loss_fn: ``loss_fn(outputs, targets)`` -> finite scalar, the mean loss over the batch.
        data: ``(inputs, targets)``, the fixed measurement batch (the paper's Hessian batch), shapes ``(N, ...)``.
        k: the subspace dimension (the paper: the number of classes), ``1 <= k <= D``.
        every: measure at steps divisible by ``every`` (``>= 1``).
        max_iter: Lanczos steps at most (default that of ``top_eigenpairs``).
        tol: Lanczos relative residual tolerance (default ``1e-6`` in float64, ``1e-3`` in float32).
        generator: for the Lanczos start vectors and the random control subspaces.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0); model = torch.nn.Linear(3, 2).double()
        >>> x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
        >>> tracker = SubspaceTracker(model, torch.nn.functional.cross_entropy, (x, y), k=2, every=5,
        ...                           generator=torch.Generator().manual_seed(0))
        >>> recorded = [tracker(step) for step in range(11)]
        >>> tr = tracker.result(); tr.steps.tolist(), tr.eigenvectors.shape
        ([0, 5, 10], torch.Size([3, 2, 8]))
        >>> bool((tr.subspace_overlap.diagonal() - 1).abs().max() < 1e-10)
        True
    """

    @accepts(model=Module(bind_dtype=True), loss_fn=Function(), data=_DATA, k=Int(ge=1), every=Int(ge=1),
             max_iter=Int(ge=1, optional=True), tol=Real(gt=0, optional=True), generator=Generator(),
             example=_example_tracker)
    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 data: tuple[torch.Tensor, torch.Tensor], k: int, every: int = 1, *, max_iter: int | None = None,
                 tol: float | None = None, generator: torch.Generator | None = None):
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model must have parameters that require grad, got none")
        self.dtype = named[0][1].dtype
        if self.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"model must have float32 or float64 parameters, got {self.dtype}")
        self.n = sum(p.numel() for _, p in named)
        if k > self.n:
            raise ValueError(f"k must be <= the number of trainable parameters ({self.n}), got {k}")
        inputs, targets = data
        if inputs.dim() == 0:
            raise ValueError("data[0] must have a batch dimension (shape (N, ...)), got a scalar")
        if inputs.is_floating_point() and inputs.dtype != self.dtype:
            raise TypeError(f"data[0] must have the dtype of the model's parameters ({self.dtype}), got "
                            f"{inputs.dtype}")
        self.model, self.loss_fn, self.inputs, self.targets = model, loss_fn, inputs, targets
        self.k, self.every, self.max_iter = k, every, max_iter
        self.tol = tol if tol is not None else (1e-6 if self.dtype == torch.float64 else 1e-3)
        self.generator = generator
        self._records: list[tuple] = []

    def _measure(self, step: int) -> None:
        if self._records and step <= self._records[-1][0]:
            raise ValueError(f"step must increase from one checkpoint to the next (last {self._records[-1][0]}), "
                             f"got {step}")
        matvec, n = hessian_operator(self.model, self.loss_fn, self.inputs, self.targets, mode="reverse")
        pairs = top_eigenpairs(matvec, n, self.k, max_iter=self.max_iter, tol=self.tol, generator=self.generator,
                               dtype=self.dtype, device=self.inputs.device if self.inputs.is_floating_point() else None)
        params = [p for _, p in self.model.named_parameters() if p.requires_grad]
        loss = self.loss_fn(self.model(self.inputs), self.targets)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        g = torch.cat([(torch.zeros_like(p) if d is None else d).reshape(-1) for d, p in zip(grads, params)])
        if not bool(torch.isfinite(g).all()):
            raise ValueError(f"loss_fn must have a finite gradient at the model's parameters, got NaN or inf at "
                             f"step {step}")
        R = _random_subspace(n, self.k, self.generator, self.dtype).to(g.device)
        self._records.append((step, pairs.eigenvalues.detach(), pairs.eigenvectors.detach(), g.detach(),
                              R, float(loss.detach()), pairs.n_iter, pairs.converged))

    def result(self) -> SubspaceTrace:
        """The :class:`SubspaceTrace` of every checkpoint recorded so far (at least one)."""
        if not self._records:
            raise ValueError("tracker has recorded no checkpoint yet: call it with a step divisible by every, or "
                             "call record(step)")
        steps, lam, V, g, R, loss, n_iter, conv = zip(*self._records)
        V, g, R = torch.stack(V), torch.stack(g), torch.stack(R)
        sq = g.square().sum(-1)
        if bool((sq == 0).any()):
            # At an exact stationary point there is no direction to measure; the overlaps are then NaN.
            sq = torch.where(sq == 0, torch.full_like(sq, float("nan")), sq)
        proj = torch.einsum("tkn,tn->tk", V, g).square()
        cumulative = proj.cumsum(-1) / sq[:, None]
        rand = torch.einsum("tkn,tn->tk", R, g).square().sum(-1) / sq
        # o(t, s) for every pair at once: ||V_t V_s^T||_F^2 / k.
        overlap = torch.einsum("akn,bjn->abkj", V, V).square().sum((-1, -2)) / self.k
        return SubspaceTrace(torch.tensor(steps, dtype=torch.int64), torch.stack(lam), V, g, cumulative[:, -1],
                             cumulative, rand, overlap, torch.tensor(loss, dtype=self.dtype),
                             torch.tensor(n_iter, dtype=torch.int64), torch.tensor(conv, dtype=torch.bool))


@accepts(model=Module(bind_dtype=True), loss_fn=Function(), data=_DATA, k=Int(ge=1), every=Int(ge=1),
         max_iter=Int(ge=1, optional=True), tol=Real(gt=0, optional=True), generator=Generator(),
         example=_example_tracker)
def subspace_tracker(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                     data: tuple[torch.Tensor, torch.Tensor], k: int, every: int = 1, *, max_iter: int | None = None,
                     tol: float | None = None, generator: torch.Generator | None = None) -> SubspaceTracker:
    """A :class:`SubspaceTracker` of the top-``k`` Hessian eigenspace of ``loss_fn`` on ``data``, measured every
    ``every`` steps: the training-loop callback of the tiny-subspace measurements (arguments as the class's).

    References: Gradient Descent Happens in a Tiny Subspace (Gur-Ari, Roberts, Dyer), 2018.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0); model = torch.nn.Linear(3, 2).double()
        >>> x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 2, (16,))
        >>> tracker = subspace_tracker(model, torch.nn.functional.cross_entropy, (x, y), 8, every=1)
        >>> tracker(0)
        True
        >>> round(float(tracker.result().gradient_overlap[0]), 8)   # k = D: the whole space
        1.0
    """
    return SubspaceTracker(model, loss_fn, data, k, every, max_iter=max_iter, tol=tol, generator=generator)

