"""SaRA: progressive sparse low-rank adaptation, fine-tuning only the small-magnitude weights of a pre-trained
denoiser under a nuclear-norm penalty, with the selection redone once during training.

References: SaRA: High-Efficient Diffusion Model Fine-tuning with Progressive Sparse Low-Rank Adaptation, 2024
(Hu et al., ICLR 2025); official code sjtuplayer/SaRA (optim/adamw.py, finetune.sh).

The paper observes that the smallest-magnitude entries of a pre-trained diffusion network barely affect its
output, so they are free capacity. For every parameter tensor :math:`W_0` of the network (``network``) SaRA
selects the mask

.. math::
    M = \\{ |W_0| < \\tau \\}, \\qquad \\tau = 2\\cdot10^{-3} \\ (\\text{``threshold``}),

and trains only those entries: :math:`W = W_0 + \\Delta`, :math:`\\Delta` supported on :math:`M` (one trainable
vector per tensor, ``SparseUpdate``; the rest of the network is frozen). The loss is the denoising loss plus a
nuclear-norm penalty on the selected part of the weights, which keeps the sparse update low-rank,

.. math::
    \\mathcal L = \\mathcal L_{denoise} + \\lambda_{rank}\\, \\| W \\odot M \\|_*, \\qquad
    \\|A\\|_* = \\textstyle\\sum_i s_i(A), \\qquad \\lambda_{rank} = 5\\cdot10^{-4} \\ (\\text{``lambda_rank``}),

computed with an exact SVD; as in the official code the penalty takes, at each step, one matrix drawn uniformly
among the 2-D weights with :math:`\\min(\\text{shape}) > 64` (``choose="random"``, ``min_dim=64``; ``"all"`` sums
them). *Progressive*: at ``progressive_step`` the update is merged into the weights, the mask is recomputed with
the same threshold on the merged weights (entries that have grown past :math:`\\tau` are frozen, new small ones
become trainable) and training continues with a fresh optimizer. When no learning rate is given, the official
code's rule :math:`\\eta = 10^{-3} e^{-350\\tau}` (:func:`sara_lr`) is used.

Shapes: ``network`` any ``nn.Module`` denoiser network :math:`F_\\theta(x_{in}, \\sigma)` (as
:class:`~paperzoo.diffusion.training.MLPDenoiser`); masks are boolean tensors of each parameter's shape.

paperzoo additions: :func:`sara_threshold` gives the threshold that selects a target fraction of the entries (for
networks whose weight scale is not Stable Diffusion's, where :math:`2\\cdot10^{-3}` selects about 10%).

Example:
    >>> import torch
    >>> from paperzoo.diffusion.training import MLPDenoiser
    >>> from paperzoo.diffusion.sara import SparseUpdate, finetune_sara, sara_threshold
    >>> _ = torch.manual_seed(0)
    >>> net = MLPDenoiser(2, 16, 2)
    >>> update = SparseUpdate(net, sara_threshold(net, 0.1))
    >>> update.n_trainable, sum(p.numel() for p in net.parameters())
    (61, 610)
    >>> g = torch.Generator().manual_seed(0)
    >>> hist = finetune_sara(update, lambda n, g: torch.randn(n, 2, generator=g) + 1.0,
    ...                      lambda n, g: torch.rand(n, generator=g) + 0.1, steps=4, batch_size=8, lr=1e-3,
    ...                      progressive_step=2, min_dim=1, generator=g)
    >>> hist.shape
    torch.Size([4])
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from paperzoo.core.accepts import Choice, Function, Generator, Instance, Int, Module, Real, Tensor, accepts
from paperzoo.core.checks import check_number
from paperzoo.diffusion.parametrization import denoiser_from_prediction
from paperzoo.diffusion.training import train_denoiser

__all__ = ["SparseUpdate", "sara_masks", "sara_threshold", "sara_lr", "nuclear_norm", "sara_rank_penalty",
           "finetune_sara"]

#: the official code's default selection threshold (finetune.sh)
SARA_THRESHOLD = 2e-3
#: the weight of the nuclear-norm penalty (finetune.sh)
SARA_LAMBDA_RANK = 5e-4
#: only 2-D weights with min(shape) above this enter the penalty (optim/adamw.py)
SARA_MIN_DIM = 64


def _masks(network: nn.Module, threshold: float) -> dict[str, torch.Tensor]:
    return {name: p.detach().abs() < threshold for name, p in network.named_parameters() if p.is_floating_point()}


def _example_network(ctx):
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).to(ctx.dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.rand(p.shape, generator=ctx.generator, dtype=ctx.dtype) - 0.5)
    return net


@accepts(network=Module(example=_example_network), threshold=Real(gt=0))
def sara_masks(network: nn.Module, threshold: float = SARA_THRESHOLD) -> dict[str, torch.Tensor]:
    """The selection :math:`M = \\{|W| < \\tau\\}` of every floating parameter of ``network``: ``{name: bool mask}``
    (the parameter's shape)."""
    return _masks(network, threshold)


@accepts(network=Module(example=_example_network), fraction=Real(gt=0, le=1))
def sara_threshold(network: nn.Module, fraction: float) -> float:
    """The threshold :math:`\\tau` whose mask :math:`|W| < \\tau` holds ``k = max(1, round(fraction * n))`` of the
    ``n`` floating parameter entries (exactly ``k`` unless magnitudes tie): the midpoint between the k-th and the
    (k+1)-th smallest :math:`|W|`. A paperzoo helper (the paper fixes :math:`\\tau = 2\\cdot10^{-3}`)."""
    values = torch.cat([p.detach().abs().flatten().double() for p in network.parameters() if p.is_floating_point()])
    if values.numel() == 0:
        raise ValueError("network must have floating parameters to select from")
    k = max(1, round(fraction * values.numel()))
    s = values.sort().values
    if k >= s.numel():
        return float(s[-1]) * 2.0 + 1.0
    return float((s[k - 1] + s[k]) / 2) if s[k] > s[k - 1] else float(s[k])


@accepts(threshold=Real(gt=0))
def sara_lr(threshold: float = SARA_THRESHOLD) -> float:
    """The official code's default learning rate for a threshold: :math:`10^{-3} e^{-350\\tau}`."""
    return 1e-3 * math.exp(-350.0 * threshold)


class SparseUpdate(nn.Module):
    """SaRA's sparse adapter: the frozen ``network`` plus one trainable vector per parameter tensor, holding the
    updates of the masked entries (:math:`W = W_0 + \\Delta`, :math:`\\Delta` zero off the mask).

    Args:
        network: the pre-trained network; its parameters are frozen (``requires_grad=False``) and kept as
            :math:`W_0` (``merge``/``reselect`` write the update into them).
        threshold: :math:`\\tau` of the mask :math:`|W_0| < \\tau` (default the official ``2e-3``).
        masks: instead of the threshold rule, explicit boolean masks ``{name: mask}`` (a missing name: no entry
            trained); ``threshold`` is then only used by :meth:`reselect`.

    The wrapper is a network of the same call ``(x_in, sigma)``; it carries ``network``'s ``prediction`` and
    ``space`` attributes, so :func:`~paperzoo.diffusion.training.train_denoiser` trains exactly the masked entries.
    """

    @accepts(network=Module(example=_example_network), threshold=Real(gt=0), masks=Instance(dict, optional=True))
    def __init__(self, network: nn.Module, threshold: float = SARA_THRESHOLD, *,
                 masks: dict[str, torch.Tensor] | None = None):
        super().__init__()
        self.base, self.threshold = network, float(threshold)
        for attr in ("prediction", "space"):
            if hasattr(network, attr):
                setattr(self, attr, getattr(network, attr))
        network.requires_grad_(False)
        params = dict(network.named_parameters())
        if masks is None:
            masks = _masks(network, self.threshold)
        for name, mask in masks.items():
            if name not in params:
                raise ValueError(f"masks names {name!r}, which is not a parameter of network")
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != params[name].shape:
                raise ValueError(f"masks[{name!r}] must be a bool tensor of shape {tuple(params[name].shape)}")
        self._set_masks(masks)

    def _set_masks(self, masks: dict[str, torch.Tensor]) -> None:
        params = dict(self.base.named_parameters())
        self._names = [n for n, m in masks.items() if bool(m.any())]
        self.deltas = nn.ParameterList()
        self._index = []
        for i, name in enumerate(self._names):
            idx = masks[name].flatten().nonzero().flatten().to(params[name].device)
            self.register_buffer(f"_index_{i}", idx, persistent=False)
            self._index.append(f"_index_{i}")
            self.deltas.append(nn.Parameter(torch.zeros(idx.numel(), dtype=params[name].dtype,
                                                        device=params[name].device)))

    @property
    def n_trainable(self) -> int:
        """The number of trained entries (the size of the mask)."""
        return sum(d.numel() for d in self.deltas)

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """The current masks ``{name: bool}`` (parameters with no selected entry are left out)."""
        params = dict(self.base.named_parameters())
        out = {}
        for name, key in zip(self._names, self._index):
            m = torch.zeros(params[name].numel(), dtype=torch.bool, device=params[name].device)
            m[getattr(self, key)] = True
            out[name] = m.view_as(params[name])
        return out

    def _weights(self) -> dict[str, torch.Tensor]:
        """:math:`W_0 + \\Delta` of every adapted parameter (differentiable in the deltas)."""
        params = dict(self.base.named_parameters())
        return {name: params[name].flatten().index_add(0, getattr(self, key), delta).view_as(params[name])
                for name, key, delta in zip(self._names, self._index, self.deltas)}

    def _masked_weights(self) -> dict[str, torch.Tensor]:
        """:math:`W \\odot M` of every adapted parameter (the argument of the rank penalty)."""
        params = dict(self.base.named_parameters())
        out = {}
        for name, key, delta in zip(self._names, self._index, self.deltas):
            w0, idx = params[name], getattr(self, key)
            out[name] = torch.zeros_like(w0).flatten().index_add(0, idx, w0.flatten()[idx] + delta).view_as(w0)
        return out

    def forward(self, x_in: torch.Tensor, sigma) -> torch.Tensor:
        return functional_call(self.base, self._weights(), (x_in, sigma))

    def denoiser(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The VE denoiser ``model(x, sigma)`` of the adapted network (needs ``prediction``/``space``)."""
        if not hasattr(self, "prediction"):
            raise ValueError("denoiser() needs a network with a prediction attribute")
        return denoiser_from_prediction(self, self.prediction, space=getattr(self, "space", None))

    @torch.no_grad()
    def merge(self) -> nn.Module:
        """Write :math:`W_0 + \\Delta` into the base network's parameters and zero the deltas (the output is
        unchanged); returns the base network."""
        merged = self._weights()
        params = dict(self.base.named_parameters())
        for name, w in merged.items():
            params[name].copy_(w)
        for d in self.deltas:
            d.zero_()
        return self.base

    def reselect(self, threshold: float | None = None) -> "SparseUpdate":
        """SaRA's progressive step: merge, then recompute the masks :math:`|W| < \\tau` on the merged weights
        (``threshold`` default the current one) with new zero deltas. The old delta parameters are replaced, so an
        optimizer must be re-created (as the official code does). Returns ``self``."""
        if threshold is not None:
            self.threshold = check_number("threshold", threshold, low=0.0, low_inclusive=False)
        self.merge()
        for key in self._index:
            delattr(self, key)
        self._set_masks(_masks(self.base, self.threshold))
        return self


@accepts(matrix=Tensor("m", "n", degenerate=("zeros",)))
def nuclear_norm(matrix: torch.Tensor) -> torch.Tensor:
    """:math:`\\|A\\|_* = \\sum_i s_i(A)` by an exact SVD (0-dim, differentiable)."""
    return torch.linalg.svdvals(matrix).sum()


def _rank_penalty(update: SparseUpdate, min_dim: int, choose: str, generator) -> torch.Tensor:
    """Unchecked :func:`sara_rank_penalty` (the training loop's hook)."""
    eligible = [w for w in update._masked_weights().values() if w.dim() == 2 and min(w.shape) > min_dim]
    if not eligible:
        p = next(iter(update.base.parameters()), None)
        return torch.zeros((), dtype=torch.float32 if p is None else p.dtype)
    if choose == "random":
        eligible = [eligible[int(torch.randint(len(eligible), (), generator=generator))]]
    return sum(torch.linalg.svdvals(w).sum() for w in eligible)


@accepts(update=Instance(SparseUpdate), min_dim=Int(ge=0), choose=Choice("random", "all"), generator=Generator(),
         example=lambda ctx: {"update": SparseUpdate(_example_network(ctx), 0.3), "min_dim": 1})
def sara_rank_penalty(update: SparseUpdate, *, min_dim: int = SARA_MIN_DIM, choose: str = "random",
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """:math:`\\|W \\odot M\\|_*` (unscaled, 0-dim, differentiable in the deltas): over the adapted 2-D weights with
    ``min(shape) > min_dim``, one drawn uniformly from ``generator`` (``choose="random"``, the official code) or
    the sum (``"all"``); 0 when none is eligible."""
    return _rank_penalty(update, min_dim, choose, generator)


class _Elementwise(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net, self.prediction, self.space = net, "eps", "vp"

    def forward(self, x, sigma):
        return self.net(x)


@accepts(update=Instance(SparseUpdate), sample_data=Function(), sample_sigmas=Function(), steps=Int(ge=0),
         batch_size=Int(ge=1), lr=Real(gt=0, optional=True), lambda_rank=Real(ge=0),
         progressive_step=Int(ge=0, optional=True), min_dim=Int(ge=0), choose=Choice("random", "all"),
         weighting=Function(optional=True), generator=Generator(), penalty_seed=Int(ge=0),
         callback=Function(optional=True),
         example=lambda ctx: {"update": SparseUpdate(_Elementwise(nn.Linear(3, 3).to(ctx.dtype)), 0.3),
                              "sample_data": lambda n, g: torch.randn(n, 3, generator=g, dtype=ctx.dtype),
                              "sample_sigmas": lambda n, g: torch.rand(n, generator=g, dtype=ctx.dtype) + 0.1,
                              "steps": 3, "batch_size": 4, "min_dim": 1})
def finetune_sara(update: SparseUpdate, sample_data: Callable[[int, torch.Generator], torch.Tensor],
                  sample_sigmas: Callable[[int, torch.Generator], torch.Tensor], *, steps: int,
                  batch_size: int = 256, lr: float | None = None, lambda_rank: float = SARA_LAMBDA_RANK,
                  progressive_step: int | None = None, min_dim: int = SARA_MIN_DIM, choose: str = "random",
                  weighting: Callable | None = None, generator: torch.Generator | None = None,
                  penalty_seed: int = 0, callback: Callable | None = None) -> torch.Tensor:
    """Fine-tune ``update`` with SaRA: Adam on the denoising loss plus ``lambda_rank`` times
    :func:`sara_rank_penalty`, through :func:`~paperzoo.diffusion.training.train_denoiser`; returns the loss
    history ``(steps,)`` (penalty included).

    At ``progressive_step`` (``None``: never; the official script uses 2,500 of its steps) the masks are
    reselected (:meth:`SparseUpdate.reselect`) and a fresh optimizer runs the remaining steps. ``lr`` defaults to
    :func:`sara_lr` of the update's threshold. The penalty's matrix draws come from their own generator
    (seeded ``penalty_seed``), so the batches from ``generator`` are those of a plain ``train_denoiser`` run.
    ``callback(step, update, loss)`` after each step (from 1, counted over both phases).
    """
    if progressive_step is not None and progressive_step > steps:
        raise ValueError(f"progressive_step must be <= steps ({steps}), got {progressive_step}")
    if lr is None:
        lr = sara_lr(update.threshold)
    pen_gen = torch.Generator().manual_seed(penalty_seed)

    def penalty(network):
        return lambda_rank * _rank_penalty(network, min_dim, choose, pen_gen)

    pen = penalty if lambda_rank > 0 else None
    first = steps if progressive_step is None else progressive_step
    hist = [train_denoiser(update, sample_data, sample_sigmas, steps=first, batch_size=batch_size, lr=lr,
                           weighting=weighting, generator=generator, callback=callback, penalty=pen)]
    if progressive_step is not None:
        update.reselect()
        shifted = None if callback is None else (lambda step, net, loss: callback(step + first, net, loss))
        hist.append(train_denoiser(update, sample_data, sample_sigmas, steps=steps - first, batch_size=batch_size,
                                   lr=lr, weighting=weighting, generator=generator, callback=shifted, penalty=pen))
    return torch.cat(hist)
