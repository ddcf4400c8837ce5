"""Large-batch training measurements: a running noise-scale tracker and the steps-to-target harness.

References: An Empirical Model of Large-Batch Training (McCandlish et al.), 2018 (Section 2.2: the simple noise
scale; Section 2.3: the steps/examples tradeoff and the critical batch size measured by training to a target loss
at several batch sizes; Appendix A: the two-batch-size estimates, averaged over training before their ratio).

The pieces that need no training live in :mod:`paperzoo.diagnostics.gradient_noise` (``two_batch_noise_scale``,
``fit_steps_examples``, ``critical_batch_size``); this module adds what a training run needs:

* :func:`batch_gradient_norms`: the two norms a data-parallel step has for free, :math:`|G_{B_\\text{small}}|^2`
  (averaged over the ``B_big / B_small`` chunks of one batch) and :math:`|G_{B_\\text{big}}|^2`.
* :class:`NoiseScaleTracker`: exponential moving averages of the unbiased estimates :math:`|\\mathcal G|^2` and
  :math:`\\mathcal S` of :math:`|G|^2` and :math:`\\operatorname{tr}\\Sigma`, and their ratio
  :math:`B_\\text{simple}` (the ratio of averages, not the average of ratios).
* :func:`dataset_noise_scale`: the exact :math:`B_\\text{simple}` when the "population" is a finite training set
  sampled uniformly with replacement (:math:`G` the full-data gradient, :math:`\\Sigma` the per-sample covariance
  with divisor ``N``): the value the two-batch estimates are unbiased for in that setting.
* :func:`steps_to_target`: SGD at batch size ``B`` for a grid of learning rates in lockstep (shared batches), the
  exact full-data loss after every step, stopping at the first step any learning rate reaches the target: the
  lr-tuned :math:`S(B)` and :math:`E(B) = B\\,S(B)` that :func:`~paperzoo.diagnostics.gradient_noise.fit_steps_examples`
  turns into :math:`S_\\min, E_\\min, B_\\text{crit}`.

As in :mod:`~paperzoo.diagnostics.gradient_noise`, the model must treat the rows of a batch independently.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.func import functional_call, grad, vmap

from paperzoo.core.accepts import Function, Generator, Int, Module, OneOf, Real, Tensor, accepts
from paperzoo.core.checks import check_number
from paperzoo.diagnostics.gradient_noise import NoiseScaleEstimate, _check_data, _per_sample_gradients

__all__ = ["BatchGradientNorms", "StepsToTarget", "NoiseScaleTracker", "batch_gradient_norms",
           "dataset_noise_scale", "steps_to_target"]


class BatchGradientNorms(NamedTuple):
    """Result of :func:`batch_gradient_norms`: the mean of :math:`|G_{B_\\text{small}}|^2` over the chunks, the
    :math:`|G_{B_\\text{big}}|^2` of the whole batch, and the two batch sizes."""

    norm_sq_small: float
    norm_sq_big: float
    b_small: int
    b_big: int


class StepsToTarget(NamedTuple):
    """Result of :func:`steps_to_target`.

    Attributes:
        steps: :math:`S(B)`, the first step at which some learning rate's full-data loss is ``<= target``
            (``max_steps`` when none did; see ``reached``).
        examples: :math:`E(B) = B \\cdot S(B)`.
        lr: the learning rate that got there first (ties: the lowest loss at that step).
        lr_index: its index in ``lrs`` (0 or ``len(lrs) - 1``: the grid's edge won).
        reached: whether the target was reached within ``max_steps``.
        losses: the full-data loss of every learning rate at the final step, shape ``(K,)`` (NaN: diverged).
        params: ``{name: tensor}``, the winning run's parameters at step ``steps``.
    """

    steps: int
    examples: int
    lr: float
    lr_index: int
    reached: bool
    losses: torch.Tensor
    params: dict[str, torch.Tensor]


def _example_data(ctx):
    g = ctx.generator
    model = torch.nn.Linear(3, 1).to(ctx.dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=ctx.dtype))
    return {"model": model, "loss_fn": torch.nn.functional.mse_loss,
            "inputs": torch.randn(8, 3, generator=g, dtype=ctx.dtype),
            "targets": torch.randn(8, 1, generator=g, dtype=ctx.dtype)}


_DATA_SPECS = dict(model=Module(bind_dtype=True), loss_fn=Function(),
                   inputs=Tensor(ndims=tuple(range(1, 9)), dtype="any"),
                   targets=Tensor(ndims=tuple(range(1, 9)), dtype="any"))


def _functional(model, loss_fn):
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    params = {name: p.detach() for name, p in named}
    frozen = {name: p.detach() for name, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def batch_loss(theta, x, y):
        return loss_fn(functional_call(model, (theta, frozen, buffers), (x,)), y).reshape(())

    return params, batch_loss


# -- two-batch norms and the tracker -------------------------------------------------------------------------------

@accepts(**_DATA_SPECS, b_small=Int(ge=1), example=lambda ctx: {**_example_data(ctx), "b_small": 2})
def batch_gradient_norms(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                         inputs: torch.Tensor, targets: torch.Tensor, b_small: int) -> BatchGradientNorms:
    """Squared gradient norms at two batch sizes from one batch: :math:`|G_{B_\\text{small}}|^2` and
    :math:`|G_{B_\\text{big}}|^2`.

    References: An Empirical Model of Large-Batch Training (McCandlish et al.), 2018 (Appendix A).

    The batch of :math:`B_\\text{big}` rows is cut into :math:`k = B_\\text{big}/B_\\text{small}` consecutive
    chunks (one per data-parallel worker); the chunk gradients :math:`G^{(j)}` (of the chunk-mean loss, through
    ``vmap(grad(...))``) give :math:`|G_{B_\\text{small}}|^2 = \\frac1k\\sum_j |G^{(j)}|^2` and their mean is the
    gradient of the whole batch, :math:`G_{B_\\text{big}} = \\frac1k \\sum_j G^{(j)}`. For i.i.d. rows,
    :math:`\\mathbb E|G_B|^2 = |G|^2 + \\operatorname{tr}\\Sigma/B` at both sizes; feed the pair to
    :class:`NoiseScaleTracker` or :func:`~paperzoo.diagnostics.gradient_noise.two_batch_noise_scale`.

    Args:
        model, loss_fn: as in :func:`~paperzoo.diagnostics.gradient_noise.per_sample_gradients` (``loss_fn`` the
            mean over its batch).
        inputs: shape ``(B_big, ...)``; targets: shape ``(B_big, ...)``.
        b_small: :math:`B_\\text{small}`, dividing ``B_big`` with ``B_big / b_small >= 2``.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> x = torch.tensor([[1.0], [1.0], [1.0], [1.0]], dtype=torch.float64)
        >>> y = torch.tensor([[1.0], [3.0], [1.0], [3.0]], dtype=torch.float64)
        >>> res = batch_gradient_norms(model, torch.nn.functional.mse_loss, x, y, 1)  # grads -2, -6, -2, -6
        >>> res.norm_sq_small, res.norm_sq_big
        (20.0, 16.0)
    """
    _check_data(model, loss_fn, inputs, targets)
    n = inputs.shape[0]
    if n % b_small != 0 or n // b_small < 2:
        raise ValueError(f"b_small must divide the batch size {n} into at least 2 chunks, got {b_small}")
    k = n // b_small
    params, batch_loss = _functional(model, loss_fn)
    chunk = vmap(grad(batch_loss), in_dims=(None, 0, 0))(
        params, inputs.reshape(k, b_small, *inputs.shape[1:]), targets.reshape(k, b_small, *targets.shape[1:]))
    flat = torch.cat([chunk[name].reshape(k, -1) for name in params], dim=1)
    big = flat.mean(0)
    return BatchGradientNorms(float((flat * flat).sum(1).mean()), float(big @ big), int(b_small), int(n))


def _two_batch(small: float, big: float, b_small: int, b_big: int) -> tuple[float, float]:
    norm_sq = (b_big * big - b_small * small) / (b_big - b_small)
    trace = (small - big) / (1.0 / b_small - 1.0 / b_big)
    return norm_sq, trace


def _as_measurement(name: str, value) -> float:
    if isinstance(value, torch.Tensor):
        if value.dim() > 1 or value.numel() == 0:
            raise ValueError(f"{name} must be a number or a non-empty 1-D tensor of measurements, got shape "
                             f"{tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()) or bool((value < 0).any()):
            raise ValueError(f"{name} must be finite and >= 0 entrywise")
        return float(value.double().mean())
    return check_number(name, value, low=0.0)


class NoiseScaleTracker:
    """Running estimate of the simple noise scale from two-batch gradient norms over training (EMA of the parts).

    References: An Empirical Model of Large-Batch Training (McCandlish et al.), 2018 (Appendix A).

    Each :meth:`update` with a measurement :math:`(|G_{B_\\text{small}}|^2, |G_{B_\\text{big}}|^2)` forms the
    unbiased estimates

    .. math::
        |\\mathcal G|^2_t = \\frac{B_\\text{big}|G_{B_\\text{big}}|^2 - B_\\text{small}|G_{B_\\text{small}}|^2}
        {B_\\text{big} - B_\\text{small}}, \\qquad
        \\mathcal S_t = \\frac{|G_{B_\\text{small}}|^2 - |G_{B_\\text{big}}|^2}{1/B_\\text{small} - 1/B_\\text{big}}

    and updates the moving averages :math:`m_t = \\beta m_{t-1} + (1-\\beta) x_t` (from :math:`m_0 = 0`,
    divided by :math:`1 - \\beta^t` when read, so that early reads are not pulled towards 0). The noise scale is
    the ratio of the two averages, :math:`B_\\text{simple} = \\bar{\\mathcal S}_t / \\overline{|\\mathcal G|^2}_t`:
    a single measurement's ratio is biased and very noisy, so the paper averages numerator and denominator
    separately. ``beta = 0`` keeps only the latest measurement.

    Args:
        b_small, b_big: the batch sizes of the two norms, ``1 <= b_small < b_big``.
        beta: EMA decay in ``[0, 1)`` (a window of about ``1 / (1 - beta)`` updates).

    Attributes (after at least one update):
        grad_norm_sq: the averaged :math:`|\\mathcal G|^2` (may be negative when the noise dominates).
        trace: the averaged :math:`\\mathcal S`.
        b_simple: their ratio (``inf`` when ``grad_norm_sq`` is 0 and ``trace`` is not, 0 when ``trace`` is 0).
        n_updates: how many measurements were taken.

    Example:
        >>> tracker = NoiseScaleTracker(4, 16, beta=0.5)
        >>> tracker.update(2.0, 1.25).b_simple   # |G|^2 = 1, S = 4
        4.0
        >>> tracker.update(3.0, 1.5)             # |G|^2 = 1, S = 8: EMA of S = (0.25 * 4 + 0.5 * 8) / 0.75
        NoiseScaleEstimate(grad_norm_sq=1.0, trace=6.666666666666667, b_simple=6.666666666666667)
    """

    @accepts(b_small=Int(ge=1), b_big=Int(ge=2), beta=Real(ge=0, lt=1),
             example=lambda ctx: {"b_small": 4, "b_big": 64, "beta": 0.9})
    def __init__(self, b_small: int, b_big: int, *, beta: float = 0.99):
        if b_big <= b_small:
            raise ValueError(f"b_big must be > b_small ({b_small}), got {b_big}")
        self.b_small, self.b_big, self.beta = int(b_small), int(b_big), float(beta)
        self._norm_sq = 0.0
        self._trace = 0.0
        self.n_updates = 0

    def update(self, norm_sq_small: float | torch.Tensor, norm_sq_big: float | torch.Tensor) -> NoiseScaleEstimate:
        """Add one measurement (numbers, or 1-D tensors of repeated measurements, averaged first); return
        :meth:`estimate`."""
        small = _as_measurement("norm_sq_small", norm_sq_small)
        big = _as_measurement("norm_sq_big", norm_sq_big)
        norm_sq, trace = _two_batch(small, big, self.b_small, self.b_big)
        self._norm_sq = self.beta * self._norm_sq + (1.0 - self.beta) * norm_sq
        self._trace = self.beta * self._trace + (1.0 - self.beta) * trace
        self.n_updates += 1
        return self.estimate()

    def _correction(self) -> float:
        if self.n_updates == 0:
            raise ValueError("the tracker has no measurements yet: call update() first")
        return 1.0 - self.beta ** self.n_updates

    @property
    def grad_norm_sq(self) -> float:
        return self._norm_sq / self._correction()

    @property
    def trace(self) -> float:
        return self._trace / self._correction()

    @property
    def b_simple(self) -> float:
        norm_sq, trace = self.grad_norm_sq, self.trace
        if trace == 0.0:
            return 0.0
        if norm_sq == 0.0:
            return math.inf if trace > 0 else -math.inf
        return trace / norm_sq

    def estimate(self) -> NoiseScaleEstimate:
        """The current ``(grad_norm_sq, trace, b_simple)``."""
        return NoiseScaleEstimate(self.grad_norm_sq, self.trace, self.b_simple)

    def __repr__(self) -> str:
        return (f"NoiseScaleTracker(b_small={self.b_small}, b_big={self.b_big}, beta={self.beta}, "
                f"n_updates={self.n_updates})")


# -- exact value on a finite training set ------------------------------------------------------------------------

@accepts(**_DATA_SPECS, infinite_ok=("b_simple",), example=_example_data)
def dataset_noise_scale(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                        inputs: torch.Tensor, targets: torch.Tensor) -> NoiseScaleEstimate:
    """Exact simple noise scale :math:`B_\\text{simple} = \\operatorname{tr}\\Sigma/|G|^2` of a finite training set
    sampled uniformly with replacement.

    References: An Empirical Model of Large-Batch Training (McCandlish et al.), 2018 (Section 2.2).

    With the ``N`` rows as the whole population, :math:`G = \\bar g = \\frac1N\\sum_i g_i` (the full-data gradient)
    and :math:`\\Sigma = \\frac1N \\sum_i (g_i - \\bar g)(g_i - \\bar g)^\\top` (divisor ``N``, not ``N - 1``): a
    batch of ``B`` rows drawn with replacement has :math:`\\mathbb E|G_B|^2 = |G|^2 + \\operatorname{tr}\\Sigma/B`
    exactly, so these are what :class:`NoiseScaleTracker` estimates in that setting. (For the rows as a sample
    of a larger population use :func:`~paperzoo.diagnostics.gradient_noise.gradient_statistics`, whose estimates
    are unbiased for that population instead.)

    Args:
        model, loss_fn, inputs, targets: as in :func:`~paperzoo.diagnostics.gradient_noise.per_sample_gradients`.

    Returns:
        :class:`~paperzoo.diagnostics.gradient_noise.NoiseScaleEstimate` ``(|G|^2, tr Sigma, B_simple)``
        (``b_simple`` 0 when the trace is 0, ``inf`` when :math:`G = 0` and the trace is not).

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> x = torch.ones(2, 1, dtype=torch.float64)
        >>> y = torch.tensor([[1.0], [3.0]], dtype=torch.float64)   # g_i = -2, -6: G = -4, Sigma = 4
        >>> dataset_noise_scale(model, torch.nn.functional.mse_loss, x, y)
        NoiseScaleEstimate(grad_norm_sq=16.0, trace=4.0, b_simple=0.25)
    """
    _check_data(model, loss_fn, inputs, targets)
    grads = _per_sample_gradients(model, loss_fn, inputs, targets, None).grads
    mean = grads.mean(0)
    centered = grads - mean
    trace = float((centered * centered).sum() / grads.shape[0])
    norm_sq = float(mean @ mean)
    if trace == 0.0:
        b_simple = 0.0
    elif norm_sq == 0.0:
        b_simple = math.inf
    else:
        b_simple = trace / norm_sq
    return NoiseScaleEstimate(norm_sq, trace, b_simple)


# -- steps to a target loss ---------------------------------------------------------------------------------------

def _example_steps(ctx):
    return {**_example_data(ctx), "batch_size": 4,
            "lrs": torch.tensor([0.01, 0.05, 0.1], dtype=ctx.dtype), "target": 1e-3, "max_steps": 20}


@accepts(**_DATA_SPECS, batch_size=Int(ge=1), lrs=Tensor("k", nonnegative=True), target=Real(),
         max_steps=Int(ge=1), generator=Generator(), output="any", example=_example_steps)
def steps_to_target(model: torch.nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    inputs: torch.Tensor, targets: torch.Tensor, *, batch_size: int, lrs: torch.Tensor,
                    target: float, max_steps: int, generator: torch.Generator | None = None) -> StepsToTarget:
    """Steps :math:`S(B)` and examples :math:`E(B)` to reach a target training loss with SGD at batch size ``B``,
    the learning rate tuned on a grid.

    References: An Empirical Model of Large-Batch Training (McCandlish et al.), 2018 (Section 2.3: the
    measurement behind the steps/examples tradeoff).

    From the model's current parameters :math:`\\theta_0`, ``K = len(lrs)`` copies run plain SGD
    :math:`\\theta^{(k)}_{t+1} = \\theta^{(k)}_t - \\epsilon_k \\nabla L_{\\mathcal B_t}(\\theta^{(k)}_t)` in lockstep
    (``vmap`` over the copies), all on the same batches :math:`\\mathcal B_t` of ``batch_size`` rows drawn
    uniformly with replacement from ``(inputs, targets)``. After each step the exact full-data loss
    :math:`L(\\theta^{(k)}_t)` of every copy is evaluated; the run stops at the first step :math:`S` at which some
    copy has :math:`L \\le` ``target``, so :math:`S(B) = \\min_k S_k(B)` (the lr tuned for fewest steps) and
    :math:`E(B) = B\\,S(B)`. A diverged copy (non-finite loss) never counts as reaching the target. The model
    itself is not modified.

    Args:
        model, loss_fn, inputs, targets: as in :func:`~paperzoo.diagnostics.gradient_noise.per_sample_gradients`
            (``loss_fn`` the mean over its batch); ``(inputs, targets)`` is the training set, ``N`` rows.
        batch_size: :math:`B`.
        lrs: the learning-rate grid :math:`\\epsilon_k \\ge 0`, shape ``(K,)``.
        target: the training loss to reach; must be below the initial loss.
        max_steps: give up after this many steps (``reached=False``).
        generator: for the batch draws.

    Returns:
        :class:`StepsToTarget`.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(1, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(0.0)
        >>> x = torch.ones(4, 1, dtype=torch.float64)
        >>> res = steps_to_target(model, torch.nn.functional.mse_loss, x, x, batch_size=2,
        ...                       lrs=torch.tensor([0.1, 0.25], dtype=torch.float64), target=1e-2, max_steps=50)
        >>> res.steps, res.examples, res.lr   # loss (1 - 2 lr)^(2t): 0.25^t <= 0.01 first at t = 4
        (4, 8, 0.25)
    """
    _check_data(model, loss_fn, inputs, targets)
    check_number("target", target)
    n = inputs.shape[0]
    k = lrs.shape[0]
    params, batch_loss = _functional(model, loss_fn)
    with torch.no_grad():
        initial = float(batch_loss(params, inputs, targets))
    if not target < initial:
        raise ValueError(f"target must be below the initial training loss {initial!r}, got {target!r}")
    step_grad = vmap(grad(batch_loss), in_dims=(0, None, None))
    full_loss = vmap(batch_loss, in_dims=(0, None, None))
    theta = {name: p.unsqueeze(0).expand(k, *p.shape).clone() for name, p in params.items()}
    scale = {name: lrs.to(p.dtype).reshape(k, *([1] * p.dim())) for name, p in params.items()}
    losses = torch.full((k,), initial, dtype=lrs.dtype)
    for step in range(1, max_steps + 1):
        idx = torch.randint(n, (batch_size,), generator=generator)
        g = step_grad(theta, inputs[idx], targets[idx])
        theta = {name: theta[name] - scale[name] * g[name] for name in theta}
        with torch.no_grad():
            losses = full_loss(theta, inputs, targets)
        hit = torch.isfinite(losses) & (losses <= target)
        if bool(hit.any()):
            masked = torch.where(hit, losses, torch.full_like(losses, math.inf))
            best = int(masked.argmin())
            return StepsToTarget(step, step * batch_size, float(lrs[best]), best, True, losses.detach(),
                                 {name: t[best].detach().clone() for name, t in theta.items()})
    finite = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))
    best = int(finite.argmin())
    return StepsToTarget(max_steps, max_steps * batch_size, float(lrs[best]), best, False, losses.detach(),
                         {name: t[best].detach().clone() for name, t in theta.items()})
