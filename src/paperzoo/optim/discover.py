r"""Discover: one momentum buffer per data cluster, stepped along their weighted sum.

References: Variance Reduction in Deep Learning: More Momentum is All You Need (Tondji, Kashubin, Cisse), 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from paperzoo.core.accepts import Choice, Int, Probe, Real, Spec, accepts
from paperzoo.core.checks import check_int, check_nonnegative, check_number, check_probability
from paperzoo.optim._common import COMMON_HYPERPARAMETERS, CheckedOptimizer, check_dense_grad

__all__ = ["Discover"]

BASES = ("sgdm", "qhm")


def _check_weights(value, n_clusters: int) -> tuple[float, ...]:
    if value is None:
        return tuple([1.0 / n_clusters] * n_clusters)
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"cluster_weights must be a sequence of {n_clusters} numbers, got {type(value).__name__}")
    if len(value) != n_clusters:
        raise ValueError(f"cluster_weights must have n_clusters = {n_clusters} entries, got {len(value)}")
    weights = [check_nonnegative(f"cluster_weights[{i}]", w) for i, w in enumerate(value)]
    total = sum(weights)
    if total <= 0:
        raise ValueError("cluster_weights must have a positive sum, got 0.0")
    return tuple(w / total for w in weights)


_EXAMPLE_CLUSTERS = 2


class _ClusterWeights(Spec):
    """``None`` or a sequence of nonnegative numbers with a positive sum (its length, ``n_clusters``, is checked
    with the group)."""

    optional = True

    def check(self, name, value, binding):
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a sequence of numbers, got {type(value).__name__}")
        _check_weights(value, len(value))

    def probes(self, name, value):
        k = _EXAMPLE_CLUSTERS
        return super().probes(name, value) + [
            Probe(name, "negative entry", False, lambda kw: {**kw, name: [-1.0] + [1.0] * (k - 1)}),
            Probe(name, "zero sum", False, lambda kw: {**kw, name: [0.0] * k}),
            Probe(name, "wrong length", False, lambda kw: {**kw, name: [1.0] * (k + 1)}),
            Probe(name, "unnormalised weights", True, lambda kw: {**kw, name: [float(i + 1) for i in range(k)]}),
        ]


class Discover(CheckedOptimizer):
    r"""Discover: multi-momentum variance reduction, one momentum buffer :math:`m_k` per data cluster :math:`k`.

    References: Variance Reduction in Deep Learning: More Momentum is All You Need (Tondji, Kashubin, Cisse),
    2021.

    The data are partitioned into :math:`K` clusters (classes, or k-means clusters of features). A step on a
    mini-batch drawn from cluster :math:`k` updates only that cluster's buffer and moves along the
    :math:`\pi`-weighted sum of *all* buffers, so the gradients of clusters not in the batch still contribute
    through their (stale) momenta, a SAG-like control variate at the cluster level (the paper's combination of
    a base optimizer with the multi-momentum strategy of COVER, Yuan et al. 2019):

    - ``base="sgdm"`` (Discover-SGDM, heavy ball as in ``torch.optim.SGD``):

      .. math::
          m_k \leftarrow \beta m_k + g, \qquad d = \sum_{j=1}^K \pi_j m_j, \qquad \theta \leftarrow \theta - \eta d

    - ``base="qhm"`` (Discover-QHM, quasi-hyperbolic momentum, Ma & Yarats 2019):

      .. math::
          m_k \leftarrow \beta m_k + (1-\beta) g, \qquad
          \theta \leftarrow \theta - \eta\Big[(1-\nu)\, g + \nu \sum_j \pi_j m_j\Big]

    With :math:`K = 1` these are plain SGD with momentum and QHM. Symbols: :math:`g` = the gradient of the
    cluster-:math:`k` batch (plus ``weight_decay`` :math:`\cdot\,\theta`, negated with ``maximize``),
    :math:`\beta` = ``momentum``, :math:`\nu` = ``nu``, :math:`\eta` = ``lr``, :math:`\pi` = ``cluster_weights``
    (normalised to sum 1; default uniform; use the clusters' shares of the data to weight by size).

    Deviations: the paper's third base, IGT (implicit gradient transport), is not implemented. A step takes one
    cluster's batch; a mini-batch mixing clusters must be split into per-cluster steps by the caller.

    Args:
        params: parameters or parameter-group dicts.
        n_clusters: :math:`K \ge 1` (per group).
        lr: :math:`\eta \ge 0`.
        momentum: :math:`\beta \in [0, 1)`.
        base: ``"sgdm"`` or ``"qhm"``.
        nu: QHM's :math:`\nu \in [0, 1]` (ignored by ``"sgdm"``).
        cluster_weights: :math:`\pi`, ``K`` nonnegative numbers, or ``None`` for uniform.
        weight_decay: L2 coefficient, ``>= 0``.
        maximize: ascend the objective.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`).

    State per parameter: ``step`` (CPU scalar), ``cluster_momentum`` of shape ``(K, *param.shape)`` and
    ``aggregate`` (:math:`\sum_j \pi_j m_j`, shape of the parameter, kept up to date incrementally so a step
    costs :math:`O(d)`, not :math:`O(Kd)`).

    Example:
        >>> import torch
        >>> from paperzoo.optim import Discover
        >>> centres = torch.tensor([[2.0, 0.0], [-1.0, 3.0]])  # two clusters, optimum at their mean
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = Discover([w], n_clusters=2, lr=0.05, momentum=0.9)
        >>> for t in range(300):
        ...     k = t % 2
        ...     opt.zero_grad()
        ...     ((w - centres[k]) ** 2).sum().div(2).backward()
        ...     _ = opt.step(cluster_id=k)
        >>> torch.allclose(w.detach(), centres.mean(0), atol=1e-2)
        True
    """

    @accepts(example=lambda ctx: {"n_clusters": _EXAMPLE_CLUSTERS}, n_clusters=Int(ge=1),
             lr=COMMON_HYPERPARAMETERS["lr"], momentum=Real(ge=0, lt=1), base=Choice(*BASES), nu=Real(ge=0, le=1),
             cluster_weights=_ClusterWeights(), weight_decay=COMMON_HYPERPARAMETERS["weight_decay"],
             maximize=COMMON_HYPERPARAMETERS["maximize"], nonfinite=COMMON_HYPERPARAMETERS["nonfinite"])
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], n_clusters: int,
                 lr: float = 1e-3, momentum: float = 0.9, base: str = "sgdm", nu: float = 0.7,
                 cluster_weights: Sequence[float] | torch.Tensor | None = None, weight_decay: float = 0.0, *,
                 maximize: bool = False, nonfinite: str = "raise"):
        defaults = dict(n_clusters=n_clusters, lr=lr, momentum=momentum, base=base, nu=nu,
                        cluster_weights=cluster_weights, weight_decay=weight_decay, maximize=maximize,
                        nonfinite=nonfinite)
        super().__init__(params, defaults)

    def _check_group(self, group: dict[str, Any]) -> None:
        group["n_clusters"] = check_int("n_clusters", group["n_clusters"], low=1)
        group["lr"] = check_nonnegative("lr", group["lr"])
        group["momentum"] = check_probability("momentum", group["momentum"])
        group["nu"] = check_number("nu", group["nu"], low=0.0, high=1.0)
        group["cluster_weights"] = _check_weights(group["cluster_weights"], group["n_clusters"])
        group["weight_decay"] = check_nonnegative("weight_decay", group["weight_decay"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, cluster_id: int | None = None):
        """One step with the gradient of a batch from cluster ``cluster_id`` (required, ``0 <= id < K``)."""
        if cluster_id is None:
            raise TypeError("Discover.step needs cluster_id: the cluster the batch was drawn from")
        ks = [check_int("cluster_id", cluster_id, low=0, high=group["n_clusters"] - 1) for group in self.param_groups]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._skip_for_nonfinite():
            return loss
        for group, k in zip(self.param_groups, ks):
            beta, lr, wd = group["momentum"], group["lr"], group["weight_decay"]
            weight = group["cluster_weights"][k]
            qhm = group["base"] == "qhm"
            for p in group["params"]:
                if p.grad is None:
                    continue
                check_dense_grad("Discover", p.grad)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["cluster_momentum"] = torch.zeros((group["n_clusters"], *p.shape), dtype=p.dtype,
                                                            device=p.device)
                    state["aggregate"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                g = -p.grad if group["maximize"] else p.grad
                if wd != 0:
                    g = g.add(p, alpha=wd)
                m_k, aggregate = state["cluster_momentum"][k], state["aggregate"]
                # Change of m_k, so that the weighted sum is refreshed in O(d).
                delta = m_k.mul(beta - 1.0).add_(g, alpha=(1.0 - beta) if qhm else 1.0)
                m_k.add_(delta)
                aggregate.add_(delta, alpha=weight)
                if qhm:
                    p.add_(g, alpha=-lr * (1.0 - group["nu"])).add_(aggregate, alpha=-lr * group["nu"])
                else:
                    p.add_(aggregate, alpha=-lr)
                state["step"] += 1
        return loss
