"""Claim check for PSGD with Lie-group preconditioners (Pooladzandi & Li, 2024): at equal steps it beats Adam and
SGD on a problem whose curvature is ill-conditioned and not axis-aligned.

Setup, fixed before the first run: multinomial logistic regression (``Linear(64, 10)``, zero initialisation) on
scikit-learn's digits, split per seed into train / validation / test (50% / 20% / 30%, the split drawn from the
seed), standardised (pixels constant on the training split set to 0), then mixed by a fixed ill-conditioned
linear map :math:`x \\mapsto M x`, :math:`M = U\\,\\mathrm{diag}(10^{u_j})\\,V^\\top` with :math:`u_j` evenly
spaced in :math:`[-3, 0]` (the strongest directions keep the standardised scale, the weakest are 1e3 times weaker)
and :math:`U, V` random orthogonal matrices drawn from the run's generator: the curvature ratio across input
directions is about 1e6 and its eigenvectors are not the coordinate axes, so a diagonal preconditioner (Adam's)
cannot undo it, while PSGD's Kronecker factor on the input side can (the mechanism the paper's claim rests on).
Mini-batches of 64, T = 60 (smoke) / 500 (full) steps; about 50 s on one core at the full budget (a PSGD run
with its 64 x 64 triangular factor takes about 1.5 s of it). PSGD: Kronecker preconditioner with both factors
triangular (``max_skew=100``), exact Hessian-vector products, the paper's defaults (``precond_lr`` 0.1, update
probability 1), no momentum. A PSGD step costs about two gradient evaluations (gradient plus Hessian-vector
product); the comparison is at equal steps, as in the paper.

Issue 8 rework. The earlier version (verdict ``not_reproduced``) scaled the pixel axes only (an axis-aligned
ill-conditioning that Adam's diagonal preconditioner removes by construction, so it was not the regime the paper
analyses), chose every learning rate by the mean final *training* loss on the runs it then compared, and its SGD
baseline picked the lowest rate of its grid (untuned). Its test features also held values of size 1e3-1e4
(pixels constant on the training split, standardised with a clamped std), now set to 0. Now every method's rate
is chosen by :func:`paperzoo.core.evidence.tune` (same grid size for every method, the grid extended past a
winning edge) on the mean *validation* cross-entropy of 3 seeds, and the verdict reads the *test* cross-entropy
of those seeds, paired (seed i gives every method the same split, initialisation and batches), against a stated
margin. PSGD follows the authors' current code (the running Lipschitz normaliser of the preconditioner step,
damping, initial scale; see :class:`paperzoo.optim.PSGD`). The discriminating control is PSGD restricted to the
diagonal group (``precond_type="diag"``, everything else equal): without the off-diagonal curvature it must not
pass.
"""

from __future__ import annotations

import math
import time

import torch

from paperzoo.core import ClaimContext, ClaimResult, claim
from paperzoo.core.evidence import Control, fmt_mean_std, paired_comparison, tune
from paperzoo.data.digits import digits_split
from paperzoo.optim import PSGD

BATCH = 64
NUM_SEEDS = 3
MARGIN = 0.02  # nats of test cross-entropy
LRS_FULL = tuple(10.0 ** (k / 2) for k in range(-6, 1))  # 1e-3 ... 1, half-decade steps (7 values)
LRS_SMOKE = (1e-3, 1e-2, 1e-1)
BOUNDS = (1e-6, 10.0)
METHODS = ("PSGD", "Adam", "SGD", "PSGD-diag")


def _mixing(generator: torch.Generator) -> torch.Tensor:
    U, _ = torch.linalg.qr(torch.randn(64, 64, generator=generator))
    V, _ = torch.linalg.qr(torch.randn(64, 64, generator=generator))
    return (U * 10.0 ** torch.linspace(-3.0, 0.0, 64)) @ V.T


def _data(seed: int, M: torch.Tensor):
    d = digits_split(0.3, val_fraction=0.2, generator=torch.Generator().manual_seed(seed))
    return tuple((x @ M.T, y) for x, y in ((d.train_x, d.train_y), (d.val_x, d.val_y), (d.test_x, d.test_y)))


def _optimizer(method: str, params, lr: float, seed: int):
    if method == "PSGD":
        return PSGD(params, lr=lr, precond_type="kron", hessian="exact", max_skew=100.0, seed=seed)
    if method == "PSGD-diag":
        return PSGD(params, lr=lr, precond_type="diag", hessian="exact", seed=seed)
    if method == "Adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def _train(method: str, lr: float, seed: int, steps: int, data) -> dict[str, float]:
    (xtr, ytr), (xva, yva), (xte, yte) = data
    model = torch.nn.Linear(64, 10)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    params = list(model.parameters())
    opt = _optimizer(method, params, lr, seed)
    curvature = method.startswith("PSGD")
    batches = torch.Generator().manual_seed(seed)
    loss_fn = torch.nn.functional.cross_entropy
    diverged = dict(val=math.inf, test=math.inf, test_accuracy=0.0, train=math.inf)
    for _ in range(steps):
        idx = torch.randint(len(ytr), (BATCH,), generator=batches)

        def closure():
            opt.zero_grad()
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            loss.backward(create_graph=curvature)
            return loss

        loss = opt.step(closure)
        if not math.isfinite(float(loss.detach())) or not all(bool(torch.isfinite(p).all()) for p in params):
            return diverged
    for p in params:
        p.grad = None  # breaks the create_graph reference cycle
    with torch.no_grad():
        out = dict(val=float(loss_fn(model(xva), yva)), test=float(loss_fn(model(xte), yte)),
                   test_accuracy=float((model(xte).argmax(1) == yte).double().mean()),
                   train=float(loss_fn(model(xtr), ytr)))
    return out if all(math.isfinite(v) for v in out.values()) else diverged


def _evaluator(method: str, seeds: list[int], steps: int, datasets):
    """evaluate(lr): mean validation cross-entropy over the seeds; the test numbers ride along, unseen."""
    def evaluate(lr):
        runs = [_train(method, lr, s, steps, d) for s, d in zip(seeds, datasets)]
        vals = [r["val"] for r in runs]
        return dict(val=math.fsum(vals) / len(vals) if all(map(math.isfinite, vals)) else math.inf,
                    test=[r["test"] for r in runs], test_accuracy=[r["test_accuracy"] for r in runs],
                    train=[r["train"] for r in runs])
    return evaluate


@claim(
    "psgd-lie-group",
    statement="Preconditioned SGD with a Kronecker Lie-group preconditioner fitted online from Hessian-vector "
              "products, at the paper's default preconditioner step, reaches a lower loss than Adam and SGD "
              "with momentum at equal steps on an ill-conditioned problem whose curvature is not axis-aligned.",
    criterion="Logistic regression on digits with inputs mixed by M = U diag(10^u) V^T (u in [-3, 0], U, V "
              "random orthogonal), train/val/test 50/20/30% per seed, batch 64, T = 60 (smoke) / 500 (full) "
              "steps, 3 paired seeds. Every method's lr is tuned with paperzoo.core.evidence.tune on the mean "
              "validation cross-entropy over the seeds, grid 1e-3..1 in half-decades (smoke {1e-3, 1e-2, 1e-1}), "
              "extended past a winning edge within [1e-6, 10]. Passes if PSGD (Kron, exact Hvp, precond_lr 0.1) "
              "beats both Adam and SGD-momentum on test cross-entropy by a paired margin of 0.02 nats and "
              "beyond 2 SE. Control: PSGD restricted to the diagonal group (precond_type='diag', same tuning) "
              "through the same criterion; it must fail.",
    baseline="torch.optim.Adam and torch.optim.SGD(momentum=0.9), same splits, initialisation, batches, grid "
             "size and step budget",
    timeout={"smoke": 120.0, "full": 900.0},
    threads=1,
)
def psgd_beats_adam_sgd_ill_conditioned(ctx: ClaimContext) -> ClaimResult:
    steps = ctx.pick(smoke=60, full=500)
    lrs = ctx.pick(smoke=LRS_SMOKE, full=LRS_FULL)
    seeds = [s % (2**31) for s in ctx.seeds(NUM_SEEDS)]
    start = time.perf_counter()
    M = _mixing(ctx.generator)
    datasets = [_data(s, M) for s in seeds]
    sel = tune({m: _evaluator(m, seeds, steps, datasets) for m in METHODS}, lrs, score=lambda out: out["val"],
               bounds=BOUNDS, max_extensions=ctx.pick(smoke=2, full=4))
    test = {m: s.output["test"] for m, s in sel.items()}

    def compare(method, baseline):
        return paired_comparison(test[method], test[baseline], margin=MARGIN)

    comparisons = {b: compare("PSGD", b) for b in ("Adam", "SGD")}
    passed = all(c.wins for c in comparisons.values())
    control_cmps = {b: compare("PSGD-diag", b) for b in ("Adam", "SGD")}
    control = Control("PSGD restricted to the diagonal group (precond_type='diag', same tuning) through the same "
                      "criterion", all(c.wins for c in control_cmps.values()),
                      {f"vs_{b}": c.as_metrics() for b, c in control_cmps.items()})

    def summary(m):
        out = sel[m].output
        return dict(selection=sel[m].as_metrics(), best_lr=sel[m].best, at_edge=sel[m].at_edge,
                    test_cross_entropy=out["test"], test_accuracy=out["test_accuracy"],
                    train_cross_entropy=out["train"], val_cross_entropy_mean=out["val"])

    metrics = dict(steps=steps, batch=BATCH, num_seeds=NUM_SEEDS, lr_grid=list(lrs), lr_bounds=list(BOUNDS),
                   margin_nats=MARGIN, **summary("PSGD"), control_psgd_diag=summary("PSGD-diag"),
                   paired_test_cross_entropy={f"PSGD_vs_{b}": c.as_metrics() for b, c in comparisons.items()},
                   seconds=round(time.perf_counter() - start, 2))
    baseline = {b: summary(b) for b in ("Adam", "SGD")}
    worst = min(comparisons, key=lambda b: comparisons[b].diff_mean)
    edge = [m for m in METHODS if sel[m].at_edge]
    headline = (comparisons[worst].headline("test cross-entropy", "PSGD", worst)
                + f"; {'SGD' if worst == 'Adam' else 'Adam'} {fmt_mean_std(test['SGD' if worst == 'Adam' else 'Adam'])}"
                + f"; PSGD-diag control {fmt_mean_std(test['PSGD-diag'])}"
                + f"; lrs {', '.join(f'{m} {sel[m].best:.3g}' for m in METHODS)}"
                + (f"; at a grid bound: {', '.join(edge)}" if edge else ""))
    return ClaimResult.decide(passed, metrics=metrics, baseline=baseline, headline=headline, control=control)
