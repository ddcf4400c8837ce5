r"""PSGD: preconditioned SGD with Lie-group preconditioners fitted online to Hessian-vector products.

References: Curvature-Informed SGD via General Purpose Lie-Group Preconditioners (Pooladzandi, Li), 2024.
The preconditioner step's normaliser, damping, initial scale and momentum follow the authors' current code
(github.com/lixilinx/psgd_torch @ a8616f1d, ``psgd.py``: ``update_precond_kron_eq``, ``update_precond_dense_eq``,
``KronNewton``, ``DenseNewton``, ``KronWhiten``), in its ``dQ="EQ"`` geometry, the Lie-group update of the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Choice, Flag, Int, Real, accepts
from paperzoo.core.checks import check_choice, check_int, check_nonnegative, check_number, check_probability
from paperzoo.optim._common import NONFINITE, CheckedOptimizer, NonFiniteGradientError, check_dense_grad
from paperzoo.optim.lie_group import kron_precondition

__all__ = ["PSGD", "norm_lower_bound_spd"]

PRECOND_TYPES = ("kron", "dense", "diag")
HESSIAN_MODES = ("exact", "finite_diff", "gradient")


def norm_lower_bound_spd(A: torch.Tensor, *, generator: torch.Generator | None = None, k: int = 32,
                         half_iters: int = 2) -> torch.Tensor:
    r"""A cheap lower bound on :math:`\|A\|_2` for a symmetric positive semi-definite ``A`` ``(n, n)``.

    Subspace iteration as in the authors' code (``norm_lower_bound_spd``): ``A`` is divided by its largest
    diagonal entry :math:`c`; ``k`` Gaussian rows :math:`V` ``(k, n)`` are shifted towards the largest row
    :math:`a_j` of ``A`` (:math:`V \leftarrow a_j + \mathrm{sign}(V a_j)\odot V`, so that no row starts orthogonal
    to the dominant direction), multiplied ``2 * half_iters`` times by ``A`` with row normalisation every second
    product, and :math:`c\,\max_i \|V_i\|` is returned. Each row's norm after the last product is a Rayleigh-type
    lower bound, so the result never exceeds :math:`\|A\|_2` (up to round-off).

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64))
        >>> bound = norm_lower_bound_spd(A, generator=torch.Generator().manual_seed(0))
        >>> bool(2.99 < bound <= 3.0 + 1e-12)
        True
    """
    tiny = torch.finfo(A.dtype).smallest_normal
    c = A.diagonal().amax() + tiny
    A = A / c
    j = torch.argmax(torch.linalg.vector_norm(A, dim=1))
    V = torch.randn((k, A.shape[1]), generator=generator, dtype=A.dtype).to(A.device)
    V = A[j] + torch.sgn((A[j] * V).sum(1, keepdim=True)) * V
    for _ in range(half_iters):
        V = V @ A
        V = V / (torch.linalg.vector_norm(V, dim=1, keepdim=True) + tiny)
        V = V @ A
    return c * torch.linalg.vector_norm(V, dim=1).amax()


def _kron_factor_init(shape: torch.Size, q_scale: float, *, max_size: int, max_skew: float,
                      dtype: torch.dtype, device: torch.device) -> list[torch.Tensor]:
    """Kronecker factors of :math:`Q_0 = ` ``q_scale`` :math:`\\cdot I` for a tensor viewed as a vector (0-D, 1-D)
    or an ``(m, n)`` matrix (axes after the first flattened): a factor of size ``s`` is a dense (upper-triangular)
    ``(s, s)`` matrix when ``1 < s <= max_size`` and ``s**2 <= max_skew * numel``, else a diagonal ``(s,)``."""
    numel = math.prod(shape)
    sizes = (numel,) if len(shape) < 2 else (shape[0], numel // shape[0])
    root = q_scale ** (1.0 / len(sizes))
    factors = []
    for s in sizes:
        if 1 < s <= max_size and s * s <= max_skew * numel:
            factors.append(root * torch.eye(s, dtype=dtype, device=device))
        else:
            factors.append(root * torch.ones(s, dtype=dtype, device=device))
    return factors


def _as_matrix(t: torch.Tensor, n_factors: int) -> torch.Tensor:
    return t.reshape(-1, 1) if n_factors == 1 else t.reshape(t.shape[0], -1)


def _apply(Q: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``Q X`` for a factor stored dense ``(s, s)`` or as a diagonal ``(s,)``."""
    return Q.unsqueeze(1) * X if Q.dim() == 1 else Q @ X


def _solve_upper_t(Q: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``Q^{-T} X`` for an upper-triangular ``Q`` ``(s, s)``; half-precision factors are solved in float32 (torch
    has no half-precision triangular solve) and the result is rounded back."""
    if Q.dtype in (torch.float16, torch.bfloat16):
        return torch.linalg.solve_triangular(Q.mT.float(), X.float(), upper=False).to(X.dtype)
    return torch.linalg.solve_triangular(Q.mT, X, upper=False)


def _apply_inv_t(Q: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """``Q^{-T} X`` (``Q`` upper triangular or diagonal)."""
    return X / Q.unsqueeze(1) if Q.dim() == 1 else _solve_upper_t(Q, X)


def _lipschitz_step_(Q: torch.Tensor, L: torch.Tensor, i: int, grad: torch.Tensor, ell: torch.Tensor, *,
                     lr: float, beta: float, tiny: float) -> None:
    r"""The normalised group step on one factor: :math:`L_i \leftarrow \max(\beta L_i + (1-\beta)\ell, \ell)`,
    :math:`Q \leftarrow Q - (\mu/L_i)\,\Pi(\mathrm{grad})\,Q` (``grad`` is the diagonal for a diagonal factor)."""
    L[i] = torch.maximum(beta * L[i] + (1 - beta) * ell, ell)
    step = lr / L[i].clamp_min(tiny).to(Q.dtype)
    if Q.dim() == 1:
        Q.sub_(step * grad * Q)
    else:
        Q.sub_(step * (grad.triu() @ Q))


def _balance_(factors: list[torch.Tensor]) -> None:
    """Rescale the Kronecker factors to equal largest magnitudes, leaving their product (and so P) unchanged."""
    if len(factors) > 1:
        norms = [q.abs().amax() for q in factors]
        gmean = torch.stack(norms).prod() ** (1.0 / len(factors))
        for q, n in zip(factors, norms):
            q.mul_(gmean / n)


class PSGD(CheckedOptimizer):
    r"""PSGD: SGD preconditioned by :math:`P = Q^\top Q`, with :math:`Q` fitted on a Lie group every step.

    References: Curvature-Informed SGD via General Purpose Lie-Group Preconditioners (Pooladzandi, Li), 2024;
    the step normaliser, damping, initial scale and momentum of the authors' current code (psgd_torch @ a8616f1d).

    Each step draws a probe :math:`v`, obtains its curvature response :math:`h`, damps it,
    :math:`\tilde h = h + (\delta + \epsilon_{\mathrm{mach}}|h|)\odot z` with :math:`z \sim N(0, I)`
    (:math:`\delta` = ``damping``; this bounds :math:`P \preceq I/\delta`), and with probability
    ``precond_update_prob`` takes one Lie-group step on the fitting criterion
    :math:`c(P) = \mathbb E[h^\top P h + v^\top P^{-1} v]` (minimised by :math:`P = |H|^{-1}`):

    .. math::
        a = Q\tilde h,\quad b = Q^{-\top} v,\quad
        \ell = \|aa^\top + bb^\top\|\ \text{(estimate)},\quad
        L \leftarrow \max(\beta_L L + (1 - \beta_L)\ell,\ \ell),\quad
        Q \leftarrow Q - \frac{\mu_2}{L}\,\Pi(aa^\top - bb^\top)\,Q,

    with :math:`\Pi` the projection on the group's algebra (upper-triangular part; diagonal for a diagonal
    factor) and :math:`L_0 = 0`. :math:`L` is a running (never decreasing faster than :math:`\beta_L`) estimate
    of the criterion's Lipschitz constant in :math:`Q`: the authors' current normaliser, which replaced the
    per-step :math:`\|aa^\top + bb^\top\|` of the paper's code. The parameters then move along the
    preconditioned (momentum) gradient,

    .. math::
        m_t = \beta_t m_{t-1} + (1 - \beta_t) g_t,\quad \beta_t = \min\!\Big(\frac{t-1}{t}, \beta\Big), \qquad
        \theta_t = \theta_{t-1} - \mu_1 P\, m_t

    (:math:`m_t = g_t` when :math:`\beta = 0`; :math:`\beta_t` averages the first steps uniformly, so no bias
    correction is needed). Because the criterion and the normalised step are scale invariant, :math:`\mu_1` and
    :math:`\mu_2` transfer across problems (the paper's main point).

    Preconditioner structures (``precond_type``), one preconditioner per parameter tensor:

    - ``"kron"``: :math:`Q = Q_2 \otimes Q_1` acting on a tensor viewed as an ``(m, n)`` matrix :math:`G` as
      :math:`Q_1 G Q_2^\top` (axes after the first flattened; 0-D and 1-D tensors are one vector). A factor of
      size :math:`s` is upper-triangular when :math:`1 < s \le` ``max_size_triangular`` and
      :math:`s^2 \le` ``max_skew`` :math:`\cdot` ``numel``, diagonal otherwise (the authors' rule). Factor
      :math:`Q_1` takes :math:`AA^\top - BB^\top`, :math:`Q_2` takes :math:`A^\top A - B^\top B` with
      :math:`A = Q_1 \tilde H Q_2^\top`, :math:`B = Q_1^{-\top} V Q_2^{-1}`; :math:`\ell` is
      :func:`norm_lower_bound_spd` of the sum for a triangular factor and the largest entry for a diagonal one;
      each factor keeps its own :math:`L`. The factors are rebalanced after every update (a no-op on :math:`P`).
    - ``"dense"``: one upper-triangular :math:`Q` over the flattened tensor (``numel**2`` memory);
      :math:`\ell = \|a\|^2 + \|b\|^2`, the trace of :math:`aa^\top + bb^\top` (the authors' choice).
    - ``"diag"``: a diagonal :math:`Q` (the Jacobi preconditioner); :math:`\ell = \max_i (a_i^2 + b_i^2)`.

    Curvature pairs (``hessian``):

    - ``"exact"``: :math:`v \sim N(0, I)`, :math:`h = Hv` by double back-propagation. The closure is required
      and must call ``loss.backward(create_graph=True)``; a gradient that does not depend on the parameters (a
      loss linear in them) then has :math:`h = 0`, which the damping turns into a bounded fit.
    - ``"finite_diff"``: :math:`v \sim N(0, I)`, :math:`h = (g(\theta + \sigma v) - g(\theta))/\sigma`,
      :math:`\sigma = \sqrt{\epsilon_{\mathrm{mach}}}`; the closure is required (an ordinary one: ``zero_grad``,
      loss, ``backward``) and is evaluated twice per preconditioner update.
    - ``"gradient"``: :math:`v \sim N(0, I)`, :math:`h = g`, the gradient-whitening preconditioner
      :math:`P \approx (\mathbb E[gg^\top])^{-1/2}` that needs no closure (the pair of the authors'
      ``KronWhiten``, whose damping reuses :math:`v` as the noise :math:`z`).

    Symbols: :math:`\mu_1` = ``lr``, :math:`\mu_2` = ``precond_lr`` (default 0.1), :math:`\beta_L` =
    ``lipschitz_beta`` (default 0.9), :math:`\delta` = ``damping`` (default 1e-9), :math:`\beta` = ``momentum``;
    :math:`P_0` = ``precond_init_scale`` :math:`\cdot I`, by default (``None``) the authors' automatic scale from
    the first pairs, :math:`Q_0 = s I` with :math:`s = \overline{v^2}^{1/4}\,(\max_{\text{tensors}}
    \overline{h^4} + \delta^4)^{-1/8}` (without the :math:`v` factor for ``"gradient"``), so :math:`P_0 = s^2 I`;
    :math:`g_t` is the gradient (negated when ``maximize``). ``weight_decay`` :math:`\lambda` is decoupled,
    :math:`\theta \leftarrow \theta - \mu_1\lambda\theta`. ``grad_clip_max_norm`` scales the group's step down
    when the norm of all its preconditioned gradients together exceeds it (the authors' trust-region clip).
    The first step of every tensor always updates its preconditioner.

    Deviations from the authors' code: one preconditioner per parameter tensor, where their dense (and low-rank,
    "LRA") preconditioners span all parameters; the LRA and "XMat" preconditioners and the other local
    coordinates of the current code (its default ``Q0.5EQ1.5``, ``QEQ``, ``QEP``, ``QUAD``, ``PRO4P``) are not
    implemented: this is the ``EQ`` (Lie-group) geometry of the paper; tensors with more than two axes are
    flattened to matrices for ``"kron"`` (their code keeps one factor per axis); factors are rebalanced after
    every update (theirs with probability 0.01: the same :math:`P` in exact arithmetic); ``"gradient"`` has no
    amplitude clipping (``KronWhiten``'s ``grad_clip_max_amps``); ``precond_init_scale`` sets :math:`P_0` (their
    ``preconditioner_init_scale`` sets :math:`Q_0`); ``max_size_triangular`` defaults to 8192 (theirs to
    infinity). The probes come from an internal generator seeded by ``seed`` and saved in the ``state_dict``.
    ``foreach`` is accepted for interface compatibility and has no effect.

    Args:
        params: parameters or parameter-group dicts (the hyperparameters below, except ``hessian`` and ``seed``,
            may be set per group).
        lr: :math:`\mu_1`, ``>= 0``.
        precond_type: ``"kron"``, ``"dense"`` or ``"diag"``.
        hessian: ``"exact"``, ``"finite_diff"`` or ``"gradient"``.
        precond_lr: :math:`\mu_2 \in (0, 1]`.
        precond_update_prob: probability of a preconditioner update per step, in ``(0, 1]`` (one draw per step,
            shared by all tensors; none when every group has probability 1).
        precond_init_scale: :math:`P_0 = ` scale :math:`\cdot I`, ``> 0``, or ``None`` for the automatic scale.
        momentum: :math:`\beta \in [0, 1)`.
        weight_decay: decoupled decay :math:`\lambda`, ``>= 0``.
        max_size_triangular: largest Kronecker factor kept triangular (``"kron"`` only), ``>= 1``.
        grad_clip_max_norm: ``None`` or ``> 0``.
        seed: seed of the probe generator.
        lipschitz_beta: :math:`\beta_L \in [0, 1)`, the decay of the normaliser :math:`L`.
        damping: :math:`\delta \ge 0`.
        max_skew: a Kronecker factor of size ``s`` is triangular only if ``s**2 <= max_skew * numel``, ``> 0``.
        foreach: accepted, no effect.
        maximize: ascend the objective instead of descending it.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`). The curvature responses :math:`h` (Hessian-vector
            products, finite differences of a second gradient) are checked too, before any state changes; a
            skipped step leaves the probe generator where it was.

    State per parameter: ``step`` (CPU scalar tensor), ``Q`` (list of Kronecker factors for ``"kron"``; a
    triangular ``(numel, numel)`` matrix for ``"dense"``; a vector ``(numel,)`` for ``"diag"``), ``L`` (one
    normaliser per factor, ``(len(Q),)`` for ``"kron"``, ``(1,)`` otherwise; float32 for half-precision
    parameters), and ``momentum_buffer`` (parameter's shape) when ``momentum > 0``.

    Example:
        >>> import torch
        >>> from paperzoo.optim import PSGD
        >>> A = torch.diag(torch.tensor([1.0, 100.0]))
        >>> x = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> opt = PSGD([x], lr=0.5, precond_type="dense", hessian="exact")
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = 0.5 * x @ A @ x
        ...     loss.backward(create_graph=True)
        ...     return loss
        >>> for _ in range(300):
        ...     _ = opt.step(closure)
        >>> bool(x.abs().max() < 1e-6)
        True
    """

    @accepts(lr=Real(ge=0), precond_type=Choice(*PRECOND_TYPES), hessian=Choice(*HESSIAN_MODES),
             precond_lr=Real(gt=0, le=1), precond_update_prob=Real(gt=0, le=1),
             precond_init_scale=Real(gt=0, optional=True), momentum=Real(ge=0, lt=1), weight_decay=Real(ge=0),
             max_size_triangular=Int(ge=1), grad_clip_max_norm=Real(gt=0, optional=True), seed=Int(ge=0),
             lipschitz_beta=Real(ge=0, lt=1), damping=Real(ge=0), max_skew=Real(gt=0), foreach=Flag(optional=True),
             maximize=Flag(), nonfinite=NONFINITE)
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        precond_type: str = "kron",
        hessian: str = "exact",
        precond_lr: float = 0.1,
        precond_update_prob: float = 1.0,
        precond_init_scale: float | None = None,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        max_size_triangular: int = 8192,
        grad_clip_max_norm: float | None = None,
        seed: int = 0,
        *,
        lipschitz_beta: float = 0.9,
        damping: float = 1e-9,
        max_skew: float = 1.0,
        foreach: bool | None = None,
        maximize: bool = False,
        nonfinite: str = "raise",
    ):
        self.hessian = check_choice("hessian", hessian, HESSIAN_MODES)
        seed = check_int("seed", seed, low=0)
        defaults = dict(lr=lr, precond_type=precond_type, precond_lr=precond_lr,
                        precond_update_prob=precond_update_prob, precond_init_scale=precond_init_scale,
                        momentum=momentum, weight_decay=weight_decay, max_size_triangular=max_size_triangular,
                        grad_clip_max_norm=grad_clip_max_norm, lipschitz_beta=lipschitz_beta, damping=damping,
                        max_skew=max_skew, foreach=foreach, maximize=maximize, nonfinite=nonfinite)
        super().__init__(params, defaults)
        self._generator = torch.Generator().manual_seed(seed)

    def _check_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative("lr", group["lr"])
        check_choice("precond_type", group["precond_type"], PRECOND_TYPES)
        group["precond_lr"] = check_number("precond_lr", group["precond_lr"], low=0.0, high=1.0,
                                           low_inclusive=False)
        group["precond_update_prob"] = check_number("precond_update_prob", group["precond_update_prob"],
                                                    low=0.0, high=1.0, low_inclusive=False)
        if group["precond_init_scale"] is not None:
            group["precond_init_scale"] = check_number("precond_init_scale", group["precond_init_scale"], low=0.0,
                                                       low_inclusive=False)
        group["momentum"] = check_probability("momentum", group["momentum"])
        group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])
        check_int("max_size_triangular", group["max_size_triangular"], low=1)
        if group["grad_clip_max_norm"] is not None:
            group["grad_clip_max_norm"] = check_number("grad_clip_max_norm", group["grad_clip_max_norm"],
                                                       low=0.0, low_inclusive=False)
        group["lipschitz_beta"] = check_probability("lipschitz_beta", group["lipschitz_beta"])
        group["damping"] = check_nonnegative("damping", group["damping"])
        group["max_skew"] = check_number("max_skew", group["max_skew"], low=0.0, low_inclusive=False)

    # The probe generator is part of the optimizer's state: a reloaded optimizer continues bit-identically.
    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["generator_state"] = self._generator.get_state()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("generator_state", None)
        super().load_state_dict(state_dict)
        if generator_state is not None:
            self._generator.set_state(generator_state)

    def _randn(self, shape, dtype, device) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self._generator, dtype=dtype).to(device)

    def _check_grads(self, params: list[torch.Tensor]) -> None:
        name = type(self).__name__
        for p in params:
            check_dense_grad(name, p.grad)
            if torch.is_complex(p):
                raise TypeError(f"{name} does not support complex parameters, got a parameter of dtype {p.dtype}")

    def _call_closure(self, closure) -> tuple[Any, dict[torch.Tensor, set[bool]]]:
        """Call ``closure``; also return, per parameter, the grad modes of the backward passes that reached it
        (``True`` for ``backward(create_graph=True)``: the engine runs a pass in the grad mode ``create_graph``)."""
        modes: dict[torch.Tensor, set[bool]] = {}
        handles = []
        try:
            for group in self.param_groups:
                for p in group["params"]:
                    if p.requires_grad and p not in modes:
                        seen = modes[p] = set()
                        handles.append(p.register_hook(lambda _, seen=seen: seen.add(torch.is_grad_enabled())))
            with torch.enable_grad():
                loss = closure()
        finally:
            for handle in handles:
                handle.remove()
        return loss, modes

    def _check_create_graph(self, constant: list[torch.Tensor], modes: dict[torch.Tensor, set[bool]]) -> None:
        """Refuse gradients without a graph unless the closure's backward took one (then they are constant)."""
        name = type(self).__name__
        if any(False in modes.get(p, ()) for p in constant):
            raise ValueError(f"{name}(hessian='exact'): the closure called backward() without create_graph=True, "
                             "so no Hessian-vector product can be taken; call loss.backward(create_graph=True) in "
                             "the closure (or use hessian='finite_diff')")
        if not any(True in seen for seen in modes.values()):
            raise ValueError(f"{name}(hessian='exact'): the closure did not back-propagate to the parameters; it "
                             "must call loss.backward(create_graph=True) so that Hessian-vector products can be "
                             "taken")

    @staticmethod
    def _drop_graphs(params: list[torch.Tensor]) -> None:
        # backward(create_graph=True) leaves each gradient referencing its parameter through the graph: a cycle.
        for p in params:
            p.grad = p.grad.detach()

    def _skip(self, params: list[torch.Tensor], grads: list[list[torch.Tensor]] | None = None) -> bool:
        """The ``nonfinite`` policy; the gradients' graphs are dropped when the step raises or is skipped."""
        try:
            skip = self._skip_for_nonfinite(grads=grads)
        except NonFiniteGradientError:
            self._drop_graphs(params)
            raise
        if skip:
            self._drop_graphs(params)
        return skip

    def _newton_pairs(self, closure, params: list[torch.Tensor],
                      modes: dict[torch.Tensor, set[bool]] | None = None) -> dict[torch.Tensor, tuple]:
        """``{param: (v, h)}`` for the parameters whose preconditioner is updated this step (curvature modes)."""
        vs = [self._randn(p.shape, p.dtype, p.device) for p in params]
        if self.hessian == "exact":
            # A gradient without a graph, from a backward that took one, does not depend on the parameters: Hv = 0.
            constant = [p for p in params if not p.grad.requires_grad]
            if constant:
                self._check_create_graph(constant, modes or {})
            graphed = [(p, v) for p, v in zip(params, vs) if p.grad.requires_grad]
            hvs = {}
            if graphed:
                with torch.enable_grad():
                    out = torch.autograd.grad([p.grad for p, _ in graphed], [p for p, _ in graphed],
                                              [v for _, v in graphed], allow_unused=True)
                hvs = {p: hv for (p, _), hv in zip(graphed, out)}
            return {p: (v, torch.zeros_like(p) if hvs.get(p) is None else hvs[p]) for p, v in zip(params, vs)}
        grads = {p: p.grad.detach().clone() for p in params}
        saved = {p: p.detach().clone() for p in params}
        sigmas = {p: math.sqrt(torch.finfo(p.dtype).eps) for p in params}
        with torch.no_grad():
            for p, v in zip(params, vs):
                p.add_(v, alpha=sigmas[p])
        pairs = {}
        try:
            with torch.enable_grad():
                closure()
            with torch.no_grad():
                for p, v in zip(params, vs):
                    h = (p.grad.detach() - grads[p]) / sigmas[p] if p.grad is not None else torch.zeros_like(p)
                    pairs[p] = (v, h)
        finally:  # back at theta, with its gradient, even when the closure raises
            with torch.no_grad():
                for p in params:
                    p.copy_(saved[p])
                    p.grad = grads[p]
        return pairs

    def _init_state(self, group: dict[str, Any], p: torch.Tensor, q_scale: float) -> None:
        state = self.state[p]
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        if group["precond_init_scale"] is not None:
            q_scale = math.sqrt(group["precond_init_scale"])
        kind = group["precond_type"]
        if kind == "kron":
            Q = _kron_factor_init(p.shape, q_scale, max_size=group["max_size_triangular"],
                                  max_skew=group["max_skew"], dtype=p.dtype, device=p.device)
        elif kind == "dense":
            Q = q_scale * torch.eye(p.numel(), dtype=p.dtype, device=p.device)
        else:
            Q = q_scale * torch.ones(p.numel(), dtype=p.dtype, device=p.device)
        state["Q"] = Q
        l_dtype = torch.float32 if torch.finfo(p.dtype).eps > 1e-6 else p.dtype
        state["L"] = torch.zeros(len(Q) if kind == "kron" else 1, dtype=l_dtype, device=p.device)
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def _auto_q_scale(self, pairs: dict[torch.Tensor, tuple], damping: float) -> float:
        """The authors' automatic :math:`Q_0` scale from the first pairs (see the class docstring)."""
        h4 = max(float((h.double() ** 4).mean()) for _, h in pairs.values())
        # Every h zero and no damping (a loss linear in the parameters): no curvature scale, start from Q = I.
        scale = (h4 + damping ** 4) ** (-1.0 / 8) if h4 + damping ** 4 > 0 else 1.0
        if self.hessian != "gradient":
            n = sum(v.numel() for v, _ in pairs.values())
            scale *= (sum(float((v.double() ** 2).sum()) for v, _ in pairs.values()) / n) ** 0.25
        return scale

    def _update_precond(self, group: dict[str, Any], p: torch.Tensor, v: torch.Tensor, h: torch.Tensor) -> None:
        """One damped, normalised Lie-group step of ``p``'s preconditioner from the pair ``(v, h)``."""
        state = self.state[p]
        Q, L = state["Q"], state["L"]
        lr, beta = group["precond_lr"], group["lipschitz_beta"]
        tiny = torch.finfo(L.dtype).tiny
        noise = v if self.hessian == "gradient" else self._randn(h.shape, h.dtype, h.device)
        h = h + (group["damping"] + torch.finfo(h.dtype).eps * h.abs()) * noise
        kind = group["precond_type"]
        if kind == "kron":
            X = _as_matrix(h, len(Q))
            Y = _as_matrix(v, len(Q))
            A = _apply(Q[0], X)
            B = _apply_inv_t(Q[0], Y)
            if len(Q) == 2:
                A = _apply(Q[1], A.mT).mT
                B = _apply_inv_t(Q[1], B.mT).mT
            for i, q in enumerate(Q):
                AA, BB = (A @ A.mT, B @ B.mT) if i == 0 else (A.mT @ A, B.mT @ B)
                if q.dim() == 1:
                    AA, BB = AA.diagonal(), BB.diagonal()
                    ell = (AA + BB).amax()
                else:
                    ell = norm_lower_bound_spd(AA + BB, generator=self._generator)
                _lipschitz_step_(q, L, i, AA - BB, ell.to(L.dtype), lr=lr, beta=beta, tiny=tiny)
            _balance_(Q)
        elif kind == "dense":
            a = Q @ h.reshape(-1, 1)
            b = _solve_upper_t(Q, v.reshape(-1, 1))
            ell = (a * a).sum() + (b * b).sum()
            _lipschitz_step_(Q, L, 0, a @ a.mT - b @ b.mT, ell.to(L.dtype), lr=lr, beta=beta, tiny=tiny)
        else:
            a, b = Q * h.reshape(-1), v.reshape(-1) / Q
            a2, b2 = a * a, b * b
            _lipschitz_step_(Q, L, 0, a2 - b2, (a2 + b2).amax().to(L.dtype), lr=lr, beta=beta, tiny=tiny)

    @staticmethod
    def _precondition(group: dict[str, Any], Q, g: torch.Tensor) -> torch.Tensor:
        if group["precond_type"] == "kron":
            return kron_precondition(Q, g)
        if group["precond_type"] == "dense":
            return (Q.mT @ (Q @ g.reshape(-1))).reshape(g.shape)
        return (Q * Q * g.reshape(-1)).reshape(g.shape)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One step; ``closure`` (required unless ``hessian="gradient"``) re-evaluates the model, see the class
        docstring for what it must call, and its loss (at the unperturbed parameters) is returned."""
        name = type(self).__name__
        if self.hessian != "gradient" and closure is None:
            raise ValueError(f"{name}(hessian={self.hessian!r}) needs a closure; use hessian='gradient' to step "
                             f"without one")
        loss, modes = None, None
        if closure is not None and self.hessian == "exact":
            loss, modes = self._call_closure(closure)
        elif closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = [(group, [p for p in group["params"] if p.grad is not None]) for group in self.param_groups]
        params = [p for _, ps in groups for p in ps]
        self._check_grads(params)
        if self._skip(params):
            return loss
        rng = self._generator.get_state()
        # One draw per step decides every group's update (the authors flip one coin for all tensors).
        u = None
        if any(group["precond_update_prob"] < 1 for group, _ in groups):
            u = float(torch.rand((), generator=self._generator))
        updating = [p for group, ps in groups for p in ps
                    if not self.state.get(p) or u is None or u < group["precond_update_prob"]]
        if self.hessian == "gradient":
            grads = {p: (-p.grad if group["maximize"] else p.grad) for group, ps in groups for p in ps}
            pairs = {p: (None, grads[p]) for p in updating}
        else:
            try:
                pairs = self._newton_pairs(closure, updating, modes) if updating else {}
                # The curvature responses feed the preconditioners: checked before any state changes.
                skip = self._skip(params, [[pairs[p][1] for p in ps if p in pairs] for _, ps in groups])
            except BaseException:
                self._generator.set_state(rng)
                self._drop_graphs(params)
                raise
            if skip:
                self._generator.set_state(rng)
                return loss
        self._drop_graphs(params)
        new = {p: pairs[p] for p in updating if len(self.state[p]) == 0}
        q_scale = self._auto_q_scale(new, self.defaults["damping"]) if new else 1.0
        for group, ps in groups:
            for p in ps:
                if len(self.state[p]) == 0:
                    self._init_state(group, p, q_scale)
            pgs = []
            for p in ps:
                state = self.state[p]
                state["step"] += 1
                if p in pairs:
                    v, h = pairs[p]
                    if v is None:  # gradient whitening: the probe is drawn per tensor, just before its update
                        v = self._randn(p.shape, p.dtype, p.device)
                    self._update_precond(group, p, v, h)
                g = -p.grad if group["maximize"] else p.grad
                if group["momentum"] > 0:
                    t = float(state["step"])
                    beta = min((t - 1) / t, group["momentum"])
                    m = state["momentum_buffer"]
                    m.mul_(beta).add_(g, alpha=1 - beta)
                    g = m
                pgs.append(self._precondition(group, state["Q"], g))
            lr = group["lr"]
            clip = group["grad_clip_max_norm"]
            if clip is not None and pgs:
                norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(pg) for pg in pgs])))
                if norm > clip:
                    lr = lr * clip / norm
            for p, pg in zip(ps, pgs):
                if group["weight_decay"] != 0:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(pg, alpha=-lr)
        return loss
