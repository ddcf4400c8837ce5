"""Variance between training runs: per-example correctness probabilities and the binomial (independent-example)
model of run-to-run test-accuracy spread.

References: Calibrated Chaos: Variance Between Runs of Neural Network Training is Harmless and Inevitable
(Jordan), 2023.

Setting: ``R`` training runs of one recipe (different seeds) are evaluated on one test set of ``n`` examples;
``correct[r, i]`` says whether run ``r`` classifies example ``i`` correctly. The run's test accuracy is
:math:`A_r = \\frac1n \\sum_i c_{ri}`.

The independent-example model: across runs, example ``i`` is correct with its own probability :math:`p_i` and the
events are independent across examples. Then the test accuracy's run-to-run variance is that of a sum of
independent Bernoulli variables,

.. math::  \\operatorname{Var}(A) = \\frac{1}{n^2} \\sum_{i=1}^n p_i (1 - p_i),

while the accuracy on the test *distribution* (the mean of :math:`p_i` over fresh examples) does not vary between
runs. Two consequences are measured here:

- :func:`per_example_correct_prob`: :math:`\\hat p_i = \\frac1R \\sum_r c_{ri}`;
- :func:`binomial_accuracy_std`: the model's prediction :math:`\\sqrt{\\sum_i p_i(1-p_i)} / n` of the std of
  :math:`A` (with ``runs = R`` the plug-in :math:`\\hat p_i(1-\\hat p_i)` is multiplied by :math:`R/(R-1)`, which
  makes each term unbiased for :math:`p_i(1-p_i)`);
- :func:`split_half_correlation`: the correlation across runs of the accuracies on two disjoint halves of the test
  set. Under the model the halves are independent given the recipe (correlation 0); a per-run shift of the
  distribution-level accuracy (a run that is better everywhere) makes it positive;
- :func:`ensemble_calibration`: the top-label expected calibration error of the run-averaged predicted
  distribution (the paper's argument for why the variance is inevitable rests on such ensembles being calibrated).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Generator, Int, Real, Tensor, accepts

__all__ = ["SplitHalfCorrelation", "EnsembleCalibration", "per_example_correct_prob", "binomial_accuracy_std",
           "split_half_correlation", "ensemble_calibration"]


def _correct_example(ctx):
    # Runs share per-example difficulty, so the example is a realistic (R, n) table.
    p = torch.rand(ctx.size("n"), generator=ctx.generator, dtype=torch.float64)
    return torch.rand(ctx.size("r") + 4, ctx.size("n") + 4, generator=ctx.generator, dtype=torch.float64) < \
        torch.cat([p, torch.full((4,), 0.5, dtype=torch.float64)])


def _check_correct(correct: torch.Tensor) -> None:
    if correct.dim() != 2:
        raise ValueError(f"correct must have shape (R, n), got {tuple(correct.shape)}")


# -- per-example probabilities and the binomial prediction --------------------------------------------------------


@accepts(correct=Tensor("r", "n", dtype="bool"),
         example=lambda ctx: {"correct": torch.rand(ctx.size("r"), ctx.size("n"), generator=ctx.generator) < 0.7})
def per_example_correct_prob(correct: torch.Tensor) -> torch.Tensor:
    """Per-example correctness probability :math:`\\hat p_i = \\frac1R \\sum_r c_{ri}` over training runs.

    References: Calibrated Chaos: Variance Between Runs of Neural Network Training is Harmless and Inevitable, 2023.

    Args:
        correct: ``c``, shape ``(R, n)`` bool: whether run ``r`` classifies test example ``i`` correctly.

    Returns:
        :math:`\\hat p`, shape ``(n,)`` float64.

    Example:
        >>> c = torch.tensor([[True, False, True], [True, True, False]])
        >>> per_example_correct_prob(c)
        tensor([1.0000, 0.5000, 0.5000], dtype=torch.float64)
    """
    return correct.to(torch.float64).mean(0)


@accepts(p=Tensor("n", nonnegative=True, degenerate=("zeros", "constant")), runs=Int(ge=2, optional=True),
         example=lambda ctx: {"p": torch.rand(ctx.size("n"), generator=ctx.generator, dtype=ctx.dtype)})
def binomial_accuracy_std(p: torch.Tensor, *, runs: int | None = None) -> float:
    """Binomial (independent-example) prediction of the run-to-run std of test accuracy.

    References: Calibrated Chaos: Variance Between Runs of Neural Network Training is Harmless and Inevitable, 2023.

    .. math::  \\sigma_{\\text{binom}} = \\frac1n \\sqrt{\\sum_{i=1}^n p_i (1 - p_i) \\cdot \\kappa},
       \\qquad \\kappa = \\frac{R}{R-1} \\text{ if ``runs`` = R is given, else } 1.

    With ``p`` the plug-in :math:`\\hat p` of :func:`per_example_correct_prob` from ``R`` runs,
    :math:`\\mathbb E[\\hat p_i (1-\\hat p_i)] = \\frac{R-1}{R} p_i(1-p_i)`; ``runs=R`` removes that bias, so the
    prediction is comparable with the sample (``ddof=1``) std of the same runs' accuracies.

    Args:
        p: per-example correctness probabilities, shape ``(n,)``, entries in ``[0, 1]``.
        runs: ``R``, the number of runs ``p`` was estimated from (``None``: ``p`` is exact).

    Returns:
        :math:`\\sigma_{\\text{binom}}` (float).

    Example:
        >>> round(binomial_accuracy_std(torch.full((100,), 0.5)), 6)
        0.05
    """
    if bool((p > 1).any()):
        raise ValueError(f"p must have entries <= 1, got a maximum of {p.max().item()!r}")
    p = p.to(torch.float64)
    kappa = 1.0 if runs is None else runs / (runs - 1)
    return float(torch.sqrt(kappa * (p * (1 - p)).sum()) / p.numel())


# -- split-half correlation ---------------------------------------------------------------------------------------


class SplitHalfCorrelation(NamedTuple):
    """Result of :func:`split_half_correlation`.

    Attributes:
        r: Pearson correlation across runs of the accuracies on the two halves.
        ci_low, ci_high: its confidence interval (Fisher z, normal approximation, ``R - 3`` degrees of freedom).
        accuracy_first, accuracy_second: per-run accuracies on each half, shape ``(R,)`` float64.
        first, second: the example indices of each half (even/odd indices, or the first ``floor(n/2)`` and the
            rest of a random permutation).
        n_runs: ``R``.
    """

    r: float
    ci_low: float
    ci_high: float
    accuracy_first: torch.Tensor
    accuracy_second: torch.Tensor
    first: torch.Tensor
    second: torch.Tensor
    n_runs: int


@accepts(correct=Tensor("r", "n", dtype="bool"), confidence=Real(gt=0, lt=1), generator=Generator(),
         example=lambda ctx: {"correct": _correct_example(ctx)})
def split_half_correlation(correct: torch.Tensor, *, confidence: float = 0.95,
                           generator: torch.Generator | None = None) -> SplitHalfCorrelation:
    """Split-half correlation: Pearson correlation across runs between accuracies on two disjoint test halves.

    References: Calibrated Chaos: Variance Between Runs of Neural Network Training is Harmless and Inevitable, 2023.

    The examples are split at random (a permutation drawn from ``generator``; without one, even and odd indices)
    into halves :math:`H_1, H_2`; :math:`a_r^{(j)} = \\frac{1}{|H_j|}\\sum_{i \\in H_j} c_{ri}` and

    .. math::  r = \\operatorname{corr}_r\\big(a^{(1)}_r, a^{(2)}_r\\big), \\qquad
       \\text{CI} = \\tanh\\big(\\operatorname{atanh} r \\pm z_{(1+\\text{confidence})/2} / \\sqrt{R - 3}\\big).

    Under the independent-example model :math:`r \\approx 0`: the runs differ only by test-set sampling noise. A
    per-run shift of the distribution-level accuracy moves both halves together and makes :math:`r > 0`.

    Args:
        correct: ``c``, shape ``(R, n)`` bool, ``R >= 4`` runs and ``n >= 2`` examples.
        confidence: level of the interval.
        generator: draws the random split (``None``: even/odd indices).

    Returns:
        :class:`SplitHalfCorrelation`.

    Raises:
        ValueError: if ``R < 4``, ``n < 2``, or the accuracy on one half is the same in every run (the correlation
            is then undefined).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> c = torch.rand(200, 400, generator=g) < 0.8
        >>> abs(split_half_correlation(c).r) < 0.3
        True
    """
    runs, n = correct.shape
    if runs < 4:
        raise ValueError(f"correct must have at least 4 runs (rows) for a confidence interval, got {runs}")
    if n < 2:
        raise ValueError(f"correct must have at least 2 examples (columns) to split, got {n}")
    if generator is None:
        first, second = torch.arange(0, n, 2), torch.arange(1, n, 2)
    else:
        order = torch.randperm(n, generator=generator)
        first, second = order[: n // 2], order[n // 2:]
    c = correct.to(torch.float64)
    a1, a2 = c[:, first].mean(1), c[:, second].mean(1)
    d1, d2 = a1 - a1.mean(), a2 - a2.mean()
    s1, s2 = float(d1.square().sum()), float(d2.square().sum())
    if s1 == 0.0 or s2 == 0.0:
        raise ValueError("correct gives the same accuracy in every run on one half of the examples; the split-half "
                         "correlation is undefined")
    r = max(-1.0, min(1.0, float((d1 * d2).sum()) / math.sqrt(s1 * s2)))
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + confidence) / 2)
    centre = math.atanh(max(-1 + 1e-15, min(1 - 1e-15, r)))
    half = z / math.sqrt(runs - 3) if runs > 3 else math.inf
    return SplitHalfCorrelation(r, math.tanh(centre - half), math.tanh(centre + half), a1, a2, first, second, runs)


# -- ensemble calibration -----------------------------------------------------------------------------------------


class EnsembleCalibration(NamedTuple):
    """Result of :func:`ensemble_calibration`.

    Attributes:
        ece: top-label expected calibration error of the run-averaged prediction.
        confidence: the ensemble's top-label probability per example, shape ``(n,)``.
        correct: whether the ensemble's top label is right, shape ``(n,)`` bool.
        bin_confidence, bin_accuracy: mean confidence and accuracy per bin, shape ``(n_bins,)`` (0 in empty bins).
        bin_count: examples per bin, shape ``(n_bins,)`` int64.
    """

    ece: float
    confidence: torch.Tensor
    correct: torch.Tensor
    bin_confidence: torch.Tensor
    bin_accuracy: torch.Tensor
    bin_count: torch.Tensor


def _probs_example(ctx):
    logits = torch.randn(ctx.size("r"), ctx.size("n"), ctx.size("k"), generator=ctx.generator, dtype=ctx.dtype)
    return logits.softmax(-1)


@accepts(probs=Tensor("r", "n", "k", nonnegative=True), labels=Tensor("n", dtype="int", low=0),
         n_bins=Int(ge=1),
         example=lambda ctx: {"probs": _probs_example(ctx),
                              "labels": torch.randint(0, ctx.size("k"), (ctx.size("n"),), generator=ctx.generator)})
def ensemble_calibration(probs: torch.Tensor, labels: torch.Tensor, *, n_bins: int = 15) -> EnsembleCalibration:
    """Expected calibration error (top label, equal-width bins) of the run-averaged predicted distribution.

    References: Calibrated Chaos: Variance Between Runs of Neural Network Training is Harmless and Inevitable, 2023.

    With :math:`\\bar q_i = \\frac1R \\sum_r q_{ri}` (``probs`` averaged over runs), confidence
    :math:`s_i = \\max_k \\bar q_{ik}`, prediction :math:`\\hat y_i = \\arg\\max_k \\bar q_{ik}` and bins
    :math:`B_b = \\{i : s_i \\in ((b-1)/M, b/M]\\}` (``M = n_bins``; :math:`s_i = 0` falls in the first),

    .. math::  \\text{ECE} = \\sum_b \\frac{|B_b|}{n}
       \\Big| \\frac{1}{|B_b|}\\sum_{i\\in B_b} [\\hat y_i = y_i] - \\frac{1}{|B_b|}\\sum_{i \\in B_b} s_i \\Big|.

    Args:
        probs: predicted class distributions of each run, shape ``(R, n, K)``, rows summing to 1.
        labels: true labels, shape ``(n,)`` integer in ``[0, K)``.
        n_bins: ``M``.

    Returns:
        :class:`EnsembleCalibration`.

    Example:
        >>> q = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.7, 0.3], [0.4, 0.6]]])
        >>> res = ensemble_calibration(q, torch.tensor([0, 1]), n_bins=10)
        >>> round(res.ece, 4)
        0.25
    """
    k = probs.shape[-1]
    if bool((labels >= k).any()):
        raise ValueError(f"labels must be < the number of classes of probs ({k}), got a maximum of "
                         f"{labels.max().item()}")
    tol = 1e-4 if probs.dtype == torch.float32 else 1e-8
    if not bool(((probs.sum(-1) - 1).abs() <= tol).all()):
        raise ValueError("probs must sum to 1 over the last dimension (class distributions)")
    mean = probs.to(torch.float64).mean(0)
    conf, pred = mean.max(-1)
    hit = pred == labels
    idx = (conf * n_bins).ceil().long().clamp(1, n_bins) - 1
    count = torch.bincount(idx, minlength=n_bins)
    sum_conf = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    sum_hit = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, hit.to(torch.float64))
    ece = float((sum_hit - sum_conf).abs().sum() / conf.numel())
    denom = count.to(torch.float64).clamp_min(1)  # empty bins report 0 (their count says they are empty)
    bin_conf, bin_acc = sum_conf / denom, sum_hit / denom
    return EnsembleCalibration(ece, conf, hit, bin_conf, bin_acc, count)
