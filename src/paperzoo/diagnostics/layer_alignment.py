"""Layerwise tangent-feature alignment with the labels, and the forward/backward signal-propagation kernels behind it.

References: Feature Learning and Signal Propagation in Deep Neural Networks, 2022.

The tangent kernel of the parameter block :math:`\\theta_l` (one layer: its weight and bias) is
:math:`K_l(x_i, x_j) = \\sum_c \\langle \\partial_{\\theta_l} f_c(x_i), \\partial_{\\theta_l} f_c(x_j)\\rangle`,
and its alignment with the labels :math:`Y` (shape ``(N, k)``) is the normalised Frobenius product
:math:`A_l = \\langle K_l, Y Y^\\top\\rangle_F / (\\lVert K_l \\rVert_F \\lVert Y Y^\\top \\rVert_F)`
(with ``centered=True`` both kernels are first double-centred, :math:`H K H`, :math:`H = I - 11^\\top / N`).
For a fully connected layer :math:`z_l = W_l h_{l-1} + b_l` the kernel factorises exactly into a forward and a
backward kernel, :math:`K_l = (H_{l-1} H_{l-1}^\\top + 1) \\odot G_l` with :math:`G_l = \\sum_c \\partial_{z_l} f_c
\\,\\partial_{z_l} f_c^\\top`: the Equilibrium Hypothesis reads the ascent-descent of :math:`A_l` over depth as the
balance between the information that the forward features lose with depth and the information the backward
gradients lose towards the input. :func:`layerwise_tangent_alignment` computes :math:`A_l` for any model through
``torch.func`` per-sample Jacobians; :func:`mlp_signal_propagation` computes the two factors (and :math:`A_l` from
them) for an ``nn.Sequential`` MLP with one forward and ``k`` backward passes.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import nn

from paperzoo.core.accepts import Flag, Module, Tensor, accepts

__all__ = ["LayerAlignment", "SignalPropagation", "kernel_alignment", "layerwise_tangent_alignment",
           "mlp_signal_propagation"]


class LayerAlignment(NamedTuple):
    """Result of :func:`layerwise_tangent_alignment`.

    Attributes:
        alignment: :math:`A_l` per layer, shape ``(L,)``, in ``[-1, 1]`` (0 where the layer's kernel is zero).
        kernel_norms: :math:`\\lVert K_l \\rVert_F`, shape ``(L,)``.
        layer_names: the module path of each layer (the parameter names less their last component).
        n_params: parameters per layer.
        centered: whether the kernels were double-centred.
    """

    alignment: torch.Tensor
    kernel_norms: torch.Tensor
    layer_names: tuple[str, ...]
    n_params: tuple[int, ...]
    centered: bool


class SignalPropagation(NamedTuple):
    """Result of :func:`mlp_signal_propagation` (one entry per ``nn.Linear``, input side first).

    Attributes:
        forward_norms: :math:`\\frac1N \\sum_i \\lVert h_{l-1}(x_i) \\rVert^2 / \\dim h_{l-1}`, shape ``(L,)``.
        backward_norms: :math:`\\frac1N \\sum_i \\sum_c \\lVert \\partial_{z_l} f_c(x_i) \\rVert^2`, shape ``(L,)``.
        forward_alignment: alignment of :math:`H_{l-1} H_{l-1}^\\top` with :math:`Y Y^\\top`, shape ``(L,)``.
        backward_alignment: alignment of :math:`G_l` with :math:`Y Y^\\top`, shape ``(L,)``.
        tangent_alignment: :math:`A_l` of the layer's weight and bias from the factorised kernel, shape ``(L,)``.
        centered: whether the kernels were double-centred.
    """

    forward_norms: torch.Tensor
    backward_norms: torch.Tensor
    forward_alignment: torch.Tensor
    backward_alignment: torch.Tensor
    tangent_alignment: torch.Tensor
    centered: bool


def _example_mlp(ctx):
    g = ctx.generator
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).to(ctx.dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=ctx.dtype))
    n = 6
    y = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0).to(ctx.dtype)
    return {"model": model, "inputs": torch.randn(n, 3, generator=g, dtype=ctx.dtype),
            "targets": torch.stack([y, -y], 1)}


def _center(K: torch.Tensor) -> torch.Tensor:
    return K - K.mean(-2, keepdim=True) - K.mean(-1, keepdim=True) + K.mean((-2, -1), keepdim=True)


def _target_kernel(targets: torch.Tensor, n: int, centered: bool) -> torch.Tensor:
    if targets.shape[0] != n:
        raise ValueError(f"targets must have {n} rows (one per row of inputs), got shape {tuple(targets.shape)}")
    Y = targets.reshape(n, -1)
    T = Y @ Y.T
    if centered:
        T = _center(T)
    if float(torch.linalg.matrix_norm(T)) == 0.0:
        raise ValueError("targets must give a nonzero label kernel Y Y^T" + (" after centring (targets are "
                         "constant across rows)" if centered else " (targets are all zero)"))
    return T


def _align(K: torch.Tensor, T: torch.Tensor, centered: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alignment, ||K||_F)``; T already centred where asked. Batched over a leading dimension."""
    if centered:
        K = _center(K)
    kn = torch.linalg.matrix_norm(K)
    num = (K * T).sum((-2, -1))
    a = torch.where(kn > 0, num / (kn * torch.linalg.matrix_norm(T)).clamp_min(torch.finfo(K.dtype).tiny),
                    torch.zeros_like(kn))
    return a, kn


@accepts(K=Tensor("n", "n", symmetric=True), targets=Tensor(ndims=(1, 2)), centered=Flag(),
         example=lambda ctx: {"K": torch.eye(4, dtype=ctx.dtype) + 1.0,
                              "targets": torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=ctx.dtype)})
def kernel_alignment(K: torch.Tensor, targets: torch.Tensor, *, centered: bool = False) -> float:
    """Kernel-target alignment :math:`\\langle K, YY^\\top\\rangle_F / (\\lVert K\\rVert_F \\lVert YY^\\top\\rVert_F)`.

    References: On Kernel-Target Alignment, 2001.

    Args:
        K: a kernel matrix, shape ``(N, N)``.
        targets: ``Y``, shape ``(N,)`` or ``(N, k)`` (one-hot or signed labels).
        centered: double-centre both kernels first (centred kernel alignment).

    Returns 0 for a zero kernel.

    Example:
        >>> round(kernel_alignment(torch.eye(2), torch.tensor([1.0, -1.0])), 6)
        0.707107
    """
    T = _target_kernel(targets, K.shape[0], centered)
    return float(_align(K, T, centered)[0])


def _layer_groups(model: nn.Module, layers):
    names = [n for n, p in model.named_parameters() if p.requires_grad and p.is_floating_point()]
    if not names:
        raise ValueError("model must have trainable floating parameters, got none")
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(n.rpartition(".")[0], []).append(n)
    if layers is None:
        return groups
    unknown = [layer for layer in layers if layer not in groups]
    if unknown or len(set(layers)) != len(layers) or not layers:
        raise ValueError(f"layers must be distinct module paths among {list(groups)!r:.200}, got {list(layers)!r}")
    return {layer: groups[layer] for layer in layers}


@accepts(model=Module(bind_dtype=True), inputs=Tensor(ndims=tuple(range(2, 9))), targets=Tensor(ndims=(1, 2)),
         centered=Flag(), example=_example_mlp)
def layerwise_tangent_alignment(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
                                centered: bool = False, layers: list[str] | None = None) -> LayerAlignment:
    """Layerwise tangent-kernel alignment :math:`A_l` with the labels, for any model (per-sample Jacobians).

    References: Feature Learning and Signal Propagation in Deep Neural Networks, 2022.

    :math:`K_l[i, j] = \\sum_c \\langle \\partial f_c(x_i) / \\partial\\theta_l, \\partial f_c(x_j) / \\partial
    \\theta_l\\rangle` with :math:`\\theta_l` the parameters of one module path (``"0"`` holds ``0.weight`` and
    ``0.bias``), :math:`f` = ``model(inputs)`` flattened to ``(N, k)``; :math:`A_l = \\langle K_l, YY^\\top
    \\rangle_F / (\\lVert K_l\\rVert_F \\lVert YY^\\top\\rVert_F)`, :math:`Y` = ``targets`` as ``(N, -1)``. Samples must
    be processed independently by the model (no batch norm in training mode); the model is run as it is.

    Args:
        model: maps ``inputs`` to outputs ``(N, ...)``; parameters in the dtype of ``inputs``.
        inputs: shape ``(N, ...)``.
        targets: ``Y``, shape ``(N,)`` or ``(N, k)``; the label kernel must be nonzero.
        centered: double-centre both kernels (centred kernel alignment).
        layers: module paths to measure, in order (default: every module owning trainable parameters).

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        >>> res = layerwise_tangent_alignment(net, torch.randn(10, 4), torch.randn(10))
        >>> res.layer_names, res.alignment.shape
        (('0', '2'), torch.Size([2]))
    """
    n = inputs.shape[0]
    T = _target_kernel(targets, n, centered)
    groups = _layer_groups(model, layers)
    wanted = [p for g in groups.values() for p in g]
    params = {k: v.detach() for k, v in model.named_parameters()}
    state = {**params, **dict(model.named_buffers())}

    def f_one(sub, x):
        out = torch.func.functional_call(model, {**state, **sub}, (x.unsqueeze(0),))
        return out.reshape(-1)

    sub = {k: params[k] for k in wanted}
    jac = torch.func.vmap(torch.func.jacrev(f_one), in_dims=(None, 0))(sub, inputs.detach())
    Ks, counts = [], []
    for names in groups.values():
        J = torch.cat([jac[k].reshape(n, jac[k].shape[1], -1) for k in names], dim=-1)  # (N, k, P_l)
        Ks.append(torch.einsum("ikp,jkp->ij", J, J))
        counts.append(J.shape[-1])
    a, kn = _align(torch.stack(Ks), T, centered)
    if not bool(torch.isfinite(a).all()):
        raise ValueError("model outputs or their Jacobians are not finite on inputs")
    return LayerAlignment(a, kn, tuple(groups), tuple(counts), centered)


def _mlp_parts(model: nn.Module):
    if not isinstance(model, nn.Sequential) or not len(model):
        raise TypeError(f"model must be a non-empty nn.Sequential of nn.Linear and elementwise activations, got "
                        f"{type(model).__name__}")
    mods = list(model)
    if not isinstance(mods[-1], nn.Linear):
        raise ValueError(f"model must end with an nn.Linear (the output layer), got {type(mods[-1]).__name__}")
    for m in mods:
        if not isinstance(m, nn.Linear) and any(True for _ in m.parameters()):
            raise ValueError(f"model must have parameters only in its nn.Linear layers, got {type(m).__name__} "
                             "with parameters")
    return mods


@accepts(model=Module(bind_dtype=True), inputs=Tensor("n", "d"), targets=Tensor(ndims=(1, 2)), centered=Flag(),
         example=_example_mlp)
def mlp_signal_propagation(model: nn.Sequential, inputs: torch.Tensor, targets: torch.Tensor, *,
                           centered: bool = False) -> SignalPropagation:
    """Forward/backward signal-propagation kernels of an MLP and the layerwise alignment they give.

    References: Feature Learning and Signal Propagation in Deep Neural Networks, 2022.

    For each ``nn.Linear`` :math:`l` (input side first), :math:`h_{l-1}` is its input on ``inputs`` and
    :math:`\\partial_{z_l} f_c` the gradient of output ``c`` (summed over the batch, hence per sample) with respect to
    its output :math:`z_l`. Forward kernel :math:`F_l = H_{l-1} H_{l-1}^\\top`, backward kernel :math:`G_l =
    \\sum_c \\partial_{z_l} f_c\\, \\partial_{z_l} f_c^\\top`, and the exact tangent kernel of :math:`(W_l, b_l)`,
    :math:`K_l = (F_l + 1) \\odot G_l` (``bias=False`` layers: :math:`F_l \\odot G_l`). Alignments as in
    :func:`layerwise_tangent_alignment`, which it equals on such models. Activations between the layers must act on
    each sample separately.

    Args:
        model: ``nn.Sequential`` whose parameters sit in ``nn.Linear`` modules only, ending with an ``nn.Linear``.
        inputs: shape ``(N, d)``.
        targets: ``Y``, shape ``(N,)`` or ``(N, k)``.
        centered: double-centre the kernels (centred kernel alignment).

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))
        >>> sp = mlp_signal_propagation(net, torch.randn(10, 4), torch.randn(10))
        >>> sp.tangent_alignment.shape, sp.forward_norms.shape
        (torch.Size([3]), torch.Size([3]))
    """
    mods = _mlp_parts(model)
    n = inputs.shape[0]
    T = _target_kernel(targets, n, centered)
    h = inputs.detach()
    hs, zs, bias = [], [], []
    with torch.enable_grad():
        for m in mods:
            if isinstance(m, nn.Linear):
                hs.append(h.detach())
                bias.append(m.bias is not None)
                z = torch.nn.functional.linear(h.detach() if not zs else h, m.weight.detach(),
                                               None if m.bias is None else m.bias.detach())
                if not zs:
                    z = z.detach().requires_grad_(True)
                zs.append(z)
                h = z
            else:
                h = m(h)
        out = h.reshape(n, -1)
        G = torch.zeros(len(zs), n, n, dtype=out.dtype, device=out.device)
        bn = torch.zeros(len(zs), dtype=out.dtype, device=out.device)
        for c in range(out.shape[1]):
            grads = torch.autograd.grad(out[:, c].sum(), zs, retain_graph=c + 1 < out.shape[1])
            gs = torch.stack([g @ g.T for g in grads])
            G += gs
            bn += torch.stack([(g**2).sum() for g in grads]) / n
    F = torch.stack([x @ x.T for x in hs])
    fn = torch.stack([(x**2).sum() / x.numel() for x in hs])
    K = (F + torch.tensor(bias, dtype=F.dtype, device=F.device)[:, None, None]) * G
    a_f, _ = _align(F, T, centered)
    a_g, _ = _align(G, T, centered)
    a_k, _ = _align(K, T, centered)
    result = SignalPropagation(fn, bn, a_f, a_g, a_k, centered)
    if not all(bool(torch.isfinite(t).all()) for t in result[:5]):
        warnings.warn("mlp_signal_propagation: non-finite activations or gradients (NaN or overflow)",
                      RuntimeWarning, stacklevel=2)
    return result
