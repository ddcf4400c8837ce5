"""Fréchet mean in a quotient space (max-max template estimation) and its consistency bias.

References: Template estimation in computational anatomy: Fréchet means in top and quotient spaces are not
consistent (Devilliers, Allassonnière, Trouvé, Pennec), 2017.

Generative model: observations :math:`Y_i = g_i \\cdot (t_0 + \\sigma \\varepsilon_i)` of a template :math:`t_0`
(``t0``) under a random isometry :math:`g_i` of a group :math:`G` acting linearly on :math:`\\mathbb R^N`, with
noise level :math:`\\sigma` (``sigma``). The quotient (orbit) distance is
:math:`d_Q([a], [b]) = \\min_{g \\in G} \\|a - g b\\|` (:func:`quotient_distance`). The empirical Fréchet mean in
the quotient minimises the quotient variance

.. math:: F_n(m) = \\frac1n \\sum_i \\min_{g \\in G} \\|m - g Y_i\\|^2 ,

computed by max-max (:func:`quotient_frechet_mean`): alternate the registration
:math:`g_i \\leftarrow \\arg\\max_g \\langle m, g Y_i \\rangle` and the average :math:`m \\leftarrow \\frac1n
\\sum_i g_i Y_i`; :math:`F_n` decreases at every step and the fixed point is an empirical Karcher mean. The
oracle (top-space) estimator undoes the known :math:`g_i` and averages (:func:`oracle_template_mean`); it is
consistent, its error shrinking like :math:`\\sigma\\sqrt{N/n}`.

The paper shows that the quotient estimator is inconsistent once registration folds the noise, with a consistency
bias that grows with :math:`\\sigma`. Writing :math:`F(m) = \\|m\\|^2 - 2\\,\\mathbb E \\max_g \\langle m, g X\\rangle
+ \\mathbb E\\|X\\|^2` with :math:`m = \\lambda v`, :math:`\\|v\\| = 1`, the minimiser has
:math:`\\lambda = \\mathbb E \\max_g \\langle v, g X\\rangle`; at a fixed point :math:`t_0 = 0` the bias is therefore
exactly linear in :math:`\\sigma`,

.. math:: \\|m^\\star\\| = \\sigma K, \\qquad K = \\sup_{\\|v\\| = 1} \\mathbb E \\max_{g} \\langle v, g\\varepsilon\\rangle ,

and the same :math:`K` is the slope of the bias at large :math:`\\sigma` for any template.
:func:`fixed_point_bias_constant` gives :math:`K` for standard Gaussian noise: for ``"SO2"`` (one rotation acting
on ``k`` planar points, :math:`\\mathbb R^{2k} = \\mathbb C^k`) the maximum over angles is the modulus of a
standard complex Gaussian, :math:`K = \\sqrt{\\pi/2}` for every ``k``; for ``"cyclic_shift"`` on :math:`\\mathbb R^d`
the DC component cancels from the maximum, and the orbit of a zero-mean unit vector is a set of ``d`` unit vectors
summing to zero in :math:`\\mathbb R^{d-1}`; the regular simplex (``v`` proportional to :math:`e_1 - \\mathbf 1/d`)
gives :math:`K = \\sqrt{d/(d-1)}\\,\\mathbb E \\max_{j \\le d} Z_j` (``Z`` i.i.d. standard normal; the simplex
maximises the mean width among inscribed simplices). This value of ``K`` for the cyclic group is our derivation,
not a formula printed in the paper; the tests check it against max-max on large samples.

Groups and shapes: ``"cyclic_shift"``: signals of shape ``(n, d)``, :math:`(g_k y)_j = y_{(j - k) \\bmod d}`
(``torch.roll(y, k)``), registration by FFT cross-correlation; ``"SO2"``: configurations of shape ``(n, k, 2)``,
one rotation by :math:`\\theta` acting on every point, registration in closed form (Procrustes angle).

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> Y = torch.randn(4000, 8, generator=g, dtype=torch.float64)   # t0 = 0, sigma = 1
    >>> r = quotient_frechet_mean(Y, group="cyclic_shift")
    >>> K = fixed_point_bias_constant("cyclic_shift", 8)
    >>> abs(float(r.template.norm()) / K - 1) < 0.05   # the estimate of t0 = 0 has norm ~ sigma K, not 0
    True
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import Choice, Generator, Int, Real, Tensor, accepts

__all__ = ["QuotientFrechetMean", "ConsistencyBias", "register_to_template", "apply_group_action", "quotient_distance",
           "quotient_frechet_mean", "oracle_template_mean", "fixed_point_bias_constant", "consistency_bias"]

GROUPS = ("cyclic_shift", "SO2")


class QuotientFrechetMean(NamedTuple):
    """Result of :func:`quotient_frechet_mean`.

    Attributes:
        template: the estimate :math:`\\hat m`, shape of one observation (``(d,)`` or ``(k, 2)``).
        transforms: the registrations :math:`g_i` that align each ``Y_i`` onto ``template``: shifts (int64, shape
            ``(n,)``) for ``"cyclic_shift"``, angles (shape ``(n,)``) for ``"SO2"``.
        variance: the empirical quotient variance :math:`F_n(\\hat m)` (0-d).
        n_iter: max-max iterations run.
        converged: whether the template moved by less than ``tol`` (relative) at the last iteration.
    """

    template: torch.Tensor
    transforms: torch.Tensor
    variance: torch.Tensor
    n_iter: int
    converged: bool


class ConsistencyBias(NamedTuple):
    """Result of :func:`consistency_bias`.

    Attributes:
        quotient_bias: :math:`d_Q([\\hat m], [t_0])` of the max-max estimate (0-d).
        oracle_bias: :math:`\\|\\bar Y_{\\text{oracle}} - t_0\\|` of the oracle average with the known
            transformations (0-d).
        template: the max-max estimate.
        n_iter: max-max iterations run.
        converged: whether max-max converged.
    """

    quotient_bias: torch.Tensor
    oracle_bias: torch.Tensor
    template: torch.Tensor
    n_iter: int
    converged: bool


def _check_group_shape(group: str, name: str, x: torch.Tensor, batched: bool) -> None:
    want = (2 if batched else 1) if group == "cyclic_shift" else (3 if batched else 2)
    if x.dim() != want or (group == "SO2" and x.shape[-1] != 2):
        form = {("cyclic_shift", True): "(n, d)", ("cyclic_shift", False): "(d,)", ("SO2", True): "(n, k, 2)",
                ("SO2", False): "(k, 2)"}[(group, batched)]
        raise ValueError(f"{name} must have shape {form} for group {group!r}, got {tuple(x.shape)}")


def _apply(group: str, Y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``g_i . Y_i`` for a batch (``Y`` (n, ...), ``g`` (n,))."""
    if group == "cyclic_shift":
        d = Y.shape[-1]
        idx = (torch.arange(d, device=Y.device)[None, :] - g[:, None]) % d
        return torch.gather(Y, 1, idx)
    c, s = torch.cos(g)[:, None], torch.sin(g)[:, None]
    x, y = Y[..., 0], Y[..., 1]
    return torch.stack((c * x - s * y, s * x + c * y), dim=-1)


def _register(group: str, m: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """The ``g_i`` maximising ``<m, g_i Y_i>`` (equivalently minimising ``||m - g_i Y_i||``)."""
    if group == "cyclic_shift":
        d = Y.shape[-1]
        # <m, roll(y, k)> = sum_j m_j y_{j-k}: circular cross-correlation, one FFT per row.
        c = torch.fft.irfft(torch.fft.rfft(m)[None, :] * torch.fft.rfft(Y, dim=-1).conj(), n=d, dim=-1)
        return c.argmax(dim=-1)
    # <m, R_theta y> = cos(theta) sum <m_p, y_p> + sin(theta) sum cross(y_p, m_p): maximised at the atan2 angle.
    dot = (m[None] * Y).sum(dim=(-1, -2))
    cross = (Y[..., 0] * m[None, :, 1] - Y[..., 1] * m[None, :, 0]).sum(dim=-1)
    return torch.atan2(cross, dot)


def _example_signals(ctx):
    return torch.randn(ctx.size("n"), ctx.size("d"), generator=ctx.generator, dtype=ctx.dtype)


@accepts(template=Tensor(ndims=(1, 2)), Y=Tensor(ndims=(2, 3)), group=Choice(*GROUPS),
         example=lambda ctx: {"template": torch.randn(5, generator=ctx.generator, dtype=ctx.dtype),
                              "Y": torch.randn(4, 5, generator=ctx.generator, dtype=ctx.dtype)})
def register_to_template(template: torch.Tensor, Y: torch.Tensor, group: str = "cyclic_shift") -> torch.Tensor:
    """Registration of observations onto a template: :math:`g_i = \\arg\\min_{g} \\|t - g Y_i\\|`.

    References: Template estimation in computational anatomy: Fréchet means in top and quotient spaces are not
    consistent, 2017.

    Args:
        template: :math:`t`, shape ``(d,)`` (``"cyclic_shift"``) or ``(k, 2)`` (``"SO2"``).
        Y: observations, shape ``(n, d)`` or ``(n, k, 2)``.
        group: ``"cyclic_shift"`` or ``"SO2"``.

    Returns:
        int64 shifts ``(n,)`` (apply with ``torch.roll(Y_i, g_i)``) or angles ``(n,)``.

    Example:
        >>> y = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
        >>> register_to_template(torch.tensor([1.0, 0.0, 0.0, 0.0]), y).tolist()
        [2]
    """
    _check_group_shape(group, "template", template, False)
    _check_group_shape(group, "Y", Y, True)
    if Y.shape[1:] != template.shape:
        raise ValueError(f"Y must hold observations of the template's shape {tuple(template.shape)}, got "
                         f"{tuple(Y.shape[1:])}")
    return _register(group, template, Y)


@accepts(Y=Tensor(ndims=(2, 3)), transforms=Tensor("n", dtype="any"), group=Choice(*GROUPS),
         example=lambda ctx: {"Y": torch.randn(4, 5, generator=ctx.generator, dtype=ctx.dtype),
                              "transforms": torch.tensor([0, 1, 2, 3])})
def apply_group_action(Y: torch.Tensor, transforms: torch.Tensor, group: str = "cyclic_shift") -> torch.Tensor:
    """Group action on a batch: :math:`(g_i \\cdot Y_i)_i`.

    References: Template estimation in computational anatomy: Fréchet means in top and quotient spaces are not
    consistent, 2017.

    Args:
        Y: shape ``(n, d)`` (``"cyclic_shift"``, ``g_i`` an integer shift, ``torch.roll``) or ``(n, k, 2)``
            (``"SO2"``, ``g_i`` an angle in radians, counter-clockwise).
        transforms: shape ``(n,)``: int shifts, or angles of ``Y``'s dtype.
        group: ``"cyclic_shift"`` or ``"SO2"``.

    Returns:
        a tensor of ``Y``'s shape.

    Example:
        >>> apply_group_action(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([1])).tolist()
        [[3.0, 1.0, 2.0]]
    """
    _check_group_shape(group, "Y", Y, True)
    if transforms.shape != (Y.shape[0],):
        raise ValueError(f"transforms must have shape ({Y.shape[0]},), got {tuple(transforms.shape)}")
    if group == "cyclic_shift":
        if transforms.is_floating_point() or transforms.is_complex() or transforms.dtype == torch.bool:
            raise TypeError(f"transforms must be an integer tensor of shifts for 'cyclic_shift', got "
                            f"{transforms.dtype}")
        return _apply(group, Y, transforms.long())
    if not transforms.is_floating_point():
        raise TypeError(f"transforms must be a floating tensor of angles for 'SO2', got {transforms.dtype}")
    if not bool(torch.isfinite(transforms).all()):
        raise ValueError("transforms must be finite")
    return _apply(group, Y, transforms.to(Y.dtype))


@accepts(a=Tensor(ndims=(1, 2)), b=Tensor(ndims=(1, 2)), group=Choice(*GROUPS),
         example=lambda ctx: {"a": torch.randn(5, generator=ctx.generator, dtype=ctx.dtype),
                              "b": torch.randn(5, generator=ctx.generator, dtype=ctx.dtype)})
def quotient_distance(a: torch.Tensor, b: torch.Tensor, group: str = "cyclic_shift") -> torch.Tensor:
    """Quotient (orbit) distance :math:`d_Q([a], [b]) = \\min_{g \\in G} \\|a - g b\\|`.

    References: Template estimation in computational anatomy: Fréchet means in top and quotient spaces are not
    consistent, 2017.

    Args:
        a, b: shape ``(d,)`` (``"cyclic_shift"``) or ``(k, 2)`` (``"SO2"``), the same shape.
        group: ``"cyclic_shift"`` or ``"SO2"``.

    Returns:
        0-d tensor.

    Example:
        >>> float(quotient_distance(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])))
        0.0
    """
    _check_group_shape(group, "a", a, False)
    _check_group_shape(group, "b", b, False)
    if a.shape != b.shape:
        raise ValueError(f"b must have the shape of a {tuple(a.shape)}, got {tuple(b.shape)}")
    g = _register(group, a, b[None])
    return (a - _apply(group, b[None], g)[0]).norm()


def _maxmax(group: str, Y: torch.Tensor, m: torch.Tensor, n_iter: int, tol: float) -> QuotientFrechetMean:
    converged, it, g = False, 0, None
    for it in range(1, n_iter + 1):
        g = _register(group, m, Y)
        new = _apply(group, Y, g).mean(dim=0)
        step = float((new - m).norm())
        m = new
        if not math.isfinite(step):
            raise FloatingPointError(f"max-max produced a non-finite template at iteration {it}")
        if step <= tol * max(float(m.norm()), 1e-300):
            converged = True
            break
    g = _register(group, m, Y)
    variance = ((m[None] - _apply(group, Y, g)) ** 2).flatten(1).sum(dim=1).mean()
    if not converged:
        warnings.warn(f"quotient_frechet_mean did not converge in {n_iter} iterations (tol {tol}); raise n_iter",
                      RuntimeWarning, stacklevel=4)
    return QuotientFrechetMean(m, g, variance, it, converged)


@accepts(Y=Tensor(ndims=(2, 3)), group=Choice(*GROUPS), init=Tensor(ndims=(1, 2), optional=True),
         n_iter=Int(ge=1), tol=Real(ge=0),
         example=lambda ctx: {"Y": _example_signals(ctx)})
def quotient_frechet_mean(Y: torch.Tensor, group: str = "cyclic_shift", *, init: torch.Tensor | None = None,
                          n_iter: int = 50, tol: float = 1e-8) -> QuotientFrechetMean:
    """Empirical Fréchet mean in the quotient space by max-max (alternate registration and averaging).

    References: Template estimation in computational anatomy: Fréchet means in top and quotient spaces are not
    consistent, 2017.

    Minimises :math:`F_n(m) = \\frac1n \\sum_i \\min_g \\|m - g Y_i\\|^2` by
    :math:`g_i \\leftarrow \\arg\\max_g \\langle m, g Y_i\\rangle`, :math:`m \\leftarrow \\frac1n \\sum_i g_i Y_i`
    (each step lowers :math:`F_n`; the fixed point is an empirical Karcher mean, a local minimiser).

    Args:
        Y: observations, shape ``(n, d)`` (``"cyclic_shift"``) or ``(n, k, 2)`` (``"SO2"``).
        group: ``"cyclic_shift"`` or ``"SO2"``.
        init: starting template, shape of one observation; default ``Y[0]``.
        n_iter: most max-max iterations.
        tol: stop when the template moves by at most ``tol`` times its norm.

    Returns:
        :class:`QuotientFrechetMean`; warns (``RuntimeWarning``) when ``n_iter`` ran out.

    Example:
        >>> Y = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
        >>> quotient_frechet_mean(Y).template.tolist()   # three shifts of one spike: the spike, no blur
        [1.0, 0.0, 0.0]
    """
    _check_group_shape(group, "Y", Y, True)
    if init is None:
        init = Y[0]
    elif init.shape != Y.shape[1:]:
        raise ValueError(f"init must have the shape of one observation {tuple(Y.shape[1:])}, got "
                         f"{tuple(init.shape)}")
    return _maxmax(group, Y, init.clone(), n_iter, tol)


@accepts(Y=Tensor(ndims=(2, 3)), transforms=Tensor("n", dtype="any"), group=Choice(*GROUPS),
         example=lambda ctx: {"Y": torch.randn(4, 5, generator=ctx.generator, dtype=ctx.dtype),
                              "transforms": torch.tensor([0, 1, 2, 3])})
def oracle_template_mean(Y: torch.Tensor, transforms: torch.Tensor, group: str = "cyclic_shift") -> torch.Tensor:
    """Oracle (top-space) template estimate: undo the known transformations, then average.

    References: Template estimation in computational anatomy: Fréchet means in top and quotient spaces are not
    consistent, 2017.

    With :math:`Y_i = g_i (t_0 + \\sigma\\varepsilon_i)`, returns :math:`\\frac1n \\sum_i g_i^{-1} Y_i`, an unbiased,
    consistent estimate of :math:`t_0` (the baseline the quotient estimator is compared with).

    Args:
        Y: shape ``(n, d)`` or ``(n, k, 2)``.
        transforms: the :math:`g_i` that produced ``Y`` (shifts or angles), shape ``(n,)``.
        group: ``"cyclic_shift"`` or ``"SO2"``.

    Returns:
        tensor of one observation's shape.

    Example:
        >>> oracle_template_mean(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([1, 0])).tolist()
        [1.0, 0.0]
    """
    return apply_group_action(Y, -transforms, group).mean(dim=0)


def _expected_max_normal(d: int) -> float:
    """E max of d i.i.d. N(0, 1): integral of 1 - Phi^d minus Phi^d over the negative half line, by quadrature."""
    z = torch.linspace(-12.0, 12.0, 200001, dtype=torch.float64)
    cdf = 0.5 * torch.erfc(-z / math.sqrt(2.0))
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return float(torch.trapezoid(z * d * cdf ** (d - 1) * pdf, z))


@accepts(group=Choice(*GROUPS), size=Int(ge=2), example=lambda ctx: {"group": "cyclic_shift", "size": 8})
def fixed_point_bias_constant(group: str, size: int) -> float:
    """Bias constant :math:`K` of the quotient Fréchet mean at a fixed-point template (``||m*|| = sigma K``).

    References: Template estimation in computational anatomy: Fréchet means in top and quotient spaces are not
    consistent, 2017.

    :math:`K = \\sup_{\\|v\\|=1} \\mathbb E \\max_g \\langle v, g\\varepsilon\\rangle` for standard Gaussian
    :math:`\\varepsilon`: :math:`\\sqrt{\\pi/2}` for ``"SO2"`` (any number of points); for ``"cyclic_shift"`` on
    :math:`\\mathbb R^d` (``size = d``) the simplex value :math:`\\sqrt{d/(d-1)}\\,\\mathbb E\\max_{j\\le d} Z_j`
    (see the module docstring).

    Args:
        group: ``"cyclic_shift"`` or ``"SO2"``.
        size: ``d`` for ``"cyclic_shift"``, the number of points ``k`` for ``"SO2"`` (unused there).

    Returns:
        float.

    Example:
        >>> round(fixed_point_bias_constant("SO2", 3), 6)
        1.253314
        >>> round(fixed_point_bias_constant("cyclic_shift", 2), 6)   # sqrt(2) E max(Z1, Z2) = sqrt(2) / sqrt(pi)
        0.797885
    """
    if group == "SO2":
        return math.sqrt(math.pi / 2)
    return math.sqrt(size / (size - 1)) * _expected_max_normal(size)


@accepts(t0=Tensor(ndims=(1, 2)), sigma=Real(ge=0), n=Int(ge=1), group=Choice(*GROUPS), generator=Generator(),
         n_iter=Int(ge=1), tol=Real(ge=0),
         example=lambda ctx: {"t0": torch.randn(5, generator=ctx.generator, dtype=ctx.dtype), "sigma": 0.5, "n": 6})
def consistency_bias(t0: torch.Tensor, sigma: float, n: int, group: str = "cyclic_shift", *,
                     generator: torch.Generator | None = None, n_iter: int = 50,
                     tol: float = 1e-8) -> ConsistencyBias:
    """Consistency bias of quotient template estimation, against the oracle, on one simulated sample.

    References: Template estimation in computational anatomy: Fréchet means in top and quotient spaces are not
    consistent, 2017.

    Draws :math:`Y_i = g_i (t_0 + \\sigma\\varepsilon_i)`, :math:`i \\le n`, with :math:`g_i` uniform (shifts) or
    uniform on :math:`[0, 2\\pi)` (angles) and standard Gaussian :math:`\\varepsilon_i`, and returns
    :math:`d_Q([\\hat m], [t_0])` for the max-max estimate (started from the oracle estimate, so that registration
    and not a poor start is what moves it) and :math:`\\|\\bar Y_{\\text{oracle}} - t_0\\|`.

    Args:
        t0: the template, shape ``(d,)`` or ``(k, 2)``.
        sigma: noise level :math:`\\sigma \\ge 0`.
        n: sample size.
        group: ``"cyclic_shift"`` or ``"SO2"``.
        generator: the random source.
        n_iter, tol: max-max settings (:func:`quotient_frechet_mean`).

    Returns:
        :class:`ConsistencyBias`.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> t0 = torch.zeros(16, dtype=torch.float64)
        >>> r = consistency_bias(t0, 2.0, 2000, generator=g)
        >>> float(r.quotient_bias) > 10 * float(r.oracle_bias)
        True
    """
    _check_group_shape(group, "t0", t0, False)
    eps = torch.randn((n, *t0.shape), generator=generator, dtype=t0.dtype).to(t0.device)
    X = t0[None] + sigma * eps
    if group == "cyclic_shift":
        g = torch.randint(0, t0.shape[0], (n,), generator=generator).to(t0.device)
    else:
        g = (2 * math.pi * torch.rand(n, generator=generator, dtype=t0.dtype)).to(t0.device)
    Y = _apply(group, X, g)
    oracle = _apply(group, Y, -g).mean(dim=0)
    # Start max-max from a registered copy of the oracle mean: only registration can create the bias.
    start = oracle if float(oracle.norm()) > 0 else Y[0]
    r = _maxmax(group, Y, start.clone(), n_iter, tol)
    qb = (t0 - _apply(group, r.template[None], _register(group, t0, r.template[None]))[0]).norm()
    return ConsistencyBias(qb, (oracle - t0).norm(), r.template, r.n_iter, r.converged)
