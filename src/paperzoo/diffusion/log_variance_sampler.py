"""Log-variance sampler: a learned controlled diffusion that samples an unnormalised density, trained with the
variance of the log Radon-Nikodym derivative between path measures instead of the reverse KL divergence.

References: Improved sampling via learned diffusions, 2024 (Richter and Berner, ICLR 2024).

The paper views diffusion-based samplers (PIS, DIS, DDS, bridges) as the problem of matching two measures on path
space and replaces the reverse-KL objective by the log-variance divergence. This module implements the
Path Integral Sampler (Schrödinger-Föllmer) setting, the paper's simplest case: a Brownian reference started at a
point (the prior is a Dirac), and a control :math:`u_\\theta(x, t)` (the ``control`` network) that steers it,

.. math::
    dX_t = \\sigma u(X_t, t)\\,dt + \\sigma\\,dW_t, \\qquad X_0 = x_0, \\quad t \\in [0, T],

with ``sigma`` :math:`= \\sigma`, ``horizon`` :math:`= T`. Without control, :math:`X_T \\sim
p_{ref} = N(x_0, \\sigma^2 T I)`; the target path measure :math:`\\mathbb Q` is the reference reweighted at the
end by :math:`\\rho / (Z p_{ref})`, with ``log_density`` :math:`= \\log\\rho` unnormalised and :math:`Z = \\int\\rho`.
Its drift-optimal control transports :math:`\\delta_{x_0}` exactly to :math:`\\rho / Z`.

Along trajectories simulated with a *behaviour* control :math:`v` (Girsanov),

.. math::
    \\log\\frac{d\\mathbb P^{u}}{d\\mathbb Q}(X) - \\log Z \\;=\\; R_u(X) \\;=\\;
    \\int_0^T u\\cdot\\big(v - \\tfrac12 u\\big)\\,dt + \\int_0^T u\\cdot dW_t + \\log p_{ref}(X_T)
    - \\log\\rho(X_T)

(the paper's Girsanov expression of the log RND; ``path_log_rnd`` returns :math:`R_u`). At the optimum
:math:`R_{u^*} = -\\log Z` for every path, so

* the reverse KL loss (PIS) is :math:`\\mathbb E_{X\\sim\\mathbb P^u}[R_u]` with :math:`v = u` on-policy and the
  gradient taken through the simulated trajectories; its Itô term has mean zero and is dropped in training, as in
  the official code (:func:`reverse_kl_loss`);
* the log-variance loss is :math:`\\mathrm{Var}_{X\\sim\\mathbb P^{v}}[R_u]` with :math:`v = \\mathrm{sg}(u)`
  (optionally plus exploration noise, an off-policy behaviour): no gradient through the SDE, :math:`\\log Z` cancels
  (:func:`log_variance_loss`).

Both simulate with Euler-Maruyama on the uniform grid :math:`t_k = kT/N`, ``n_steps`` :math:`= N`, the control
evaluated at the left point. :math:`-\\mathbb E[R_u]` is a lower bound of :math:`\\log Z`, and
:math:`\\log\\mathbb E[e^{-R_u}]` with the Itô term kept is its importance-sampling estimate
(:func:`log_normalizer_estimates`).

Default constants are those of the official PIS configuration: :math:`\\sigma = \\sqrt{0.2}`, :math:`T = 5`
(so :math:`\\sigma^2 T = 1`), 100 steps, Adam at ``lr = 1e-3``, batch 512.

Shapes: ``x0`` ``(N, d)`` starting points (PIS: zeros); ``control(x, t)`` maps ``(N, d)`` and a 0-dim time to
``(N, d)``; ``log_density(x)`` maps ``(N, d)`` to ``(N,)``.

Example:
    >>> import math, torch
    >>> from paperzoo.diffusion.log_variance_sampler import ControlMLP, log_variance_loss, sample_pis
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> u = ControlMLP(2, hidden=16)
    >>> log_rho = lambda x: -0.5 * ((x - 1.0) ** 2).sum(-1) / 0.25     # N((1, 1), 0.25 I), unnormalised
    >>> x0 = torch.zeros(64, 2)
    >>> loss = log_variance_loss(u, log_rho, x0, n_steps=20, generator=torch.Generator().manual_seed(0))
    >>> loss.backward()
    >>> sample_pis(u, x0, n_steps=20).shape
    torch.Size([64, 2])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from paperzoo.core.accepts import Choice, Flag, Function, Generator, Int, Module, Real, Tensor, accepts
from paperzoo.diffusion.training import _adam_steps

__all__ = ["SIGMA", "HORIZON", "N_STEPS", "ControlMLP", "path_log_rnd", "reverse_kl_loss", "log_variance_loss",
           "sample_pis", "log_normalizer_estimates", "train_pis_sampler", "gaussian_optimal_control"]

SIGMA = math.sqrt(0.2)   # official PIS config: ScaledBM diff_coeff
HORIZON = 5.0            # official PIS config: terminal_t
N_STEPS = 100            # official train/eval time steps

_SIM = dict(sigma=Real(gt=0), horizon=Real(gt=0), n_steps=Int(ge=1), generator=Generator())


def _zero_control(x, t):
    return torch.zeros_like(x)


def _example(ctx):
    return {"control": _zero_control, "log_density": lambda x: -0.5 * (x - 1.0).square().sum(-1),
            "x0": torch.zeros(6, 2, dtype=ctx.dtype), "n_steps": 4}


class ControlMLP(nn.Module):
    """A small MLP control :math:`u_\\theta(x, t)` for low-dimensional targets, conditioned on :math:`t/T` through
    Fourier features ``sin(k pi t/T), cos(k pi t/T)``, ``k = 1..n_frequencies``.

    Args:
        dim: state dimension :math:`d`; hidden: width; depth: number of hidden layers (SiLU).
        horizon: :math:`T`, to normalise time; n_frequencies: time features per sine/cosine.
        zero_init: start from the reference process (:math:`u \\equiv 0`) by zeroing the output layer.

    ``forward(x, t)``: ``x`` ``(N, d)``, ``t`` a number, 0-dim or ``(N,)`` tensor; returns ``(N, d)``.
    """

    @accepts(dim=Int(ge=1), hidden=Int(ge=1), depth=Int(ge=1), horizon=Real(gt=0), n_frequencies=Int(ge=1),
             zero_init=Flag(), example=lambda ctx: {"dim": 2})
    def __init__(self, dim: int, hidden: int = 64, depth: int = 2, *, horizon: float = HORIZON,
                 n_frequencies: int = 4, zero_init: bool = True):
        super().__init__()
        self.dim, self.horizon = dim, float(horizon)
        self.register_buffer("frequencies", torch.arange(1, n_frequencies + 1, dtype=torch.float32) * math.pi)
        layers, width = [], dim + 2 * n_frequencies
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        out = nn.Linear(width, dim)
        if zero_init:
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
        layers.append(out)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        s = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0]) / self.horizon
        c = s[:, None] * self.frequencies.to(x.dtype)
        return self.net(torch.cat([x, torch.sin(c), torch.cos(c)], dim=-1))


def _log_rnd(control, log_density, x0, sigma, horizon, n_steps, detach, ito, exploration_std, generator):
    """Unchecked kernel: Euler-Maruyama over all paths at once; returns ``(X_T, R_u)``, shapes (N, d), (N,)."""
    n, d = x0.shape
    dt = horizon / n_steps
    sqrt_dt = math.sqrt(dt)
    x = x0
    running = torch.zeros(n, dtype=x0.dtype, device=x0.device)
    for k in range(n_steps):
        t = torch.tensor(k * dt, dtype=x0.dtype, device=x0.device)
        u = control(x, t)
        if k == 0 and tuple(u.shape) != (n, d):
            raise ValueError(f"control must return shape {(n, d)} (the shape of x0), got {tuple(u.shape)}")
        v = u.detach() if detach else u
        if exploration_std > 0:
            v = v + exploration_std * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        dw = sqrt_dt * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        running = running + (u * (v - 0.5 * u)).sum(-1) * dt
        if ito:
            running = running + (u * dw).sum(-1)
        x = x + sigma * v * dt + sigma * dw
    tau = sigma**2 * horizon
    log_ref = -0.5 * (x - x0).square().sum(-1) / tau - 0.5 * d * math.log(2 * math.pi * tau)
    log_rho = log_density(x)
    if tuple(log_rho.shape) != (n,):
        raise ValueError(f"log_density must return shape {(n,)} (one value per path), got {tuple(log_rho.shape)}")
    return x, running + log_ref - log_rho


@accepts(control=Function(), log_density=Function(), x0=Tensor("N", "d", degenerate=("coincident",)),
         detach=Flag(), ito=Flag(), exploration_std=Real(ge=0), example=_example, **_SIM)
def path_log_rnd(control: Callable, log_density: Callable, x0: torch.Tensor, *, sigma: float = SIGMA,
            horizon: float = HORIZON, n_steps: int = N_STEPS, detach: bool = False, ito: bool = True,
            exploration_std: float = 0.0, generator: torch.Generator | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Simulate ``(N,)`` paths and return ``(X_T, R_u)``: the end points ``(N, d)`` and the log RND
    :math:`R_u = \\log d\\mathbb P^u/d\\mathbb Q - \\log Z` ``(N,)`` along them (module docstring).

    ``detach``: behaviour :math:`v = \\mathrm{sg}(u)` (no gradient through the SDE) instead of :math:`v = u`;
    ``exploration_std``: Gaussian noise of this std added to :math:`v` at every step (off-policy behaviour);
    ``ito``: keep the stochastic integral :math:`\\int u\\cdot dW` (needed for :math:`R_u` to be pathwise constant
    at the optimum; its mean is zero on-policy).
    """
    return _log_rnd(control, log_density, x0, sigma, horizon, n_steps, detach, ito, exploration_std, generator)


@accepts(control=Function(), log_density=Function(), x0=Tensor("N", "d", degenerate=("coincident",)),
         example=_example, **_SIM)
def reverse_kl_loss(control: Callable, log_density: Callable, x0: torch.Tensor, *, sigma: float = SIGMA,
            horizon: float = HORIZON, n_steps: int = N_STEPS, generator: torch.Generator | None = None
            ) -> torch.Tensor:
    """Reverse KL loss (PIS): :math:`\\mathbb E_{\\mathbb P^u}[R_u] = D_{KL}(\\mathbb P^u \\| \\mathbb Q) - \\log Z`,
    on-policy, gradient through the trajectories, Itô term dropped (zero mean). 0-dim."""
    return _log_rnd(control, log_density, x0, sigma, horizon, n_steps, False, False, 0.0, generator)[1].mean()


@accepts(control=Function(), log_density=Function(), x0=Tensor("N", "d", degenerate=("coincident",)),
         exploration_std=Real(ge=0), example=lambda ctx: {**_example(ctx), "x0": torch.zeros(6, 2, dtype=ctx.dtype)},
         **_SIM)
def log_variance_loss(control: Callable, log_density: Callable, x0: torch.Tensor, *, sigma: float = SIGMA,
                      horizon: float = HORIZON, n_steps: int = N_STEPS, exploration_std: float = 0.0,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Log-variance loss: the sample variance (unbiased, over the ``N >= 2`` paths) of :math:`R_u` along paths of
    the detached behaviour :math:`v = \\mathrm{sg}(u)` (+ ``exploration_std`` noise). 0-dim; invariant to
    adding a constant to ``log_density``."""
    if x0.shape[0] < 2:
        raise ValueError(f"x0 must hold at least 2 paths for a variance, got {x0.shape[0]}")
    r = _log_rnd(control, log_density, x0, sigma, horizon, n_steps, True, True, exploration_std, generator)[1]
    return r.var()


@accepts(control=Function(), x0=Tensor("N", "d", degenerate=("coincident",)),
         example=lambda ctx: {"control": _zero_control, "x0": torch.zeros(6, 2, dtype=ctx.dtype), "n_steps": 4},
         **_SIM)
def sample_pis(control: Callable, x0: torch.Tensor, *, sigma: float = SIGMA, horizon: float = HORIZON,
               n_steps: int = N_STEPS, generator: torch.Generator | None = None) -> torch.Tensor:
    """Samples ``X_T`` ``(N, d)`` of the controlled SDE (Euler-Maruyama, no gradient)."""
    with torch.no_grad():
        return _log_rnd(control, lambda x: torch.zeros(x.shape[0], dtype=x.dtype, device=x.device), x0, sigma,
                        horizon, n_steps, True, False, 0.0, generator)[0]


@accepts(control=Function(), log_density=Function(), x0=Tensor("N", "d", degenerate=("coincident",)),
         example=_example, **_SIM)
def log_normalizer_estimates(control: Callable, log_density: Callable, x0: torch.Tensor, *, sigma: float = SIGMA,
                             horizon: float = HORIZON, n_steps: int = N_STEPS,
                             generator: torch.Generator | None = None) -> tuple[float, float]:
    """``(lower_bound, importance_sampling)`` estimates of :math:`\\log Z` from on-policy paths with the Itô
    term: :math:`-\\overline{R_u}` and :math:`\\log \\overline{e^{-R_u}}`."""
    with torch.no_grad():
        r = _log_rnd(control, log_density, x0, sigma, horizon, n_steps, True, True, 0.0, generator)[1]
    return float(-r.mean()), float(torch.logsumexp(-r, 0) - math.log(r.shape[0]))


@accepts(control=Module(), log_density=Function(), dim=Int(ge=1), loss=Choice("lv", "kl"), steps=Int(ge=0),
         batch_size=Int(ge=2), lr=Real(gt=0), exploration_std=Real(ge=0), callback=Function(optional=True),
         example=lambda ctx: {"control": ControlMLP(2, 8, 1).to(ctx.dtype),
                              "log_density": lambda x: -0.5 * (x - 1.0).square().sum(-1), "dim": 2, "steps": 2,
                              "batch_size": 8, "n_steps": 4}, **_SIM)
def train_pis_sampler(control: nn.Module, log_density: Callable, dim: int, *, loss: str = "lv", steps: int,
                      batch_size: int = 512, lr: float = 1e-3, sigma: float = SIGMA, horizon: float = HORIZON,
                      n_steps: int = N_STEPS, exploration_std: float = 0.0, generator: torch.Generator | None = None,
                      callback: Callable | None = None) -> torch.Tensor:
    """Adam on :func:`log_variance_loss` (``loss="lv"``) or :func:`reverse_kl_loss` (``"kl"``) with fresh paths from
    ``x0 = 0`` each step (PIS); trains ``control`` in place, returns the loss history ``(steps,)`` (float64).
    ``callback(step, control, loss)`` after each step. The paths' dtype is the control's parameters' dtype."""
    if loss == "kl" and exploration_std > 0:
        raise ValueError(f"exploration_std must be 0 for loss='kl' (on-policy), got {exploration_std}")
    dtype = next(control.parameters()).dtype
    device = next(control.parameters()).device
    x0 = torch.zeros(batch_size, dim, dtype=dtype, device=device)
    with torch.no_grad():
        try:
            out = control(x0[:2], torch.zeros((), dtype=dtype, device=device))
        except RuntimeError as err:
            raise ValueError(f"dim must be the control's state dimension; control({(2, dim)} states) failed: {err}"
                             ) from None
    if tuple(out.shape) != (2, dim):
        raise ValueError(f"dim must be the control's state dimension; it returned shape {tuple(out.shape)} for "
                         f"states of shape {(2, dim)}")

    def batch_loss(step):
        if loss == "kl":
            return _log_rnd(control, log_density, x0, sigma, horizon, n_steps, False, False, 0.0, generator)[1].mean()
        return _log_rnd(control, log_density, x0, sigma, horizon, n_steps, True, True, exploration_std,
                        generator)[1].var()

    return _adam_steps(control, batch_loss, steps, lr, f"train_pis_sampler(loss={loss!r})", callback)


@accepts(mean=Tensor("d"), std=Real(gt=0), sigma=Real(gt=0), horizon=Real(gt=0),
         example=lambda ctx: {"mean": torch.ones(2, dtype=ctx.dtype), "std": 0.5})
def gaussian_optimal_control(mean: torch.Tensor, std: float, *, sigma: float = SIGMA, horizon: float = HORIZON
                             ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The optimal (Föllmer) control for the target :math:`N(m, s^2 I)` from :math:`x_0 = 0`, ``std`` :math:`= s`
    with :math:`s^2 < \\sigma^2 T`: with :math:`a = 1/s^2 - 1/(\\sigma^2 T)` and :math:`m' = m / (s^2 a)`,

    .. math:: u^*(x, t) = -\\sigma\\,(x - m') / (1/a + \\sigma^2 (T - t)).

    Returns ``control(x, t)``; a closed-form reference for tests and claims."""
    tau = sigma**2 * horizon
    if std**2 >= tau:
        raise ValueError(f"std must be < sigma * sqrt(horizon) = {math.sqrt(tau):.6g}, got {std}")
    a = 1.0 / std**2 - 1.0 / tau
    m_shift = mean / (std**2 * a)

    def control(x, t):
        return -sigma * (x - m_shift.to(x)) / (1.0 / a + sigma**2 * (horizon - t))

    return control
