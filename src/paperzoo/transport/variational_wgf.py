"""Variational JKO scheme: Wasserstein gradient flow of a free energy on particles, with the entropy term in its
variational (sample-only) form.

References: Variational Wasserstein gradient flow, 2022 (Fan, Zhang, Taghvaei, Chen; ICML).

The JKO (backward Euler) step of step size ``tau`` for the free energy

    F(P) = E_P[V(X)] + int rho log rho dx                         (Fokker-Planck: d rho/dt = div(rho grad V) + Lap rho)

is realised by a map ``T`` pushing the current particles ``x ~ P_k``:

    T_k = argmin_T  1/(2 tau) E_{P_k} ||x - T(x)||^2 + F(T # P_k),      P_{k+1} = T_k # P_k.

The density-dependent part is never evaluated: with a reference Gaussian ``Gamma`` one can sample from and whose
log-density ``log gamma`` is known, the negative entropy of ``P`` is written as a maximum over a positive critic
``h`` (the Fenchel dual of the KL divergence):

    int rho log rho = E_P[log gamma(X)] + KL(P || Gamma),
    KL(P || Gamma)  = sup_{h > 0}  E_P[log h(X)] - E_Gamma[h(Z)] + 1        (attained at h = rho / gamma),

so each JKO step is a min over the map and a max over the critic, using samples of ``T # P_k`` and of
``Gamma`` only. As in the authors' code, ``Gamma_k`` is the Gaussian with the mean and covariance of the
current particles ``P_k``; every outer (map) update is preceded by ``n_inner`` critic updates on the same
mini-batch (the paper's inner loop, default 3), both with Adam at ``lr = 5e-3``, the map and critic
warm-started from the previous JKO step, ``tau = 0.05``.

:func:`density_jko` is the density-based baseline (JKO-ICNN of Mokrov et al., 2021, the scheme the paper
improves on): same map, same outer loop, but the entropy of ``T # P_k`` enters through the change of variables
``int rho_{k+1} log rho_{k+1} = const - E_{P_k} log |det grad T(x)|``, which needs the (d, d) Jacobian of ``T``
at every particle of the batch.

Deviations from the paper: the map ``T`` is any ``torch.nn.Module`` from ``map_factory``; the default is a
residual MLP ``x + MLP(x)`` (the authors' code uses residual networks for its Gaussian experiments), not the
gradient of an ICNN. Particles are a fixed (n, d) cloud, mini-batches are drawn from it with ``generator``. The
reference ``Gamma_0`` is fitted to the initial particles (the code starts from a fixed ``N(0, 1.5 I)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from paperzoo.core.accepts import Function, Generator, Int, Real, Tensor, accepts
from paperzoo.core.checks import check_int, check_positive, check_tensor

__all__ = [
    "kl_variational",
    "entropy_variational",
    "PositiveCritic",
    "ResidualMap",
    "JKOResult",
    "variational_jko",
    "density_jko",
]


def kl_variational(h_p: torch.Tensor, h_ref: torch.Tensor, *, floor: float = 1e-10) -> torch.Tensor:
    """Variational lower bound of ``KL(P || Gamma)`` at a positive critic ``h``:

    ``E_P[log h(X)] - E_Gamma[h(Z)] + 1``; equal to the KL when ``h = dP/dGamma``.

    Args:
        h_p: (n,) critic values at samples of ``P`` (positive).
        h_ref: (m,) critic values at samples of ``Gamma``.
        floor: values below ``floor`` are clamped inside the logarithm (the authors' code uses 1e-10).

    Example:
        >>> x = torch.randn(100_000, dtype=torch.float64) + 1.0           # P = N(1, 1), Gamma = N(0, 1)
        >>> z = torch.randn(100_000, dtype=torch.float64)
        >>> ratio = lambda u: torch.exp(u - 0.5)                           # dP/dGamma
        >>> round(float(kl_variational(ratio(x), ratio(z))), 1)            # KL = 0.5
        0.5
    """
    check_tensor("h_p", h_p, ndim=1, finite=False)
    check_tensor("h_ref", h_ref, ndim=1, finite=False)
    floor = check_positive("floor", floor)
    return torch.log(h_p.clamp_min(floor)).mean() - h_ref.mean() + 1.0


def entropy_variational(h_p: torch.Tensor, h_ref: torch.Tensor, log_ref_p: torch.Tensor, *,
                        floor: float = 1e-10) -> torch.Tensor:
    """Variational estimate of the negative entropy ``int rho log rho`` of ``P``:

    ``E_P[log gamma(X)] + E_P[log h(X)] - E_Gamma[h(Z)] + 1``, exact at ``h = rho / gamma``, a lower bound
    for any other positive ``h``.

    Args:
        h_p: (n,) critic values at samples ``X`` of ``P``.
        h_ref: (m,) critic values at samples ``Z`` of ``Gamma``.
        log_ref_p: (n,) reference log-density ``log gamma(X)`` at the samples of ``P``.
        floor: clamp inside the logarithm.
    """
    check_tensor("log_ref_p", log_ref_p, ndim=1)
    if log_ref_p.shape != h_p.shape:
        raise ValueError(f"log_ref_p must have the shape of h_p {tuple(h_p.shape)}, got {tuple(log_ref_p.shape)}")
    return log_ref_p.mean() + kl_variational(h_p, h_ref, floor=floor)


class PositiveCritic(nn.Module):
    """The paper's critic ``h(x) = (MLP(x))^2 > 0``: ``d -> width -> width -> 1`` with PReLU activations
    (also after the last layer), squared so that ``log h`` is defined (the authors' ``quadr`` option).
    Input (n, d), output (n,)."""

    def __init__(self, dim: int, width: int = 64):
        super().__init__()
        check_int("dim", dim, low=1)
        check_int("width", width, low=1)
        self.net = nn.Sequential(nn.Linear(dim, width), nn.PReLU(), nn.Linear(width, width), nn.PReLU(),
                                 nn.Linear(width, 1), nn.PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1) ** 2


class ResidualMap(nn.Module):
    """The default JKO map ``T(x) = x + MLP(x)`` (``d -> width -> width -> d``, PReLU), last layer zero-initialised
    so that the first JKO step starts from the identity. Input and output (n, d)."""

    def __init__(self, dim: int, width: int = 64):
        super().__init__()
        check_int("dim", dim, low=1)
        check_int("width", width, low=1)
        self.net = nn.Sequential(nn.Linear(dim, width), nn.PReLU(), nn.Linear(width, width), nn.PReLU(),
                                 nn.Linear(width, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class JKOResult(NamedTuple):
    """Output of :func:`variational_jko` / :func:`density_jko`.

    Attributes:
        x: (n, d) particles after the last JKO step.
        trajectory: (n_steps + 1, n, d) particles after each step (index 0: the input).
        times: (n_steps + 1,) physical times ``k * step_size``.
        n_steps: JKO steps taken.
        objective_history: (n_steps, n_iter) the map objective at every outer iteration (CPU, float64).
        entropy_history: (n_steps,) the estimate of ``int rho_{k+1} log rho_{k+1}`` (variational: the critic's
            value on the last batch); ``None`` for :func:`density_jko`, which knows it up to a constant only.
    """

    x: torch.Tensor
    trajectory: torch.Tensor
    times: torch.Tensor
    n_steps: int
    objective_history: torch.Tensor
    entropy_history: torch.Tensor | None


def _module(factory_name: str, factory, d: int, x: torch.Tensor) -> nn.Module:
    net = factory(d)
    if not isinstance(net, nn.Module):
        raise TypeError(f"{factory_name} must return a torch.nn.Module, got {type(net).__name__}")
    return net.to(device=x.device, dtype=x.dtype)


def _check_output(name: str, out, shape: tuple, what: str) -> None:
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name} must map (b, d) points to {what} of shape {shape}, got {got}")


def _default_optimizer(lr: float) -> Callable:
    return lambda params: torch.optim.Adam(params, lr=lr)


def _raise_nan(where: str, step: int, it: int) -> None:
    raise FloatingPointError(
        f"{where} became NaN or inf at JKO step {step}, iteration {it}; decrease lr or increase step_size")


def _run_jko(x, potential, *, step_size, n_steps, n_iter, batch_size, lr, map_factory, optimizer, generator,
             entropy_hook):
    """The JKO driver shared by both schemes; ``entropy_hook`` supplies the entropy term (the only difference).

    ``entropy_hook.begin(x_k)`` is called at the start of every JKO step, ``entropy_hook.inner(xb, Tx)`` before
    every map update (critic steps), ``entropy_hook.term(xb, T, Tx)`` returns the differentiable entropy term.
    """
    n, d = x.shape
    batch_size = min(batch_size, n)
    make_opt = optimizer if optimizer is not None else _default_optimizer(lr)
    T = _module("map_factory", map_factory, d, x) if map_factory is not None else ResidualMap(d).to(x.device, x.dtype)
    opt_T = make_opt(T.parameters())
    traj = [x.detach().clone()]
    obj_hist = torch.zeros(n_steps, n_iter, dtype=torch.float64)
    ent_hist = torch.full((n_steps,), float("nan"), dtype=torch.float64) if entropy_hook.reports else None
    xk = x.detach()
    for k in range(n_steps):
        entropy_hook.begin(xk)
        for it in range(n_iter):
            idx = torch.randint(0, n, (batch_size,), generator=generator).to(x.device)
            xb = xk[idx]
            with torch.no_grad():
                Tx_fixed = T(xb)
            entropy_hook.inner(xb, Tx_fixed)
            Tx = T(xb)
            _check_output("the map of map_factory", Tx, tuple(xb.shape), "points")
            energy = potential(Tx)
            _check_output("potential", energy, (xb.shape[0],), "energies")
            # JKO objective: transport cost / (2 tau) + potential energy + entropy (variational or exact)
            obj = ((Tx - xb) ** 2).sum(-1).mean() / (2 * step_size) + energy.mean() + entropy_hook.term(xb, T, Tx)
            if not torch.isfinite(obj):
                _raise_nan("the JKO objective", k, it)
            opt_T.zero_grad()
            obj.backward()
            opt_T.step()
            obj_hist[k, it] = float(obj.detach())
        with torch.no_grad():
            xk = T(xk)
        if not bool(torch.isfinite(xk).all()):
            _raise_nan("the particles", k, n_iter)
        if ent_hist is not None:
            ent_hist[k] = entropy_hook.last_value
        traj.append(xk.clone())
    times = torch.arange(n_steps + 1, dtype=torch.float64) * step_size
    return JKOResult(xk, torch.stack(traj), times, n_steps, obj_hist, ent_hist)


class _VariationalEntropy:
    """Entropy through the critic: ``E[log gamma_k(Tx)] + E[log h(Tx)] - E_{Gamma_k}[h] + 1``."""

    reports = True

    def __init__(self, d, x, critic_factory, make_opt, n_inner, ref_jitter, floor, generator):
        self.h = (_module("critic_factory", critic_factory, d, x) if critic_factory is not None
                  else PositiveCritic(d).to(x.device, x.dtype))
        self.opt = make_opt(self.h.parameters())
        self.n_inner, self.jitter, self.floor, self.gen = n_inner, ref_jitter, floor, generator
        self.last_value = float("nan")

    def begin(self, xk):
        mean, d = xk.mean(0), xk.shape[1]
        # one particle has no spread: its covariance is 0 (torch.cov's unbiased estimate would divide by 0)
        cov = torch.cov(xk.T).reshape(d, d) if xk.shape[0] > 1 else xk.new_zeros((d, d))
        cov = cov + self.jitter * torch.eye(d, dtype=xk.dtype, device=xk.device)
        chol, info = torch.linalg.cholesky_ex(cov)
        if int(info) != 0 or not bool(torch.isfinite(chol).all()):
            raise ValueError(f"x: the particles' covariance plus ref_jitter={self.jitter!r} is not positive definite "
                             f"(the particles lie on a lower-dimensional set), so the reference Gaussian is "
                             f"degenerate; increase ref_jitter")
        self.ref = torch.distributions.MultivariateNormal(mean, scale_tril=chol)
        self.chol = chol
        self.mean = mean

    def _ref_sample(self, m):
        xi = torch.randn(m, self.mean.shape[0], generator=self.gen, dtype=self.mean.dtype).to(self.mean.device)
        return self.mean + xi @ self.chol.T

    def inner(self, xb, Tx):
        # the critic ascends the variational bound on the current pushforward; the map is frozen here
        for _ in range(self.n_inner):
            z = self._ref_sample(xb.shape[0])
            h_p = self.h(Tx)
            _check_output("the critic of critic_factory", h_p, (Tx.shape[0],), "values")
            loss = -kl_variational(h_p, self.h(z), floor=self.floor)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        self.z = self._ref_sample(xb.shape[0])

    def term(self, xb, T, Tx):
        # only E_P[log h(Tx)] + E_P[log gamma(Tx)] depend on T; E_Gamma[h] is reported, not differentiated
        for p in self.h.parameters():
            p.requires_grad_(False)
        try:
            val = self.ref.log_prob(Tx).mean() + torch.log(self.h(Tx).clamp_min(self.floor)).mean()
            with torch.no_grad():
                self.last_value = float(val - self.h(self.z).mean() + 1.0)
        finally:
            for p in self.h.parameters():
                p.requires_grad_(True)
        return val


class _LogDetEntropy:
    """Entropy by change of variables: ``-E log|det grad T(x)|`` (plus a constant independent of ``T``)."""

    last_value = float("nan")
    reports = False  # the entropy is known up to a constant only

    def begin(self, xk):
        pass

    def inner(self, xb, Tx):
        pass

    def term(self, xb, T, Tx):
        # sample i's output depends on sample i's input only, so d backward passes give all (b, d, d) Jacobians
        xr = xb.detach().requires_grad_(True)
        Tr = T(xr)
        rows = [torch.autograd.grad(Tr[:, i].sum(), xr, create_graph=True)[0] for i in range(xb.shape[1])]
        return -torch.linalg.slogdet(torch.stack(rows, dim=1))[1].mean()


def _example_flow(ctx) -> dict:
    return {"x": torch.randn(16, 2, generator=ctx.generator, dtype=ctx.dtype) + 1.0,
            "potential": lambda y: 0.5 * y.square().sum(-1), "n_steps": 1, "n_iter": 3, "batch_size": 8}


_FLOW = dict(x=Tensor("n", "d", degenerate=("coincident",)), potential=Function(), step_size=Real(gt=0),
             n_steps=Int(ge=1), n_iter=Int(ge=1), batch_size=Int(ge=1), lr=Real(gt=0),
             map_factory=Function(optional=True), optimizer=Function(optional=True), generator=Generator(),
             example=_example_flow)


@accepts(**_FLOW, n_inner=Int(ge=1), ref_jitter=Real(ge=0), floor=Real(gt=0), critic_factory=Function(optional=True))
def variational_jko(x: torch.Tensor, potential: Callable[[torch.Tensor], torch.Tensor], *,
                    step_size: float = 0.05, n_steps: int = 10, n_iter: int = 200, n_inner: int = 3,
                    batch_size: int = 256, lr: float = 5e-3, ref_jitter: float = 1e-6, floor: float = 1e-10,
                    map_factory: Callable[[int], nn.Module] | None = None,
                    critic_factory: Callable[[int], nn.Module] | None = None,
                    optimizer: Callable | None = None,
                    generator: torch.Generator | None = None) -> JKOResult:
    """Variational JKO scheme for the Fokker-Planck free energy ``E_P[V] + int rho log rho`` (the paper's primal-dual algorithm).

    Each of the ``n_steps`` JKO steps runs ``n_iter`` outer iterations; each outer iteration draws a mini-batch
    ``x_b`` of ``batch_size`` particles, takes ``n_inner`` ascent steps of the critic ``h`` on
    ``E[log h(T x_b)] - E_{Gamma_k}[h(z)]`` (fresh ``z ~ Gamma_k`` each), then one descent step of the map on

        1/(2 tau) E ||x_b - T(x_b)||^2 + E V(T x_b) + E log gamma_k(T x_b) + E log h(T x_b).

    Args:
        x: (n, d) initial particles (float32 or float64, any device).
        potential: ``V``, maps (b, d) to (b,); differentiable. The flow converges to ``exp(-V) / Z``.
        step_size: ``tau``, the JKO step (paper: 0.05); the time after ``k`` steps is ``k tau``.
        n_steps: JKO steps.
        n_iter: outer (map) iterations per JKO step.
        n_inner: critic iterations per outer iteration (paper: 3).
        batch_size: particles per mini-batch (capped at ``n``).
        lr: Adam learning rate of map and critic (paper: 5e-3); ignored when ``optimizer`` is given.
        ref_jitter: added to the diagonal of the reference covariance.
        floor: clamp of ``h`` inside logarithms.
        map_factory: ``dim -> nn.Module`` mapping (b, d) to (b, d); default :class:`ResidualMap`.
        critic_factory: ``dim -> nn.Module`` mapping (b, d) to positive (b,); default :class:`PositiveCritic`.
        optimizer: ``params -> torch.optim.Optimizer`` used for both networks; default Adam(lr).
        generator: CPU generator for mini-batches and reference samples (networks use torch's global RNG at
            construction: seed it, or pass factories, for reproducible runs).

    Returns:
        :class:`JKOResult`. Raises ``FloatingPointError`` when the objective or the particles become non-finite.

    Example:
        >>> g = torch.Generator().manual_seed(0); _ = torch.manual_seed(0)
        >>> x0 = torch.randn(512, 2, generator=g) + 2.0
        >>> res = variational_jko(x0, lambda y: 0.5 * (y ** 2).sum(-1), n_steps=2, n_iter=20, generator=g)
        >>> res.trajectory.shape
        torch.Size([3, 512, 2])
    """
    make_opt = optimizer if optimizer is not None else _default_optimizer(lr)
    hook = _VariationalEntropy(x.shape[1], x, critic_factory, make_opt, n_inner, ref_jitter, floor, generator)
    return _run_jko(x, potential, step_size=step_size, n_steps=n_steps, n_iter=n_iter, batch_size=batch_size,
                    lr=lr, map_factory=map_factory, optimizer=optimizer, generator=generator, entropy_hook=hook)


@accepts(**_FLOW)
def density_jko(x: torch.Tensor, potential: Callable[[torch.Tensor], torch.Tensor], *,
                step_size: float = 0.05, n_steps: int = 10, n_iter: int = 200, batch_size: int = 256,
                lr: float = 5e-3, map_factory: Callable[[int], nn.Module] | None = None,
                optimizer: Callable | None = None, generator: torch.Generator | None = None) -> JKOResult:
    """Density-based JKO scheme (the baseline of the paper, after Mokrov et al., 2021): the entropy of ``T # P_k``
    by change of variables, ``-E_{P_k} log |det grad T(x)|`` up to a constant, with the exact (d, d) Jacobian at
    every particle of the batch (``d`` reverse-mode passes), so one map step costs ``O(d)`` backward passes.

    Same arguments and schedule as :func:`variational_jko`, without the critic. The map must be injective for
    the formula to hold (the default residual map starts at the identity and stays close to it for small tau).

    Example:
        >>> _ = torch.manual_seed(0); g = torch.Generator().manual_seed(0)
        >>> res = density_jko(torch.randn(256, 2, generator=g), lambda y: 0.5 * (y ** 2).sum(-1),
        ...                   n_steps=1, n_iter=10, generator=g)
        >>> res.x.shape
        torch.Size([256, 2])
    """
    return _run_jko(x, potential, step_size=step_size, n_steps=n_steps, n_iter=n_iter, batch_size=batch_size,
                    lr=lr, map_factory=map_factory, optimizer=optimizer, generator=generator,
                    entropy_hook=_LogDetEntropy())
