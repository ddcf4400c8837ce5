"""Tree ensembles as smoothers: the weights that trees and forests put on training labels, and the effective number
of parameters those weights imply.

References: Why do Random Forests Work? Understanding Tree Ensembles as Self-Regularizing Adaptive Smoothers
(Curth, Jeffares, van der Schaar), 2024; the effective-parameter measure is the one of A U-turn on Double Descent:
Rethinking Parameter Counting in Statistical Learning (Curth, Jeffares, van der Schaar), 2023.

A smoother predicts with a weighted average of the training labels, :math:`\\hat f(x) = \\sum_{i=1}^n
\\hat s_i(x) y_i = \\hat s(x)^\\top y`. A regression tree is one: with :math:`\\ell(x)` the leaf that ``x`` falls
in and :math:`c_i` the number of times training point ``i`` entered the tree's (bootstrap) sample,

.. math::
    \\hat s_i(x) = \\frac{c_i\\, \\mathbb 1[\\ell(x_i) = \\ell(x)]}{\\sum_j c_j\\, \\mathbb 1[\\ell(x_j) = \\ell(x)]},

and a forest of ``B`` trees averages its trees' weights, :math:`\\hat s(x) = \\frac1B \\sum_b \\hat s^{(b)}(x)`. The
weights depend on the labels only through where the splits fell (an *adaptive* smoother). The effective number of
parameters used at a set of inputs :math:`I_0` is

.. math:: p^0_{\\hat s}(I_0) = \\frac{n}{|I_0|} \\sum_{x \\in I_0} \\|\\hat s(x)\\|_2^2,

which equals ``n / k`` for a ``k``-nearest-neighbour smoother and ``n`` for an interpolating tree (one training point
per leaf), at any input. The paper evaluates it at the training inputs and at unseen test inputs: a forest is
smoother (smaller :math:`p^0`) than its trees, and smoother still at inputs unlike the training inputs.

Bootstrap counts: for a fitted :class:`~sklearn.ensemble.RandomForestRegressor` with ``bootstrap=True`` the counts
:math:`c_i` are redrawn from each tree's ``random_state`` the way scikit-learn draws them (``randint(0, n,
n_samples_bootstrap)`` of a ``RandomState``), and checked against the per-leaf sample weights the trees stored
(``tree_.weighted_n_node_samples``): a mismatch (another ``X_train``, a forest fitted with ``sample_weight``, a
scikit-learn that draws differently) raises instead of returning wrong weights.

:func:`tree_smoother_weights` computes the weights of a fitted tree or forest, :func:`knn_smoother_weights` those of
the uniform ``k``-nearest-neighbour smoother (for comparison), :func:`effective_parameters` the measure above.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
from sklearn.tree import DecisionTreeRegressor, ExtraTreeRegressor

from paperzoo.core.accepts import Instance, Int, Tensor, accepts

__all__ = ["tree_smoother_weights", "knn_smoother_weights", "effective_parameters"]

_TREES = (DecisionTreeRegressor, ExtraTreeRegressor)
_FORESTS = (RandomForestRegressor, ExtraTreesRegressor)
_WHAT = "fitted scikit-learn DecisionTreeRegressor, ExtraTreeRegressor, RandomForestRegressor or ExtraTreesRegressor"


def _example_fit(ctx) -> dict:
    n, q, d = ctx.size("n"), ctx.size("q"), ctx.size("d")
    g = ctx.generator
    x = torch.randn(n, d, generator=g, dtype=ctx.dtype)
    y = torch.randn(n, generator=g, dtype=torch.float64)
    model = RandomForestRegressor(n_estimators=3, random_state=0).fit(x.numpy(), y.numpy())
    return {"tree_or_forest": model, "X_train": x, "X_query": torch.randn(q, d, generator=g, dtype=ctx.dtype)}


def _bootstrap_counts(forest, tree, n: int) -> np.ndarray:
    """How many times each training point entered ``tree``'s sample (ones without bootstrap)."""
    if not forest.bootstrap:
        return np.ones(n)
    n_boot = getattr(forest, "_n_samples_bootstrap", None)
    if n_boot is None:  # older scikit-learn: recompute from max_samples
        m = forest.max_samples
        n_boot = n if m is None else int(m) if isinstance(m, (int, np.integer)) else max(round(n * m), 1)
    indices = np.random.RandomState(tree.random_state).randint(0, n, n_boot)
    return np.bincount(indices, minlength=n).astype(np.float64)


def _tree_weights(tree, x_train: np.ndarray, x_query: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """One tree's ``(q, n)`` leaf co-membership weights, checked against the tree's stored leaf sample weights."""
    leaf_train, leaf_query = tree.apply(x_train), tree.apply(x_query)
    mass = np.bincount(leaf_train, weights=counts, minlength=tree.tree_.node_count)
    leaves = tree.tree_.children_left == -1
    stored = tree.tree_.weighted_n_node_samples
    if not np.allclose(mass[leaves], stored[leaves], rtol=1e-9, atol=1e-9):
        raise ValueError("X_train must be the inputs the estimator was fitted on (unweighted): the training points "
                         "it sends to the leaves do not match the leaf sample counts the fitted trees stored")
    same = leaf_query[:, None] == leaf_train[None, :]
    return same * (counts / mass[leaf_train])[None, :]


def _check_estimator(model, x_train: torch.Tensor) -> None:
    fitted = hasattr(model, "tree_") if isinstance(model, _TREES) else hasattr(model, "estimators_")
    if not fitted:
        raise ValueError(f"tree_or_forest must be fitted, got an unfitted {type(model).__name__}")
    if model.n_features_in_ != x_train.shape[1]:
        raise ValueError(f"X_train must have the estimator's {model.n_features_in_} features, got "
                         f"{x_train.shape[1]}")
    if model.criterion == "absolute_error":
        raise ValueError("tree_or_forest must predict leaf means; criterion='absolute_error' predicts leaf medians, "
                         "which are not a weighted average of the labels with label-free weights")
    if getattr(model, "monotonic_cst", None) is not None:
        raise ValueError("tree_or_forest must not use monotonic_cst: its clipped leaf values are not leaf means")
    if isinstance(model, _FORESTS) and getattr(model, "_sample_weight", None) is not None:
        raise ValueError("tree_or_forest was fitted with sample_weight; only unweighted fits are supported")


@accepts(tree_or_forest=Instance((*_TREES, *_FORESTS), what=_WHAT), X_train=Tensor("n", "d"),
         X_query=Tensor("q", "d"), example=_example_fit)
def tree_smoother_weights(tree_or_forest, X_train: torch.Tensor, X_query: torch.Tensor) -> torch.Tensor:
    """Smoother weights of a fitted regression tree or forest: the matrix :math:`\\hat s(x)` with
    ``tree_or_forest.predict(X_query) == weights @ y_train``.

    References: Why do Random Forests Work? Understanding Tree Ensembles as Self-Regularizing Adaptive Smoothers,
    2024.

    Row ``j`` holds :math:`\\hat s(x_j)` for ``x_j = X_query[j]``: per tree, training point ``i`` gets
    :math:`c_i / \\sum_{k \\in \\ell(x_j)} c_k` when it shares ``x_j``'s leaf (``c`` the bootstrap counts, ones
    without bootstrap) and 0 otherwise; a forest averages over its trees. Rows are nonnegative and sum to one.
    One pass over the trees, vectorised over queries and training points (memory ``O(q n)``).

    Args:
        tree_or_forest: a fitted ``DecisionTreeRegressor``, ``ExtraTreeRegressor``, ``RandomForestRegressor`` or
            ``ExtraTreesRegressor`` (any ``max_features``, ``max_samples``, leaf sizes; not fitted with
            ``sample_weight``, ``criterion='absolute_error'`` or ``monotonic_cst``).
        X_train: the training inputs it was fitted on, in the fitting order, shape ``(n, d)``.
        X_query: inputs to weigh the labels for, shape ``(q, d)``.

    Returns:
        The weights, shape ``(q, n)``, in the dtype of ``X_train``.

    Example:
        >>> from sklearn.ensemble import RandomForestRegressor
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.rand(50, 3, generator=g, dtype=torch.float64)
        >>> xq = torch.rand(7, 3, generator=g, dtype=torch.float64)
        >>> y = x.sum(1)
        >>> forest = RandomForestRegressor(n_estimators=10, random_state=0).fit(x.numpy(), y.numpy())
        >>> w = tree_smoother_weights(forest, x, xq)
        >>> bool(torch.allclose(w @ y, torch.from_numpy(forest.predict(xq.numpy())), atol=1e-10))
        True
    """
    _check_estimator(tree_or_forest, X_train)
    x_train = X_train.detach().cpu().numpy()
    x_query = X_query.detach().cpu().numpy()
    n = x_train.shape[0]
    if isinstance(tree_or_forest, _TREES):
        w = _tree_weights(tree_or_forest, x_train, x_query, np.ones(n))
    else:
        w = np.zeros((x_query.shape[0], n))
        for tree in tree_or_forest.estimators_:
            w += _tree_weights(tree, x_train, x_query, _bootstrap_counts(tree_or_forest, tree, n))
        w /= len(tree_or_forest.estimators_)
    return torch.from_numpy(w).to(dtype=X_train.dtype, device=X_train.device)


@accepts(X_train=Tensor("n", "d"), X_query=Tensor("q", "d"), k=Int(ge=1), example=lambda ctx: {
    "X_train": torch.randn(ctx.size("n"), ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype),
    "X_query": torch.randn(ctx.size("q"), ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype), "k": 2})
def knn_smoother_weights(X_train: torch.Tensor, X_query: torch.Tensor, k: int) -> torch.Tensor:
    """Smoother weights of the uniform k-nearest-neighbour regressor: :math:`\\hat s_i(x) = 1/k` for the ``k``
    training inputs nearest to ``x`` (Euclidean), 0 otherwise; :math:`p^0_{\\hat s} = n/k` at every input.

    References: Why do Random Forests Work? Understanding Tree Ensembles as Self-Regularizing Adaptive Smoothers,
    2024 (the non-adaptive smoother trees are compared with).

    Args:
        X_train: training inputs, shape ``(n, d)``.
        X_query: inputs to weigh the labels for, shape ``(q, d)``.
        k: number of neighbours, ``1 <= k <= n``. Ties at the ``k``-th distance are broken by ``torch.topk``.

    Returns:
        The weights, shape ``(q, n)``, in the dtype of ``X_train``.

    Example:
        >>> x = torch.tensor([[0.0], [1.0], [3.0]])
        >>> knn_smoother_weights(x, torch.tensor([[0.4]]), 2)
        tensor([[0.5000, 0.5000, 0.0000]])
    """
    n = X_train.shape[0]
    if k > n:
        raise ValueError(f"k must be <= the number of training inputs n = {n}, got {k}")
    dist = torch.cdist(X_query, X_train, compute_mode="donot_use_mm_for_euclid_dist")
    nearest = dist.topk(k, dim=1, largest=False).indices
    w = torch.zeros(X_query.shape[0], n, dtype=X_train.dtype, device=X_train.device)
    return w.scatter_(1, nearest, 1.0 / k)


@accepts(weights=Tensor("q", "n", nonnegative=True))
def effective_parameters(weights: torch.Tensor) -> torch.Tensor:
    """Effective number of parameters of a smoother at a set of inputs:
    :math:`p^0_{\\hat s}(I_0) = \\frac{n}{|I_0|} \\sum_{x \\in I_0} \\|\\hat s(x)\\|_2^2`.

    References: Why do Random Forests Work? Understanding Tree Ensembles as Self-Regularizing Adaptive Smoothers,
    2024; A U-turn on Double Descent: Rethinking Parameter Counting in Statistical Learning, 2023.

    ``weights`` at the training inputs gives the paper's train-time measure, at held-out inputs its test-time one.
    It is ``n / k`` for a k-NN smoother and ``n`` for any interpolating smoother (one-hot rows); it ranges over
    ``[1, n]`` for nonnegative rows that sum to one.

    Args:
        weights: smoother weights, one row per input of :math:`I_0`, shape ``(q, n)`` (``n`` training points).

    Returns:
        A 0-dimensional tensor in the dtype of ``weights``.

    Example:
        >>> round(float(effective_parameters(torch.full((4, 10), 0.1, dtype=torch.float64))), 12)
        1.0
        >>> float(effective_parameters(torch.eye(10)))
        10.0
    """
    return weights.shape[1] * weights.pow(2).sum(1).mean()
