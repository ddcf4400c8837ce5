"""Learning curves and sample complexity: a seeded learning-curve harness, samples-to-reach, Gaussian naive Bayes
and the exact asymptotic errors of linear rules on Gaussian classes with collinear means.

References: Revisiting Discriminative vs. Generative Classifiers: Theory and Implications (Zheng, Wu, Bao, Cao,
Li, Zhu), 2023; On Discriminative vs. Generative Classifiers: A comparison of logistic regression and naive Bayes
(Ng, Jordan), 2001.

The paper's prediction: for :math:`K` Gaussian classes whose class conditionals share a diagonal covariance (the
naive Bayes model holds) and whose features each carry signal, multiclass Gaussian naive Bayes comes within
:math:`\\epsilon` of its asymptotic error after :math:`O(\\log n)` samples, multiclass logistic regression after
:math:`O(n)`, with :math:`n` the feature dimension. Its implication for linear probes of frozen features: with few
labelled samples per class, naive Bayes is the better linear head.

The pieces, each reusable:

- :func:`learning_curve` draws, per seed, a test set and a pool of training samples from ``sample(size,
  generator)`` and records the test error of ``fit_predict(X_train, y_train, X_test)`` on nested prefixes of the
  pool of every size :math:`m` in ``sizes``: :math:`e_s(m)`;
- :func:`samples_to_reach` reads off :math:`m^\\star_s = \\min\\{m : e_s(m) \\le e_\\infty + \\text{tol}\\}`, the
  first crossing, interpolated linearly in :math:`\\log m` between the grid points that bracket it;
- :func:`gaussian_nb_fit` / :func:`gaussian_nb_log_proba` / :func:`gaussian_nb_predict`: Gaussian naive Bayes
  with per-class variances (scikit-learn's ``GaussianNB``) or one shared diagonal covariance (the pooled
  within-class variance: the paper's naive Bayes, a diagonal LDA);
- :func:`bayes_error` and :func:`naive_bayes_asymptotic_error`: exact errors of the Bayes rule and of naive Bayes
  with infinite data, for Gaussian classes with a shared covariance and collinear means (then every pairwise
  discriminant of either rule is a function of one Gaussian projection and the error is a sum of normal CDFs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from paperzoo.core.accepts import Flag, Function, Instance, Int, Ints, Real, Tensor, accepts

__all__ = ["LearningCurve", "SamplesToReach", "GaussianNBParams", "learning_curve", "samples_to_reach",
           "gaussian_nb_fit", "gaussian_nb_log_proba", "gaussian_nb_predict", "gaussian_nb_fit_predict",
           "bayes_error", "naive_bayes_asymptotic_error"]


# -- learning curves ---------------------------------------------------------------------------------------------


class LearningCurve(NamedTuple):
    """Result of :func:`learning_curve`.

    Attributes:
        sizes: training-set sizes :math:`m`, ascending, shape ``(M,)`` (int64).
        errors: test error :math:`e_s(m)`, shape ``(S, M)`` (float64; NaN where ``fit_predict`` gave none).
        seeds: the seeds, one row of ``errors`` each.
        mean: mean over seeds, ignoring NaN, shape ``(M,)``.
        std: sample standard deviation over seeds (0 for one seed), shape ``(M,)``.
    """

    sizes: torch.Tensor
    errors: torch.Tensor
    seeds: tuple[int, ...]
    mean: torch.Tensor
    std: torch.Tensor


class SamplesToReach(NamedTuple):
    """Result of :func:`samples_to_reach`.

    Attributes:
        per_seed: :math:`m^\\star_s`, shape ``(S,)`` (float64; inf where the curve never reaches the level).
        mean_curve: :math:`m^\\star` of the seed-averaged curve (inf if it never reaches the level).
        reached: whether each seed's curve reached the level, shape ``(S,)`` (bool).
        level: :math:`e_\\infty + \\text{tol}`.
    """

    per_seed: torch.Tensor
    mean_curve: float
    reached: torch.Tensor
    level: float


def _toy_sample(size: int, generator: torch.Generator | None):
    """Two unit-variance Gaussian classes in 2 dimensions, means -+1 on the first axis (labels alternate)."""
    y = torch.arange(size) % 2
    x = torch.randn(size, 2, generator=generator, dtype=torch.float64)
    x[:, 0] += 2.0 * y - 1.0
    return x, y


def _sign_fit_predict(X_train, y_train, X_test):
    """Nearest class mean on the first axis."""
    m0, m1 = X_train[y_train == 0, 0].mean(), X_train[y_train == 1, 0].mean()
    return (X_test[:, 0] > 0.5 * (m0 + m1)).long() if m1 > m0 else (X_test[:, 0] < 0.5 * (m0 + m1)).long()


def _curve_example(ctx):
    return {"fit_predict": _sign_fit_predict, "sample": _toy_sample, "sizes": [2, 4, 8], "seeds": [0, 1],
            "test_size": 64}


def _as_labels(pred, name: str, expected: int) -> torch.Tensor:
    if isinstance(pred, np.ndarray):
        pred = torch.from_numpy(pred)
    if not isinstance(pred, torch.Tensor):
        raise TypeError(f"{name} must return a torch.Tensor or numpy array of labels, got {type(pred).__name__}")
    if pred.shape != (expected,):
        raise ValueError(f"{name} must return one label per test sample, shape ({expected},), got "
                         f"{tuple(pred.shape)}")
    return pred


@accepts(fit_predict=Function(), sample=Function(), sizes=Ints(ge=1, min_length=1), seeds=Ints(ge=0, min_length=1),
         test_size=Int(ge=1), nested=Flag(), stop_below=Real(ge=0, optional=True), example=_curve_example)
def learning_curve(fit_predict: Callable, sample: Callable, sizes, seeds, *, test_size: int = 2000,
                   nested: bool = True, stop_below: float | None = None) -> LearningCurve:
    """Learning curve: test error against training-set size, one curve per seed.

    References: Revisiting Discriminative vs. Generative Classifiers: Theory and Implications, 2023 (the curves of
    its simulations).

    For each seed :math:`s` a generator seeded with :math:`s` draws the test set ``sample(test_size, g)`` and then
    a training pool ``sample(max(sizes), g)``; the error at size :math:`m` is
    :math:`e_s(m) = \\frac1{T}\\sum_t [\\hat y_t \\ne y_t]` with
    ``y_hat = fit_predict(X_pool[:m], y_pool[:m], X_test)``. Nested prefixes (``nested=True``) make the curve of
    one seed one growing data set, as in the paper's simulation; ``nested=False`` draws a fresh training set
    ``sample(m, g)`` for every size.

    Args:
        fit_predict: ``(X_train, y_train, X_test) -> labels``, labels a tensor or numpy array of shape ``(T,)``.
        sample: ``(size, generator) -> (X, y)`` with ``X`` of shape ``(size, n)`` and ``y`` of shape ``(size,)``;
            it should shuffle (or interleave) classes so that every prefix holds every class.
        sizes: training-set sizes :math:`m` (sorted and deduplicated here).
        seeds: one curve per seed.
        test_size: :math:`T`, test samples per seed.
        nested: prefixes of one pool (True) or a fresh draw per size.
        stop_below: if given, a seed's curve stops at the first size whose error is <= ``stop_below`` (the larger
            sizes are not fitted and stay NaN, which :func:`samples_to_reach` skips): the paper's simulations stop
            the same way once the error is within the tolerance.

    Returns:
        :class:`LearningCurve`.

    Example:
        >>> import torch
        >>> from paperzoo.diagnostics.learning_curves import learning_curve
        >>> def sample(size, g):
        ...     y = torch.arange(size) % 2
        ...     return torch.randn(size, 1, generator=g, dtype=torch.float64) + 3.0 * y[:, None], y
        >>> def fit_predict(X, y, X_test):  # threshold halfway between the class means
        ...     return (X_test[:, 0] > 0.5 * (X[y == 0, 0].mean() + X[y == 1, 0].mean())).long()
        >>> curve = learning_curve(fit_predict, sample, [2, 20, 200], [0, 1, 2], test_size=4000)
        >>> tuple(curve.errors.shape), bool(abs(curve.mean[-1] - 0.067) < 0.02)  # Bayes error Phi(-1.5) = 0.0668
        ((3, 3), True)
    """
    sizes_t = torch.tensor(sorted({int(m) for m in sizes}), dtype=torch.int64)
    seeds_t = tuple(int(s) for s in seeds)
    errors = torch.full((len(seeds_t), len(sizes_t)), math.nan, dtype=torch.float64)
    for i, seed in enumerate(seeds_t):  # loops over seeds and sizes: each entry is one model fit
        g = torch.Generator().manual_seed(seed)
        X_test, y_test = sample(test_size, g)
        y_test = torch.as_tensor(y_test)
        if nested:
            X_pool, y_pool = sample(int(sizes_t[-1]), g)
        for j, m in enumerate(sizes_t.tolist()):
            X, y = (X_pool[:m], y_pool[:m]) if nested else sample(m, g)
            pred = _as_labels(fit_predict(X, y, X_test), "fit_predict", len(y_test))
            errors[i, j] = (pred.to(y_test.dtype) != y_test).double().mean()
            if stop_below is not None and float(errors[i, j]) <= stop_below:
                break
    return LearningCurve(sizes_t, errors, seeds_t, *_nan_mean_std(errors))


def _nan_mean_std(errors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    finite = torch.isfinite(errors)
    count = finite.sum(0)
    filled = torch.where(finite, errors, torch.zeros_like(errors))
    mean = filled.sum(0) / count.clamp(min=1)
    dev = torch.where(finite, errors - mean, torch.zeros_like(errors))
    std = (dev.pow(2).sum(0) / (count - 1).clamp(min=1)).sqrt()
    mean = torch.where(count > 0, mean, torch.full_like(mean, math.nan))
    return mean, torch.where(count > 0, std, torch.full_like(std, math.nan))


def _first_reach(sizes: torch.Tensor, errors: torch.Tensor, level: float) -> torch.Tensor:
    """Per row of ``errors`` (S, M): first size at which the error is <= level, log-interpolated; inf if never.

    NaN entries are skipped: the bracketing point below a crossing is the last finite one before it.
    """
    S, M = errors.shape
    valid = torch.isfinite(errors)
    hit = valid & (errors <= level)
    any_hit = hit.any(1)
    first = torch.argmax(hit.to(torch.int8), 1)  # first True (0 where none; masked below)
    idx = torch.arange(M).expand(S, M)
    # last finite index strictly before `first` (-1 where none)
    before = valid & (idx < first[:, None])
    prev = torch.where(before, idx, torch.full_like(idx, -1)).max(1).values
    logm = sizes.to(torch.float64).log()
    x1, e1 = logm[first], errors.gather(1, first[:, None]).squeeze(1)
    prev_c = prev.clamp(min=0)
    x0, e0 = logm[prev_c], errors.gather(1, prev_c[:, None]).squeeze(1)
    t = torch.where(prev >= 0, (e0 - level) / (e0 - e1), torch.zeros_like(e0))
    t = torch.nan_to_num(t, nan=0.0)  # e0 is finite and > level >= e1 when prev >= 0, so only guards masked rows
    out = torch.where(prev >= 0, (x0 + t * (x1 - x0)).exp(), x1.exp())
    return torch.where(any_hit, out, torch.full_like(out, math.inf))


def _reach_example(ctx):
    sizes = torch.tensor([10, 20, 40, 80, 160])
    errors = torch.stack([0.1 + 1.0 / sizes.double(), 0.1 + 2.0 / sizes.double()])
    return {"curve": LearningCurve(sizes, errors, (0, 1), errors.mean(0), errors.std(0)), "asymptote": 0.1,
            "tol": 0.03}


@accepts(curve=Instance(LearningCurve, what="LearningCurve"), asymptote=Real(ge=0), tol=Real(gt=0),
         example=_reach_example, infinite_ok=("per_seed", "mean_curve"))
def samples_to_reach(curve: LearningCurve, asymptote: float, tol: float) -> SamplesToReach:
    """Samples-to-reach: the first training-set size whose error is within ``tol`` of the asymptotic error.

    References: Revisiting Discriminative vs. Generative Classifiers: Theory and Implications, 2023 (the sample
    complexity of approaching the asymptotic error, measured in its simulations as the first size within a fixed
    tolerance).

    :math:`m^\\star_s = \\min\\{m : e_s(m) \\le e_\\infty + \\text{tol}\\}` for every seed :math:`s`, with
    :math:`e_\\infty` = ``asymptote``. Between the grid sizes :math:`m_{i-1} < m_i` that bracket the first crossing
    the level is interpolated linearly in :math:`\\log m`; a curve already within the tolerance at its first size
    gives that size. NaN errors are skipped (the bracketing point is the last finite one); a curve that never
    reaches the level needs more samples than any size tried: ``inf`` and ``reached=False``.

    Args:
        curve: a :class:`LearningCurve` (``sizes`` ``(M,)``, ``errors`` ``(S, M)``).
        asymptote: :math:`e_\\infty`, the asymptotic error of the learner (an exact value where one exists).
        tol: the tolerance, > 0.

    Returns:
        :class:`SamplesToReach`.

    Example:
        >>> import torch
        >>> from paperzoo.diagnostics.learning_curves import LearningCurve, samples_to_reach
        >>> sizes = torch.tensor([10, 100, 1000])
        >>> errors = torch.tensor([[0.40, 0.20, 0.12]], dtype=torch.float64)
        >>> r = samples_to_reach(LearningCurve(sizes, errors, (0,), errors[0], 0 * errors[0]), 0.10, 0.05)
        >>> round(float(r.per_seed[0]), 3)  # 0.15 is 5/8 of the way from 0.20 to 0.12, in log10 m: 10**2.625
        421.697
    """
    sizes, errors = curve.sizes, curve.errors
    if not isinstance(sizes, torch.Tensor) or sizes.dim() != 1:
        raise ValueError(f"curve.sizes must be a 1-d tensor, got {getattr(sizes, 'shape', type(sizes).__name__)}")
    if not isinstance(errors, torch.Tensor) or errors.dim() != 2 or errors.shape[1] != sizes.shape[0]:
        raise ValueError(f"curve.errors must have shape (S, {sizes.shape[0]}), got "
                         f"{tuple(getattr(errors, 'shape', ()))}")
    if sizes.numel() == 0 or bool((sizes <= 0).any()) or bool((sizes[1:] <= sizes[:-1]).any()):
        raise ValueError("curve.sizes must be positive and strictly increasing")
    errors = errors.to(torch.float64)
    level = float(asymptote) + float(tol)
    per_seed = _first_reach(sizes, errors, level)
    mean_curve = float(_first_reach(sizes, _nan_mean_std(errors)[0][None, :], level)[0])
    return SamplesToReach(per_seed, mean_curve, torch.isfinite(per_seed), level)


# -- Gaussian naive Bayes ------------------------------------------------------------------------------------------


class GaussianNBParams(NamedTuple):
    """A fitted Gaussian naive Bayes model (result of :func:`gaussian_nb_fit`).

    Attributes:
        means: class means :math:`\\hat\\mu_{kj}`, shape ``(K, n)``.
        variances: smoothed variances :math:`\\hat\\sigma^2_{kj} + \\varepsilon`, shape ``(K, n)`` (all rows equal
            with a shared covariance).
        log_priors: :math:`\\log \\hat\\pi_k = \\log(m_k/m)`, shape ``(K,)``.
        counts: :math:`m_k`, shape ``(K,)`` (int64).
        epsilon: :math:`\\varepsilon` = ``var_smoothing`` times the largest feature variance of ``X``.
        shared_variance: whether the variances are pooled over classes.
    """

    means: torch.Tensor
    variances: torch.Tensor
    log_priors: torch.Tensor
    counts: torch.Tensor
    epsilon: float
    shared_variance: bool


def _nb_example(ctx):
    g, K = ctx.generator, 2
    m, n = 2 * K + ctx.size("m"), ctx.size("n")
    y = torch.arange(m) % K
    X = 2.0 * y[:, None].to(ctx.dtype) + torch.randn(m, n, generator=g, dtype=ctx.dtype)
    return {"X": X, "y": y}


def _gaussian_nb_fit(X, y, K, var_smoothing, shared_variance) -> GaussianNBParams:
    onehot = torch.nn.functional.one_hot(y, K).to(X.dtype)  # (m, K)
    counts = onehot.sum(0)
    means = (onehot.T @ X) / counts[:, None]
    resid2 = (X - means[y]).pow(2)
    epsilon = float(var_smoothing * X.var(0, unbiased=False).max())
    if shared_variance:  # pooled within-class variance: sum_k m_k var_k / m
        variances = (resid2.mean(0) + epsilon).expand(K, -1).clone()
    else:
        variances = (onehot.T @ resid2) / counts[:, None] + epsilon
    return GaussianNBParams(means, variances, (counts / counts.sum()).log(), counts.to(torch.int64), epsilon,
                            bool(shared_variance))


@accepts(X=Tensor("m", "n"), y=Tensor("m", dtype="int", low=0), num_classes=Int(ge=2, optional=True),
         var_smoothing=Real(ge=0), shared_variance=Flag(), example=_nb_example)
def gaussian_nb_fit(X: torch.Tensor, y: torch.Tensor, *, num_classes: int | None = None,
                    var_smoothing: float = 1e-9, shared_variance: bool = True) -> GaussianNBParams:
    """Gaussian naive Bayes: class means, diagonal variances and class priors by maximum likelihood.

    References: Revisiting Discriminative vs. Generative Classifiers: Theory and Implications, 2023 (its naive
    Bayes with a covariance matrix shared by the classes).

    With :math:`m_k` samples of class :math:`k`: :math:`\\hat\\pi_k = m_k/m`,
    :math:`\\hat\\mu_{kj} = \\frac1{m_k}\\sum_{i: y_i = k} x_{ij}` and
    :math:`\\hat\\sigma^2_{kj} = \\frac1{m_k}\\sum_{i: y_i = k}(x_{ij} - \\hat\\mu_{kj})^2`; with
    ``shared_variance`` (default, the paper's model, a diagonal LDA) every class gets the pooled
    :math:`\\hat\\sigma^2_j = \\sum_k \\hat\\pi_k \\hat\\sigma^2_{kj}`. To every variance is added
    :math:`\\varepsilon` = ``var_smoothing`` :math:`\\cdot \\max_j \\operatorname{Var}(x_{\\cdot j})`
    (scikit-learn's convention, so ``shared_variance=False`` is ``sklearn.naive_bayes.GaussianNB``).

    Args:
        X: features, shape ``(m, n)``.
        y: labels in ``0..K-1``, shape ``(m,)``; every class must occur.
        num_classes: :math:`K` (default ``y.max() + 1``).
        var_smoothing: relative variance floor, >= 0.
        shared_variance: pool the variances over classes.

    Returns:
        :class:`GaussianNBParams`.

    Example:
        >>> import torch
        >>> from paperzoo.diagnostics.learning_curves import gaussian_nb_fit
        >>> X = torch.tensor([[0.0, 1.0], [2.0, 1.0], [4.0, 5.0], [6.0, 3.0]], dtype=torch.float64)
        >>> p = gaussian_nb_fit(X, torch.tensor([0, 0, 1, 1]), var_smoothing=0.0)
        >>> p.means.tolist(), p.variances[0].tolist()  # pooled: (1 + 1)/2 and (0 + 1)/2
        ([[1.0, 1.0], [5.0, 4.0]], [1.0, 0.5])
    """
    K = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if int(y.max()) >= K:
        raise ValueError(f"y must have labels in 0..{K - 1} (num_classes={K}), got {int(y.max())}")
    counts = torch.bincount(y, minlength=K)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"y must contain every class 0..{K - 1}, got no samples of class(es) {missing}")
    params = _gaussian_nb_fit(X, y, K, var_smoothing, shared_variance)
    if not bool((params.variances > 0).all()):
        raise ValueError("X has a feature of zero variance within classes and var_smoothing adds nothing: "
                         "var_smoothing must be > 0 here")
    return params


def _gaussian_nb_log_proba(params: GaussianNBParams, X: torch.Tensor) -> torch.Tensor:
    mu, var = params.means, params.variances
    # joint log-likelihood log pi_k + sum_j log N(x_j; mu_kj, var_kj), broadcast (m, K, n) for accuracy
    quad = ((X[:, None, :] - mu[None]).pow(2) / var[None]).sum(-1)
    jll = params.log_priors - 0.5 * (2 * math.pi * var).log().sum(-1) - 0.5 * quad
    return jll - torch.logsumexp(jll, dim=-1, keepdim=True)


def _check_params(params: GaussianNBParams, X: torch.Tensor) -> None:
    if X.shape[-1] != params.means.shape[-1]:
        raise ValueError(f"X must have {params.means.shape[-1]} features (those of params.means), got "
                         f"{X.shape[-1]}")
    if X.dtype != params.means.dtype:
        raise TypeError(f"X must have the dtype of params.means ({params.means.dtype}), got {X.dtype}")


def _params_example(ctx):
    kw = _nb_example(ctx)
    return {"params": _gaussian_nb_fit(kw["X"], kw["y"], 2, 1e-9, True), "X": kw["X"]}


@accepts(params=Instance(GaussianNBParams, what="GaussianNBParams"), X=Tensor("t", "n"), example=_params_example)
def gaussian_nb_log_proba(params: GaussianNBParams, X: torch.Tensor) -> torch.Tensor:
    """Gaussian naive Bayes posterior log-probabilities :math:`\\log \\hat p(k \\mid x)`.

    References: Revisiting Discriminative vs. Generative Classifiers: Theory and Implications, 2023.

    :math:`\\log \\hat p(k\\mid x) = J_k(x) - \\log\\sum_l e^{J_l(x)}`, with the joint log-likelihood
    :math:`J_k(x) = \\log\\hat\\pi_k - \\frac12\\sum_j [\\log(2\\pi\\hat\\sigma^2_{kj}) +
    (x_j - \\hat\\mu_{kj})^2/\\hat\\sigma^2_{kj}]` (scikit-learn's ``predict_log_proba``).

    Args:
        params: a fitted model (:func:`gaussian_nb_fit`).
        X: features, shape ``(t, n)``, the dtype of ``params.means``.

    Returns:
        shape ``(t, K)``.

    Example:
        >>> import torch
        >>> from paperzoo.diagnostics.learning_curves import gaussian_nb_fit, gaussian_nb_log_proba
        >>> X = torch.tensor([[0.0], [2.0], [4.0], [6.0]], dtype=torch.float64)
        >>> p = gaussian_nb_fit(X, torch.tensor([0, 0, 1, 1]), var_smoothing=0.0)
        >>> gaussian_nb_log_proba(p, torch.tensor([[3.0]], dtype=torch.float64)).exp().round(decimals=12).tolist()
        [[0.5, 0.5]]
    """
    _check_params(params, X)
    return _gaussian_nb_log_proba(params, X)


@accepts(params=Instance(GaussianNBParams, what="GaussianNBParams"), X=Tensor("t", "n"), example=_params_example)
def gaussian_nb_predict(params: GaussianNBParams, X: torch.Tensor) -> torch.Tensor:
    """Gaussian naive Bayes labels :math:`\\arg\\max_k \\log \\hat p(k \\mid x)`, shape ``(t,)`` (int64).

    References: Revisiting Discriminative vs. Generative Classifiers: Theory and Implications, 2023.

    Example:
        >>> import torch
        >>> from paperzoo.diagnostics.learning_curves import gaussian_nb_fit, gaussian_nb_predict
        >>> X = torch.tensor([[0.0], [2.0], [4.0], [6.0]], dtype=torch.float64)
        >>> p = gaussian_nb_fit(X, torch.tensor([0, 0, 1, 1]))
        >>> gaussian_nb_predict(p, torch.tensor([[0.5], [5.0]], dtype=torch.float64)).tolist()
        [0, 1]
    """
    _check_params(params, X)
    return _gaussian_nb_log_proba(params, X).argmax(-1)


def _fit_predict_example(ctx):
    kw = _nb_example(ctx)
    return {"X_train": kw["X"], "y_train": kw["y"], "X_test": kw["X"]}


@accepts(X_train=Tensor("m", "n"), y_train=Tensor("m", dtype="int", low=0), X_test=Tensor("t", "n"),
         num_classes=Int(ge=2, optional=True), var_smoothing=Real(ge=0), shared_variance=Flag(),
         example=_fit_predict_example)
def gaussian_nb_fit_predict(X_train: torch.Tensor, y_train: torch.Tensor, X_test: torch.Tensor, *,
                            num_classes: int | None = None, var_smoothing: float = 1e-9,
                            shared_variance: bool = True) -> torch.Tensor:
    """Gaussian naive Bayes fitted on ``(X_train, y_train)``, labels of ``X_test``: a ``fit_predict`` for
    :func:`learning_curve` (see :func:`gaussian_nb_fit` for the model and arguments).

    References: Revisiting Discriminative vs. Generative Classifiers: Theory and Implications, 2023.

    Example:
        >>> import torch
        >>> from paperzoo.diagnostics.learning_curves import gaussian_nb_fit_predict
        >>> X = torch.tensor([[0.0], [2.0], [4.0], [6.0]], dtype=torch.float64)
        >>> gaussian_nb_fit_predict(X, torch.tensor([0, 0, 1, 1]), X).tolist()
        [0, 0, 1, 1]
    """
    params = gaussian_nb_fit(X_train, y_train, num_classes=num_classes, var_smoothing=var_smoothing,
                             shared_variance=shared_variance)
    return _gaussian_nb_log_proba(params, X_test).argmax(-1)


# -- exact errors on Gaussian classes with collinear means ---------------------------------------------------------


def _interval_rule_error(c, b, loc, scale, priors) -> torch.Tensor:
    """Error of the rule argmax_k (b_k + c_k z) when z | class k ~ N(loc_k, scale^2), classes with priors.

    Class k wins on the interval {z : (c_k - c_j) z >= b_j - b_k for all j}; ties go to the lower index.
    """
    K = c.shape[0]
    dc = c[:, None] - c[None, :]  # (k, j)
    db = b[None, :] - b[:, None]
    eye = torch.eye(K, dtype=torch.bool)
    safe = torch.where(dc == 0, torch.ones_like(dc), dc)
    thr = db / safe
    inf = torch.full_like(thr, math.inf)
    lower = torch.where(dc > 0, thr, -inf).max(1).values
    upper = torch.where(dc < 0, thr, inf).min(1).values
    j_lower = torch.arange(K)[None, :] < torch.arange(K)[:, None]
    beaten = (dc == 0) & ~eye & ((db > 0) | ((db == 0) & j_lower))
    empty = beaten.any(1) | (lower >= upper)
    # P(wrong | k) = P(z < lower) + P(z > upper), from the tails (accurate for tiny errors)
    wrong = torch.special.ndtr((lower - loc) / scale) + torch.special.ndtr((loc - upper) / scale)
    wrong = torch.where(empty, torch.ones_like(wrong), wrong.clamp(max=1.0))
    return (priors * wrong).sum()


def _collinear(means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``means = means[0] + t v^T`` with unit ``v``: returns ``(t, v)``; ValueError if the means are not collinear."""
    D = means - means[0]
    norms = D.norm(dim=1)
    far = int(norms.argmax())
    if float(norms[far]) == 0.0:
        raise ValueError("means must not all coincide (the classes are indistinguishable)")
    v = D[far] / norms[far]
    t = D @ v
    resid = (D - t[:, None] * v[None, :]).norm()
    rtol = max(1e-8, 1e3 * torch.finfo(means.dtype).eps)
    if float(resid) > rtol * float(norms[far]) * math.sqrt(means.shape[0]):
        raise ValueError("means must be collinear (means[k] = means[0] + t_k v) for the exact error, got residual "
                         f"{float(resid):.3g} off the line")
    return t, v


def _priors(priors, K, dtype):
    if priors is None:
        return torch.full((K,), 1.0 / K, dtype=dtype)
    return priors / priors.sum()


def _cov_parts(covariance: torch.Tensor):
    """(Sigma as a matvec, the inverse diagonal, Sigma^{-1} as a solve)."""
    L, info = torch.linalg.cholesky_ex(covariance)
    if int(info) != 0:
        raise ValueError("covariance must be symmetric positive definite")
    diag = torch.diagonal(covariance)
    return (lambda u: covariance @ u), 1.0 / diag, (lambda u: torch.cholesky_solve(u[:, None], L)[:, 0])


def _linear_rule_error(means, covariance, priors, precision_dir) -> float:
    t, v = _collinear(means)
    pi = _priors(priors, means.shape[0], means.dtype)
    sigma_mv, inv_diag, solve = _cov_parts(covariance)
    u = precision_dir(v, inv_diag, solve)  # P v, P the rule's precision matrix
    a = v @ u  # v^T P v
    scale = (u @ sigma_mv(u)).sqrt()  # sd of z = u^T (x - mu_0)
    b = pi.log() - 0.5 * t.pow(2) * a
    return float(_interval_rule_error(t, b, t * a, scale, pi))


def _error_example(ctx):
    n = ctx.size("n")
    line = torch.linspace(0, 1, n, dtype=ctx.dtype) + 0.5
    means = torch.tensor([0.0, 1.0, 2.5], dtype=ctx.dtype)[:, None] * line[None, :]
    A = torch.randn(n, n, generator=ctx.generator, dtype=ctx.dtype)
    return {"means": means, "covariance": 0.2 * A @ A.T + torch.eye(n, dtype=ctx.dtype)}


@accepts(means=Tensor("k", "n"), covariance=Tensor("n", "n", symmetric=True),
         priors=Tensor("k", positive_mass=True, optional=True),
         example=_error_example)
def bayes_error(means: torch.Tensor, covariance: torch.Tensor, priors: torch.Tensor | None = None) -> float:
    """Exact Bayes error of Gaussian classes :math:`N(\\mu_k, \\Sigma)` with collinear means.

    References: Revisiting Discriminative vs. Generative Classifiers: Theory and Implications, 2023 (the asymptotic
    error its simulations compare with).

    With :math:`\\mu_k = \\mu_0 + t_k v`, the Bayes rule :math:`\\arg\\max_k \\log\\pi_k -
    \\frac12(x-\\mu_k)^\\top\\Sigma^{-1}(x-\\mu_k)` depends on :math:`x` only through
    :math:`z = v^\\top\\Sigma^{-1}(x - \\mu_0) \\sim N(t_k a, a)` under class :math:`k`, :math:`a = v^\\top
    \\Sigma^{-1} v`: it picks :math:`\\arg\\max_k \\log\\pi_k + t_k z - \\frac12 t_k^2 a`, so every class wins on an
    interval of :math:`z` and the error is a prior-weighted sum of normal tail probabilities. For two classes it is
    :math:`\\Phi(-\\Delta/2)` with equal priors, :math:`\\Delta` the Mahalanobis distance.

    Args:
        means: :math:`\\mu_k`, shape ``(K, n)``, collinear.
        covariance: :math:`\\Sigma`, shape ``(n, n)``, symmetric positive definite (``torch.diag(variances)`` for
            a diagonal one).
        priors: :math:`\\pi_k`, shape ``(K,)`` (normalised here; default uniform).

    Returns:
        the error, in ``[0, 1]``.

    Example:
        >>> import torch
        >>> from paperzoo.diagnostics.learning_curves import bayes_error
        >>> means = torch.tensor([[0.0, 0.0], [2.0, 0.0]], dtype=torch.float64)  # Delta = 2
        >>> round(bayes_error(means, torch.eye(2, dtype=torch.float64)), 6)  # Phi(-1)
        0.158655
    """
    return _linear_rule_error(means, covariance, priors, lambda v, inv_diag, solve: solve(v))


@accepts(means=Tensor("k", "n"), covariance=Tensor("n", "n", symmetric=True),
         priors=Tensor("k", positive_mass=True, optional=True),
         example=_error_example)
def naive_bayes_asymptotic_error(means: torch.Tensor, covariance: torch.Tensor,
                                 priors: torch.Tensor | None = None) -> float:
    """Exact asymptotic error of shared-variance Gaussian naive Bayes on Gaussian classes with collinear means.

    References: Revisiting Discriminative vs. Generative Classifiers: Theory and Implications, 2023 (the
    asymptotic error naive Bayes approaches in :math:`O(\\log n)` samples).

    With infinite data the shared-variance naive Bayes of :func:`gaussian_nb_fit` uses the true means and priors
    and the diagonal :math:`D = \\operatorname{diag}(\\Sigma)` of the within-class covariance. With
    :math:`\\mu_k = \\mu_0 + t_k v` its rule picks :math:`\\arg\\max_k \\log\\pi_k + t_k z - \\frac12 t_k^2 a`,
    :math:`z = v^\\top D^{-1}(x-\\mu_0) \\sim N(t_k a, v^\\top D^{-1}\\Sigma D^{-1} v)`, :math:`a = v^\\top D^{-1}
    v`. It equals :func:`bayes_error` when :math:`\\Sigma` is diagonal and exceeds it when correlations tilt the
    Bayes direction away from :math:`D^{-1}v`.

    Args:
        means: :math:`\\mu_k`, shape ``(K, n)``, collinear.
        covariance: :math:`\\Sigma`, shape ``(n, n)``, symmetric positive definite.
        priors: :math:`\\pi_k`, shape ``(K,)`` (default uniform).

    Returns:
        the error, in ``[0, 1]``.

    Example:
        >>> import torch
        >>> from paperzoo.diagnostics.learning_curves import bayes_error, naive_bayes_asymptotic_error
        >>> means = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
        >>> cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)  # feature 2 is informative via 1
        >>> naive_bayes_asymptotic_error(means, cov) > bayes_error(means, cov)
        True
    """
    return _linear_rule_error(means, covariance, priors, lambda v, inv_diag, solve: inv_diag * v)
