"""Shared pieces of the training-convergence claims (Min-SNR, the Laplace schedule, the debiased loss): one
checkpointed training run of the small eps-prediction MLP on a mixture, and the score of a curve."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from paperzoo.diffusion.training import MLPDenoiser, train_denoiser


def checkpointed_run(gm, sample_sigmas: Callable, lr: float, steps: int, seed: int, evaluate: Callable,
                     fractions: Sequence[float], weighting: Callable | None = None) -> tuple[MLPDenoiser, list]:
    """Train ``MLPDenoiser(2, 128, 3, prediction="eps")`` from seed ``seed`` on ``gm`` (Adam, batch 256, levels from
    ``sample_sigmas(n, generator)``, optional ``weighting``); return the network and ``evaluate(network)`` at each
    checkpoint (the given fractions of ``steps``)."""
    torch.manual_seed(seed)
    net = MLPDenoiser(2, 128, 3, prediction="eps")
    marks = {max(1, round(f * steps)) for f in fractions}
    out = []

    def checkpoint(step, network, loss):
        if step in marks:
            out.append(evaluate(network))

    train_denoiser(net, lambda n, g: gm.sample(n, generator=g), sample_sigmas, steps=steps, batch_size=256, lr=lr,
                   weighting=weighting, generator=torch.Generator().manual_seed(seed), callback=checkpoint)
    return net, out


def mean_log(values: Sequence[float]) -> float:
    """The mean of ``log(values)`` (the log-area under a convergence curve)."""
    return sum(math.log(v) for v in values) / len(values)
