"""SGD temperature in the hinge-loss perceptron: exact minibatch-1 SGD, full-batch GD, and the crossover temperature.

References: Dissecting the Effects of SGD Noise in Distinct Regimes of Deep Learning (Sclocchi, Geiger, Wyart), 2023.

Model. A perceptron :math:`f(x) = w\\cdot x/\\sqrt d` starts at :math:`w_0 = 0` and is trained on the hinge loss
:math:`\\ell_i(w) = \\max(0, \\kappa - y_i f(x_i))` (``margin`` :math:`\\kappa`) over ``P`` points ``inputs``
(shape ``(P, d)``) with labels ``targets`` in :math:`\\{-1, +1\\}` (shape ``(P,)``). SGD with step :math:`\\eta`
and batch size :math:`B` has temperature :math:`T = \\eta / B`; here :math:`B = 1` with replacement, so
:math:`T = \\eta` (``lrs``). Its update on the drawn point :math:`j` is :math:`w \\leftarrow w + \\eta\\, y_j x_j /
\\sqrt d` when :math:`y_j f(x_j) < \\kappa` and nothing otherwise. Training stops when every point has margin
:math:`\\ge\\kappa` (zero training loss): from then on no gradient is nonzero and :math:`w` is final.

Exact event-driven simulation (:func:`train_hinge_perceptron_sgd`). A draw that lands on a fitted point changes
nothing, so only draws of unfitted points matter: with :math:`m` unfitted points the number of steps to the next
effective draw is geometric with success probability :math:`m/P`, and the effective point is uniform among the
unfitted ones. The simulation jumps from one effective update to the next (vectorised over runs), keeping the
margins :math:`\\mu_i = y_i w\\cdot x_i/\\sqrt d` up to date with the Gram matrix of :math:`z_i = y_i x_i/\\sqrt d`;
the final weights have the law of plain SGD and ``steps`` the law of its step count :math:`t^*/\\eta`.

Full-batch GD (:func:`train_hinge_perceptron_gd`), the noiseless :math:`T\\to 0` reference:
:math:`w \\leftarrow w + (\\eta/P)\\sum_{i:\\mu_i<\\kappa} z_i` until all margins reach :math:`\\kappa`.

Data (:func:`sample_boundary_density_data`): :math:`x_1` has density :math:`\\propto |x_1|^\\chi e^{-x_1^2/2}`
(``chi``; :math:`\\chi` sets how many points lie near the decision boundary), the other ``d - 1`` coordinates are
standard normal, and :math:`y = \\operatorname{sign}(x_1)`.

Crossover temperature (:func:`crossover_temperature`): given an observable :math:`O(T)` on an increasing grid of
temperatures and its :math:`T\\to0` value :math:`O_0`, :math:`T_c` is the first :math:`T` at which
:math:`|O(T)/O_0 - 1|` reaches ``rel``, interpolated linearly in :math:`\\log T`; NaN when the sweep does not cross
(never reaches it, or already exceeds it at the first grid point). The paper's finding is that :math:`T_c` is a power
law of :math:`P`.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch

from paperzoo.core.accepts import FloatDType, Generator, Int, Real, Tensor, accepts

__all__ = ["sample_boundary_density_data", "PerceptronTraining", "train_hinge_perceptron_sgd",
           "train_hinge_perceptron_gd", "crossover_temperature"]


class PerceptronTraining(NamedTuple):
    """Hinge-perceptron training runs, one per learning rate.

    weights: ``(R, d)`` final weights; steps: ``(R,)`` optimizer steps taken (SGD: including draws of fitted points);
    updates: ``(R,)`` steps that changed the weights; train_time: ``(R,)`` :math:`t^* = \\eta \\cdot` steps;
    converged: ``(R,)`` whether all margins reached ``margin``; n_iter: loop iterations run.
    """

    weights: torch.Tensor
    steps: torch.Tensor
    updates: torch.Tensor
    train_time: torch.Tensor
    converged: torch.Tensor
    n_iter: int


@accepts(n=Int(ge=1), d=Int(ge=1), chi=Real(ge=0), generator=Generator(), dtype=FloatDType(),
         example=lambda ctx: {"n": 8, "d": 3, "chi": 1.0, "generator": ctx.generator})
def sample_boundary_density_data(n: int, d: int, chi: float, *, generator: torch.Generator | None = None,
                                 dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Linearly separable data with a tunable density of points near the boundary :math:`x_1 = 0`.

    References: Dissecting the Effects of SGD Noise in Distinct Regimes of Deep Learning, 2023.

    :math:`|x_1| = \\sqrt{2u}` with :math:`u \\sim \\mathrm{Gamma}((\\chi+1)/2, 1)` has density
    :math:`\\propto |x_1|^\\chi e^{-x_1^2/2}`; the sign is a fair coin, :math:`x_{2..d} \\sim N(0, I)`,
    :math:`y = \\operatorname{sign}(x_1)`.

    Returns:
        ``inputs`` of shape ``(n, d)`` and ``targets`` of shape ``(n,)`` in :math:`\\{-1, +1\\}`.

    Example:
        >>> x, y = sample_boundary_density_data(5, 3, 1.0, generator=torch.Generator().manual_seed(0))
        >>> x.shape, bool((torch.sign(x[:, 0]) == y).all())
        (torch.Size([5, 3]), True)
    """
    x = torch.randn(n, d, generator=generator, dtype=dtype)
    # torch's Gamma sampler takes no generator: seed it, inside a forked RNG state, from the given one.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    gamma = torch.distributions.Gamma(torch.tensor((chi + 1.0) / 2.0, dtype=dtype), torch.tensor(1.0, dtype=dtype))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        u = gamma.sample((n,))
    sign = torch.randint(0, 2, (n,), generator=generator).to(dtype) * 2 - 1
    x[:, 0] = sign * (2.0 * u).sqrt().clamp_min(torch.finfo(dtype).tiny)
    return x, sign


def _check_labels(inputs: torch.Tensor, targets: torch.Tensor) -> None:
    if not bool(((targets == 1) | (targets == -1)).all()):
        raise ValueError("targets must hold only -1 and +1")


def _lr_spec():
    return Tensor("R", nonnegative=True)


def _example(ctx):
    x, y = sample_boundary_density_data(ctx.size("P"), 3, 1.0, generator=ctx.generator, dtype=ctx.dtype)
    return {"inputs": x, "targets": y, "lrs": torch.tensor([0.5, 2.0], dtype=ctx.dtype)}


@accepts(inputs=Tensor("P", "d"), targets=Tensor("P"), lrs=_lr_spec(), margin=Real(gt=0), max_updates=Int(ge=1),
         generator=Generator(), output="any", example=_example)
def train_hinge_perceptron_sgd(inputs: torch.Tensor, targets: torch.Tensor, lrs: torch.Tensor, *,
                               margin: float = 1.0, max_updates: int = 1_000_000,
                               generator: torch.Generator | None = None) -> PerceptronTraining:
    """SGD (batch 1, with replacement, temperature T = lr) on the hinge perceptron until zero training loss, exactly.

    References: Dissecting the Effects of SGD Noise in Distinct Regimes of Deep Learning, 2023.

    Event-driven: jumps between effective updates (module docstring); one run per entry of ``lrs`` (shape
    ``(R,)``), all from :math:`w_0 = 0`. Warns when some run has not fitted all points after ``max_updates``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = sample_boundary_density_data(32, 4, 1.0, generator=g)
        >>> r = train_hinge_perceptron_sgd(x, y, torch.tensor([0.1, 1.0], dtype=x.dtype), generator=g)
        >>> bool(r.converged.all()), bool(((x @ r.weights.T) * y[:, None] / 2 >= 1 - 1e-9).all())
        (True, True)
    """
    _check_labels(inputs, targets)
    return _sgd(inputs, targets, lrs, margin, max_updates, generator)


def _sgd(inputs, targets, lrs, margin, max_updates, generator):
    P, d = inputs.shape
    R = lrs.numel()
    dt = inputs.dtype
    z = targets[:, None] * inputs / math.sqrt(d)
    gram = z @ z.T
    w = torch.zeros(R, d, dtype=dt)
    mu = torch.zeros(R, P, dtype=dt)
    steps = torch.zeros(R, dtype=dt)
    updates = torch.zeros(R, dtype=dt)
    it = 0
    while it < max_updates:
        unfit = mu < margin
        count = unfit.sum(1)
        active = (count > 0) & (lrs > 0)  # a zero step never fits: that run stays put, unconverged
        if not bool(active.any()):
            break
        j = (torch.rand(R, P, generator=generator, dtype=dt) * unfit).argmax(1)
        p = count.to(dt) / P
        u = torch.rand(R, generator=generator, dtype=dt).clamp_min(torch.finfo(dt).tiny)
        wait = torch.where(p >= 1, torch.ones_like(p), torch.floor(torch.log(u) / torch.log1p(-p.clamp(max=1 - 1e-12))) + 1)
        a = active.to(dt)
        steps += torch.where(active, wait, torch.zeros_like(wait))
        updates += a
        step = (lrs * a)[:, None]
        w += step * z[j]
        mu += step * gram[j]
        it += 1
    converged = ~(mu < margin).any(1)
    if not bool(converged.all()):
        warnings.warn(f"train_hinge_perceptron_sgd: {int((~converged).sum())} of {R} runs did not fit all points "
                      f"within max_updates={max_updates}", RuntimeWarning, stacklevel=3)
    return PerceptronTraining(w, steps, updates, lrs * steps, converged, it)


@accepts(inputs=Tensor("P", "d"), targets=Tensor("P"), lrs=_lr_spec(), margin=Real(gt=0), max_steps=Int(ge=1),
         output="any", example=_example)
def train_hinge_perceptron_gd(inputs: torch.Tensor, targets: torch.Tensor, lrs: torch.Tensor, *,
                              margin: float = 1.0, max_steps: int = 1_000_000) -> PerceptronTraining:
    """Full-batch gradient descent on the hinge perceptron until zero training loss (the noiseless reference).

    References: Dissecting the Effects of SGD Noise in Distinct Regimes of Deep Learning, 2023.

    :math:`w \\leftarrow w + (\\eta/P)\\sum_{i:\\mu_i<\\kappa} y_i x_i/\\sqrt d`, one run per entry of ``lrs``
    (shape ``(R,)``); a run stops moving once all its margins reach ``margin``. Warns on non-convergence.

    Example:
        >>> x, y = sample_boundary_density_data(32, 4, 1.0, generator=torch.Generator().manual_seed(0))
        >>> r = train_hinge_perceptron_gd(x, y, torch.tensor([32.0], dtype=x.dtype))
        >>> bool(r.converged.all()), r.updates.item() == r.steps.item()
        (True, True)
    """
    _check_labels(inputs, targets)
    return _gd(inputs, targets, lrs, margin, max_steps)


def _gd(inputs, targets, lrs, margin, max_steps):
    P, d = inputs.shape
    dt = inputs.dtype
    z = targets[:, None] * inputs / math.sqrt(d)
    w = torch.zeros(lrs.numel(), d, dtype=dt)
    steps = torch.zeros(lrs.numel(), dtype=dt)
    it = 0
    while it < max_steps:
        unfit = (w @ z.T) < margin  # (R, P)
        active = unfit.any(1) & (lrs > 0)
        if not bool(active.any()):
            break
        w += (lrs / P)[:, None] * (unfit.to(dt) @ z)
        steps += active.to(dt)
        it += 1
    converged = ~((w @ z.T) < margin).any(1)
    if not bool(converged.all()):
        warnings.warn(f"train_hinge_perceptron_gd: {int((~converged).sum())} runs did not fit all points within "
                      f"max_steps={max_steps}", RuntimeWarning, stacklevel=3)
    return PerceptronTraining(w, steps, steps.clone(), lrs * steps, converged, it)


@accepts(temperatures=Tensor("K", nonnegative=True), observable=Tensor("K"), reference=Real(), rel=Real(gt=0),
         example=lambda ctx: {"temperatures": torch.tensor([0.1, 1.0, 10.0], dtype=ctx.dtype),
                              "observable": torch.tensor([1.0, 1.05, 1.5], dtype=ctx.dtype), "reference": 1.0,
                              "rel": 0.1})
def crossover_temperature(temperatures: torch.Tensor, observable: torch.Tensor, reference: float, *,
                          rel: float = 0.1) -> float:
    """Crossover temperature: where an observable first departs from its T -> 0 value by a relative ``rel``.

    References: Dissecting the Effects of SGD Noise in Distinct Regimes of Deep Learning, 2023.

    With :math:`\\delta_k = |O_k/O_0 - 1|` on the increasing grid :math:`T_k` (shape ``(K,)``), the first ``k`` with
    :math:`\\delta_k \\ge` ``rel`` gives :math:`T_c` by linear interpolation of :math:`\\delta` in :math:`\\log T`
    between :math:`T_{k-1}` and :math:`T_k`. NaN when no grid point reaches ``rel`` or the first one already does.

    Example:
        >>> round(crossover_temperature(torch.tensor([0.1, 1.0, 10.0]), torch.tensor([1.0, 1.05, 1.15]), 1.0), 4)
        3.1623
    """
    if reference == 0 or not math.isfinite(reference):
        raise ValueError(f"reference must be finite and nonzero, got {reference}")
    if not bool((temperatures > 0).all()):
        raise ValueError("temperatures must be > 0")
    if temperatures.numel() > 1 and not bool((temperatures[1:] > temperatures[:-1]).all()):
        raise ValueError("temperatures must be strictly increasing")
    dev = (observable.double() / reference - 1.0).abs()
    hit = torch.nonzero(dev >= rel).flatten()
    if hit.numel() == 0 or int(hit[0]) == 0:
        return float("nan")
    k = int(hit[0])
    lt = temperatures.double().log()
    f = (rel - float(dev[k - 1])) / (float(dev[k]) - float(dev[k - 1]))
    return float(torch.exp(lt[k - 1] + f * (lt[k] - lt[k - 1])))
