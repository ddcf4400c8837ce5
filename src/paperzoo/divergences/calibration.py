"""Expected calibration error (ECE) of a classifier's confidence.

References: On Calibration of Modern Neural Networks, 2017 (Guo, Pleiss, Sun, Weinberger; ICML), Eq. (3).

With confidence ``c_i = max_k p_ik``, prediction ``argmax_k p_ik`` and ``M`` equal-width confidence bins
``B_m = ((m-1)/M, m/M]``,

    ECE = sum_m |B_m| / n * | acc(B_m) - conf(B_m) |,

where ``acc(B_m)`` is the fraction of correct predictions and ``conf(B_m)`` the mean confidence in the bin. The
first bin also holds confidence exactly 0 (impossible for a softmax over K >= 1 classes, kept for safety).

Example:
    >>> import torch
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    >>> ece = expected_calibration_error(logits.softmax(1), torch.tensor([0, 0, 0]), n_bins=15)
"""

from __future__ import annotations

import torch

from paperzoo.core.accepts import Int, Tensor, accepts
from paperzoo.core.checks import check_int, check_tensor

__all__ = ["expected_calibration_error"]


def _example(ctx):
    n, k = ctx.size("n"), ctx.size("K")
    probs = torch.rand(n, k, generator=ctx.generator, dtype=ctx.dtype) + 0.1
    return {"probs": probs / probs.sum(1, keepdim=True), "labels": torch.randint(0, k, (n,), generator=ctx.generator)}


@accepts(probs=Tensor("n", "K", positive_mass=True, degenerate=("zero_mass", "coincident")),
         labels=Tensor("n", dtype="int", low=0), n_bins=Int(ge=1), example=_example)
def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, *, n_bins: int = 15) -> torch.Tensor:
    """ECE with ``n_bins`` equal-width confidence bins (15 by default, as in Guo et al.).

    Args:
        probs: (n, K) predicted class probabilities (rows sum to 1; pass ``logits.softmax(-1)``).
        labels: (n,) integer labels in ``[0, K)``.
        n_bins: number of bins, >= 1.

    Returns:
        0-dim tensor in ``[0, 1]`` with the dtype of ``probs``.
    """
    check_tensor("probs", probs, ndim=2, nonnegative=True)
    check_tensor("labels", labels, ndim=1, floating=False)
    n_bins = check_int("n_bins", n_bins, low=1)
    n, k = probs.shape
    if labels.shape[0] != n:
        raise ValueError(f"labels must have {n} entries (rows of probs), got shape {tuple(labels.shape)}")
    if n == 0:
        raise ValueError("probs must have at least 1 row, got shape (0, K)")
    if bool(((labels < 0) | (labels >= k)).any()):
        raise ValueError(f"labels must be in [0, {k}), got values outside")
    if not torch.allclose(probs.sum(1), torch.ones((), dtype=probs.dtype, device=probs.device), atol=1e-4):
        raise ValueError("probs must have rows summing to 1, got rows that do not (pass logits.softmax(-1))")
    conf, pred = probs.max(1)
    correct = (pred == labels).to(probs.dtype)
    # Bin m holds conf in ((m-1)/M, m/M]: ceil(conf * M) - 1, with conf = 0 sent to the first bin.
    idx = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins, dtype=probs.dtype, device=probs.device).index_add_(0, idx, torch.ones_like(conf))
    gap = torch.zeros_like(count).index_add_(0, idx, correct - conf)
    return gap.abs().sum() / n
