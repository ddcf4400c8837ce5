"""The optimizer claims' shared tuning recipe: sweep a hyperparameter over paired seeds, pick it on a validation
score, read the verdict from held-out runs.

Every optimizer claim that compares tuned methods follows the same pattern (DESIGN.md, evidence rule 1), built on
:func:`paperzoo.core.evidence.tune`:

1. ``run(name, value, seed) -> dict`` trains one method at one hyperparameter value on one seed and returns its
   measurements: a validation score (key ``score``, default ``"val"``) and the held-out metrics the verdict reads
   (``"test"``, ``"test_acc"``, ...). Seed ``i`` fixes the data split, the initialisation and the batch order for
   every method (paired seeds).
2. :func:`tune_over_seeds` gives every method a grid of the same size, scores a value by the mean validation
   score over the seeds, extends the grid past a winning edge (``select_on_grid``), and keeps the chosen runs.
3. Where the verdict metric is itself a training quantity (the training loss of an optimisation-speed claim, a
   stationarity measure), there is no held-out split of the data to read: ``verdict_seeds`` then reruns each
   chosen value on fresh seeds (fresh data split, initialisation and batches) never used for selection, and the
   verdict reads those runs.

:func:`digits_data` is the per-seed train / validation / test split of scikit-learn's digits, :func:`mlp_run` one
:func:`paperzoo.data.digits.train_mlp` run as such a measurement dict, and :func:`split_heldout` carves a
validation half out of a held-out set that comes without one (``digits_task``, modular arithmetic).
:func:`train_epochs` and :func:`class_accuracy` are the epoch loop (plain or closure-based optimizers, optional
per-epoch class weights) and the per-class accuracy of the ``digits_task`` claims.

Example::

    >>> sel = tune_over_seeds(lambda name, lr, seed: {"val": (lr - 0.01) ** 2 + seed, "test": lr},
    ...                       {"A": (0.1, 1.0)}, seeds=[0, 1], bounds=(1e-4, 10.0))
    >>> round(sel["A"].best, 6), values(sel["A"], "test") == [sel["A"].best] * 2
    (0.01, True)
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from paperzoo.core.evidence import Selection, tune
from paperzoo.data.digits import DigitsSplit, digits_split, train_mlp

__all__ = ["digits_data", "mlp_run", "split_heldout", "train_epochs", "class_accuracy", "tune_over_seeds",
           "values", "selection_metrics", "edge_note", "seed_of"]

Run = Callable[[str, Any, int], Mapping[str, float]]


def seed_of(seed: int) -> int:
    """A context seed (63-bit) folded into the range every torch/numpy consumer accepts."""
    return int(seed) % (2**31)


@functools.lru_cache(maxsize=32)
def digits_data(seed: int, test_fraction: float = 0.2, val_fraction: float = 0.2) -> DigitsSplit:
    """The digits split of one paired seed: train / validation / test, standardised with training statistics.

    The validation and test features are clipped to the range each feature takes on the training images. A pixel
    that is (almost) constant on the training images (the border pixels are zero on almost every image) gets a tiny
    or clamped (1e-3) standard deviation in :func:`digits_split`, so the rare held-out image where it is nonzero
    gets a feature of 100 to 1,000 standard deviations, far outside anything the model was trained on, and that one
    image dominates the held-out loss. The model has no information about values outside the training range, so
    clipping to it changes nothing else.
    """
    data = digits_split(test_fraction, val_fraction=val_fraction, generator=torch.Generator().manual_seed(seed))
    lo, hi = data.train_x.min(0).values, data.train_x.max(0).values
    return DigitsSplit(data.train_x, data.train_y, data.test_x.clamp(lo, hi), data.test_y, data.val_x.clamp(lo, hi),
                       data.val_y)


def mlp_run(make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer], seed: int, *, steps: int,
            batch_size: int, hidden: int = 64, data: DigitsSplit | None = None) -> dict[str, float]:
    """One :func:`train_mlp` run on seed ``seed``'s :func:`digits_data` split, as the measurement dict of this
    recipe: ``train``, ``val``, ``test`` (cross-entropy), ``val_acc``, ``test_acc``. A diverged run reports
    infinite losses and accuracy 0, so it loses every selection and comparison."""
    seed = seed_of(seed)
    data = digits_data(seed) if data is None else data
    r = train_mlp(data, make_optimizer, steps=steps, batch_size=batch_size, hidden=hidden, seed=seed,
                  record_every=steps)
    return dict(train=r.train_loss, val=r.val_loss, test=r.test_loss, val_acc=r.val_accuracy,
                test_acc=r.test_accuracy)


def split_heldout(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, *, classes: int | None = None):
    """Split a held-out set into validation and test halves, class by class (each class split evenly at random).

    Returns ``(val_x, val_y, test_x, test_y)``. ``classes`` defaults to ``max(y) + 1``.
    """
    classes = int(y.max()) + 1 if classes is None else classes
    val, test = [], []
    for k in range(classes):
        idx = torch.nonzero(y == k).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        half = len(idx) // 2
        val.append(idx[:half])
        test.append(idx[half:])
    val, test = torch.cat(val), torch.cat(test)
    return x[val], y[val], x[test], y[test]


def train_epochs(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
                 epochs: int, batch_size: int, generator: torch.Generator, closure_step: bool,
                 on_epoch: Callable[[int], torch.Tensor | None] | None = None) -> bool:
    """Epochs of shuffled mini-batches with cross-entropy; ``closure_step`` for wrappers that take
    ``step(closure)`` (SAM, AMP), else ``backward`` then ``step()``. ``on_epoch(epoch)`` runs at the start of an
    epoch and may return class weights for the loss. Returns ``False`` as soon as the loss is not finite."""
    n = len(y)
    for epoch in range(epochs):
        weight = on_epoch(epoch) if on_epoch is not None else None
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]

            def closure():
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(xb), yb, weight=weight)
                loss.backward()
                return loss

            if closure_step:
                loss = opt.step(closure)
            else:
                loss = closure()
                opt.step()
            if not math.isfinite(float(loss.detach())):
                return False
    return True


def class_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int = 10) -> torch.Tensor:
    """Accuracy of each class, ``(classes,)`` (NaN for a class absent from ``y``)."""
    with torch.no_grad():
        pred = model(x).argmax(1)
    return torch.stack([(pred[y == k] == k).double().mean() for k in range(classes)])


def _mean(xs: Sequence[float]) -> float:
    xs = [float(v) for v in xs]
    if any(math.isnan(v) for v in xs):
        return math.inf
    return statistics.fmean(xs)


def tune_over_seeds(run: Run, grids: Mapping[str, Sequence[Any]], seeds: Sequence[int], *, score: str = "val",
                    minimize: bool = True, verdict_seeds: Sequence[int] | None = None,
                    **options: Any) -> dict[str, Selection]:
    """Tune every method of ``grids`` on the mean of ``run(...)[score]`` over ``seeds``, with equal grid sizes.

    Args:
        run: ``run(name, value, seed)`` returns one run's measurements.
        grids: ``{name: grid}``, all of the same length (checked by :func:`paperzoo.core.evidence.tune`).
        seeds: the paired seeds selection averages over.
        score: the key of the validation score in a run's measurements.
        minimize: lower scores are better.
        verdict_seeds: if given, each method's chosen value is rerun on these fresh seeds (for verdict metrics
            that are training quantities); otherwise the verdict reads the chosen runs' held-out metrics.
        **options: passed on to ``select_on_grid`` (``bounds``, ``max_extensions``, ``spacing``, ...).

    Returns:
        ``{name: Selection}``; ``Selection.output`` is ``{"runs": [...], "score": mean}`` for the chosen value,
        plus ``"verdict_runs"`` when ``verdict_seeds`` is given.
    """
    seeds = list(seeds)

    def evaluator(name):
        def evaluate(value):
            runs = [dict(run(name, value, s)) for s in seeds]
            return dict(runs=runs, score=_mean([r[score] for r in runs]))
        return evaluate

    sel = tune({name: evaluator(name) for name in grids}, dict(grids), score=lambda out: out["score"],
               minimize=minimize, **options)
    if verdict_seeds is not None:
        for name, s in sel.items():
            s.output["verdict_runs"] = [dict(run(name, s.best, v)) for v in verdict_seeds]
    return sel


def values(selection: Selection, key: str) -> list[float]:
    """Per-seed values of ``key`` in the chosen runs: the verdict runs when there are any, else the tuned ones."""
    runs = selection.output.get("verdict_runs") or selection.output["runs"]
    return [float(r[key]) for r in runs]


def selection_metrics(selections: Mapping[str, Selection]) -> dict[str, Any]:
    """The selection traces for the metrics, and the names whose best value is still on a grid edge."""
    return dict(selection={n: s.as_metrics() for n, s in selections.items()},
                at_edge=[n for n, s in selections.items() if s.at_edge],
                chosen={n: s.best for n, s in selections.items()})


def edge_note(selections: Mapping[str, Selection], what: str = "lr") -> str:
    """``"; lr at grid edge: AdamW"`` for a headline, or ``""``."""
    edges = [n for n, s in selections.items() if s.at_edge]
    return f"; {what} at grid edge: {', '.join(edges)}" if edges else ""
