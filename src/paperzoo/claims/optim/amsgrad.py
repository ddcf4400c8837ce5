"""Claim check for AMSGrad (Reddi, Kale, Kumar, 2018): Adam fails on a simple online convex problem, AMSGrad not.

The problem is Theorem 1's: :math:`f_t(x) = C x` when :math:`t \\bmod 3 = 1`, else :math:`-x`, on
:math:`[-1, 1]` (:func:`paperzoo.data.online.reddi_slopes`), with the theorem's settings :math:`C = 3`,
:math:`\\beta_1 = 0`, :math:`\\beta_2 = 1/(1 + C^2)` and :math:`\\alpha_t = \\alpha/\\sqrt t` with
:math:`\\alpha = 0.5 < \\sqrt{1 - \\beta_2}` (the proof's condition); :math:`x_1 = 0`. The best fixed point is
:math:`x = -1`; the theorem says Adam's average regret does not vanish.

The method is :class:`paperzoo.optim.AMSGrad` in the paper's form (Algorithm 2: ``bias_correction=False``, with
``eps=1e-8`` in place of the paper's zero); the baseline is ``torch.optim.Adam`` (``amsgrad=False``). The
default, torch-convention AMSGrad (bias-corrected) is reported alongside. The problem is deterministic, so one run
per optimizer is the whole experiment (no seeds, nothing to tune: the theorem fixes every hyperparameter).

Issue 8 rework (measurement and criterion text unchanged apart from the control sentence): the discriminating
control is Adam through AMSGrad's half of the criterion (x_T < -0.9 and R_T/T < 0.1), which the theorem says it
must fail; the criterion's second half, the theorem's own prediction for Adam, stays as registered.
"""

from __future__ import annotations

import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control
from paperzoo.data.online import HIGH, LOW, OPTIMUM, linear_regret, reddi_slopes
from paperzoo.optim import AMSGrad

C = 3.0
BETA1 = 0.0
BETA2 = 1.0 / (1.0 + C**2)
BASE_LR = 0.5
EPS = 1e-8


def run_reddi(num_steps: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Iterates ``x_t`` (played before seeing ``c_t``) of each optimizer, shape ``(T,)``, and the slopes."""
    slopes = reddi_slopes(num_steps, C)
    names = ("amsgrad_paper", "amsgrad_torch", "adam")
    params = {name: torch.zeros(1, dtype=torch.float64, requires_grad=True) for name in names}
    betas = (BETA1, BETA2)
    optimizers = [
        AMSGrad([params["amsgrad_paper"]], lr=BASE_LR, betas=betas, eps=EPS, bias_correction=False),
        AMSGrad([params["amsgrad_torch"]], lr=BASE_LR, betas=betas, eps=EPS),
        torch.optim.Adam([params["adam"]], lr=BASE_LR, betas=betas, eps=EPS),
    ]
    # alpha_t = alpha / sqrt(t) with t counted from 1, as in the theorem.
    schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (i + 1.0) ** -0.5) for opt in optimizers]
    plist = list(params.values())
    iterates = torch.empty(num_steps, len(plist), dtype=torch.float64)
    for i in range(num_steps):
        c = slopes[i : i + 1]
        with torch.no_grad():
            iterates[i] = torch.cat(plist)
        for p in plist:
            p.grad = c
        for opt, sched in zip(optimizers, schedulers):
            opt.step()
            sched.step()
        with torch.no_grad():
            for p in plist:
                p.clamp_(LOW, HIGH)
    return {name: iterates[:, j] for j, name in enumerate(names)}, slopes


@claim(
    "amsgrad",
    statement="On Reddi et al.'s online convex counterexample Adam converges to the worst point and keeps a "
              "non-vanishing average regret, while AMSGrad converges to the optimum.",
    criterion="Theorem 1 setting: f_t(x) = 3x if t mod 3 == 1 else -x on [-1, 1], beta1 = 0, beta2 = 1/(1+C^2) = 0.1, "
              "lr_t = 0.5/sqrt(t), x_1 = 0, T = 10,000 (smoke) / 200,000 (full) steps. Passes if AMSGrad (paper "
              "form) ends with x_T < -0.9 and average regret R_T/T < 0.1, AND Adam ends with x_T > 0.9 and "
              "R_T/T > 0.5. Control: Adam through AMSGrad's half of the criterion (x_T < -0.9 and R_T/T < 0.1), "
              "which it must fail.",
    baseline="torch.optim.Adam (amsgrad=False) with the same betas, eps, lr schedule and projection",
)
def reddi_counterexample(ctx: ClaimContext) -> ClaimResult:
    num_steps = ctx.pick(smoke=10_000, full=200_000)
    start = time.perf_counter()
    iterates, slopes = run_reddi(num_steps)
    seconds = time.perf_counter() - start
    t = torch.arange(1, num_steps + 1, dtype=torch.float64)

    def summary(x: torch.Tensor) -> dict[str, float]:
        avg_regret = linear_regret(x, slopes) / t
        checkpoints = {str(n): float(avg_regret[n - 1]) for n in (100, 1_000, 10_000, 100_000) if n < num_steps}
        # x_T is the point played at the last step, the one the regret R_T counts.
        return dict(final_x=float(x[-1]), average_regret=float(avg_regret[-1]),
                    average_regret_at=checkpoints)

    finals = {name: summary(x) for name, x in iterates.items()}
    method, base = finals["amsgrad_paper"], finals["adam"]

    def converges(r: dict) -> bool:
        return r["final_x"] < -0.9 and r["average_regret"] < 0.1

    passed = converges(method) and base["final_x"] > 0.9 and base["average_regret"] > 0.5
    control = Control("Adam through AMSGrad's half of the criterion (x_T < -0.9 and R_T/T < 0.1)", converges(base),
                      dict(final_x=base["final_x"], average_regret=base["average_regret"]))
    headline = (f"x_T {method['final_x']:+.3f} (AMSGrad) vs {base['final_x']:+.3f} (Adam), R_T/T "
                f"{method['average_regret']:.4f} vs {base['average_regret']:.3f} (theorem: Adam's stays at 2/3), "
                f"T = {num_steps:,}, deterministic")
    _figure(ctx, iterates, slopes, t)
    common = dict(C=C, beta1=BETA1, beta2=BETA2, base_lr=BASE_LR, num_steps=num_steps, optimum=OPTIMUM,
                  seconds=round(seconds, 2))
    metrics = dict(common, **method, torch_form=finals["amsgrad_torch"])
    return ClaimResult.decide(passed, metrics=metrics, baseline=base, headline=headline, control=control)


def _figure(ctx: ClaimContext, iterates, slopes, t) -> None:
    if ctx.figure_dir is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"amsgrad_paper": "AMSGrad (paper form)", "amsgrad_torch": "AMSGrad (torch form)", "adam": "Adam"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, x in iterates.items():
        ax1.plot(t, x, label=labels[name], lw=0.8)
        ax2.plot(t, linear_regret(x, slopes) / t, label=labels[name], lw=0.8)
    ax1.axhline(OPTIMUM, color="k", lw=0.6, ls="--")
    ax1.set(xscale="log", xlabel="t", ylabel="x_t")
    ax2.set(xscale="log", yscale="symlog", xlabel="t", ylabel="R_t / t")
    ax1.legend(fontsize=8)
    ctx.save_figure(fig, "iterates-and-regret")
