"""Information plane: mutual information I(X;T) and I(T;Y) of each hidden layer T, tracked over training.

References: Opening the Black Box of Deep Neural Networks via Information, 2017 (Shwartz-Ziv, Tishby);
On the Information Bottleneck Theory of Deep Learning, 2018 (Saxe, Bansal, Dapello, Advani, Kolchinsky, Tracey, Cox).

For a data set of ``n`` samples with inputs ``X`` (``inputs``, shape ``(n, d)``), labels ``Y`` (``labels``, shape
``(n,)``) and a layer's activations ``T = h(X)`` (one entry of ``activations``, shape ``(n, d_T)``), every sample
carries mass ``1/n`` (the empirical distribution the paper uses: its 4096 input patterns are equiprobable).

Binning estimator (the paper's). Each unit of ``T`` is cut into ``n_bins`` equal-width bins over ``[low, high]``
(per layer; by default the layer's own range), a sample's bin pattern is the discrete variable ``T_b``, and with
plug-in entropies ``H`` (in bits)

    I(X;T) = H(T_b) - H(T_b | X) = H(T_b) + H(X) - H(X, T_b),      I(T;Y) = H(T_b) + H(Y) - H(T_b, Y).

When the rows of ``X`` are distinct, ``T_b`` is a function of ``X`` and ``I(X;T) = H(T_b)``.

KDE estimator (Saxe et al.'s pairwise-distance bound, after Kolchinsky and Tracey). ``T`` is taken to carry additive
Gaussian noise of variance ``sigma^2`` (``noise_var``), ``T = h(X) + N(0, sigma^2 I)``, so ``T`` is a mixture of ``n``
Gaussians; its entropy is bounded above by ``H_KL = H(T|X) - 1/n sum_i log 1/n sum_j exp(-|h_i - h_j|^2 / (2 sigma^2))``
and hence

    I(X;T) <= -1/n sum_i log 1/n sum_j exp(-|h_i - h_j|^2 / (2 sigma^2)),
    I(T;Y) <= H_KL(T) - sum_c p_c H_KL(T | Y = c),

the per-class terms using only the samples of class ``c``. The log mixture density is
:func:`paperzoo.divergences.kde_log_density` with bandwidth ``sigma``. Values are reported in bits.

:func:`information_plane` trains a model full batch and records both quantities for the chosen layers at
``n_records`` log-spaced epochs (the paper plots on a log-epoch axis); the binning range of a layer is fixed over
training, from the smallest to the largest activation that layer takes at any recorded epoch (for a tanh layer
this is about ``[-1, 1]``, the paper's range). :func:`tishby_dataset` builds a 12-bit data set in the spirit of
the paper's (see its docstring for what differs). :func:`compression` summarises a trace: the drop of
``I(X;T)`` from its peak to the last record, and the epoch of the peak.

Deviations: the paper's data file is not reproduced (our labels are a rotation-invariant quadratic rule on the 12
vertices of an icosahedron, thresholded at its median); full-batch training (Adam or plain gradient descent) in
place of the paper's mini-batch SGD; the binning range for non-tanh layers is the layer's observed range over
training (Saxe et al. do the same for ReLU).

Example:
    >>> import torch
    >>> X, y = tishby_dataset()
    >>> X.shape, y.shape, round(float(y.float().mean()), 2)
    (torch.Size([4096, 12]), torch.Size([4096]), 0.5)
    >>> out = binned_information([X, X[:, :1]], y, X, n_bins=2)
    >>> [round(v, 6) for v in out.i_xt.tolist()]
    [12.0, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from paperzoo.core.accepts import (Choice, FloatDType, Function, Generator, Instance, Int, Module, Real, Tensor,
                                   Tensors, accepts)
from paperzoo.divergences.kde import kde_log_density

__all__ = ["LayerInformation", "InformationPlaneTrace", "Compression", "tishby_dataset", "binned_information",
           "kde_information", "information_plane", "compression"]

_LOG2 = math.log(2.0)


class LayerInformation(NamedTuple):
    """Mutual information of each layer, in bits.

    Attributes:
        i_xt: ``I(X;T)`` per layer, shape ``(L,)``.
        i_ty: ``I(T;Y)`` per layer, shape ``(L,)``.
        h_y: ``H(Y)`` of the labels (the ceiling of ``I(T;Y)``), bits.
        estimator: ``"binning"`` or ``"kde"``.
    """

    i_xt: torch.Tensor
    i_ty: torch.Tensor
    h_y: float
    estimator: str


class InformationPlaneTrace(NamedTuple):
    """Result of :func:`information_plane` for one estimator.

    Attributes:
        epochs: recorded epochs, shape ``(E,)`` (int64; 0 is the initialisation).
        i_xt: ``I(X;T)`` in bits, shape ``(E, L)``.
        i_ty: ``I(T;Y)`` in bits, shape ``(E, L)``.
        loss: training loss at each record, shape ``(E,)``.
        accuracy: training accuracy at each record, shape ``(E,)``.
        h_y: ``H(Y)`` in bits.
        estimator: ``"binning"`` or ``"kde"``.
        converged: the loss is finite throughout.
    """

    epochs: torch.Tensor
    i_xt: torch.Tensor
    i_ty: torch.Tensor
    loss: torch.Tensor
    accuracy: torch.Tensor
    h_y: float
    estimator: str
    converged: bool


class Compression(NamedTuple):
    """Result of :func:`compression`: per layer, the drop of ``I(X;T)`` after its peak.

    Attributes:
        drop: ``max_t I(X;T_t) - I(X;T_last)`` in bits, shape ``(L,)``.
        peak_epoch: epoch of the peak, shape ``(L,)`` (int64).
        peak_fraction: ``peak_epoch / last epoch``, shape ``(L,)`` (float64).
    """

    drop: torch.Tensor
    peak_epoch: torch.Tensor
    peak_fraction: torch.Tensor


def _icosahedron(dtype: torch.dtype) -> torch.Tensor:
    phi = (1.0 + math.sqrt(5.0)) / 2.0
    v = []
    for a in (-1.0, 1.0):
        for b in (-phi, phi):
            v += [(0.0, a, b), (a, b, 0.0), (b, 0.0, a)]
    u = torch.tensor(v, dtype=torch.float64)
    return (u / u.norm(dim=1, keepdim=True)).to(dtype)


@accepts(dtype=FloatDType())
def tishby_dataset(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """A 12-bit binary classification data set (all 4096 patterns once), after the paper's synthetic task.

    The 12 input bits sit on the 12 vertices ``u_i`` of an icosahedron (points spread evenly on the sphere). With
    ``s = 2 x - 1`` the +-1 spins of a pattern ``x``, the score is the rotation-invariant quadratic form
    ``f(x) = sum_ij s_i s_j (P_1(u_i . u_j) + P_2(u_i . u_j))`` (``P_k`` Legendre polynomials; it depends on the
    pattern only through pairwise angles), and ``y = 1`` iff ``f(x)`` exceeds its median (ties broken by pattern
    index), so ``p(y = 1) = 1/2`` and ``H(Y) = 1`` bit. The paper's own labels come from a different spherically
    symmetric rule (its data file); the size, input alphabet and balance match.

    Returns:
        ``X`` of shape ``(4096, 12)`` with entries in ``{0, 1}`` (``dtype``), ``y`` of shape ``(4096,)`` (int64).

    Example:
        >>> X, y = tishby_dataset(torch.float64)
        >>> int(y.sum()), X.dtype
        (2048, torch.float64)
    """
    n_bits = 12
    codes = torch.arange(2 ** n_bits)
    X = ((codes[:, None] >> torch.arange(n_bits)) & 1).to(torch.float64)
    u = _icosahedron(torch.float64)
    c = u @ u.T
    K = c + 0.5 * (3.0 * c ** 2 - 1.0)
    s = 2.0 * X - 1.0
    f = torch.einsum("ni,ij,nj->n", s, K, s)
    order = torch.argsort(f * (1 + 1e-12) + 1e-9 * codes.to(torch.float64) / 2 ** n_bits, stable=True)
    y = torch.zeros(2 ** n_bits, dtype=torch.int64)
    y[order[2 ** (n_bits - 1):]] = 1
    return X.to(dtype), y


def _entropy_of_ids(ids: torch.Tensor) -> float:
    counts = torch.bincount(ids).to(torch.float64)
    p = counts[counts > 0] / ids.numel()
    return float(-(p * torch.log2(p)).sum())


def _row_ids(x: torch.Tensor) -> torch.Tensor:
    return torch.unique(x, dim=0, return_inverse=True)[1]


def _joint_ids(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _row_ids(torch.stack([a, b], dim=1))


def _check_layers(activations, labels) -> None:
    if len(activations) == 0:
        raise ValueError("activations must hold at least one layer, got 0")
    n = labels.shape[0]
    for k, a in enumerate(activations):
        if a.dim() != 2 or a.shape[0] != n:
            raise ValueError(f"activations[{k}] must have shape (n, d_T) with n = {n} (labels), got "
                             f"{tuple(a.shape)}")


def _bin_ids(a: torch.Tensor, n_bins: int, low: float, high: float) -> torch.Tensor:
    width = (high - low) / n_bins if high > low else 1.0
    b = torch.floor((a - low) / width).clamp_(0, n_bins - 1).to(torch.int64)
    return _row_ids(b)


def _binned(activations, labels, x_ids, n_bins, ranges) -> LayerInformation:
    y_ids = _row_ids(labels.reshape(-1, 1))
    h_y = _entropy_of_ids(y_ids)
    h_x = _entropy_of_ids(x_ids)
    i_xt, i_ty = [], []
    for a, (low, high) in zip(activations, ranges):
        t = _bin_ids(a.detach(), n_bins, low, high)
        h_t = _entropy_of_ids(t)
        i_xt.append(h_t + h_x - _entropy_of_ids(_joint_ids(t, x_ids)))
        i_ty.append(h_t + h_y - _entropy_of_ids(_joint_ids(t, y_ids)))
    return LayerInformation(torch.tensor(i_xt, dtype=torch.float64), torch.tensor(i_ty, dtype=torch.float64), h_y,
                            "binning")


def _example_layers(ctx):
    n = 8 + 2 * ctx.size("n")
    t = torch.randn(n, 3, generator=ctx.generator, dtype=ctx.dtype)
    return {"activations": [t, torch.tanh(t[:, :2])], "labels": torch.arange(n) % 2,
            "inputs": torch.randn(n, 4, generator=ctx.generator, dtype=ctx.dtype)}


@accepts(activations=Tensors(length="L"), labels=Tensor("n", dtype="int"),
         inputs=Tensor("n", "d", dtype="any", optional=True), n_bins=Int(ge=1),
         low=Tensor("L", optional=True), high=Tensor("L", optional=True), example=_example_layers)
def binned_information(activations: Sequence[torch.Tensor], labels: torch.Tensor, inputs: torch.Tensor | None = None,
                       *, n_bins: int = 30, low: torch.Tensor | None = None,
                       high: torch.Tensor | None = None) -> LayerInformation:
    """Binned (plug-in) estimate of ``I(X;T)`` and ``I(T;Y)`` per layer, in bits (the paper's estimator).

    Args:
        activations: ``L`` tensors, the ``k``-th of shape ``(n, d_k)``.
        labels: ``Y``, integer class labels, shape ``(n,)``.
        inputs: ``X``, shape ``(n, d)``; ``None`` treats every sample as a distinct input (``H(T_b | X) = 0``).
        n_bins: bins per unit.
        low, high: per-layer bin range, shape ``(L,)``; default each layer's own min and max.

    Returns:
        :class:`LayerInformation` with ``estimator="binning"``.

    Example:
        >>> X, y = tishby_dataset()
        >>> out = binned_information([X[:, :3]], y, n_bins=2)
        >>> round(float(out.i_xt[0]), 6), out.h_y
        (3.0, 1.0)
    """
    _check_layers(activations, labels)
    if (low is None) != (high is None):
        raise ValueError("low and high must be given together, got only one of them")
    if low is not None and bool((high < low).any()):
        raise ValueError("high must be >= low in every layer")
    if low is None:
        ranges = [(float(a.min()), float(a.max())) for a in activations]
    else:
        ranges = list(zip(low.tolist(), high.tolist()))
    n = labels.shape[0]
    x_ids = torch.arange(n) if inputs is None else _row_ids(inputs.detach())
    return _binned(activations, labels, x_ids, n_bins, ranges)


def _kde_log_mean_kernel(h: torch.Tensor, sigma: float) -> torch.Tensor:
    """``log 1/m sum_j exp(-|h_i - h_j|^2 / (2 sigma^2))`` for each row ``i`` of ``h`` (shape ``(m,)``)."""
    d = h.shape[1]
    return kde_log_density(h, h, sigma) + 0.5 * d * math.log(2.0 * math.pi * sigma ** 2)


def _kde(activations, labels, noise_var) -> LayerInformation:
    sigma = math.sqrt(noise_var)
    classes, y_ids = torch.unique(labels, return_inverse=True)
    p = torch.bincount(y_ids).to(torch.float64) / labels.numel()
    h_y = float(-(p * torch.log2(p)).sum())
    i_xt, i_ty = [], []
    for a in activations:
        a = a.detach()
        h_t = -float(_kde_log_mean_kernel(a, sigma).mean())  # H_KL(T) - H(T|X), nats
        h_t_given_y = 0.0
        for c in range(len(classes)):  # a loop over classes, not samples
            ac = a[y_ids == c]
            h_t_given_y += float(p[c]) * -float(_kde_log_mean_kernel(ac, sigma).mean())
        i_xt.append(h_t / _LOG2)
        i_ty.append((h_t - h_t_given_y) / _LOG2)
    return LayerInformation(torch.tensor(i_xt, dtype=torch.float64), torch.tensor(i_ty, dtype=torch.float64), h_y,
                            "kde")


@accepts(activations=Tensors(length="L"), labels=Tensor("n", dtype="int"), noise_var=Real(gt=0),
         example=lambda ctx: {k: v for k, v in _example_layers(ctx).items() if k != "inputs"})
def kde_information(activations: Sequence[torch.Tensor], labels: torch.Tensor, *,
                    noise_var: float = 0.1) -> LayerInformation:
    """KDE (pairwise-distance) upper bounds on ``I(X;T)`` and ``I(T;Y)`` per layer, in bits (Saxe et al.).

    Every sample is a distinct input and the layer carries Gaussian noise of variance ``noise_var`` (see the
    module docstring for the formulas).

    Args:
        activations: ``L`` tensors, the ``k``-th of shape ``(n, d_k)``.
        labels: integer class labels, shape ``(n,)``.
        noise_var: ``sigma^2``, the variance of the added noise.

    Returns:
        :class:`LayerInformation` with ``estimator="kde"``.

    Example:
        >>> t = torch.tensor([[0.0], [0.0], [10.0], [10.0]], dtype=torch.float64)
        >>> out = kde_information([t], torch.tensor([0, 0, 1, 1]), noise_var=0.01)
        >>> round(float(out.i_xt[0]), 6), round(float(out.i_ty[0]), 6)
        (1.0, 1.0)
    """
    _check_layers(activations, labels)
    return _kde(activations, labels, noise_var)


def _log_epochs(epochs: int, n_records: int) -> torch.Tensor:
    grid = torch.unique(torch.round(torch.logspace(0.0, math.log10(epochs), n_records - 1, dtype=torch.float64)))
    return torch.cat([torch.zeros(1, dtype=torch.int64), grid.to(torch.int64)])


# Full-batch updates written out: constructing a torch.optim optimizer the first time imports torch._dynamo
# (seconds), more than a smoke-budget run of this measurement takes. Both match torch.optim (tests).
def _gd_stepper(params, lr):
    @torch.no_grad()
    def step(grads):
        torch._foreach_add_(params, grads, alpha=-lr)
    return step


def _adam_stepper(params, lr, betas=(0.9, 0.999), eps=1e-8):
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    t = [0]

    @torch.no_grad()
    def step(grads):
        t[0] += 1
        b1, b2 = betas
        torch._foreach_lerp_(m, grads, 1 - b1)
        torch._foreach_mul_(v, b2)
        torch._foreach_addcmul_(v, grads, grads, value=1 - b2)
        c1, c2 = 1 - b1 ** t[0], 1 - b2 ** t[0]
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, c2 ** 0.5)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, m, denom, value=-lr / c1)
    return step


def _example_train(ctx):
    g = ctx.generator
    n = 16
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(ctx.dtype)
    return {"model": model, "loss_fn": nn.functional.cross_entropy,
            "inputs": torch.randn(n, 3, generator=g, dtype=ctx.dtype), "targets": torch.arange(n) % 2,
            "layers": [model[1]], "epochs": 3, "n_records": 3}


@accepts(model=Module(bind_dtype=True), loss_fn=Function(), inputs=Tensor("n", "d"), targets=Tensor("n", dtype="int"),
         layers=Instance((list, tuple), what="list of submodules of model"), epochs=Int(ge=1), lr=Real(gt=0),
         optimizer=Choice("adam", "gd"), n_records=Int(ge=2), n_bins=Int(ge=1), noise_var=Real(gt=0),
         estimators=Instance((list, tuple), what="list of estimator names"), kde_samples=Int(ge=2, optional=True),
         generator=Generator(optional=True), example=_example_train)
def information_plane(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                      inputs: torch.Tensor, targets: torch.Tensor, layers: Sequence[nn.Module], *, epochs: int = 3000,
                      lr: float = 1e-3, optimizer: str = "adam", n_records: int = 30, n_bins: int = 30,
                      noise_var: float = 0.1, estimators: Sequence[str] = ("binning", "kde"),
                      kde_samples: int | None = None,
                      generator: torch.Generator | None = None) -> dict[str, InformationPlaneTrace]:
    """Train ``model`` full batch and trace each layer's ``(I(X;T), I(T;Y))`` over epochs (the information plane).

    The outputs of the submodules ``layers`` (forward hooks) are ``T``; ``model(inputs)`` are the logits passed to
    ``loss_fn(outputs, targets)`` (mean over the batch). Records are taken at epoch 0 and ``n_records - 1``
    log-spaced epochs up to ``epochs`` (duplicates merged). Binning ranges are fixed per layer over training (the
    extreme activations over all records). ``model`` is trained in place.

    Args:
        model: the network; its parameters are updated.
        loss_fn: ``(outputs, targets) -> scalar``.
        inputs: ``X``, shape ``(n, d)``; rows are treated as equiprobable inputs.
        targets: ``Y``, integer labels, shape ``(n,)``.
        layers: submodules of ``model`` whose outputs (shape ``(n, d_k)``) are the layers ``T``.
        epochs: full-batch steps.
        lr: step size.
        optimizer: ``"adam"`` (betas 0.9, 0.999, eps 1e-8, as ``torch.optim.Adam``) or ``"gd"`` (plain gradient
            descent).
        n_records: number of records (at most; duplicates of rounded log-spaced epochs are merged).
        n_bins: bins per unit (binning estimator).
        noise_var: noise variance of the KDE estimator.
        estimators: any of ``"binning"``, ``"kde"``.
        kde_samples: evaluate the KDE bound on this many samples drawn once without replacement (the same ones
            at every record; its cost is quadratic in the sample count); ``None``: all ``n``.
        generator: draws that subsample.

    Returns:
        A dict from estimator name to :class:`InformationPlaneTrace`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> X, y = tishby_dataset()
        >>> net = nn.Sequential(nn.Linear(12, 3), nn.Tanh(), nn.Linear(3, 2))
        >>> out = information_plane(net, nn.functional.cross_entropy, X, y, [net[1]], epochs=20, n_records=3)
        >>> out["binning"].i_xt.shape, out["kde"].epochs.tolist()
        (torch.Size([3, 1]), [0, 1, 20])
    """
    if len(layers) == 0:
        raise ValueError("layers must hold at least one submodule, got 0")
    owned = {id(m) for m in model.modules()}
    for k, m in enumerate(layers):
        if not isinstance(m, nn.Module) or id(m) not in owned:
            raise ValueError(f"layers[{k}] must be a submodule of model")
    for e in estimators:
        if e not in ("binning", "kde"):
            raise ValueError(f"estimators must contain only 'binning' or 'kde', got {e!r}")
    if len(estimators) == 0:
        raise ValueError("estimators must name at least one estimator, got 0")

    captured: list[torch.Tensor | None] = [None] * len(layers)

    def hook(k):
        def fn(_module, _inp, out):
            captured[k] = out.detach().reshape(out.shape[0], -1)
        return fn

    handles = [m.register_forward_hook(hook(k)) for k, m in enumerate(layers)]
    params = [p for p in model.parameters() if p.requires_grad]
    step = _adam_stepper(params, lr) if optimizer == "adam" else _gd_stepper(params, lr)
    record_at = set(_log_epochs(epochs, n_records).tolist())
    rec_epochs, acts, losses, accs = [], [], [], []
    try:
        for epoch in range(epochs + 1):
            out = model(inputs)
            loss = loss_fn(out, targets)
            if epoch in record_at:
                rec_epochs.append(epoch)
                acts.append([c.clone() for c in captured])
                losses.append(float(loss.detach()))
                accs.append(float((out.detach().argmax(-1) == targets).to(torch.float64).mean()))
            if epoch == epochs:
                break
            grads = torch.autograd.grad(loss, params)
            step(grads)
    finally:
        for h in handles:
            h.remove()

    loss_t = torch.tensor(losses, dtype=torch.float64)
    converged = bool(torch.isfinite(loss_t).all())
    if not converged:
        import warnings

        warnings.warn("information_plane: the training loss became non-finite; lower lr", RuntimeWarning,
                      stacklevel=2)
    epochs_t = torch.tensor(rec_epochs, dtype=torch.int64)
    acc_t = torch.tensor(accs, dtype=torch.float64)
    x_ids = _row_ids(inputs.detach())
    n = inputs.shape[0]
    sub = None
    if kde_samples is not None and kde_samples < n:
        sub = torch.randperm(n, generator=generator, device=inputs.device)[:kde_samples]
    ranges = [(min(float(a[k].min()) for a in acts), max(float(a[k].max()) for a in acts))
              for k in range(len(layers))]
    result = {}
    for est in estimators:
        if est == "binning":
            rows = [_binned(a, targets, x_ids, n_bins, ranges) for a in acts]
        elif sub is None:
            rows = [_kde(a, targets, noise_var) for a in acts]
        else:
            rows = [_kde([t[sub] for t in a], targets[sub], noise_var) for a in acts]
        result[est] = InformationPlaneTrace(epochs_t, torch.stack([r.i_xt for r in rows]),
                                            torch.stack([r.i_ty for r in rows]), loss_t, acc_t, rows[0].h_y, est,
                                            converged)
    return result


@accepts(epochs=Tensor("E", dtype="int"), i_xt=Tensor("E", "L"),
         example=lambda ctx: {"epochs": torch.arange(5), "i_xt": torch.tensor(
             [[1.0, 2.0], [3.0, 2.5], [2.0, 2.0], [1.5, 2.2], [1.0, 2.1]], dtype=ctx.dtype)})
def compression(epochs: torch.Tensor, i_xt: torch.Tensor) -> Compression:
    """Compression of each layer: the drop of ``I(X;T)`` from its peak over training to the last record.

    Args:
        epochs: recorded epochs, shape ``(E,)``, increasing.
        i_xt: ``I(X;T)`` per record and layer, shape ``(E, L)``.

    Returns:
        :class:`Compression`.

    Example:
        >>> c = compression(torch.tensor([0, 10, 100]), torch.tensor([[1.0], [3.0], [2.0]]))
        >>> c.drop.tolist(), c.peak_epoch.tolist(), c.peak_fraction.tolist()
        ([1.0], [10], [0.1])
    """
    if epochs.numel() > 1 and bool((epochs[1:] <= epochs[:-1]).any()):
        raise ValueError("epochs must be strictly increasing")
    peak, arg = i_xt.max(dim=0)
    peak_epoch = epochs[arg]
    last = float(epochs[-1]) if float(epochs[-1]) > 0 else 1.0
    return Compression(peak - i_xt[-1], peak_epoch, peak_epoch.to(torch.float64) / last)
