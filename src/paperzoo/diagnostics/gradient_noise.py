"""Gradient noise: per-sample gradients, their covariance and signal-to-noise ratio, and the noise scales.

References: An Empirical Model of Large-Batch Training (McCandlish et al.), 2018 (the simple and Hessian-weighted
noise scales, Section 2.2; the steps/examples tradeoff and the critical batch size, Section 2.3; the two-batch-size
estimates of Appendix A); Understanding Why Neural Networks Generalize Well Through GSNR of Parameters (Liu et al.),
2020 (the per-parameter gradient signal-to-noise ratio).

Notation. For per-example losses :math:`L_i(\\theta)` (``loss_fn`` evaluated on one row of ``inputs`` and
``targets``) the per-sample gradients :math:`g_i = \\nabla_\\theta L_i` are the rows of an ``(N, P)`` matrix
(:func:`per_sample_gradients`, through ``torch.func``: ``vmap(grad(...))`` over ``functional_call``). From them:
the mean gradient :math:`\\bar g = \\frac1N\\sum_i g_i` (the gradient of the batch-mean loss), the unbiased
covariance :math:`\\hat\\Sigma = \\frac1{N-1}\\sum_i (g_i-\\bar g)(g_i-\\bar g)^\\top`, the unbiased estimate
:math:`|\\bar g|^2 - \\operatorname{tr}\\hat\\Sigma/N` of :math:`|G|^2`, and the simple noise scale
:math:`B_\\text{simple} = \\operatorname{tr}\\Sigma / |G|^2`. :func:`gradient_statistics` computes all of them
from one pass; :func:`two_batch_noise_scale` is the estimator for when only the norms of two batch gradients are
available (data parallel training); :func:`hessian_weighted_noise_scale` is
:math:`B_\\text{noise} = \\operatorname{tr}(H\\Sigma) / G^\\top H G` with Hessian-vector products.

The model must treat the rows of a batch independently (no batch normalisation in training mode, no dropout):
per-sample gradients are those of the model applied to batches of one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.func import functional_call, grad, vmap

from paperzoo.core.accepts import Function, Int, Module, OneOf, Real, Tensor, accepts
from paperzoo.diagnostics.hessian import hvp_operator

__all__ = ["PerSampleGradients", "GradientStatistics", "NoiseScaleEstimate", "TradeoffFit", "HessianNoiseScale",
           "per_sample_gradients", "gradient_statistics", "simple_noise_scale", "two_batch_noise_scale",
           "steps_examples_tradeoff", "critical_batch_size", "fit_steps_examples", "hessian_weighted_noise_scale"]


class PerSampleGradients(NamedTuple):
    """Result of :func:`per_sample_gradients`.

    Attributes:
        grads: shape ``(N, P)``: row ``i`` is the gradient of the loss of sample ``i``, the parameters flattened
            and concatenated in the order of ``names``.
        names: the names (``model.named_parameters()``) of the parameters that require grad, in column order.
        shapes: their shapes; parameter ``k`` occupies ``prod(shapes[k])`` consecutive columns.
    """

    grads: torch.Tensor
    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def unflatten(self, flat: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{name: tensor of shape (*lead, *shape)}`` from ``flat`` (default ``grads``) of shape ``(*lead, P)``."""
        flat = self.grads if flat is None else flat
        sizes = [int(torch.Size(s).numel()) for s in self.shapes]
        if flat.shape[-1] != sum(sizes):
            raise ValueError(f"flat must have {sum(sizes)} columns (the parameter count), got shape "
                             f"{tuple(flat.shape)}")
        lead = flat.shape[:-1]
        return {n: c.reshape(*lead, *s) for n, s, c in zip(self.names, self.shapes, torch.split(flat, sizes, -1))}


class GradientStatistics(NamedTuple):
    """Result of :func:`gradient_statistics` (all from the same ``N`` per-sample gradients).

    Attributes:
        mean: :math:`\\bar g`, shape ``(P,)``: the gradient of the batch-mean loss.
        variance: the diagonal of :math:`\\hat\\Sigma` (unbiased, divisor ``N - 1``), shape ``(P,)``.
        trace: :math:`\\operatorname{tr}\\hat\\Sigma`, unbiased for :math:`\\operatorname{tr}\\Sigma`.
        grad_norm_sq: :math:`|\\bar g|^2 - \\operatorname{tr}\\hat\\Sigma / N`, unbiased for :math:`|G|^2` (may be
            negative when the noise dominates).
        b_simple: ``trace / grad_norm_sq`` (the ratio of the two unbiased estimates; 0 when ``trace`` is 0).
        snr: per-parameter :math:`\\bar g_j^2 / \\hat\\Sigma_{jj}`, shape ``(P,)`` (``inf`` where the variance is
            0 and the mean is not, 0 where both are).
        snr_aggregate: :math:`|\\bar g|^2 / \\operatorname{tr}\\hat\\Sigma` (same conventions).
        top_eigenvalues: the ``top_k`` largest eigenvalues of :math:`\\hat\\Sigma`, descending, shape ``(top_k,)``
            (``top_k`` clipped to ``min(N, P)``; empty when ``top_k=0``).
        n_samples: ``N``.
    """

    mean: torch.Tensor
    variance: torch.Tensor
    trace: float
    grad_norm_sq: float
    b_simple: float
    snr: torch.Tensor
    snr_aggregate: float
    top_eigenvalues: torch.Tensor
    n_samples: int


class NoiseScaleEstimate(NamedTuple):
    """Result of :func:`two_batch_noise_scale`: unbiased :math:`|G|^2`, :math:`\\operatorname{tr}\\Sigma`, and
    their ratio :math:`B_\\text{simple}`."""

    grad_norm_sq: float
    trace: float
    b_simple: float


class TradeoffFit(NamedTuple):
    """Result of :func:`fit_steps_examples`: :math:`S_\\min`, :math:`E_\\min`, :math:`B_\\text{crit} =
    E_\\min / S_\\min`, and the root-mean-square residual of :math:`S_\\min/S + E_\\min/E = 1` over the runs."""

    steps_min: float
    examples_min: float
    b_crit: float
    rms_residual: float


class HessianNoiseScale(NamedTuple):
    """Result of :func:`hessian_weighted_noise_scale`.

    Attributes:
        b_noise: ``trace_h_sigma / g_h_g``.
        trace_h_sigma: :math:`\\operatorname{tr}(H\\hat\\Sigma)`.
        g_h_g: :math:`\\bar g^\\top H \\bar g - \\operatorname{tr}(H\\hat\\Sigma)/N` (the bias of the plug-in
            quadratic form removed, as for :math:`|G|^2`).
        b_simple: the simple noise scale from the same per-sample gradients.
        n_hvp: Hessian-vector products used.
    """

    b_noise: float
    trace_h_sigma: float
    g_h_g: float
    b_simple: float
    n_hvp: int


# -- per-sample gradients -----------------------------------------------------------------------------------------

def _example_regression(ctx):
    g = ctx.generator
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).to(ctx.dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=ctx.dtype))
    return {"model": model, "loss_fn": torch.nn.functional.mse_loss,
            "inputs": torch.randn(6, 3, generator=g, dtype=ctx.dtype),
            "targets": torch.randn(6, 1, generator=g, dtype=ctx.dtype)}


_DATA_SPECS = dict(model=Module(bind_dtype=True), loss_fn=Function(),
                   inputs=Tensor(ndims=tuple(range(1, 9)), dtype="any", degenerate=("coincident",)),
                   targets=Tensor(ndims=tuple(range(1, 9)), dtype="any"))


def _check_data(model, loss_fn, inputs, targets, min_samples: int = 1):
    n = inputs.shape[0]
    if targets.shape[0] != n:
        raise ValueError(f"targets must have {n} rows (one per row of inputs), got shape {tuple(targets.shape)}")
    if n < min_samples:
        raise ValueError(f"inputs must have at least {min_samples} rows (a covariance needs two samples), got {n}")
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model must have parameters that require grad, got none")
    dtype = named[0][1].dtype
    if inputs.is_floating_point() and inputs.dtype != dtype:
        raise TypeError(f"inputs must have the dtype of the model's parameters ({dtype}), got {inputs.dtype}")
    if targets.is_floating_point() and targets.dtype != dtype:
        raise TypeError(f"targets must have the dtype of the model's parameters ({dtype}), got {targets.dtype}")
    with torch.no_grad():
        loss = loss_fn(model(inputs[:1]), targets[:1])
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        got = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"loss_fn must return a scalar tensor (the mean loss of the batch), got {got}")
    if not bool(torch.isfinite(loss).all()):
        raise ValueError(f"loss_fn must return a finite loss, got {float(loss)!r} on the first sample")


def _per_sample_gradients(model, loss_fn, inputs, targets, chunk_size) -> PerSampleGradients:
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    params = {name: p.detach() for name, p in named}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def sample_loss(theta, x, y):
        out = functional_call(model, (theta, frozen, buffers), (x.unsqueeze(0),))
        return loss_fn(out, y.unsqueeze(0)).reshape(())

    per = vmap(grad(sample_loss), in_dims=(None, 0, 0), chunk_size=chunk_size)(params, inputs, targets)
    n = inputs.shape[0]
    flat = torch.cat([per[name].reshape(n, -1) for name, _ in named], dim=1)
    return PerSampleGradients(flat, tuple(name for name, _ in named), tuple(tuple(p.shape) for _, p in named))


@accepts(**_DATA_SPECS, chunk_size=Int(ge=1, optional=True), example=_example_regression)
def per_sample_gradients(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         inputs: torch.Tensor, targets: torch.Tensor, *, chunk_size: int | None = None
                         ) -> PerSampleGradients:
    """Per-sample gradients :math:`g_i = \\nabla_\\theta\\, \\ell(f_\\theta(x_i), y_i)` as one ``(N, P)`` matrix.

    Computed by ``torch.func.vmap(torch.func.grad(...))`` over ``functional_call(model, ...)`` on batches of one,
    so the mean of the rows is the gradient of ``loss_fn(model(inputs), targets)``.

    Args:
        model: :math:`f_\\theta`; the gradients are taken w.r.t. its parameters that require grad (others and the
            buffers are held fixed). Its floating parameters share one dtype.
        loss_fn: ``loss_fn(outputs, targets) -> scalar``, the mean loss :math:`\\ell` over the batch (e.g.
            ``torch.nn.functional.cross_entropy``).
        inputs: :math:`x`, shape ``(N, ...)`` (integer inputs such as token ids pass as they are).
        targets: :math:`y`, shape ``(N, ...)``.
        chunk_size: samples per vectorized chunk (``vmap``'s ``chunk_size``: less memory, same result); ``None``
            for all at once.

    Returns:
        :class:`PerSampleGradients` (``grads`` of shape ``(N, P)``, ``names``, ``shapes``; ``unflatten()`` maps
        the columns back to ``{name: (N, *shape)}``).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(2, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
        >>> y = torch.tensor([[1.0], [1.0]], dtype=torch.float64)
        >>> res = per_sample_gradients(model, torch.nn.functional.mse_loss, x, y)
        >>> res.grads.tolist(), res.names, res.shapes
        ([[-2.0, 0.0], [0.0, -4.0]], ('weight',), ((1, 2),))
    """
    _check_data(model, loss_fn, inputs, targets)
    return _per_sample_gradients(model, loss_fn, inputs, targets, chunk_size)


# -- statistics ---------------------------------------------------------------------------------------------------

def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` with ``0/0 = 0`` (no signal and no noise) and ``x/0 = inf`` (signal without noise)."""
    safe = torch.where(den == 0, torch.ones_like(den), den)
    out = num / safe
    return torch.where(den == 0, torch.where(num == 0, torch.zeros_like(num), torch.full_like(num, torch.inf)), out)


def _statistics(grads: torch.Tensor, top_k: int) -> GradientStatistics:
    n, p = grads.shape
    mean = grads.mean(0)
    centered = grads - mean
    variance = (centered * centered).sum(0) / (n - 1)
    trace = variance.sum()
    norm_sq = mean @ mean
    norm_sq_unbiased = norm_sq - trace / n
    b_simple = _ratio(trace, norm_sq_unbiased) if float(trace) != 0.0 else torch.zeros_like(trace)
    k = min(top_k, n, p)
    if k > 0:
        # Sigma's nonzero spectrum is that of the smaller of the two Gram matrices (N x N or P x P).
        gram = centered @ centered.T if n <= p else centered.T @ centered
        top = torch.linalg.eigvalsh(gram / (n - 1)).flip(0)[:k].clamp_min(0.0)
    else:
        top = grads.new_zeros(0)
    return GradientStatistics(mean, variance, float(trace), float(norm_sq_unbiased), float(b_simple),
                              _ratio(mean * mean, variance), float(_ratio(norm_sq, trace)), top, n)


@accepts(**_DATA_SPECS, top_k=Int(ge=0), chunk_size=Int(ge=1, optional=True),
         infinite_ok=("snr", "snr_aggregate", "b_simple"),
         example=lambda ctx: {**_example_regression(ctx), "top_k": 2})
def gradient_statistics(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        inputs: torch.Tensor, targets: torch.Tensor, *, top_k: int = 0,
                        chunk_size: int | None = None) -> GradientStatistics:
    """Mean gradient, per-sample gradient covariance (trace, diagonal, top eigenvalues), SNR and simple noise scale.

    From the ``N`` per-sample gradients :math:`g_i` of :func:`per_sample_gradients` (one vectorized pass):

    .. math::
        \\bar g = \\tfrac1N \\textstyle\\sum_i g_i, \\quad
        \\hat\\Sigma = \\tfrac1{N-1} \\textstyle\\sum_i (g_i - \\bar g)(g_i - \\bar g)^\\top, \\quad
        B_\\text{simple} = \\frac{\\operatorname{tr}\\hat\\Sigma}{|\\bar g|^2 - \\operatorname{tr}\\hat\\Sigma/N}

    (McCandlish et al., Section 2.2 for :math:`B_\\text{simple} = \\operatorname{tr}\\Sigma/|G|^2`; numerator and
    denominator are each unbiased, which is Appendix A's two-batch estimator with batch sizes 1 and ``N``).
    :math:`\\hat\\Sigma` is never formed: its diagonal comes from the centred matrix, its top eigenvalues from the
    ``N x N`` Gram matrix :math:`C C^\\top/(N-1)` when ``N <= P`` (the ``P x P`` one otherwise). The SNR is the
    per-parameter :math:`\\bar g_j^2/\\hat\\Sigma_{jj}` (Liu et al.'s GSNR) and the aggregate
    :math:`|\\bar g|^2/\\operatorname{tr}\\hat\\Sigma`.

    Args:
        model, loss_fn, inputs, targets: as in :func:`per_sample_gradients`; ``N >= 2``.
        top_k: how many of the largest eigenvalues of :math:`\\hat\\Sigma` to return (0: none).
        chunk_size: as in :func:`per_sample_gradients`.

    Returns:
        :class:`GradientStatistics`.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> x = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
        >>> st = gradient_statistics(model, torch.nn.functional.mse_loss, x, x, top_k=1)
        >>> [round(v, 4) for v in st.mean.tolist()], round(st.trace, 4)   # g_i = -2 x_i^2 = -2, -8, -18
        ([-9.3333], 65.3333)
        >>> round(float(st.top_eigenvalues[0]), 4)   # one parameter: the variance itself
        65.3333
    """
    _check_data(model, loss_fn, inputs, targets, min_samples=2)
    return _statistics(_per_sample_gradients(model, loss_fn, inputs, targets, chunk_size).grads, top_k)


# -- noise scales ---------------------------------------------------------------------------------------------------

@accepts(trace=Real(ge=0), grad_norm_sq=Real(gt=0), example=lambda ctx: {"trace": 3.0, "grad_norm_sq": 0.5})
def simple_noise_scale(trace: float, grad_norm_sq: float) -> float:
    """The simple noise scale :math:`B_\\text{simple} = \\operatorname{tr}\\Sigma / |G|^2`.

    References: An Empirical Model of Large-Batch Training (McCandlish et al.), 2018 (Section 2.2).

    Args:
        trace: :math:`\\operatorname{tr}\\Sigma >= 0`, the trace of the per-example gradient covariance.
        grad_norm_sq: :math:`|G|^2 > 0`, the squared norm of the true gradient.

    Example:
        >>> simple_noise_scale(3.0, 0.5)
        6.0
    """
    return float(trace) / float(grad_norm_sq)


_MEASUREMENT = OneOf(Real(ge=0), Tensor("m", nonnegative=True))


def _mean_measurement(value) -> float:
    return float(value.mean()) if isinstance(value, torch.Tensor) else float(value)


@accepts(norm_sq_small=_MEASUREMENT, norm_sq_big=_MEASUREMENT, b_small=Int(ge=1), b_big=Int(ge=2),
         infinite_ok=("b_simple",),
         example=lambda ctx: {"norm_sq_small": 2.0, "norm_sq_big": 1.2, "b_small": 4, "b_big": 64})
def two_batch_noise_scale(norm_sq_small: float | torch.Tensor, norm_sq_big: float | torch.Tensor, b_small: int,
                          b_big: int) -> NoiseScaleEstimate:
    """Unbiased :math:`|G|^2` and :math:`\\operatorname{tr}\\Sigma` from gradient norms at two batch sizes, and
    :math:`B_\\text{simple}`.

    References: An Empirical Model of Large-Batch Training (McCandlish et al.), 2018 (Appendix A).

    A batch gradient :math:`G_B` of ``B`` i.i.d. examples has :math:`\\mathbb E|G_B|^2 = |G|^2 +
    \\operatorname{tr}\\Sigma / B`; two batch sizes solve for both:

    .. math::
        |\\mathcal G|^2 = \\frac{B_\\text{big}|G_{B_\\text{big}}|^2 - B_\\text{small}|G_{B_\\text{small}}|^2}
        {B_\\text{big} - B_\\text{small}}, \\qquad
        \\mathcal S = \\frac{|G_{B_\\text{small}}|^2 - |G_{B_\\text{big}}|^2}{1/B_\\text{small} - 1/B_\\text{big}},

    each unbiased; :math:`B_\\text{simple} = \\mathcal S / |\\mathcal G|^2`. The ratio is biased however many
    samples are taken, so, as the paper advises, average many measurements of each norm first: a 1-D tensor of
    measurements is averaged before the ratio.

    Args:
        norm_sq_small: :math:`|G_{B_\\text{small}}|^2`, a number or a tensor of shape ``(m,)`` of repeated
            measurements (``>= 0``).
        norm_sq_big: :math:`|G_{B_\\text{big}}|^2`, likewise (any number of measurements).
        b_small, b_big: the batch sizes, ``1 <= b_small < b_big``.

    Returns:
        :class:`NoiseScaleEstimate` (the estimate of :math:`|G|^2` may be negative when the noise dominates;
        ``b_simple`` is 0 when the trace estimate is 0 and ``inf`` when the :math:`|G|^2` estimate is 0).

    Example:
        >>> est = two_batch_noise_scale(2.0, 1.25, 4, 16)   # |G|^2 = 1, tr(Sigma) = 4 in expectation
        >>> est.grad_norm_sq, est.trace, est.b_simple
        (1.0, 4.0, 4.0)
    """
    if b_big <= b_small:
        raise ValueError(f"b_big must be > b_small ({b_small}), got {b_big}")
    small, big = _mean_measurement(norm_sq_small), _mean_measurement(norm_sq_big)
    norm_sq = (b_big * big - b_small * small) / (b_big - b_small)
    trace = (small - big) / (1.0 / b_small - 1.0 / b_big)
    if trace == 0.0:
        b_simple = 0.0
    elif norm_sq == 0.0:
        b_simple = float("inf") if trace > 0 else float("-inf")
    else:
        b_simple = trace / norm_sq
    return NoiseScaleEstimate(norm_sq, trace, b_simple)


_POSITIVE = OneOf(Real(gt=0), Tensor("m", nonnegative=True))


@accepts(batch_size=_POSITIVE, b_crit=Real(gt=0), example=lambda ctx: {"batch_size": 32.0, "b_crit": 128.0})
def steps_examples_tradeoff(batch_size: float | torch.Tensor, b_crit: float
                            ) -> tuple[float | torch.Tensor, float | torch.Tensor]:
    """Predicted :math:`(S/S_\\min, E/E_\\min)` at batch size :math:`B`: :math:`(1 + B_\\text{crit}/B,\\;
    1 + B/B_\\text{crit})`.

    References: An Empirical Model of Large-Batch Training (McCandlish et al.), 2018 (Section 2.3).

    The steps :math:`S` and examples :math:`E = BS` needed to reach a given loss trade off as
    :math:`(S/S_\\min - 1)(E/E_\\min - 1) = 1`, with :math:`B_\\text{crit} = E_\\min/S_\\min`; the paper's model
    predicts :math:`B_\\text{crit} \\approx B_\\text{noise}` (estimated in practice by :math:`B_\\text{simple}`),
    so pass a measured noise scale as ``b_crit`` for a prediction. At :math:`B = B_\\text{crit}` both are 2.

    Args:
        batch_size: :math:`B > 0`, a number or a tensor of shape ``(m,)`` (entries ``> 0``).
        b_crit: :math:`B_\\text{crit} > 0`.

    Example:
        >>> steps_examples_tradeoff(32.0, 128.0)
        (5.0, 1.25)
    """
    if isinstance(batch_size, torch.Tensor):
        if bool((batch_size <= 0).any()):
            raise ValueError(f"batch_size must be > 0 entrywise, got a minimum of {float(batch_size.min())!r}")
        return 1.0 + b_crit / batch_size, 1.0 + batch_size / b_crit
    return 1.0 + b_crit / float(batch_size), 1.0 + float(batch_size) / b_crit


@accepts(steps_min=Real(gt=0), examples_min=Real(gt=0),
         example=lambda ctx: {"steps_min": 100.0, "examples_min": 6400.0})
def critical_batch_size(steps_min: float, examples_min: float) -> float:
    """The critical batch size :math:`B_\\text{crit} = E_\\min / S_\\min`.

    References: An Empirical Model of Large-Batch Training (McCandlish et al.), 2018 (Section 2.3).

    Args:
        steps_min: :math:`S_\\min > 0`, the fewest optimizer steps (the large-batch limit).
        examples_min: :math:`E_\\min > 0`, the fewest training examples (the small-batch limit).

    Example:
        >>> critical_batch_size(100.0, 6400.0)
        64.0
    """
    return float(examples_min) / float(steps_min)


@accepts(steps=Tensor("m", nonnegative=True), examples=Tensor("m", nonnegative=True),
         example=lambda ctx: {"steps": torch.tensor([500.0, 200.0, 125.0], dtype=ctx.dtype),
                              "examples": torch.tensor([500.0, 800.0, 2000.0], dtype=ctx.dtype)})
def fit_steps_examples(steps: torch.Tensor, examples: torch.Tensor) -> TradeoffFit:
    """Fit :math:`S_\\min, E_\\min` of :math:`(S/S_\\min - 1)(E/E_\\min - 1) = 1` to runs at several batch sizes.

    References: An Empirical Model of Large-Batch Training (McCandlish et al.), 2018 (Section 2.3).

    Expanding the product gives :math:`S_\\min / S + E_\\min / E = 1`, linear in the unknowns: least squares
    over the runs (one per batch size), each reaching the same target loss in ``steps[i]`` steps and
    ``examples[i]`` examples.

    Args:
        steps: :math:`S_i > 0`, shape ``(m,)``, ``m >= 2``.
        examples: :math:`E_i > 0`, shape ``(m,)``.

    Example:
        >>> import torch
        >>> S = torch.tensor([500.0, 200.0, 125.0], dtype=torch.float64)
        >>> E = torch.tensor([500.0, 800.0, 2000.0], dtype=torch.float64)   # batch sizes 1, 4, 16
        >>> fit = fit_steps_examples(S, E)
        >>> round(fit.steps_min, 6), round(fit.examples_min, 6), round(fit.b_crit, 6)
        (100.0, 400.0, 4.0)
    """
    if steps.shape[0] < 2:
        raise ValueError(f"steps must have at least 2 runs (two unknowns), got {steps.shape[0]}")
    if bool((steps <= 0).any()) or bool((examples <= 0).any()):
        raise ValueError("steps and examples must be > 0 entrywise, got a zero entry")
    A = torch.stack([1.0 / steps, 1.0 / examples], dim=1)
    if int(torch.linalg.matrix_rank(A)) < 2:
        raise ValueError("steps and examples must come from at least 2 different batch sizes (examples / steps), "
                         "got one")
    ones = torch.ones_like(steps)
    sol = torch.linalg.lstsq(A, ones.unsqueeze(1)).solution.squeeze(1)
    s_min, e_min = float(sol[0]), float(sol[1])
    if s_min <= 0 or e_min <= 0:
        raise ValueError(f"steps and examples must trace a tradeoff curve (fewer steps for more examples), got a "
                         f"fit with S_min={s_min!r}, E_min={e_min!r}")
    rms = float(torch.sqrt(((A @ sol - ones) ** 2).mean()))
    return TradeoffFit(s_min, e_min, e_min / s_min, rms)


@accepts(**_DATA_SPECS, rank=Int(ge=1, optional=True), chunk_size=Int(ge=1, optional=True),
         infinite_ok=("b_noise", "b_simple"), example=_example_regression)
def hessian_weighted_noise_scale(model: torch.nn.Module,
                                 loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                                 inputs: torch.Tensor, targets: torch.Tensor, *, rank: int | None = None,
                                 chunk_size: int | None = None) -> HessianNoiseScale:
    """The noise scale :math:`B_\\text{noise} = \\operatorname{tr}(H\\Sigma) / G^\\top H G`.

    References: An Empirical Model of Large-Batch Training (McCandlish et al.), 2018 (Section 2.2).

    :math:`H` is the Hessian of the batch-mean loss (products from
    :func:`paperzoo.diagnostics.hessian.hvp_operator`), :math:`\\hat\\Sigma` and :math:`\\bar g` as in
    :func:`gradient_statistics`. With :math:`\\hat\\Sigma = \\sum_k \\lambda_k u_k u_k^\\top` from the Gram matrix
    of the centred per-sample gradients, :math:`\\operatorname{tr}(H\\hat\\Sigma) = \\sum_k \\lambda_k
    u_k^\\top H u_k`: one product per eigen-direction (at most ``N - 1``), and one for :math:`\\bar g^\\top H\\bar
    g`, from which :math:`\\operatorname{tr}(H\\hat\\Sigma)/N` is subtracted (its bias for fixed :math:`H`).
    Neither :math:`H` nor :math:`\\hat\\Sigma` is formed. :math:`B_\\text{noise}` can be negative or infinite
    where :math:`H` is indefinite (away from a minimum); the paper's model assumes a positive quadratic.

    Args:
        model, loss_fn, inputs, targets: as in :func:`per_sample_gradients`; ``N >= 2``.
        rank: use only the ``rank`` leading eigen-directions of :math:`\\hat\\Sigma` (fewer products, an
            approximation); ``None``: all (exact).
        chunk_size: as in :func:`per_sample_gradients`.

    Returns:
        :class:`HessianNoiseScale`.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> x = torch.tensor([[1.0], [1.0], [1.0]], dtype=torch.float64)
        >>> y = torch.tensor([[1.0], [2.0], [3.0]], dtype=torch.float64)
        >>> res = hessian_weighted_noise_scale(model, torch.nn.functional.mse_loss, x, y)
        >>> round(res.b_noise, 10) == round(res.b_simple, 10)   # one parameter: H cancels
        True
    """
    _check_data(model, loss_fn, inputs, targets, min_samples=2)
    grads = _per_sample_gradients(model, loss_fn, inputs, targets, chunk_size).grads
    n = grads.shape[0]
    stats = _statistics(grads, 0)
    params = [p for p in model.parameters() if p.requires_grad]
    matvec, _ = hvp_operator(lambda: loss_fn(model(inputs), targets), params)
    centered = grads - stats.mean
    evals, evecs = torch.linalg.eigh(centered @ centered.T / (n - 1))
    keep = evals > evals.max().clamp_min(0.0) * n * torch.finfo(grads.dtype).eps
    order = torch.nonzero(keep).flatten().flip(0)
    if rank is not None:
        order = order[:rank]
    # Direction w_k = C^T v_k has |w_k|^2 = (N-1) lambda_k, so lambda_k u_k^T H u_k = w_k^T H w_k / (N-1).
    directions = (centered.T @ evecs[:, order]).T
    tr_h_sigma = sum((float(w @ matvec(w)) for w in directions), 0.0) / (n - 1)
    g_h_g = float(stats.mean @ matvec(stats.mean)) - tr_h_sigma / n
    if tr_h_sigma == 0.0:
        b_noise = 0.0
    elif g_h_g == 0.0:
        b_noise = float("inf") if tr_h_sigma > 0 else float("-inf")
    else:
        b_noise = tr_h_sigma / g_h_g
    return HessianNoiseScale(b_noise, tr_h_sigma, g_h_g, stats.b_simple, len(directions) + 1)
