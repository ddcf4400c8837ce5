"""SA-SRRW: token-based distributed stochastic approximation driven by a self-repellent random walk.

References: Accelerating Distributed Stochastic Optimization via Self-Repellent Random Walks, 2024
(Hu, Doshi, Eun; ICLR 2024), building on Self-Repellent Random Walks on General Graphs -- Achieving Minimal
Sampling Variance via Nonlinear Markov Chains, 2023 (Doshi, Hu, Eun; ICML 2023).

A token walks over the ``N`` agents of a graph. Given a base chain :math:`P` (argument ``P``, shape ``(N, N)``)
reversible with respect to a target :math:`\\mu` (``mu``, shape ``(N,)``), the self-repellent random walk (SRRW)
with strength :math:`\\alpha \\ge 0` (``alpha``) moves from :math:`i` with the nonlinear kernel

.. math:: K_{ij}[x] = \\frac{P_{ij}\\,(x_j/\\mu_j)^{-\\alpha}}{\\sum_k P_{ik}\\,(x_k/\\mu_k)^{-\\alpha}},

where :math:`x` is the walk's (step-size weighted) empirical visit measure, so over-visited nodes
(:math:`x_j > \\mu_j`) repel it. :math:`\\alpha = 0` gives back :math:`P`, and :math:`K[\\mu] = P` for every
:math:`\\alpha`. SA-SRRW (the paper's Algorithm 1) iterates, for :math:`n \\ge 0`,

.. math::
    X_{n+1} \\sim K_{X_n, \\cdot}[x_n], \\qquad
    x_{n+1} = x_n + \\gamma_{n+1}(\\delta_{X_{n+1}} - x_n), \\qquad
    \\theta_{n+1} = \\theta_n + \\beta_{n+1} H(\\theta_n, X_{n+1}),

with :math:`\\gamma_n = (n+1)^{-a}` (``gamma_exponent`` a) and :math:`\\beta_n = (n+1)^{-b}` (``beta_exponent``
b), :math:`1/2 < a, b \\le 1`. For distributed minimisation of :math:`f(\\theta) = \\frac1N\\sum_i F_i(\\theta)`,
:math:`H(\\theta, i) = -\\nabla F_i(\\theta) / (N\\mu_i)` so that :math:`\\mathbb E_{\\mu}H = -\\nabla f`.

The paper's central limit theorem (case (i), :math:`\\beta_n = o(\\gamma_n)`, i.e. :math:`a < b`) gives
:math:`\\beta_n^{-1/2}(\\theta_n - \\theta^*) \\Rightarrow \\mathcal N(0, V_\\theta(\\alpha))` with
:math:`V_\\theta(\\alpha)` solving :math:`(J + \\tfrac{1_{b=1}}{2}I)V + V(J + \\tfrac{1_{b=1}}{2}I)^\\top +
U_\\theta(\\alpha) = 0`, :math:`J = \\nabla h(\\theta^*)`, and

.. math:: U_\\theta(\\alpha) = \\sum_{i=2}^{N} \\frac{1}{(\\alpha(1+\\lambda_i)+1)^2}\\,
          \\frac{1+\\lambda_i}{1-\\lambda_i}\\, c_i c_i^\\top, \\qquad c_i = \\sum_j \\mu_j u_i(j) H(\\theta^*, j),

over the eigenpairs :math:`(\\lambda_i, u_i)` of :math:`P` (:math:`u_i` orthonormal in :math:`\\ell^2(\\mu)`):
every non-stationary mode of the base chain's noise is damped by :math:`1/(\\alpha(1+\\lambda_i)+1)`, hence the
:math:`O(1/\\alpha^2)` decrease (:func:`sa_srrw_covariance`). The visit measure itself has
:math:`\\gamma_n^{-1/2}(x_n - \\mu) \\Rightarrow \\mathcal N(0, V_x(\\alpha))`, :math:`O(1/\\alpha)`
(:func:`srrw_sampling_covariance`).

Deviations and choices: the defaults ``gamma_exponent=0.8, beta_exponent=0.9`` are one case-(i) choice (the
regime of the :math:`O(1/\\alpha^2)` result); the exponents of the paper's own experiments were not confirmed.
``beta_scale`` (default 1, the paper's value) multiplies :math:`\\beta_n`. The walk starts at :math:`x_0 = \\mu`
unless ``x0`` is given (the paper only asks for :math:`x_0` in the simplex's interior). Transition kernels are
dense ``(N, N)`` matrices (graphs of up to a few thousand nodes); the kernel is evaluated in the log domain so
that large :math:`\\alpha` cannot overflow. :math:`U_\\theta` above is our transcription of the paper's
Theorem 3.3 (case (i)) for reversible :math:`P`; it reproduces the base-chain (alpha = 0) covariance exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Flag, Function, Generator, Int, OneOf, Real, Tensor, accepts
from paperzoo.core.checks import check_int
from paperzoo.core.convergence import check_finite_iterate

__all__ = [
    "srrw_kernel",
    "SRRWToken",
    "SASRRWResult",
    "sa_srrw",
    "srrw_sampling_covariance",
    "sa_srrw_covariance",
]


def _sum_tol(x: torch.Tensor) -> float:
    """Tolerance on a sum of ``x.shape[-1]`` probabilities (rounding grows with the number of terms)."""
    return max(1e-6, 4.0 * x.shape[-1] * torch.finfo(x.dtype).eps)


def _check_distribution(name: str, x: torch.Tensor) -> None:
    """Entries > 0 (the interior of the simplex) and every vector (last dimension) summing to 1."""
    if bool((x <= 0).any()):
        raise ValueError(f"{name} must be > 0 entrywise (in the interior of the simplex), got a minimum of "
                         f"{float(x.min())!r}")
    sums = x.sum(-1)
    worst = float((sums - 1).abs().max())
    if worst > _sum_tol(x):
        raise ValueError(f"{name} must sum to 1, got {float(sums.reshape(-1)[(sums - 1).abs().argmax()])!r}")


def _check_chain(P: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The relational checks the declaration cannot state: P row-stochastic, mu a positive distribution that P
    leaves invariant (shapes, dtypes, finiteness and signs are checked by the declaration)."""
    tol = _sum_tol(P)
    rows = P.sum(1)
    worst = int((rows - 1).abs().argmax())
    if abs(float(rows[worst]) - 1.0) > tol:
        raise ValueError(f"P must be row-stochastic (rows summing to 1), got a row sum of {float(rows[worst])!r} "
                         f"in row {worst}")
    _check_distribution("mu", mu)
    drift = float((mu @ P - mu).abs().max())
    if drift > tol:
        raise ValueError(f"mu must be the stationary distribution of P (mu P = mu), got max |mu P - mu| = {drift:.3g}")
    return P, mu.to(P.dtype)


_P = Tensor("N", "N", nonnegative=True)  # row-stochastic: checked in _check_chain
_MU = Tensor("N", positive_mass=True)  # entrywise > 0, summing to 1, stationary for P: checked in _check_chain
_EXPONENT = Real(gt=0.5, le=1.0)
# alpha: one strength, or one per walker (a 0-d or 1-d tensor; its length is checked against the walkers)
_ALPHA = OneOf(Real(ge=0), Tensor(ndims=(0, 1), nonnegative=True))


def _example_chain(ctx) -> dict:
    """A tiny Metropolis chain on the complete graph, reversible w.r.t. a non-uniform target."""
    from paperzoo.data.graphs import metropolis_hastings_chain

    N = ctx.size("N")
    mu = torch.softmax(torch.randn(N, generator=ctx.generator, dtype=torch.float64), 0)
    P = metropolis_hastings_chain(torch.ones(N, N) - torch.eye(N), mu, dtype=torch.float64)
    return {"P": P.to(ctx.dtype), "mu": mu.to(ctx.dtype)}


def _example_visits(ctx, rows: int) -> torch.Tensor:
    return torch.softmax(torch.randn(rows, ctx.size("N"), generator=ctx.generator, dtype=ctx.dtype), -1)


def _alpha_tensor(alpha, shape: tuple[int, ...], dtype: torch.dtype, expected: str) -> torch.Tensor:
    """``alpha`` (validated by the declaration) as a tensor of ``shape``; ``expected`` says what it must match."""
    if isinstance(alpha, torch.Tensor) and alpha.numel() > 1:
        if tuple(alpha.shape) != tuple(shape):
            raise ValueError(f"alpha must be a number or {expected}, got shape {tuple(alpha.shape)}")
        return alpha.to(dtype)
    return torch.full(shape, float(alpha), dtype=dtype)


def _srrw_logits(logP_rows: torch.Tensor, log_ratio: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Unnormalised log kernel rows: log P_ij - alpha log(x_j / mu_j)."""
    return logP_rows - alpha.unsqueeze(-1) * log_ratio


@accepts(P=_P, mu=_MU, x=Tensor(..., "N", max_batch_dims=1, nonnegative=True), alpha=_ALPHA,
         example=lambda ctx: {**_example_chain(ctx), "x": _example_visits(ctx, 2), "alpha": 1.5})
def srrw_kernel(P: torch.Tensor, mu: torch.Tensor, x: torch.Tensor, alpha) -> torch.Tensor:
    """SRRW transition kernel :math:`K[x]` (the paper's Eq. (1)) for one or many visit measures.

    Args:
        P: base transition matrix, shape ``(N, N)``.
        mu: target distribution of ``P``, shape ``(N,)``.
        x: visit measures in the simplex's interior (entries > 0 summing to 1), shape ``(N,)`` or ``(B, N)``.
        alpha: repellence :math:`\\alpha \\ge 0`, a float or a tensor of shape ``(B,)``.

    ``P`` must be row-stochastic and ``mu`` positive with :math:`\\mu P = \\mu`.

    Returns:
        Row-stochastic kernels, shape ``(N, N)`` or ``(B, N, N)``.

    Example:
        >>> P = torch.tensor([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]], dtype=torch.float64)
        >>> mu = torch.full((3,), 1 / 3, dtype=torch.float64)
        >>> K = srrw_kernel(P, mu, torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64), alpha=1.0)
        >>> [round(v, 4) for v in K[0].tolist()]
        [0.0, 0.75, 0.25]
    """
    P, mu = _check_chain(P, mu)
    _check_distribution("x", x)
    x = x.to(P.dtype)
    a = _alpha_tensor(alpha, x.shape[:-1], P.dtype,
                      f"a tensor with one entry per row of x (x has shape {tuple(x.shape)})")
    log_ratio = (x.log() - mu.log()).unsqueeze(-2)  # (..., 1, N): the repellence depends on the target j only
    logits = _srrw_logits(P.log(), log_ratio, a.unsqueeze(-1))
    return torch.softmax(logits, dim=-1)


class SRRWToken:
    """Self-repellent random walk token(s): ``num_walkers`` independent SRRWs advanced together.

    References: Accelerating Distributed Stochastic Optimization via Self-Repellent Random Walks, 2024.

    Each walker moves by :math:`X_{n+1} \\sim K_{X_n,\\cdot}[x_n]` and updates its visit measure
    :math:`x_{n+1} = x_n + \\gamma_{n+1}(\\delta_{X_{n+1}} - x_n)`, :math:`\\gamma_n = (n+1)^{-a}`.

    Args:
        P: base chain, shape ``(N, N)``, row-stochastic with stationary law ``mu``.
        mu: target, shape ``(N,)``.
        alpha: repellence :math:`\\alpha \\ge 0`; a float, or a tensor of shape ``(num_walkers,)`` (one
            strength per walker, so a sweep over :math:`\\alpha` runs as one batch).
        num_walkers: independent walkers ``W``.
        start: initial nodes, an int or a long tensor of shape ``(W,)``; drawn from ``mu`` when ``None``.
        x0: initial visit measure, shape ``(N,)`` or ``(W, N)``, positive, summing to one; ``mu`` when ``None``.
        gamma_exponent: :math:`a \\in (1/2, 1]`; ``a = 1`` makes :math:`x_n` the running visit frequency (with
            :math:`x_0` counted as one visit).
        generator: source of randomness.

    Attributes: ``node`` (shape ``(W,)``), ``x`` (shape ``(W, N)``), ``n`` (steps taken).

    Example:
        >>> from paperzoo.data.graphs import metropolis_hastings_chain, ring_lattice
        >>> P = metropolis_hastings_chain(ring_lattice(8, 2))
        >>> mu = torch.full((8,), 1 / 8, dtype=torch.float64)
        >>> token = SRRWToken(P, mu, alpha=5.0, num_walkers=4, generator=torch.Generator().manual_seed(0))
        >>> token.step().shape
        torch.Size([4])
    """

    @accepts(P=_P, mu=_MU, alpha=_ALPHA, num_walkers=Int(ge=1),
             start=OneOf(Int(ge=0), Tensor(ndims=(1,), dtype="int", low=0), optional=True),
             x0=Tensor(..., "N", max_batch_dims=1, nonnegative=True, optional=True), gamma_exponent=_EXPONENT,
             generator=Generator(),
             example=lambda ctx: {**_example_chain(ctx), "alpha": 2.0, "num_walkers": 2,
                                  "start": torch.tensor([0, 1]), "x0": _example_visits(ctx, 2),
                                  "generator": torch.Generator().manual_seed(0)})
    def __init__(self, P: torch.Tensor, mu: torch.Tensor, alpha, *, num_walkers: int = 1, start=None,
                 x0: torch.Tensor | None = None, gamma_exponent: float = 0.8,
                 generator: torch.Generator | None = None) -> None:
        self.P, self.mu = _check_chain(P, mu)
        N, W = self.P.shape[0], int(num_walkers)
        self.gamma_exponent = float(gamma_exponent)
        self.alpha = _alpha_tensor(alpha, (W,), self.P.dtype, f"a tensor of shape (num_walkers,) = ({W},)").clone()
        self.generator = generator
        self._logP = self.P.log()
        self._log_mu = self.mu.log()
        if x0 is None:
            x = self.mu.expand(W, N)
        else:
            if x0.dim() == 2 and x0.shape[0] != W:
                raise ValueError(f"x0 must have shape ({N},) or (num_walkers, {N}) = ({W}, {N}), got "
                                 f"{tuple(x0.shape)}")
            _check_distribution("x0", x0)
            x = x0.to(self.P.dtype).expand(W, N)
        self.x = x.clone()
        if start is None:
            self.node = torch.multinomial(self.mu, W, replacement=True, generator=generator)
        elif isinstance(start, torch.Tensor):
            if start.shape != (W,):
                raise ValueError(f"start must be an int or a tensor of shape (num_walkers,) = ({W},), got shape "
                                 f"{tuple(start.shape)}")
            if bool((start >= N).any()):
                raise ValueError(f"start must hold nodes in [0, {N - 1}], got a maximum of {int(start.max())}")
            self.node = start.long().clone()
        else:
            self.node = torch.full((W,), check_int("start", start, low=0, high=N - 1), dtype=torch.long)
        self.n = 0

    @property
    def num_walkers(self) -> int:
        return self.node.shape[0]

    def transition_probs(self) -> torch.Tensor:
        """Rows :math:`K_{X_n,\\cdot}[x_n]` for every walker, shape ``(W, N)``."""
        log_ratio = self.x.log() - self._log_mu
        return torch.softmax(_srrw_logits(self._logP[self.node], log_ratio, self.alpha), dim=-1)

    def step(self) -> torch.Tensor:
        """Advance every walker one step; returns the new nodes :math:`X_{n+1}`, shape ``(W,)``."""
        probs = self.transition_probs()
        cdf = probs.cumsum(-1)
        cdf = cdf / cdf[:, -1:]
        u = torch.rand(self.num_walkers, 1, generator=self.generator, dtype=cdf.dtype)
        # right=True skips zero-probability nodes, whose cdf equals their predecessor's
        self.node = torch.searchsorted(cdf, u, right=True).squeeze(1)
        gamma = float(self.n + 2) ** -self.gamma_exponent  # gamma_{n+1} = (n + 2)^{-a}
        self.x.mul_(1.0 - gamma)
        self.x[torch.arange(self.num_walkers), self.node] += gamma
        self.n += 1
        return self.node

    def state_dict(self) -> dict:
        """Walk state (nodes, visit measures, step count, alpha); the generator's state is the caller's (note that
        ``start=None`` at construction draws the start nodes from it)."""
        return {"node": self.node.clone(), "x": self.x.clone(), "n": self.n, "alpha": self.alpha.clone()}

    def load_state_dict(self, state: dict) -> None:
        if state["x"].shape != self.x.shape:
            raise ValueError(f"state x must have shape {tuple(self.x.shape)}, got {tuple(state['x'].shape)}")
        self.node = state["node"].clone()
        self.x = state["x"].to(self.P.dtype).clone()
        self.n = int(state["n"])
        self.alpha = state["alpha"].to(self.P.dtype).clone()


class SASRRWResult(NamedTuple):
    """Result of :func:`sa_srrw`.

    Attributes:
        x: the last iterate :math:`\\theta_n` of every walker, shape ``(W, d)``.
        n_iter: steps run.
        converged: ``True`` when the run ended finite (a decaying-step stochastic approximation has no stopping
            test; it always runs ``max_iter`` steps).
        visit_measure: the walkers' visit measures :math:`x_n`, shape ``(W, N)``.
        node: the walkers' last nodes, shape ``(W,)``.
        trace: iterates at steps ``trace_steps``, shape ``(n_records, W, d)`` (empty without ``record_every``).
        trace_visit: visit measures at ``trace_steps``, shape ``(n_records, W, N)``.
        trace_steps: the step counts recorded, shape ``(n_records,)``.
    """

    x: torch.Tensor
    n_iter: int
    converged: bool
    visit_measure: torch.Tensor
    node: torch.Tensor
    trace: torch.Tensor
    trace_visit: torch.Tensor
    trace_steps: torch.Tensor


def _sa_srrw_example(ctx) -> dict:
    chain = _example_chain(ctx)
    a = torch.randn(ctx.size("N"), ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype)
    return {**chain, "grad_fn": lambda theta, nodes: theta - a[nodes], "alpha": 2.0, "max_iter": 4, "num_walkers": 2,
            "theta0": torch.zeros(2, ctx.size("d"), dtype=ctx.dtype), "start": 0, "x0": _example_visits(ctx, 2),
            "record_every": 2, "generator": torch.Generator().manual_seed(0)}


@accepts(grad_fn=Function(), P=_P, mu=_MU, theta0=Tensor(..., "d", max_batch_dims=1), alpha=_ALPHA,
         max_iter=Int(ge=1), num_walkers=Int(ge=1), gamma_exponent=_EXPONENT, beta_exponent=_EXPONENT,
         beta_scale=Real(gt=0), importance_weighting=Flag(),
         start=OneOf(Int(ge=0), Tensor(ndims=(1,), dtype="int", low=0), optional=True),
         x0=Tensor(..., "N", max_batch_dims=1, nonnegative=True, optional=True), record_every=Int(ge=0),
         generator=Generator(), example=_sa_srrw_example)
def sa_srrw(
    grad_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    P: torch.Tensor,
    mu: torch.Tensor,
    theta0: torch.Tensor,
    *,
    alpha,
    max_iter: int,
    num_walkers: int = 1,
    gamma_exponent: float = 0.8,
    beta_exponent: float = 0.9,
    beta_scale: float = 1.0,
    importance_weighting: bool = True,
    start=None,
    x0: torch.Tensor | None = None,
    record_every: int = 0,
    generator: torch.Generator | None = None,
) -> SASRRWResult:
    """SA-SRRW (the paper's Algorithm 1): stochastic gradient steps at the nodes an SRRW token visits.

    References: Accelerating Distributed Stochastic Optimization via Self-Repellent Random Walks, 2024.

    .. math:: \\theta_{n+1} = \\theta_n - \\beta_{n+1}\\,\\frac{\\nabla F_{X_{n+1}}(\\theta_n)}{N\\mu_{X_{n+1}}},
              \\qquad \\beta_n = c\\,(n+1)^{-b},

    with :math:`X_n` the :class:`SRRWToken` walk, which minimises :math:`f = \\frac1N\\sum_i F_i`. ``W``
    independent runs (``num_walkers``) advance together, each with its own walk and iterate.

    Args:
        grad_fn: ``grad_fn(theta, nodes)`` returns :math:`\\nabla F_{\\text{node}}(\\theta)` row by row;
            ``theta`` has shape ``(W, d)``, ``nodes`` shape ``(W,)`` (long), the result shape ``(W, d)``.
        P, mu: base chain ``(N, N)`` (row-stochastic) and its target ``(N,)`` (positive, :math:`\\mu P = \\mu`).
        theta0: initial iterate, shape ``(d,)`` or ``(W, d)``.
        alpha: repellence :math:`\\alpha \\ge 0` (float, or tensor of shape ``(W,)``); ``0`` is the base chain.
        max_iter: steps :math:`n`.
        num_walkers: independent runs ``W``.
        gamma_exponent, beta_exponent: :math:`a, b \\in (1/2, 1]`; the paper's case (i) is :math:`a < b`.
        beta_scale: :math:`c > 0` (1 in the paper).
        importance_weighting: divide by :math:`N\\mu_i` (``False`` minimises :math:`\\sum_i \\mu_i F_i` instead).
        start, x0: initial nodes and visit measure (see :class:`SRRWToken`).
        record_every: record :math:`\\theta_n, x_n` every this many steps (0: never).
        generator: source of randomness.

    Example:
        >>> from paperzoo.data.graphs import metropolis_hastings_chain, ring_lattice
        >>> P = metropolis_hastings_chain(ring_lattice(10, 2))
        >>> mu = torch.full((10,), 0.1, dtype=torch.float64)
        >>> a = torch.arange(10.0, dtype=torch.float64)[:, None]         # F_i = |theta - a_i|^2 / 2
        >>> res = sa_srrw(lambda th, i: th - a[i], P, mu, torch.zeros(1, dtype=torch.float64), alpha=5.0,
        ...               max_iter=5000, generator=torch.Generator().manual_seed(0))
        >>> abs(res.x.item() - 4.5) < 0.5
        True
    """
    N, W, max_iter, record_every = P.shape[0], int(num_walkers), int(max_iter), int(record_every)
    b, c = float(beta_exponent), float(beta_scale)
    if theta0.dim() == 2 and theta0.shape[0] != W:
        raise ValueError(f"theta0 must have shape (d,) or (num_walkers, d) = ({W}, d), got {tuple(theta0.shape)}")
    theta = theta0.to(P.dtype).expand(W, -1).clone()
    # the token's declaration checks the chain (P row-stochastic, mu stationary), alpha, start and x0
    token = SRRWToken(P, mu, alpha, num_walkers=W, start=start, x0=x0, gamma_exponent=gamma_exponent,
                      generator=generator)
    mu = token.mu
    weight = 1.0 / (N * mu) if importance_weighting else torch.ones_like(mu)
    trace, trace_visit, steps = [], [], []
    for n in range(max_iter):
        nodes = token.step()
        g = grad_fn(theta, nodes)
        if n == 0 and (not isinstance(g, torch.Tensor) or g.shape != theta.shape or g.dtype != theta.dtype):
            got = (f"shape {tuple(g.shape)} and dtype {g.dtype}" if isinstance(g, torch.Tensor)
                   else type(g).__name__)
            raise ValueError(f"grad_fn must return a tensor of shape {tuple(theta.shape)} and dtype {theta.dtype}, "
                             f"got {got}")
        beta = c * float(n + 2) ** -b  # beta_{n+1} = c (n + 2)^{-b}
        theta = theta - beta * weight[nodes].unsqueeze(1) * g
        if (n + 1) % 256 == 0:
            check_finite_iterate("sa_srrw", theta, n + 1, "decrease beta_scale")
        if record_every and (n + 1) % record_every == 0:
            trace.append(theta.clone())
            trace_visit.append(token.x.clone())
            steps.append(n + 1)
    check_finite_iterate("sa_srrw", theta, max_iter, "decrease beta_scale")
    d = theta.shape[1]
    return SASRRWResult(
        x=theta, n_iter=max_iter, converged=True, visit_measure=token.x, node=token.node,
        trace=torch.stack(trace) if trace else theta.new_zeros(0, W, d),
        trace_visit=torch.stack(trace_visit) if trace_visit else theta.new_zeros(0, W, N),
        trace_steps=torch.tensor(steps, dtype=torch.long),
    )


def _reversible_spectrum(P: torch.Tensor, mu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (ascending) and l2(mu)-orthonormal right eigenvectors (columns) of a mu-reversible P."""
    flow = mu[:, None] * P
    gap = float((flow - flow.T).abs().max())
    if gap > max(1e-10, 16 * torch.finfo(P.dtype).eps):
        raise ValueError(f"P must be reversible with respect to mu (mu_i P_ij == mu_j P_ji), got max "
                         f"|mu_i P_ij - mu_j P_ji| = {gap:.3g}")
    s = mu.sqrt()
    S = s[:, None] * P / s[None, :]
    lam, w = torch.linalg.eigh(0.5 * (S + S.T))
    # The covariances divide by 1 - lambda_i over the non-stationary modes: eigenvalue 1 must be simple.
    if lam.numel() > 1 and float(1 - lam[-2]) <= 64 * torch.finfo(P.dtype).eps:
        raise ValueError(f"P must be irreducible (eigenvalue 1 of multiplicity one), got a second eigenvalue of "
                         f"{float(lam[-2])!r}")
    return lam, w / s[:, None]


@accepts(P=_P, mu=_MU, alpha=Real(ge=0), gamma_exponent=_EXPONENT,
         example=lambda ctx: {**_example_chain(ctx), "alpha": 1.0})
def srrw_sampling_covariance(P: torch.Tensor, mu: torch.Tensor, alpha, *, gamma_exponent: float = 0.8
                             ) -> torch.Tensor:
    """Asymptotic covariance :math:`V_x(\\alpha)` of the SRRW visit measure, :math:`\\gamma_n^{-1/2}(x_n - \\mu)`.

    .. math:: V_x(\\alpha) = \\sum_{i=2}^N \\frac{1}{2\\alpha(1+\\lambda_i) + 2 - 1_{a=1}}\\,
              \\frac{1+\\lambda_i}{1-\\lambda_i}\\,(D_\\mu u_i)(D_\\mu u_i)^\\top,

    (Doshi et al., 2023, Theorem 3.2 for :math:`a = 1`; its generalisation to :math:`\\gamma_n = (n+1)^{-a}`)
    for ``P`` irreducible and reversible w.r.t. ``mu``; :math:`O(1/\\alpha)`. Shapes: ``P`` ``(N, N)``, ``mu`` ``(N,)``; returns
    ``(N, N)``.
    """
    P, mu = _check_chain(P, mu)
    alpha, a = float(alpha), float(gamma_exponent)
    lam, u = _reversible_spectrum(P, mu)
    lam, u = lam[:-1], u[:, :-1]  # drop the stationary mode lambda = 1
    Du = mu[:, None] * u
    coef = (1 + lam) / (1 - lam) / (2 * alpha * (1 + lam) + 2 - (1.0 if a == 1.0 else 0.0))
    return (Du * coef) @ Du.T


def _covariance_example(ctx) -> dict:
    chain = _example_chain(ctx)
    d = ctx.size("d")
    H = torch.randn(ctx.size("N"), d, generator=ctx.generator, dtype=ctx.dtype)
    J = -2.0 * torch.eye(d, dtype=ctx.dtype) + 0.5 * torch.ones(d, d, dtype=ctx.dtype).triu(1)
    return {**chain, "H": H - chain["mu"] @ H, "alpha": 1.0, "jacobian": J}


@accepts(P=_P, mu=_MU, H=Tensor("N", "d", degenerate=("zeros", "constant")), alpha=Real(ge=0),
         jacobian=Tensor("d", "d", optional=True), beta_exponent=_EXPONENT, example=_covariance_example)
def sa_srrw_covariance(P: torch.Tensor, mu: torch.Tensor, H: torch.Tensor, alpha, *,
                       jacobian: torch.Tensor | None = None, beta_exponent: float = 0.9) -> torch.Tensor:
    """Asymptotic covariance :math:`V_\\theta(\\alpha)` of SA-SRRW iterates in case (i), :math:`\\beta_n^{-1/2}
    (\\theta_n - \\theta^*)`.

    Solves :math:`(J + \\tfrac{1_{b=1}}{2}I)V + V(J + \\tfrac{1_{b=1}}{2}I)^\\top + U_\\theta(\\alpha) = 0` with
    :math:`U_\\theta` from the module docstring.

    Args:
        P, mu: base chain ``(N, N)``, irreducible and reversible w.r.t. ``mu`` ``(N,)``.
        H: :math:`H(\\theta^*, i)` for every node, shape ``(N, d)`` (for the gradient instance,
            :math:`-\\nabla F_i(\\theta^*)/(N\\mu_i)`).
        alpha: repellence :math:`\\alpha \\ge 0`.
        jacobian: :math:`J = \\nabla_\\theta \\mathbb E_\\mu H(\\theta^*, \\cdot)`, shape ``(d, d)``, Hurwitz;
            ``-I`` (the Hessian of :math:`f` at :math:`\\theta^*` is the identity) when ``None``.
        beta_exponent: :math:`b`; with :math:`b = 1`, :math:`J + I/2` must be Hurwitz.

    Returns:
        ``(d, d)`` covariance; its trace is the limit of :math:`\\beta_n^{-1}\\,\\mathbb E\\|\\theta_n -
        \\theta^*\\|^2`.

    Example:
        >>> from paperzoo.data.graphs import metropolis_hastings_chain, ring_lattice
        >>> P = metropolis_hastings_chain(ring_lattice(6, 2))
        >>> mu = torch.full((6,), 1 / 6, dtype=torch.float64)
        >>> H = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        >>> v0 = sa_srrw_covariance(P, mu, H - H.mean(0), 0.0).trace()
        >>> bool(sa_srrw_covariance(P, mu, H - H.mean(0), 10.0).trace() < v0 / 50)
        True
    """
    import scipy.linalg

    P, mu = _check_chain(P, mu)
    alpha, b = float(alpha), float(beta_exponent)
    d = H.shape[1]
    J = -torch.eye(d, dtype=P.dtype, device=P.device) if jacobian is None else jacobian.detach().to(P.dtype)
    lam, u = _reversible_spectrum(P, mu)
    lam, u = lam[:-1], u[:, :-1]
    c = (mu[:, None] * u).T @ H.to(P.dtype)  # (N-1, d): c_i = sum_j mu_j u_i(j) H_j
    coef = (1 + lam) / (1 - lam) / (alpha * (1 + lam) + 1) ** 2
    U = (c * coef[:, None]).T @ c
    A = J + (0.5 if b == 1.0 else 0.0) * torch.eye(d, dtype=P.dtype, device=P.device)
    top = float(torch.linalg.eigvals(A).real.max())
    if top >= 0:
        raise ValueError(f"jacobian (+ I/2 when beta_exponent = 1) must be Hurwitz (eigenvalues with negative "
                         f"real part), got an eigenvalue with real part {top:.3g}")
    V = scipy.linalg.solve_continuous_lyapunov(A.cpu().numpy(), -U.detach().cpu().numpy())
    return torch.as_tensor(V, dtype=P.dtype, device=P.device)
