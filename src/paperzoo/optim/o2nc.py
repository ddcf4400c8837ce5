"""O2NC: online-to-nonconvex conversion with a projected online-gradient-descent learner.

References: Optimal Stochastic Non-smooth Non-convex Optimization through Online-to-Non-convex Conversion
(Cutkosky, Mehta, Orabona), 2023.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Function, Generator, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_int, check_nonnegative, check_positive, check_tensor
from paperzoo.optim._common import COMMON_HYPERPARAMETERS, CheckedOptimizer, check_dense_grad

__all__ = ["O2NC", "min_norm_in_hull", "goldstein_stationarity"]


def _project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` onto the probability simplex (sort-based, exact)."""
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = torch.cumsum(u, -1) - 1
    k = torch.arange(1, v.shape[-1] + 1, dtype=v.dtype, device=v.device)
    rho = (u - css / k > 0).to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)
    tau = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - tau).clamp_min(0)


@accepts(G=Tensor("k", "d", degenerate=("coincident", "zeros")), max_iter=Int(ge=1), tol=Real(ge=0),
         example=lambda ctx: {"max_iter": 200})
def min_norm_in_hull(G: torch.Tensor, *, max_iter: int = 2000, tol: float = 1e-10) -> tuple[torch.Tensor, torch.Tensor]:
    """The minimum-norm point of the convex hull of the rows of ``G`` (shape ``(k, d)``).

    Solves :math:`\\min_{\\lambda \\in \\Delta_k} \\|G^\\top\\lambda\\|^2` by accelerated projected gradient
    (FISTA) on the simplex. Returns ``(point, weights)`` of shapes ``(d,)`` and ``(k,)``.

    Example:
        >>> G = torch.tensor([[1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
        >>> [round(v, 6) for v in min_norm_in_hull(G)[0].tolist()]
        [0.0, 1.0]
    """
    max_iter, tol = int(max_iter), float(tol)
    Q = G @ G.T
    L = float(torch.linalg.matrix_norm(Q, ord=2)) or 1.0
    lam = torch.full((G.shape[0],), 1.0 / G.shape[0], dtype=G.dtype, device=G.device)
    z, t = lam.clone(), 1.0
    for _ in range(max_iter):
        new = _project_simplex(z - (Q @ z) / L)
        t_new = 0.5 * (1 + (1 + 4 * t * t) ** 0.5)
        z = new + ((t - 1) / t_new) * (new - lam)
        done = float((new - lam).abs().max()) <= tol
        lam, t = new, t_new
        if done:
            break
    return G.T @ lam, lam


def _identity_gradient(points: torch.Tensor) -> torch.Tensor:
    return points  # the gradient of |x|^2 / 2: the example problem of the declaration


@accepts(grad_fn=Function(), x=Tensor("d", degenerate=("zeros",)), delta=Real(gt=0), n_samples=Int(ge=1),
         generator=Generator(), example=lambda ctx: {"grad_fn": _identity_gradient, "n_samples": 8})
def goldstein_stationarity(grad_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, delta: float, *,
                           n_samples: int = 100, generator: torch.Generator | None = None) -> float:
    """An upper estimate of the :math:`(\\delta, \\epsilon)`-Goldstein stationarity of ``x``: the smallest
    :math:`\\epsilon` for which the convex hull of gradients sampled in the :math:`\\delta`-ball contains a vector
    of norm :math:`\\epsilon`.

    Gradients are taken at ``x`` and at ``n_samples - 1`` points drawn uniformly from the ball; the
    minimum-norm element of their convex hull (:func:`min_norm_in_hull`) lies in the Goldstein
    :math:`\\delta`-subdifferential, so its norm bounds the true :math:`\\epsilon` from above.

    Args:
        grad_fn: (sub)gradients at a batch of points, ``(m, d) -> (m, d)``.
        x: the point, shape ``(d,)``.
        delta: ball radius :math:`\\delta > 0`.
        n_samples: gradients in the hull, ``>= 1``.
        generator: drives the sampled points.
    """
    delta, n_samples = float(delta), int(n_samples)
    d = x.numel()
    w = torch.randn(n_samples - 1, d, generator=generator, dtype=x.dtype)
    w = w / torch.linalg.vector_norm(w, dim=1, keepdim=True)
    r = torch.rand(n_samples - 1, 1, generator=generator, dtype=x.dtype) ** (1.0 / d)
    points = torch.cat([x[None], x + delta * r * w])
    grads = grad_fn(points)
    if not isinstance(grads, torch.Tensor) or grads.shape != points.shape or grads.dtype != x.dtype:
        raise ValueError(f"grad_fn must return a {x.dtype} tensor of shape {tuple(points.shape)} (one gradient per "
                         f"point), got {tuple(grads.shape) if isinstance(grads, torch.Tensor) else type(grads).__name__}")
    return float(torch.linalg.vector_norm(min_norm_in_hull(grads)[0]))


def _uniform(seed: int, n: int) -> float:
    # One scalar s_n per step, shared by every parameter and group, reproducible from (seed, n) alone so that a
    # state_dict round trip continues with the same draws.
    g = torch.Generator().manual_seed((seed * 1_000_003 + n) % (2**63 - 1))
    return float(torch.rand(1, generator=g, dtype=torch.float64))


class O2NC(CheckedOptimizer):
    r"""O2NC: nonconvex optimisation by feeding the gradients, taken at random points of each step's segment, to
    an online learner that chooses the steps.

    References: Optimal Stochastic Non-smooth Non-convex Optimization through Online-to-Non-convex Conversion
    (Cutkosky, Mehta, Orabona), 2023 (Algorithm 1, online-to-non-convex conversion, with projected online
    gradient descent as the online learner).

    With :math:`x_0` the initial parameters and :math:`\Delta_1 = 0`, step :math:`n = 1, 2, \dots`:

    .. math::
        x_n &= x_{n-1} + \Delta_n, \qquad s_n \sim U[0, 1], \qquad w_n = x_{n-1} + s_n \Delta_n, \\
        g_n &= \nabla F(w_n; z_n), \\
        \Delta_{n+1} &= \Pi_{\|\Delta\| \le D}\bigl(\Delta_n - \eta\, g_n\bigr)

    (the online learner plays :math:`\Delta_{n+1}` against the linear losses
    :math:`\ell_n(\Delta) = \langle g_n, \Delta\rangle`). The parameters hold :math:`w_n`, the point where the
    next gradient must be taken; the anchor :math:`x_n` lives in the state. The iterates are grouped into
    windows of :math:`T` steps, each of which stays inside a ball of radius :math:`TD`; the paper's output is
    the average :math:`\bar w` of a window's :math:`w_n`, a :math:`(\delta, \epsilon)`-stationary candidate with
    :math:`\delta = TD` (the analysis sets :math:`D = \delta / T` and :math:`\eta \propto D/(G\sqrt{T})`).
    :meth:`window_average` returns the last completed window's average.

    Symbols: :math:`\eta` = ``lr``, :math:`D` = ``D``, :math:`T` = ``window``. The projection radius applies to
    the norm of :math:`\Delta` over all parameters of a group (one group: the paper's global ball). The scalar
    :math:`s_n` is shared by all parameters and drawn from a generator seeded by ``(seed, n)``.

    Unlike SGD, ``lr = 0`` does not freeze the parameters: the last step :math:`\Delta` keeps being applied
    (the online learner stops learning, it does not stop playing). Set ``D = 0`` to freeze a group.

    Args:
        params: parameters or parameter-group dicts (``lr``, ``D``, ``window`` may be set per group).
        lr: online-gradient-descent step :math:`\eta \ge 0`.
        D: step radius :math:`D \ge 0`.
        window: averaging window :math:`T \ge 1`.
        seed: seed of the random segment points :math:`s_n`.
        maximize: ascend the objective instead.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).

    State per parameter: ``step``, ``anchor`` (:math:`x_n`), ``delta`` (:math:`\Delta_{n+1}`), ``window_sum``
    (sum of the current window's :math:`w`), ``window_avg`` (last completed window's average; the initial
    parameters until one completes).

    Example:
        >>> import torch
        >>> from paperzoo.optim import O2NC
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = O2NC([w], lr=0.01, D=0.05, window=10)
        >>> for _ in range(500):
        ...     opt.zero_grad()
        ...     w.abs().sum().backward()  # nonsmooth
        ...     opt.step()
        >>> bool(torch.stack(opt.window_average()).abs().max() < 0.2)
        True
    """

    @accepts(lr=COMMON_HYPERPARAMETERS["lr"], D=Real(ge=0), window=Int(ge=1), seed=Int(ge=0),
             maximize=COMMON_HYPERPARAMETERS["maximize"], nonfinite=COMMON_HYPERPARAMETERS["nonfinite"])
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3, D: float = 1e-2,
                 window: int = 100, *, seed: int = 0, maximize: bool = False, nonfinite: str = "raise"):
        super().__init__(params, dict(lr=lr, D=D, window=window, seed=seed, maximize=maximize, nonfinite=nonfinite))

    def _check_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative("lr", group["lr"])
        group["D"] = check_nonnegative("D", group["D"])
        group["window"] = check_int("window", group["window"], low=1)
        group["seed"] = check_int("seed", group["seed"], low=0)

    def window_average(self) -> list[torch.Tensor]:
        """The last completed window's average :math:`\\bar w` for every parameter (in ``param_groups`` order;
        the parameter itself for parameters without state)."""
        return [self.state[p]["window_avg"].clone() if p in self.state else p.detach().clone()
                for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One conversion step from the gradients at the current parameters (:math:`w_n`)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._skip_for_nonfinite():
            return loss
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            lr, D, T = group["lr"], group["D"], group["window"]
            for p in params:
                check_dense_grad("O2NC", p.grad)
            for p in params:
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["anchor"] = p.detach().clone()
                    state["delta"] = torch.zeros_like(p)
                    state["window_sum"] = torch.zeros_like(p)
                    state["window_avg"] = p.detach().clone()
                g = -p.grad if group["maximize"] else p.grad
                state["window_sum"].add_(p)
                state["anchor"].add_(state["delta"])
                state["delta"].add_(g, alpha=-lr)
            deltas = [self.state[p]["delta"] for p in params]
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in deltas]))
            if float(norm) > D:
                scale = D / float(norm)
                for t in deltas:
                    t.mul_(scale)
            n = int(self.state[params[0]]["step"]) + 1
            s_next = _uniform(group["seed"], n + 1)
            for p in params:
                state = self.state[p]
                state["step"] += 1
                if n % T == 0:
                    torch.div(state["window_sum"], T, out=state["window_avg"])
                    state["window_sum"].zero_()
                p.copy_(state["anchor"]).add_(state["delta"], alpha=s_next)
        return loss
