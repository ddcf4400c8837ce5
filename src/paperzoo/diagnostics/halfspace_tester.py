"""A tester-learner for homogeneous halfspaces under Massart noise with a Gaussian target marginal.

References: An Efficient Tester-Learner for Halfspaces (Gollakota, Klivans, Stavropoulos, Vasilyan), 2023.

Setting. Examples :math:`x_i \\in \\mathbb R^d` (``X``, shape ``(n, d)``) with labels :math:`y_i \\in \\{-1, +1\\}`
(``y``, shape ``(n,)``). A testable learner outputs a unit vector :math:`w` (the halfspace
:math:`\\operatorname{sign}(w\\cdot x)`) together with an accept/reject decision; it must accept (whp) whenever the
marginal is the target :math:`\\mathcal N(0, I_d)` and the labels are a halfspace with Massart noise
:math:`\\eta(x) \\le \\eta_{\\max} < 1/2`, and whenever it accepts, the error of :math:`w` must be near optimal, whatever
the data were. The paper's algorithm runs nonconvex (projected) SGD on a LeakyReLU surrogate, in the manner of
Diakonikolas, Kontonis, Tzamos and Zarifis (2020), and certifies the result with tests on the data: low-degree moment
matching of the marginal plus new, label-dependent tests on thin bands :math:`\\{x: |w\\cdot x| \\le \\sigma\\}` around
the learned boundary, which together stand in for the distributional facts the analysis of the SGD learner uses.

Learner (:func:`leaky_relu_halfspace`). Projected gradient descent on the unit sphere on the smoothed LeakyReLU loss

.. math:: L(w) = \\frac1n \\sum_i \\ell_\\lambda(-y_i\\, w\\cdot x_i), \\qquad
          \\ell_\\lambda(t) = \\lambda t + (1-2\\lambda)\\, s \\log(1 + e^{t/s}),

:math:`\\lambda` = ``lam`` (at least the noise bound), :math:`s` = ``smoothing`` (``s -> 0`` is the LeakyReLU
:math:`(1-\\lambda) t` for :math:`t \\ge 0`, :math:`\\lambda t` below), started from the normalized Chow vector
:math:`\\frac1n\\sum_i y_i x_i`; each step moves along the tangential gradient
:math:`(I - ww^\\top)\\nabla L(w)` and renormalizes. Converged when the tangential gradient norm is below ``tol``.

Tests (:func:`halfspace_band_tests`; every threshold is ``slack`` times the typical size of the statistic under the
target, so the tests pass on Gaussian data with probability close to 1 and need no tuning). With :math:`m_\\sigma`
the number of points in the band :math:`B_\\sigma = \\{|w\\cdot x| \\le \\sigma\\}` and :math:`x_\\perp = (I-ww^\\top)x`:

* ``mean``: :math:`\\|\\hat\\mu\\|_2 \\le \\text{slack}\\,\\sqrt{d/n}`;
* ``covariance``: :math:`\\|\\hat\\Sigma - I\\|_{op} \\le \\text{slack}\\,(2\\sqrt{d/n} + d/n)` (second moments about 0);
* ``fourth_moment``: :math:`|\\frac1n\\sum (w\\cdot x_i)^4 - 3| \\le \\text{slack}\\,\\sqrt{96/n}`;
* for each width :math:`\\sigma_j` = ``width`` :math:`\\cdot 2^j`, :math:`j < ` ``n_widths``:
  ``band_mass`` :math:`|m_\\sigma/n - p_\\sigma| \\le \\text{slack}\\sqrt{p_\\sigma(1-p_\\sigma)/n}` with
  :math:`p_\\sigma = 2\\Phi(\\sigma) - 1`; ``band_isotropy`` :math:`\\|\\frac1{m_\\sigma}\\sum_{B_\\sigma}
  x_\\perp x_\\perp^\\top - (I-ww^\\top)\\|_{op} \\le \\text{slack}\\,(2\\sqrt{(d-1)/m_\\sigma} + (d-1)/m_\\sigma)`;
  and the label-aware ``band_correlation`` :math:`\\|\\frac1{m_\\sigma}\\sum_{B_\\sigma} y_i x_{i\\perp}\\|_2 \\le
  \\text{slack}\\sqrt{(d-1)/m_\\sigma}`. Under a Gaussian marginal and Massart noise around :math:`w^*`, the last
  vector has mean 0 when :math:`w = w^*` (inside the band :math:`\\operatorname{sign}(w\\cdot x)` is symmetric and
  independent of :math:`x_\\perp`) and norm of order :math:`\\mathbb E[(1-2\\eta)|v\\cdot x|]` when the angle to
  :math:`w^*` exceeds about :math:`\\sigma` (inside the band the labels then follow the orthogonal direction
  :math:`v` of :math:`w^*`): it certifies that no orthogonal direction explains the labels near the learned boundary.

The tester-learner (:func:`halfspace_tester_learner`) accepts iff every test passes. ``checks="moments"`` keeps only
the label-blind global ``mean`` and ``covariance`` tests (degree-2 moment matching that ignores the labels, the
prior-work style the paper improves on): a control, not a tester-learner.

>>> g = torch.Generator().manual_seed(0)
>>> X = torch.randn(20000, 5, generator=g, dtype=torch.float64)
>>> y = torch.where(X[:, 0] >= 0, 1.0, -1.0).to(torch.float64)
>>> y = torch.where(torch.rand(20000, generator=g, dtype=torch.float64) < 0.1, -y, y)
>>> res = halfspace_tester_learner(X, y)
>>> res.accept, bool(res.w[0] > 0.99)
(True, True)
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

from paperzoo.core.accepts import Choice, Int, Real, Tensor, accepts

__all__ = ["LearnedHalfspace", "leaky_relu_halfspace", "BandTest", "HalfspaceTests", "halfspace_band_tests",
           "HalfspaceTesterResult", "halfspace_tester_learner", "massart_halfspace_error"]


def _example(ctx):
    n, d = 40, ctx.size("d")
    X = torch.randn(n, d, generator=ctx.generator, dtype=ctx.dtype)
    y = torch.where(X[:, 0] >= 0, 1.0, -1.0).to(ctx.dtype)
    return {"X": X, "y": y}


def _example_tests(ctx):
    out = _example(ctx)
    w = torch.zeros(out["X"].shape[1], dtype=ctx.dtype)
    w[0] = 1.0
    out["w"] = w
    return out


def _check_labels(y: torch.Tensor) -> None:
    if not bool(((y == 1) | (y == -1)).all()):
        raise ValueError("y must contain only -1 and +1 labels")


def _check_unit(w: torch.Tensor) -> torch.Tensor:
    norm = torch.linalg.vector_norm(w)
    if not bool(norm > 0):
        raise ValueError("w must be a nonzero vector")
    return w / norm


class LearnedHalfspace(NamedTuple):
    """The learner's output: unit normal ``w`` (d,), final surrogate ``loss``, tangential gradient norm, steps."""

    w: torch.Tensor
    loss: float
    grad_norm: float
    n_iter: int
    converged: bool


def _surrogate(X, y, w, lam, s):
    t = -y * (X @ w)
    loss = lam * t + (1 - 2 * lam) * s * F.softplus(t / s)
    dl = lam + (1 - 2 * lam) * torch.sigmoid(t / s)  # d loss / d t
    grad = -(dl * y) @ X / X.shape[0]
    return loss.mean(), grad


def _learn(X, y, lam, s, steps, lr, tol):
    w = y @ X
    nrm = torch.linalg.vector_norm(w)
    if not bool(nrm > 0):
        w = torch.zeros_like(w)
        w[0] = 1.0
    else:
        w = w / nrm
    gnorm, k = math.inf, 0
    for k in range(1, steps + 1):
        loss, g = _surrogate(X, y, w, lam, s)
        g = g - (g @ w) * w
        gnorm = float(torch.linalg.vector_norm(g))
        if not math.isfinite(gnorm):
            raise FloatingPointError("leaky_relu_halfspace: the gradient became NaN or infinite")
        if gnorm <= tol:
            break
        w = w - lr * g
        w = w / torch.linalg.vector_norm(w)
    loss, g = _surrogate(X, y, w, lam, s)
    gnorm = float(torch.linalg.vector_norm(g - (g @ w) * w))
    converged = gnorm <= tol
    return LearnedHalfspace(w, float(loss), gnorm, k, converged)


@accepts(X=Tensor("n", "d"), y=Tensor("n"), lam=Real(ge=0, lt=0.5), smoothing=Real(gt=0), steps=Int(ge=1),
         lr=Real(gt=0), tol=Real(gt=0), example=_example)
def leaky_relu_halfspace(X: torch.Tensor, y: torch.Tensor, lam: float = 0.2, *, smoothing: float = 0.05,
                         steps: int = 2000, lr: float = 0.1, tol: float = 1e-4) -> LearnedHalfspace:
    """The halfspace learner: projected gradient descent on the sphere on the smoothed LeakyReLU surrogate.

    References: An Efficient Tester-Learner for Halfspaces (Gollakota et al.), 2023; Learning Halfspaces with Massart
    Noise Under Structured Distributions (Diakonikolas, Kontonis, Tzamos, Zarifis), 2020.

    Minimizes :math:`\\frac1n\\sum_i \\ell_\\lambda(-y_i w\\cdot x_i)` over :math:`\\|w\\| = 1` (module docstring), with
    :math:`\\lambda` = ``lam``, smoothing :math:`s` = ``smoothing``, step ``lr``, at most ``steps`` steps, stopping
    when the tangential gradient norm is <= ``tol`` (a warning if it never is). ``X`` (n, d), ``y`` (n,) in {-1, 1}.

    >>> g = torch.Generator().manual_seed(1)
    >>> X = torch.randn(5000, 3, generator=g, dtype=torch.float64)
    >>> fit = leaky_relu_halfspace(X, torch.where(X[:, 1] >= 0, 1.0, -1.0).to(torch.float64))
    >>> fit.converged, bool(fit.w[1] > 0.99)
    (True, True)
    """
    _check_labels(y)
    res = _learn(X, y, lam, smoothing, steps, lr, tol)
    if not res.converged:
        warnings.warn(f"leaky_relu_halfspace did not converge in {steps} steps (tangential gradient norm "
                      f"{res.grad_norm:.2e} > tol {tol:.1e})", RuntimeWarning, stacklevel=2)
    return res


class BandTest(NamedTuple):
    """One width's band tests: width, count in band, and each statistic with its threshold and verdict."""

    width: float
    count: int
    mass: float
    mass_expected: float
    mass_threshold: float
    isotropy: float
    isotropy_threshold: float
    correlation: float
    correlation_threshold: float
    passed: bool


class HalfspaceTests(NamedTuple):
    """All tests on ``(X, y, w)``: global statistics with thresholds, the band tests, the names of failed tests."""

    mean: float
    mean_threshold: float
    covariance: float
    covariance_threshold: float
    fourth_moment: float
    fourth_moment_threshold: float
    bands: tuple
    failed: tuple
    passed: bool


def _tests(X, y, w, width, n_widths, slack, checks):
    n, d = X.shape
    failed = []
    mu = X.mean(0)
    mean = float(torch.linalg.vector_norm(mu))
    mean_thr = slack * math.sqrt(d / n)
    if mean > mean_thr:
        failed.append("mean")
    eye = torch.eye(d, dtype=X.dtype, device=X.device)
    S = X.T @ X / n
    cov = float(torch.linalg.matrix_norm(S - eye, ord=2))
    cov_thr = slack * (2 * math.sqrt(d / n) + d / n)
    if cov > cov_thr:
        failed.append("covariance")
    t = X @ w
    m4 = float((t ** 4).mean() - 3.0)
    m4_thr = slack * math.sqrt(96.0 / n)
    bands = []
    if checks == "full":
        if abs(m4) > m4_thr:
            failed.append("fourth_moment")
        P = eye - torch.outer(w, w)
        Xp = X @ P
        for j in range(n_widths):
            sig = width * 2.0 ** j
            inb = t.abs() <= sig
            m = int(inb.sum())
            p = math.erf(sig / math.sqrt(2.0))
            mass = m / n
            mass_thr = slack * math.sqrt(p * (1 - p) / n)
            ok_mass = abs(mass - p) <= mass_thr
            if m > d:
                Z = Xp[inb]
                iso = float(torch.linalg.matrix_norm(Z.T @ Z / m - P, ord=2))
                corr = float(torch.linalg.vector_norm(y[inb] @ Z / m))
                iso_thr = slack * (2 * math.sqrt((d - 1) / m) + (d - 1) / m)
                corr_thr = slack * math.sqrt((d - 1) / m)
                ok_iso, ok_corr = iso <= iso_thr, corr <= corr_thr
            else:  # too few points in the band to test: fail
                iso = corr = iso_thr = corr_thr = 0.0
                ok_iso = ok_corr = False
            for name, ok in (("band_mass", ok_mass), ("band_isotropy", ok_iso), ("band_correlation", ok_corr)):
                if not ok:
                    failed.append(f"{name}[{sig:g}]")
            bands.append(BandTest(sig, m, mass, p, mass_thr, iso, iso_thr, corr, corr_thr,
                                  bool(ok_mass and ok_iso and ok_corr)))
    return HalfspaceTests(mean, mean_thr, cov, cov_thr, m4, m4_thr, tuple(bands), tuple(failed), not failed)


_TEST_SPECS = dict(width=Real(gt=0), n_widths=Int(ge=1), slack=Real(gt=0), checks=Choice("full", "moments"))


@accepts(X=Tensor("n", "d"), y=Tensor("n"), w=Tensor("d"), example=_example_tests, **_TEST_SPECS)
def halfspace_band_tests(X: torch.Tensor, y: torch.Tensor, w: torch.Tensor, *, width: float = 0.1,
                         n_widths: int = 3, slack: float = 4.0, checks: str = "full") -> HalfspaceTests:
    """The tester's tests of a candidate halfspace ``w`` on ``(X, y)``: global moments plus band tests around w.

    References: An Efficient Tester-Learner for Halfspaces (Gollakota et al.), 2023.

    Statistics and thresholds as in the module docstring: ``mean``, ``covariance``, ``fourth_moment`` along w, and
    for widths ``width * 2**j`` (j < ``n_widths``) ``band_mass``, ``band_isotropy``, ``band_correlation``; every
    threshold is ``slack`` times the statistic's typical size under N(0, I). ``checks="moments"`` runs only the
    label-blind mean and covariance tests. ``X`` (n, d), ``y`` (n,) in {-1, 1}, ``w`` (d,) nonzero (normalized).

    >>> g = torch.Generator().manual_seed(2)
    >>> X = torch.randn(20000, 4, generator=g, dtype=torch.float64)
    >>> y = torch.where(X[:, 0] + X[:, 1] >= 0, 1.0, -1.0).to(torch.float64)
    >>> e1 = torch.tensor([1.0, 0, 0, 0], dtype=torch.float64)
    >>> halfspace_band_tests(X, y, e1).failed[:3]  # e1 is 45 degrees off: labels correlate with x2 in the bands
    ('band_correlation[0.1]', 'band_correlation[0.2]', 'band_correlation[0.4]')
    """
    _check_labels(y)
    w = _check_unit(w)
    return _tests(X, y, w, width, n_widths, slack, checks)


class HalfspaceTesterResult(NamedTuple):
    """``accept``, the learned unit normal ``w`` (d,), the learner's diagnostics and the tests."""

    accept: bool
    w: torch.Tensor
    learner: LearnedHalfspace
    tests: HalfspaceTests


@accepts(X=Tensor("n", "d"), y=Tensor("n"), lam=Real(ge=0, lt=0.5), smoothing=Real(gt=0), steps=Int(ge=1),
         lr=Real(gt=0), tol=Real(gt=0), example=_example, **_TEST_SPECS)
def halfspace_tester_learner(X: torch.Tensor, y: torch.Tensor, lam: float = 0.2, *, smoothing: float = 0.05,
                             steps: int = 2000, lr: float = 0.1, tol: float = 1e-4, width: float = 0.1,
                             n_widths: int = 3, slack: float = 4.0, checks: str = "full") -> HalfspaceTesterResult:
    """The tester-learner for halfspaces: learn w with the LeakyReLU surrogate, accept iff all tests pass.

    References: An Efficient Tester-Learner for Halfspaces (Gollakota et al.), 2023.

    Runs :func:`leaky_relu_halfspace` (``lam``, ``smoothing``, ``steps``, ``lr``, ``tol``; a learner that did not
    converge is rejected, without a warning) and :func:`halfspace_band_tests` (``width``, ``n_widths``, ``slack``,
    ``checks``) on the same data. Returns ``('accept', w)`` as ``accept=True`` with ``w``; on rejection ``w`` is still
    returned (for diagnostics) but carries no certificate. ``X`` (n, d), ``y`` (n,) in {-1, 1}.

    >>> g = torch.Generator().manual_seed(3)
    >>> X = 0.5 * torch.randn(20000, 4, generator=g, dtype=torch.float64)  # variance 1/4: not the target
    >>> res = halfspace_tester_learner(X, torch.where(X[:, 0] >= 0, 1.0, -1.0).to(torch.float64))
    >>> res.accept, res.tests.failed[0]
    (False, 'covariance')
    """
    _check_labels(y)
    fit = _learn(X, y, lam, smoothing, steps, lr, tol)
    tests = _tests(X, y, fit.w, width, n_widths, slack, checks)
    return HalfspaceTesterResult(bool(tests.passed and fit.converged), fit.w, fit, tests)


@accepts(w=Tensor("d"), w_star=Tensor("d"), X=Tensor("n", "d"), eta=Tensor("n", nonnegative=True),
         example=lambda ctx: {"w": torch.ones(ctx.size("d"), dtype=ctx.dtype),
                              "w_star": torch.randn(ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype),
                              "X": torch.randn(ctx.size("n"), ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype),
                              "eta": torch.full((ctx.size("n"),), 0.1, dtype=ctx.dtype)})
def massart_halfspace_error(w: torch.Tensor, w_star: torch.Tensor, X: torch.Tensor, eta: torch.Tensor) -> float:
    """Error of the halfspace ``w`` when labels are ``sign(w_star . x)`` flipped with probability ``eta(x)``.

    References: An Efficient Tester-Learner for Halfspaces (Gollakota et al.), 2023.

    :math:`\\operatorname{err}(w) = \\frac1n\\sum_i \\big[\\eta_i + (1-2\\eta_i)\\,
    \\mathbb 1\\{\\operatorname{sign}(w\\cdot x_i) \\ne \\operatorname{sign}(w^*\\cdot x_i)\\}\\big]`, the expectation
    over the label noise given the points ``X`` (n, d) (a Monte Carlo of the population error over x);
    ``eta`` (n,) in [0, 1]. At ``w = w_star`` it is the mean noise rate, ``opt`` when every eta <= 1/2.

    >>> X = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    >>> massart_halfspace_error(torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([1.0, 0.0],
    ...     dtype=torch.float64), X, torch.tensor([0.1, 0.2], dtype=torch.float64))
    0.45
    """
    if bool((eta > 1).any()):
        raise ValueError("eta must be <= 1")
    disagree = ((X @ w >= 0) != (X @ w_star >= 0)).to(X.dtype)
    return float((eta + (1 - 2 * eta) * disagree).mean())
