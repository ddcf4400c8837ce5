"""Shared protocol of the likelihood-bound claims (DiffEnc, MuLAN): a method against VDM on the test NELBO.

Both claims tune each method's learning rate on the same grid on a separate tuning seed, then train both on the
data and on an isotropic-Gaussian control at 3 paired seeds and compare test NELBOs (bits/dim, common random
numbers). A claim supplies ``train(data, method, lr, steps, seed) -> trained`` and ``evaluator(data, n, repeats,
seed) -> evaluate(*trained)``; ``method`` is the claim's method name or ``"vdm"``.
"""

from __future__ import annotations

from collections.abc import Callable

from paperzoo.core import ClaimContext, ClaimResult
from paperzoo.core.evidence import fmt_mean_std, paired_comparison, paired_control, tune

LR_GRID = [1e-3, 3e-3]


def nelbo_against_vdm(ctx: ClaimContext, *, method: str, label: str, data, control_data, train: Callable,
                      evaluator: Callable, steps: int, n_val: int, n_test: int, repeats: int,
                      control_text: str) -> ClaimResult:
    """Tune, train and compare ``method`` with VDM (the protocol of the module docstring)."""
    seeds = ctx.seeds(4)
    tune_seed, seeds = seeds[0], seeds[1:]
    methods = (method, "vdm")
    val = evaluator(data, n_val, 1, tune_seed + 11)

    def scorer(m):
        return lambda lr: val(*train(data, m, lr, steps, tune_seed))

    sel = tune({m: scorer(m) for m in methods}, LR_GRID, bounds=(3e-4, 1e-2), max_extensions=1)
    lr = {m: s.best for m, s in sel.items()}

    results = {"main": {m: [] for m in methods}, "control": {m: [] for m in methods}}
    for seed in seeds:
        for arm, d in (("main", data), ("control", control_data)):
            test = evaluator(d, n_test, repeats, seed + 101)
            for m in methods:
                results[arm][m].append(test(*train(d, m, lr[m], steps, seed)))

    main, ctrl = results["main"], results["control"]
    cmp = paired_comparison(main[method], main["vdm"])
    control, ctrl_cmp = paired_control(control_text, ctrl[method], ctrl["vdm"])
    headline = (f"test NELBO (bits/dim) {fmt_mean_std(main[method])} ({label}) vs {fmt_mean_std(main['vdm'])} "
                f"(VDM), paired gain {cmp.diff_mean:.4f} ± {cmp.diff_se:.4f} SE; lr {lr[method]:g} / "
                f"{lr['vdm']:g}; control (isotropic Gaussian) gain {ctrl_cmp.diff_mean:.4f} ± {ctrl_cmp.diff_se:.4f}")
    return ClaimResult.decide(
        cmp.wins,
        metrics={"nelbo_bpd": main, "control_nelbo_bpd": ctrl, "gain": cmp.as_metrics(), "lr": lr,
                 "tuning": {k: s.as_metrics() for k, s in sel.items()}, "steps": steps},
        baseline={"vdm_nelbo_bpd": main["vdm"]},
        headline=headline,
        control=control,
    )
