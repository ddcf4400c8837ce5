"""kNN agreement of label-noise samples in a learned feature space, and a width sweep for double-descent curves.

References: Unraveling the Enigma of Double Descent: An In-depth Analysis through the Lens of Learned Feature
Space (Gu, Zheng, Aste), 2023.

The paper trains networks of growing width on data whose training labels are partly corrupted and, for every
width, asks where the corrupted ("noisy") training points sit in the learned feature space. Split the training set
into the clean points :math:`C` (given label = true label) and the noisy points :math:`N` (given label != true
label). With :math:`h(x)` the hidden representation of the trained network, fit a :math:`k`-nearest-neighbour
classifier on :math:`\\{(h(x_j), y_j) : j \\in C\\}` (cosine distance, uniform majority vote) and score

.. math::  P = \\frac{1}{|N|} \\sum_{i \\in N} \\mathbf 1\\big[\\mathrm{kNN}_k(h(x_i)) = y^{\\mathrm{true}}_i\\big],

the fraction of noisy points whose clean neighbours vote for their *true* label. The paper's reading: near the
interpolation threshold the model memorises the noisy points by dragging them towards the wrong class (low
:math:`P`, test-error peak); past it the extra capacity lets noisy points be fitted while staying among their true
class in feature space (:math:`P` rises, test error falls again).

- :func:`knn_noisy_label_agreement`: :math:`P` from features, given labels and true labels (vectorised; ties in
  the vote go to the smallest class index, as scikit-learn's ``KNeighborsClassifier``; a zero feature vector has
  cosine similarity 0 to everything, as scikit-learn's ``normalize``);
- :func:`mlp_width_sweep`: trains one-hidden-layer ReLU MLPs of each width full batch with Adam on the (noisy)
  labels and records train error (on the given labels), test error (on the test labels) and :math:`P` on the
  hidden activations.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import nn

from paperzoo.core.accepts import Generator, Int, Ints, Real, Tensor, accepts

__all__ = ["KNNAgreement", "WidthSweep", "knn_noisy_label_agreement", "mlp_width_sweep"]


class KNNAgreement(NamedTuple):
    """``agreement`` (P), ``n_noisy`` = |N|, ``n_clean`` = |C|, ``predictions``: the kNN vote per noisy point."""

    agreement: float
    n_noisy: int
    n_clean: int
    predictions: torch.Tensor


class WidthSweep(NamedTuple):
    """Per width (same order as ``widths``): train error on the given labels, test error, P, final train loss.

    ``interpolated``: train error on the given labels is 0 at that width.
    """

    widths: list[int]
    train_error: list[float]
    test_error: list[float]
    knn_agreement: list[float]
    train_loss: list[float]
    interpolated: list[bool]


def _knn_example(ctx):
    n, d = ctx.size("n") + 12, ctx.size("d")
    g = ctx.generator
    true = torch.arange(n) % 3
    given = true.clone()
    given[:4] = (true[:4] + 1) % 3
    return {"features": torch.randn(n, d, generator=g, dtype=ctx.dtype), "labels": given, "true_labels": true}


def _knn_agreement(features, labels, true_labels, k):
    noisy = labels != true_labels
    clean = ~noisy
    n_noisy, n_clean = int(noisy.sum()), int(clean.sum())
    if n_noisy == 0:
        return KNNAgreement(float("nan"), 0, n_clean, torch.empty(0, dtype=torch.int64))
    unit = torch.nn.functional.normalize(features, dim=1, eps=1e-30)  # zero rows stay zero
    sim = unit[noisy] @ unit[clean].T  # (|N|, |C|); max similarity = min cosine distance
    idx = sim.topk(k, dim=1).indices
    votes = labels[clean][idx]  # (|N|, k)
    n_classes = int(torch.maximum(labels.max(), true_labels.max())) + 1
    counts = torch.nn.functional.one_hot(votes, n_classes).sum(1)
    pred = counts.argmax(1)  # first maximum: smallest class among ties
    return KNNAgreement(float((pred == true_labels[noisy]).double().mean()), n_noisy, n_clean, pred)


@accepts(features=Tensor("n", "d"), labels=Tensor("n", dtype="int", low=0), true_labels=Tensor("n", dtype="int",
         low=0), k=Int(ge=1), example=_knn_example, output="any")
def knn_noisy_label_agreement(features: torch.Tensor, labels: torch.Tensor, true_labels: torch.Tensor, *,
                              k: int = 5) -> KNNAgreement:
    """kNN true-label agreement P of the label-noise points in a feature space.

    References: Unraveling the Enigma of Double Descent: An In-depth Analysis through the Lens of Learned Feature
    Space, 2023.

    Args:
        features: ``(n, d)`` learned representations :math:`h(x_i)` of the training points.
        labels: ``(n,)`` the labels the model was trained on (some corrupted).
        true_labels: ``(n,)`` the uncorrupted labels; point ``i`` is noisy iff ``labels[i] != true_labels[i]``.
        k: neighbours among the clean points (the paper: 5), cosine distance, majority vote of their labels.

    Returns:
        :class:`KNNAgreement`; ``agreement`` is NaN when no point is noisy.

    Example:
        >>> h = torch.tensor([[1., 0.], [1., .1], [1., -.1], [0., 1.], [.1, 1.], [-.1, 1.], [.9, .05]])
        >>> y_true = torch.tensor([0, 0, 0, 1, 1, 1, 0])
        >>> y = torch.tensor([0, 0, 0, 1, 1, 1, 1])
        >>> knn_noisy_label_agreement(h, y, y_true, k=3).agreement
        1.0
    """
    n_clean = int((labels == true_labels).sum())
    if k > n_clean:
        raise ValueError(f"k must be <= the number of clean points ({n_clean}), got {k}")
    return _knn_agreement(features, labels, true_labels, k)


class _MLP(nn.Module):
    def __init__(self, d_in, width, n_classes, dtype):
        super().__init__()
        self.hidden = nn.Linear(d_in, width, dtype=dtype)
        self.out = nn.Linear(width, n_classes, dtype=dtype)

    def features(self, x):
        return torch.relu(self.hidden(x))

    def forward(self, x):
        return self.out(self.features(x))


def _sweep_example(ctx):
    g = ctx.generator
    x = torch.randn(40, 3, generator=g, dtype=ctx.dtype)
    y = (x[:, 0] > 0).long()
    noisy = y.clone()
    noisy[:6] = 1 - noisy[:6]
    return {"x_train": x, "y_train": noisy, "y_true": y, "x_test": x[:10], "y_test": y[:10], "widths": [2, 8],
            "steps": 20, "generator": g}


@accepts(x_train=Tensor("n", "d"), y_train=Tensor("n", dtype="int", low=0), y_true=Tensor("n", dtype="int", low=0),
         x_test=Tensor("m", "d"), y_test=Tensor("m", dtype="int", low=0), widths=Ints(ge=1, min_length=1),
         steps=Int(ge=1), lr=Real(gt=0), k=Int(ge=1), generator=Generator(), example=_sweep_example, output="any")
def mlp_width_sweep(x_train: torch.Tensor, y_train: torch.Tensor, y_true: torch.Tensor, x_test: torch.Tensor,
                    y_test: torch.Tensor, widths, *, steps: int = 2000, lr: float = 1e-3, k: int = 5,
                    generator: torch.Generator | None = None) -> WidthSweep:
    """Width sweep of one-hidden-layer ReLU MLPs: train/test error and kNN agreement P of the noisy points.

    References: Unraveling the Enigma of Double Descent: An In-depth Analysis through the Lens of Learned Feature
    Space, 2023.

    For each width :math:`w` a fresh network :math:`f(x) = W_2\\,\\mathrm{relu}(W_1 x + b_1) + b_2` (PyTorch
    default initialisation, drawn from ``generator``) is trained for ``steps`` full-batch Adam steps (learning rate
    ``lr``, no weight decay) on the cross-entropy with labels ``y_train``; then the train error on ``y_train``, the
    test error on ``y_test`` and :func:`knn_noisy_label_agreement` of :math:`\\mathrm{relu}(W_1 x + b_1)` on the
    training set are recorded.

    Args:
        x_train: ``(n, d)``; y_train: ``(n,)`` training (possibly corrupted) labels; y_true: ``(n,)`` their true
            labels. x_test: ``(m, d)``; y_test: ``(m,)``. widths: hidden widths to train. k: kNN neighbours.

    Warns when the largest width does not interpolate ``y_train`` (the sweep then does not cross the threshold).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(60, 4, generator=g)
        >>> y = (x[:, 0] > 0).long()
        >>> s = mlp_width_sweep(x, y, y, x, y, [4, 32], steps=200, lr=1e-2, generator=g)
        >>> s.test_error[-1] < 0.2
        True
    """
    n_classes = int(torch.stack([y_train.max(), y_true.max(), y_test.max()]).max()) + 1
    n_clean = int((y_train == y_true).sum())
    if k > n_clean:
        raise ValueError(f"k must be <= the number of clean points ({n_clean}), got {k}")
    out = {key: [] for key in ("train_error", "test_error", "knn_agreement", "train_loss", "interpolated")}
    for w in widths:
        res = _train_one(x_train, y_train, y_true, x_test, y_test, int(w), n_classes, steps, lr, k, generator)
        for key, val in zip(out, res):
            out[key].append(val)
    if not out["interpolated"][-1]:
        warnings.warn(f"the largest width {widths[-1]} does not interpolate the training labels (train error "
                      f"{out['train_error'][-1]:.3f}); increase steps or widths", RuntimeWarning, stacklevel=2)
    return WidthSweep([int(w) for w in widths], **out)


def _train_one(x, y, y_true, x_test, y_test, width, n_classes, steps, lr, k, generator):
    model = _MLP(x.shape[1], width, n_classes, x.dtype)
    if generator is not None:  # redraw PyTorch's default uniform initialisation from the caller's generator
        with torch.no_grad():
            for lin in (model.hidden, model.out):
                bound = 1.0 / lin.in_features ** 0.5
                lin.weight.copy_((torch.rand(lin.weight.shape, generator=generator, dtype=x.dtype) * 2 - 1) * bound)
                lin.bias.copy_((torch.rand(lin.bias.shape, generator=generator, dtype=x.dtype) * 2 - 1) * bound)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        h = model.features(x)
        logits = model.out(h)
        loss = float(loss_fn(logits, y))
        if loss != loss:
            raise FloatingPointError(f"training diverged (NaN loss) at width {width}; lower lr")
        train_err = float((logits.argmax(1) != y).double().mean())
        test_err = float((model(x_test).argmax(1) != y_test).double().mean())
        p = _knn_agreement(h, y, y_true, k).agreement
    return train_err, test_err, p, loss, train_err == 0.0
