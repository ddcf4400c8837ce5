"""Claim check for Variational Wasserstein gradient flow (Fan, Zhang, Taghvaei, Chen, ICML 2022).

The paper's Ornstein-Uhlenbeck experiment at small scale: the Fokker-Planck flow towards a Gaussian target
``N(m, S)`` (``V(x) = (x - m)^T S^{-1} (x - m) / 2``) started from ``N(0, I)``, whose marginal at time ``t`` is
Gaussian in closed form (:func:`paperzoo.data.gaussians.ou_gaussian_marginal`). The target is drawn as in the
authors' code: ``m ~ N(0, I)``, ``S`` with eigenvalues uniform in ``[0.5, 1]``. ``n`` particles are pushed through
``K`` JKO steps of ``tau = 0.05`` by the sample-only variational scheme
(:func:`~paperzoo.transport.variational_jko`) and by the density-based scheme with the exact log-det Jacobian
(:func:`~paperzoo.transport.density_jko`, the JKO-ICNN objective of Mokrov et al. that the paper compares with),
with the same map network, the same Adam learning rate (the paper's 5e-3), the same number of map updates and
the same particles. The error is the paper's metric: the symmetric KL between the Gaussian fitted to the
particles and the exact marginal at ``t = K tau``. ``sampling_floor`` is the same metric for ``n`` exact samples.

Issue 8 rework (the earlier verdict was ``reproduced``: symmetric KL 0.0021 vs 0.0022 at d = 2, 0.019 vs 0.013 at
d = 8, criterion on seed means):

* **A win beyond noise.** The non-inferiority part ("<= 2x the baseline + 0.02") is now paired over the 3 seeds
  (:func:`paperzoo.core.evidence.paired_comparison` of ``KL_var`` against ``2 KL_density + 0.02``: the paired mean
  margin must be positive beyond two standard errors), at each dimension.
* **Control.** The JKO scheme with its key ingredient, the entropy term, removed: each step is then the exact
  proximal step of ``V`` alone, ``y = (I + tau S^{-1})^{-1} (x + tau S^{-1} m)`` (closed form, no training), which
  contracts the particles towards ``m`` instead of diffusing them. Put through the same criterion it must fail: a
  pass would mean the criterion cannot see whether the entropy of the flow is followed at all.
* **Tuned fairly.** Both schemes' Adam learning rate is chosen with :func:`paperzoo.core.evidence.tune` on a
  separate tuning instance per dimension (its own target and particles, never scored), from the same 3-point grid
  around the paper's 5e-3 ({5e-3/3, 5e-3, 1.5e-2}), extended past a winning edge within [1e-4, 0.1]; the verdict
  runs use the chosen rates on the 3 scored seeds. (The first rework kept both at 5e-3 untuned, which for a
  non-inferiority claim favours the method; this version was committed before its first full run.) Cost: about
  twice the untuned claim, ~200 s per run seed on one core (each run is 1600 map updates, 8 JKO steps x 200, plus
  4800 critic updates for the variational scheme).
"""

from __future__ import annotations

import statistics
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison, tune
from paperzoo.data.gaussians import gaussian_symkl, ou_gaussian_marginal, random_spd
from paperzoo.transport.variational_wgf import density_jko, variational_jko

CRITERION = (
    "At t = K*tau (tau = 0.05), for d = 2 and d = 8, paired over 3 seeds: the variational JKO particles' "
    "symmetric KL to the exact OU marginal is below 2 x that of the density-based JKO baseline + 0.02 (paired "
    "mean of 2 KL_density + 0.02 - KL_variational > 0 and > 2 SE), and the variational particles' seed-mean "
    "relative mean error ||mean - mean_t|| / max(||mean_t||, 1) < 0.10 and relative covariance error "
    "||cov - cov_t||_F / ||cov_t||_F < 0.15. Both schemes' Adam lr is tuned on a separate tuning instance per "
    "dimension (same 3-point grid {1.67e-3, 5e-3, 1.5e-2}, extended past a winning edge within [1e-4, 0.1], "
    "selected by symmetric KL). Control: JKO without the entropy term (exact proximal steps of V) through the same "
    "criterion; it must fail."
)
LR_GRID = (5e-3 / 3, 5e-3, 1.5e-2)


def _instance(seed: int, d: int, n: int, t: float) -> dict:
    """One OU problem: target N(m, S) drawn as in the authors' code, start particles, exact marginal at ``t``."""
    g = torch.Generator().manual_seed(seed)
    S = random_spd(d, low=0.5, high=1.0, generator=g)
    m = torch.randn(d, generator=g, dtype=torch.float64)
    S_inv, m32 = torch.linalg.inv(S).float(), m.float()
    x0 = torch.randn(n, d, generator=g)
    mt, St = ou_gaussian_marginal(torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64), m, S, t)

    def V(y):
        return 0.5 * (((y - m32) @ S_inv) * (y - m32)).sum(-1)

    net_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    return dict(g=g, S=S, m=m, x0=x0, mt=mt, St=St, V=V, net_seed=net_seed)


def _run(solver, inst: dict, lr: float, *, tau: float, K: int, n_iter: int, batch: int) -> tuple[dict, float]:
    """Errors of ``solver``'s particles on one instance, and the seconds it took."""
    torch.manual_seed(inst["net_seed"])  # the same initial map weights for both schemes
    gen = torch.Generator().manual_seed(inst["net_seed"])  # the same mini-batches for both schemes
    start = time.perf_counter()
    res = solver(inst["x0"], inst["V"], step_size=tau, n_steps=K, n_iter=n_iter, batch_size=batch, lr=lr,
                 generator=gen)
    return _errors(res.x, inst["mt"], inst["St"]), time.perf_counter() - start


def _criterion(rows: list[dict], den_rows: list[dict]) -> tuple[bool, object]:
    """The pre-registered test at one dimension: paired non-inferiority in symmetric KL, and the moment errors."""
    cmp = paired_comparison([r["symkl"] for r in rows], [2 * r["symkl"] + 0.02 for r in den_rows], margin=0.0)
    ok = (cmp.wins and statistics.fmean(r["mean_rel_err"] for r in rows) < 0.10
          and statistics.fmean(r["cov_rel_err"] for r in rows) < 0.15)
    return ok, cmp


def _drift_only_jko(x0: torch.Tensor, m: torch.Tensor, S_inv: torch.Tensor, tau: float, K: int) -> torch.Tensor:
    """K exact proximal steps of V(x) = (x - m)^T S^{-1} (x - m) / 2 alone: the JKO scheme without its entropy."""
    d = x0.shape[1]
    step = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + tau * S_inv)
    x = x0.double()
    for _ in range(K):
        x = (x + tau * (S_inv @ m)) @ step.T
    return x


def _errors(x: torch.Tensor, mt: torch.Tensor, St: torch.Tensor) -> dict:
    x = x.double()
    mu, C = x.mean(0), torch.cov(x.T)
    return {
        "symkl": float(gaussian_symkl(mu, C, mt, St)),
        "mean_rel_err": float((mu - mt).norm() / max(float(mt.norm()), 1.0)),
        "cov_rel_err": float((C - St).norm() / St.norm()),
    }


def _summary(rows: list[dict]) -> dict:
    out = {}
    for key in rows[0]:
        vals = [r[key] for r in rows]
        out[key] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals), "per_seed": vals}
    return out


@claim(
    "variational-wgf",
    statement=("Writing the entropy in its variational form (a max over a critic evaluated on samples only) lets the "
               "JKO scheme follow the Fokker-Planck (Ornstein-Uhlenbeck) gradient flow as accurately as the "
               "density-based JKO scheme that needs log-determinants of the map Jacobian."),
    criterion=CRITERION,
    baseline=("density-based JKO (JKO-ICNN objective of Mokrov et al.: entropy through the exact log|det grad T|), "
              "same residual-MLP map, Adam lr tuned on the same grid, same map updates, batch and particles"),
    threads=1,
)
def ou_flow_matches_closed_form(ctx: ClaimContext) -> ClaimResult:
    n = ctx.pick(smoke=256, full=1000)
    K = ctx.pick(smoke=2, full=8)
    n_iter = ctx.pick(smoke=8, full=200)
    tau, batch = 0.05, 256
    dims = [2, 8]
    metrics = {"n_particles": n, "jko_steps": K, "tau": tau, "time": K * tau, "map_updates_per_step": n_iter,
               "critic_updates_per_map_update": 3, "batch_size": batch, "seeds": ctx.seeds(3)}
    baseline = {}
    passed, control_passed = True, True
    control_metrics, heads = {}, []
    seeds = ctx.seeds(4)
    scored, tuning_seed = seeds[:3], seeds[3]
    metrics["seeds"] = scored
    solvers = {"variational": variational_jko, "density": density_jko}
    run = dict(tau=tau, K=K, n_iter=n_iter, batch=batch)
    for d in dims:
        tuning = _instance(tuning_seed, d, n, K * tau)
        sel = tune({name: (lambda lr, f=f: _run(f, tuning, lr, **run)[0]["symkl"]) for name, f in solvers.items()},
                   LR_GRID, bounds=(1e-4, 0.1), max_extensions=ctx.pick(smoke=1, full=2))
        rows = {"variational": [], "density": [], "floor": [], "drift_only": []}
        secs = {"variational": 0.0, "density": 0.0}
        for seed in scored:
            inst = _instance(seed, d, n, K * tau)
            for name, solver in solvers.items():
                err, sec = _run(solver, inst, sel[name].best, **run)
                rows[name].append(err)
                secs[name] += sec
            mt, St, g = inst["mt"], inst["St"], inst["g"]
            exact = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(St).T + mt
            rows["floor"].append(_errors(exact, mt, St))
            rows["drift_only"].append(_errors(_drift_only_jko(inst["x0"], inst["m"], torch.linalg.inv(inst["S"]),
                                                              tau, K), mt, St))
        var, den, floor = (_summary(rows[k]) for k in ("variational", "density", "floor"))
        ok, cmp = _criterion(rows["variational"], rows["density"])
        passed = passed and ok
        c_ok, c_cmp = _criterion(rows["drift_only"], rows["density"])
        control_passed = control_passed and c_ok
        control_metrics[f"d{d}"] = {**_summary(rows["drift_only"]), "paired_vs_2x_density": c_cmp.as_metrics()}
        per_update = 3 * n_iter * K
        metrics[f"d{d}"] = {**var, "sampling_floor_symkl": floor["symkl"]["mean"], "passed": ok,
                            "paired_vs_2x_density_plus_0.02": cmp.as_metrics(),
                            "seconds_per_map_update": secs["variational"] / per_update,
                            "lr_selection": sel["variational"].as_metrics()}
        baseline[f"d{d}"] = {**den, "seconds_per_map_update": secs["density"] / per_update,
                             "lr_selection": sel["density"].as_metrics()}
        edge = [k for k, v in sel.items() if v.at_edge]
        heads.append(f"d={d}: {fmt_mean_std([r['symkl'] for r in rows['variational']])} (variational) vs "
                     f"{fmt_mean_std([r['symkl'] for r in rows['density']])} (density-based), paired margin to "
                     f"2x+0.02 {cmp.diff_mean:.3g} ± {cmp.diff_se:.2g} SE; cov error "
                     f"{var['cov_rel_err']['mean']:.3f}; drift-only control KL "
                     f"{fmt_mean_std([r['symkl'] for r in rows['drift_only']])}; lr {sel['variational'].best:.3g} / "
                     f"{sel['density'].best:.3g}" + (f" (at a grid bound: {', '.join(edge)})" if edge else ""))
    control = Control("JKO without the entropy term (exact proximal steps of V alone) through the same criterion",
                      control_passed, control_metrics)
    headline = f"symmetric KL to the exact OU marginal at t = {K * tau:g}, 3 seeds: " + "; ".join(heads)
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
