"""scikit-learn's 8x8 digits as a small, noisy-gradient classification problem for optimizer claims.

:func:`digits_split` loads the 1,797 images (bundled with scikit-learn, no download), standardises the 64 pixel
features with training-set statistics, and splits them at random. :func:`train_mlp` trains a one-hidden-layer
MLP on it with mini-batches drawn from a seeded generator, so that two optimizers compared on the same seed see
the same initialisation and the same sequence of batches.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch

from paperzoo.core.checks import check_int, check_number

__all__ = ["DigitsSplit", "digits_split", "train_mlp", "MLPResult", "single_thread"]


@functools.lru_cache(maxsize=1)
def _raw_digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread inside the block: for models this small, extra threads only add contention."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class DigitsSplit(NamedTuple):
    """Standardised features ``(n, 64)`` float and labels ``(n,)`` int64 in ``[0, 10)``.

    ``val_x``/``val_y`` are the validation split used for hyperparameter selection (None unless ``digits_split``
    was given ``val_fraction > 0``); ``test_x``/``test_y`` are then held out for the verdict only.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None


def digits_split(test_fraction: float = 0.3, *, val_fraction: float = 0.0, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32) -> DigitsSplit:
    """Random train/(validation/)test split of scikit-learn's digits, standardised with the training statistics.

    With ``val_fraction > 0`` a validation split of that fraction is carved out as well (for hyperparameter
    selection), and the test split is held out for the verdict. ``val_fraction=0`` gives the same split as before.
    """
    test_fraction = check_number("test_fraction", test_fraction, low=0.0, high=1.0, low_inclusive=False,
                                 high_inclusive=False)
    val_fraction = check_number("val_fraction", val_fraction, low=0.0, high=1.0, high_inclusive=False)
    if test_fraction + val_fraction >= 1.0:
        raise ValueError(f"test_fraction + val_fraction must be < 1, got {test_fraction + val_fraction}")
    x, y = _raw_digits()
    x, y = torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=torch.int64)
    order = torch.randperm(len(y), generator=generator)
    n_test = round(test_fraction * len(y))
    n_val = round(val_fraction * len(y))
    te, va, tr = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    # A pixel constant on the training split carries nothing to learn; it is set to 0 everywhere (its rare non-zero
    # validation/test values would otherwise become features of size 1e3-1e4 through a clamped std).
    mean, std = x[tr].mean(0), x[tr].std(0)
    x = torch.where(std > 0, (x - mean) / std.clamp_min(1e-3), torch.zeros((), dtype=dtype))
    if n_val == 0:
        return DigitsSplit(x[tr], y[tr], x[te], y[te])
    return DigitsSplit(x[tr], y[tr], x[te], y[te], x[va], y[va])


class MLPResult(NamedTuple):
    """Final losses and accuracies, and the training loss on the full training set every ``record_every`` steps.

    ``val_loss``/``val_accuracy`` are NaN when the split has no validation part.
    """

    train_loss: float
    test_loss: float
    test_accuracy: float
    history: list[float]
    val_loss: float = float("nan")
    val_accuracy: float = float("nan")


def train_mlp(data: DigitsSplit, make_optimizer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer], *,
              steps: int, batch_size: int, hidden: int = 64, seed: int = 0, record_every: int = 50) -> MLPResult:
    """Train ``Linear(64, hidden) -> ReLU -> Linear(hidden, 10)`` with cross-entropy on random mini-batches.

    ``seed`` fixes the initialisation and the batch sequence (independently of the optimizer). A run that turns
    the loss into NaN or inf reports ``inf`` losses and accuracy 0.
    """
    steps = check_int("steps", steps, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    init = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            bound = layer.in_features ** -0.5
            layer.weight.uniform_(-bound, bound, generator=init)
            layer.bias.uniform_(-bound, bound, generator=init)
    model = model.to(data.train_x.dtype)
    opt = make_optimizer(list(model.parameters()))
    batches = torch.Generator().manual_seed(seed + 1)
    n = data.train_x.shape[0]
    history = []
    loss_fn = torch.nn.functional.cross_entropy
    for step in range(steps):
        idx = torch.randint(n, (batch_size,), generator=batches)
        opt.zero_grad()
        loss = loss_fn(model(data.train_x[idx]), data.train_y[idx])
        if not torch.isfinite(loss):
            return _diverged(history)
        loss.backward()
        opt.step()
        if (step + 1) % record_every == 0:
            with torch.no_grad():
                history.append(float(loss_fn(model(data.train_x), data.train_y)))
    with torch.no_grad():
        train_loss = float(loss_fn(model(data.train_x), data.train_y))
        logits = model(data.test_x)
        test_loss = float(loss_fn(logits, data.test_y))
        acc = float((logits.argmax(1) == data.test_y).double().mean())
        val_loss = val_acc = float("nan")
        if data.val_x is not None:
            val_logits = model(data.val_x)
            val_loss = float(loss_fn(val_logits, data.val_y))
            val_acc = float((val_logits.argmax(1) == data.val_y).double().mean())
    finite = torch.isfinite(torch.tensor([train_loss, test_loss]))
    if not bool(finite.all()) or (data.val_x is not None and not torch.isfinite(torch.tensor(val_loss))):
        return _diverged(history)
    return MLPResult(train_loss, test_loss, acc, history, val_loss, val_acc)


def _diverged(history: list[float]) -> MLPResult:
    """A run whose loss became NaN or inf: infinite losses (it loses every comparison) and accuracy 0."""
    return MLPResult(float("inf"), float("inf"), 0.0, history, float("inf"), 0.0)
