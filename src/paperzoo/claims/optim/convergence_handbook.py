"""Claim check for the Handbook of Convergence Theorems (Garrigos and Gower, 2023): its bounds hold, and are tight.

Bounds checked (:mod:`paperzoo.optim.rates`; each docstring re-derives its constant), at every step
:math:`t \\ge 1` (at :math:`t = 0` most of them hold with equality by definition):

1. GD, :math:`\\gamma = 1/L`, convex: :math:`f(x_t) - f_* \\le L\\|x_0 - x_*\\|^2/(2t)`.
2. GD, :math:`\\gamma = 1/L`, :math:`\\mu`-strongly convex: :math:`\\|x_t - x_*\\|^2 \\le (1 - \\mu/L)^t
   \\|x_0 - x_*\\|^2`.
3. GD, :math:`\\gamma = 1/L`, Polyak-Lojasiewicz: :math:`f(x_t) - f_* \\le (1 - \\mu/L)^t (f(x_0) - f_*)`.
4. SGD, one sample per step, :math:`\\gamma = 1/(2L_{\\max})`: :math:`\\mathbb E\\|x_t - x_*\\|^2 \\le (1-\\gamma\\mu)^t
   \\|x_0 - x_*\\|^2 + 2\\gamma\\sigma_*^2/\\mu`.
5. Proximal GD, :math:`\\gamma = 1/L`: :math:`F(x_t) - F_* \\le L\\|x_0 - x_*\\|^2/(2t)`.
6. Proximal SGD, :math:`\\gamma = 1/(2L_{\\max})`: the bound of 4, :math:`\\sigma_*^2` the variance of
   :math:`\\nabla f_i(x_*)`.
7. Heavy ball (momentum), :math:`\\gamma_t = 2\\eta/(t+3)`, :math:`\\beta_t = t/(t+3)`, :math:`\\eta = 1/(4L_{\\max})`:
   :math:`\\mathbb E f(x_t) - f_* \\le \\|x_0 - x_*\\|^2/(\\eta(t+1)) + 2\\eta\\sigma_*^2` (deterministic and
   stochastic).
8. Subgradient method, constant :math:`\\gamma`, :math:`G`-Lipschitz: :math:`\\min_{s<t} f(x_s) - f_* \\le
   (\\|x_0 - x_*\\|^2 + G^2\\gamma^2 t)/(2\\gamma t)`.

Each bound is run on a realistic instance (least squares :math:`n = 200, d = 20, L/\\mu = 10` with residual
noise; its lasso, :math:`\\lambda = 0.1`; rank-deficient least squares :math:`n = 10, d = 20`, PL but not
strongly convex; least absolute deviations :math:`n = 200, d = 10`) and on a *tight* instance, where it is nearly
attained, so that a wrong constant would show:

- 1: the Huber function :math:`L h_\\delta` in 1-D with :math:`\\delta = R/(2T+1)`, Drori and Teboulle's worst case
  for GD: ratio :math:`2T/(4T+2) \\to 1/2` at :math:`t = T`.
- 2: :math:`\\tfrac12 (x_1^2 + x_2^2/100)` started on the flat axis: ratio :math:`(1 - \\mu/L)^t`, 0.99 at
  :math:`t = 1`.
- 3: the rank-deficient least squares started along the eigenvector of its smallest nonzero eigenvalue.
- 4, 6: the realistic instances at :math:`t = 1` (the contraction from a distant start is nearly attained).
- 5: :math:`L h_\\delta(x) + \\lambda|x|` in 1-D, :math:`\\lambda/L = \\delta`, :math:`2\\delta = R/(2T+1)`.
- 7: the Huber function with :math:`\\delta = 10R/(2T+1)` (deterministic heavy ball; ratio about 0.37).
- 8: :math:`G|x|` in 1-D with :math:`R/(G\\gamma) = 14.5`, whose iterates end hopping :math:`\\pm G\\gamma/2` around
  0: ratio :math:`t/(14.5^2 + t)`.

What changed from the first version (review of issue 8): it was ``reproduced`` at run seed 0 by a 0.006 margin
and ``not_reproduced`` at run seed 1, with every bound holding, because of a heuristic lower edge on the fitted GD
contraction (:math:`\\ge (1-\\mu/L)^2 - 0.01`, the slowest direction of a quadratic: not a theorem). That edge is
gone. The bounds are now checked at :math:`t \\ge 1` only, the momentum, subgradient and PL bounds are added, and
the control (a 3.3x-stronger false version of every bound on its tight instance must be violated) makes the
check one that could fail: a check on instances where the bound is loose cannot tell a right constant from a wrong
one. Expectations (4, 6, 7 stochastic) are means over 3 seeds x R runs; a bound counts as violated only if the mean
exceeds it by more than 3 standard errors. Linear-rate bounds are checked while they stay above :math:`10^{-20}`
of their start (below that the measured error sits at float64 roundoff). The handbook's theorem numbers are not
cited: its text could not be read here; the constants were re-derived (see :mod:`paperzoo.optim.rates`).
"""

from __future__ import annotations

import math
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control
from paperzoo.data.smooth_problems import absolute_regression_problem, least_squares_problem
from paperzoo.optim.rates import (gd_convex_bound, gd_pl_bound, gd_strongly_convex_bound, heavy_ball_convex_bound,
                                  run_gradient_method, run_heavy_ball, sgd_strongly_convex_bound, soft_threshold,
                                  subgradient_bound)

N, D, COND, NOISE, LAM = 200, 20, 10.0, 0.5, 0.1
NUM_SEEDS = 3
FALSE_FACTOR = 0.3  # the control's false bounds: every bound multiplied by this
FLOOR = 1e-20  # linear-rate bounds are checked while bound_t >= FLOOR * bound_1
SE_TOL = 3.0  # a stochastic bound is violated only if the mean exceeds it by more than this many SEs
CHUNK = 250  # runs per batch (memory: every step of every run is kept)

_F64 = torch.float64


def _huber(delta: float, L: float = 1.0):
    value = lambda x: L * torch.where(x.abs() <= delta, x * x / 2, delta * x.abs() - delta**2 / 2)  # noqa: E731
    grad = lambda x, t: L * x.clamp(-delta, delta)  # noqa: E731
    return value, grad


def _check(measured: torch.Tensor, bound: torch.Tensor, se: torch.Tensor | None = None, mask=None) -> dict:
    """``measured <= bound`` at every t >= 1 (entries 1..T); stochastic: mean - SE_TOL * SE <= bound."""
    m, b = measured[1:].double(), bound[1:].double()
    s = torch.zeros_like(m) if se is None else se[1:].double()
    keep = torch.ones_like(m, dtype=torch.bool) if mask is None else mask[1:]
    ratio = torch.where(keep, m / b, torch.zeros_like(m))
    worst = int(ratio.argmax())
    lower = m - SE_TOL * s
    holds = bool((torch.isfinite(m) | ~keep).all() and ((lower <= b * (1 + 1e-12)) | ~keep).all())
    false_holds = bool(((lower <= FALSE_FACTOR * b * (1 + 1e-12)) | ~keep).all())
    return dict(holds=holds, max_ratio=float(ratio[worst]), at_step=worst + 1, false_bound_holds=false_holds,
                checked_steps=int(keep.sum()))


def _floor_mask(bound):
    return bound >= FLOOR * bound[1]


def _stochastic(oracle_for, x0, x_star, step, T, seeds, runs, *, prox=None, value=None, heavy_ball=False):
    """Mean and SE over all runs of ||x_t - x*||^2 (or of ``value(x_t)``), shape (T + 1,) each."""
    total, total_sq, count = torch.zeros(T + 1, dtype=_F64), torch.zeros(T + 1, dtype=_F64), 0
    for s in seeds:
        gen = torch.Generator().manual_seed(s)
        for start in range(0, runs, CHUNK):
            k = min(CHUNK, runs - start)
            oracle = oracle_for(gen, k)
            starts = x0.expand(k, -1).clone()
            traj = (run_heavy_ball(oracle, starts, step, T) if heavy_ball
                    else run_gradient_method(oracle, starts, step, T, prox=prox))
            q = value(traj.last) if value is not None else ((traj.last - x_star) ** 2).sum(-1)
            total += q.sum(-1)
            total_sq += (q * q).sum(-1)
            count += k
    mean = total / count
    se = ((total_sq / count - mean**2).clamp_min(0) / (count - 1)).sqrt()
    return mean, se


def _lasso_solution(p, steps=5_000):
    prox = lambda y, g: soft_threshold(y, g * LAM)  # noqa: E731
    traj = run_gradient_method(lambda x, t: p.grad(x), torch.zeros(D, dtype=_F64), 1.0 / p.L, steps, prox=prox,
                               record=[steps])
    return traj.last[-1]


@claim(
    "convergence-handbook",
    statement="The handbook's convergence bounds for gradient descent (convex, strongly convex, PL), SGD, proximal "
              "GD and SGD, the heavy ball and the subgradient method hold at every iteration, and are nearly "
              "attained on worst-case instances.",
    criterion="Eight bounds (GD convex, GD strongly convex, GD PL, SGD strongly convex, prox-GD convex, prox-SGD "
              "strongly convex, heavy ball convex with gamma_t = 2 eta/(t+3), beta_t = t/(t+3), eta = 1/(4 "
              "L_max), deterministic and stochastic, subgradient constant step), each on a realistic instance "
              "(least squares n = 200, d = 20, L/mu = 10; its lasso, lambda = 0.1; rank-deficient least squares "
              "n = 10, d = 20; least absolute deviations n = 200, d = 10; problems from the claim's generator) and "
              "on a tight instance (module docstring); T = 200 (smoke) / 1,000 (full) steps; stochastic bounds: "
              "3 seeds x R runs (R = 200 smoke / 1,000 full), one sample per step. Passes if every bound holds "
              "at every step t >= 1 (stochastic: mean - 3 SE <= bound; linear-rate bounds while bound_t >= 1e-20 "
              "bound_1). Control: every bound multiplied by 0.3 (a false, 3.3x stronger theorem) on its tight "
              "instance through the same check; the control passes if any of these false bounds holds.",
    baseline="the handbook's bounds themselves (max measured/bound ratio over t >= 1 reported per bound and "
             "instance); control: the same bounds made 3.3x stronger",
    timeout={"smoke": 120.0, "full": 1800.0},
    threads=1,  # thousands of small batched steps
)
def bounds_hold(ctx: ClaimContext) -> ClaimResult:
    T = ctx.pick(smoke=200, full=1_000)
    runs = ctx.pick(smoke=200, full=1_000)
    seeds = [s % 2**31 for s in ctx.seeds(NUM_SEEDS)]
    start = time.perf_counter()
    t = torch.arange(T + 1, dtype=_F64)
    real, tight = {}, {}

    # Realistic instances.
    p = least_squares_problem(N, D, cond=COND, noise=NOISE, generator=ctx.generator)
    x0 = torch.zeros(D, dtype=_F64)
    r0 = float(((x0 - p.x_star) ** 2).sum())
    gd = run_gradient_method(lambda x, s: p.grad(x), x0, 1.0 / p.L, T)
    real["gd_convex"] = _check(p.value(gd.last) - p.f_star, gd_convex_bound(t, p.L, r0))
    sc = gd_strongly_convex_bound(t, p.L, p.mu, r0)
    real["gd_strongly_convex"] = _check(((gd.last - p.x_star) ** 2).sum(-1), sc, mask=_floor_mask(sc))
    gamma = 1.0 / (2 * p.L_max)

    def sampler(problem):
        """One-sample gradients for k runs at once: ``problem.sample_grad`` with a batch of one, written out (the
        batched matmul there costs ~20x more for single samples)."""
        def make(gen, k):
            def oracle(x, s):
                i = torch.randint(N, (k,), generator=gen)
                a = problem.A[i]
                return a * ((a * x).sum(-1) - problem.b[i]).unsqueeze(-1)
            return oracle
        return make

    msd, se = _stochastic(sampler(p), x0, p.x_star, gamma, T, seeds, runs)
    sgd_bound = sgd_strongly_convex_bound(t, gamma, p.mu, r0, p.sigma_star_sq)
    real["sgd_strongly_convex"] = tight["sgd_strongly_convex"] = _check(msd, sgd_bound, se)
    eta = 1.0 / (4 * p.L_max)
    hb = run_heavy_ball(lambda x, s: p.grad(x), x0, 1.0 / (4 * p.L), T)
    real["heavy_ball_convex"] = _check(p.value(hb.last) - p.f_star, heavy_ball_convex_bound(t, 1.0 / (4 * p.L), r0))
    gap, gap_se = _stochastic(sampler(p), x0, p.x_star, eta, T, [s + 2 for s in seeds], runs, heavy_ball=True,
                              value=lambda x: p.value(x) - p.f_star)
    real["stochastic_heavy_ball_convex"] = _check(gap, heavy_ball_convex_bound(t, eta, r0, p.sigma_star_sq), gap_se)

    x_lasso = _lasso_solution(p)
    F = lambda x: p.value(x) + LAM * x.abs().sum(-1)  # noqa: E731
    prox = lambda y, g: soft_threshold(y, g * LAM)  # noqa: E731
    pgd = run_gradient_method(lambda x, s: p.grad(x), x0, 1.0 / p.L, T, prox=prox)
    r0_lasso = float(((x0 - x_lasso) ** 2).sum())
    real["prox_gd_convex"] = _check(F(pgd.last) - F(x_lasso), gd_convex_bound(t, p.L, r0_lasso))
    per_sample = p.A * (p.A @ x_lasso - p.b).unsqueeze(-1)
    variance = float(((per_sample - per_sample.mean(0)) ** 2).sum(1).mean())
    msd_prox, se_prox = _stochastic(sampler(p), x0, x_lasso, gamma, T, [s + 1 for s in seeds], runs, prox=prox)
    real["prox_sgd_strongly_convex"] = tight["prox_sgd_strongly_convex"] = _check(
        msd_prox, sgd_strongly_convex_bound(t, gamma, p.mu, r0_lasso, variance), se_prox)

    # PL, not strongly convex: rank-deficient least squares (n < d).
    g = torch.Generator().manual_seed(seeds[0])
    A = torch.randn(10, D, generator=g, dtype=_F64)
    b = torch.randn(10, generator=g, dtype=_F64)
    H = A.T @ A / 10
    evals, evecs = torch.linalg.eigh(H)
    L_pl, i_pl = float(evals[-1]), int((evals > 1e-10 * evals[-1]).nonzero()[0])
    mu_pl = float(evals[i_pl])
    x_pl = torch.linalg.pinv(A) @ b
    f_pl = lambda x: 0.5 * ((x @ A.T - b) ** 2).mean(-1)  # noqa: E731
    f_pl_star = float(f_pl(x_pl))
    for name, start_pl, where in (("real", torch.zeros(D, dtype=_F64), real),
                                  ("tight", x_pl + evecs[:, i_pl], tight)):
        traj = run_gradient_method(lambda x, s: (x @ A.T - b) @ A / 10, start_pl, 1.0 / L_pl, T)
        gaps = f_pl(traj.last) - f_pl_star
        bound = gd_pl_bound(t, L_pl, mu_pl, float(gaps[0]))
        where["gd_pl"] = _check(gaps, bound, mask=_floor_mask(bound))

    # Subgradient method on least absolute deviations, gamma = R / (G sqrt(T)).
    lad = absolute_regression_problem(N, 10, generator=ctx.generator)
    r0_lad = float((lad.x_star**2).sum())
    gam = math.sqrt(r0_lad) / (lad.G * math.sqrt(T))
    sub = run_gradient_method(lambda x, s: torch.sign(x @ lad.A.T - lad.b) @ lad.A / N, torch.zeros(10, dtype=_F64),
                              gam, T)
    best = torch.cummin(lad.value(sub.last) - lad.f_star, 0).values
    sub_bound = subgradient_bound(torch.full((T,), gam, dtype=_F64), lad.G, r0_lad)
    real["subgradient"] = _check(torch.cat([best[:1], best[:-1]]), torch.cat([sub_bound[:1], sub_bound]))

    # Tight instances.
    R = 1.0
    h_val, h_grad = _huber(R / (2 * T + 1))
    traj = run_gradient_method(h_grad, torch.tensor([R], dtype=_F64), 1.0, T)
    tight["gd_convex"] = _check(h_val(traj.last).squeeze(-1), gd_convex_bound(t, 1.0, R * R))
    lam2 = torch.tensor([1.0, 0.01], dtype=_F64)
    traj = run_gradient_method(lambda x, s: lam2 * x, torch.tensor([0.0, 1.0], dtype=_F64), 1.0, T)
    sc = gd_strongly_convex_bound(t, 1.0, 0.01, 1.0)
    tight["gd_strongly_convex"] = _check((traj.last**2).sum(-1), sc, mask=_floor_mask(sc))
    delta = R / (2 * (2 * T + 1))
    h_val, h_grad = _huber(delta)
    traj = run_gradient_method(h_grad, torch.tensor([R], dtype=_F64), 1.0, T,
                               prox=lambda y, g: soft_threshold(y, g * delta))
    tight["prox_gd_convex"] = _check((h_val(traj.last) + delta * traj.last.abs()).squeeze(-1),
                                     gd_convex_bound(t, 1.0, R * R))
    h_val, h_grad = _huber(10 * R / (2 * T + 1))
    traj = run_heavy_ball(h_grad, torch.tensor([R], dtype=_F64), 0.25, T)
    tight["heavy_ball_convex"] = _check(h_val(traj.last).squeeze(-1), heavy_ball_convex_bound(t, 0.25, R * R))
    gam1 = R / 14.5
    traj = run_gradient_method(lambda x, s: torch.sign(x), torch.tensor([R], dtype=_F64), gam1, T)
    best = torch.cummin(traj.last.abs().squeeze(-1), 0).values
    sub_bound = subgradient_bound(torch.full((T,), gam1, dtype=_F64), 1.0, R * R)
    tight["subgradient"] = _check(torch.cat([best[:1], best[:-1]]), torch.cat([sub_bound[:1], sub_bound]))
    seconds = time.perf_counter() - start

    passed = all(c["holds"] for c in real.values()) and all(c["holds"] for c in tight.values())
    false_held = sorted(k for k, c in tight.items() if c["false_bound_holds"])
    control = Control(f"every bound x {FALSE_FACTOR} (a false, {1 / FALSE_FACTOR:.1f}x stronger theorem) on its "
                      "tight instance", bool(false_held),
                      {"false_bounds_that_hold": false_held,
                       "max_ratio_tight": {k: c["max_ratio"] for k, c in tight.items()}})
    metrics = dict(T=T, runs_per_seed=runs, num_seeds=NUM_SEEDS, L=p.L, mu=p.mu, L_max=p.L_max,
                   sigma_star_sq=p.sigma_star_sq, pl_mu_over_L=mu_pl / L_pl, lad_G=lad.G,
                   holds_realistic={k: c["holds"] for k, c in real.items()},
                   holds_tight={k: c["holds"] for k, c in tight.items()},
                   max_ratio_realistic={k: c["max_ratio"] for k, c in real.items()},
                   max_ratio_tight={k: c["max_ratio"] for k, c in tight.items()},
                   at_step_tight={k: c["at_step"] for k, c in tight.items()},
                   checks_realistic=real, checks_tight=tight, seconds=round(seconds, 2))
    baseline = dict(false_factor=FALSE_FACTOR, false_bounds_that_hold=false_held)
    n_hold = sum(c["holds"] for c in real.values()) + sum(c["holds"] for c in tight.values())
    short = {"gd_convex": "GD", "gd_strongly_convex": "GD-sc", "gd_pl": "PL", "sgd_strongly_convex": "SGD",
             "prox_gd_convex": "proxGD", "prox_sgd_strongly_convex": "proxSGD", "heavy_ball_convex": "HB",
             "subgradient": "subgrad"}
    tightness = ", ".join(f"{short[k]} {c['max_ratio']:.2f}" for k, c in tight.items())
    headline = (f"{n_hold}/{len(real) + len(tight)} (bound, instance) checks hold at every t >= 1; max "
                f"measured/bound on the tight instances: {tightness}; false {1 / FALSE_FACTOR:.1f}x-stronger bounds "
                f"holding: {len(false_held)}/{len(tight)}")
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
