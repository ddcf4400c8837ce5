"""Step-decay learning-rate schedule: a constant rate cut by a fixed factor at the end of every stage.

References: Accelerated Convergence of Stochastic Heavy Ball Method under Anisotropic Gradient Noise
(Pan, Liu, Wang, Zhang), 2024.

:func:`step_decay_schedule` returns a multiplier for ``torch.optim.lr_scheduler.LambdaLR``, so the schedule works
with any optimizer (the paper pairs it with ``torch.optim.SGD(momentum=beta)``, the stochastic heavy ball).
"""

from __future__ import annotations

import math

from paperzoo.core.accepts import Int, Real, accepts

__all__ = ["StepDecay", "step_decay_schedule"]


class StepDecay:
    r"""The multiplier :math:`\eta_t / \eta_0 = C^{-\lfloor t / K \rfloor}` (a callable object, so that
    ``LambdaLR.state_dict`` saves it and ``torch.save`` can pickle it).

    Attributes:
        decay: :math:`C > 1`, the factor the rate is divided by at the end of every stage.
        stage_length: :math:`K \ge 1`, steps per stage.
    """

    @accepts(decay=Real(ge=1), stage_length=Int(ge=1))
    def __init__(self, decay: float, stage_length: int):
        self.decay, self.stage_length = float(decay), int(stage_length)

    def __call__(self, step: int) -> float:
        return self.decay ** -(int(step) // self.stage_length)

    def __repr__(self) -> str:
        return f"StepDecay(decay={self.decay!r}, stage_length={self.stage_length!r})"


# The result is a callable multiplier (no numeric output to check).
@accepts(total_steps=Int(ge=1), decay=Real(ge=1), stage_length=Int(ge=1, optional=True), output="any")
def step_decay_schedule(total_steps: int, *, decay: float = 2.0, stage_length: int | None = None) -> StepDecay:
    r"""Step decay: :math:`\eta_t = \eta_0\, C^{-\ell}` during stage :math:`\ell = \lfloor t / K \rfloor`.

    References: Accelerated Convergence of Stochastic Heavy Ball Method under Anisotropic Gradient Noise
    (Pan, Liu, Wang, Zhang), 2024 (the stage-wise decaying step size of their Algorithm 1; the schedule itself
    is that of Ge, Kakade, Kidambi, Netrapalli, The Step Decay Schedule: A Near Optimal, Geometrically Decaying
    Learning Rate Procedure for Least Squares, 2019).

    Symbols: :math:`\eta_0` = the optimizer's ``lr``, :math:`C` = ``decay``, :math:`K` = ``stage_length``. The
    default :math:`K = \lceil T / \log_2 T \rceil` (about :math:`\log_2 T` stages, the rate halved after each)
    is Ge et al.'s choice, which the heavy-ball analysis keeps up to constants; the paper's theorem states the
    stage count only up to constants, so that default is our reading, not a constant printed in the paper.

    Args:
        total_steps: the budget :math:`T \ge 1` (used only for the default stage length).
        decay: :math:`C \ge 1` (``1`` gives a constant rate).
        stage_length: :math:`K \ge 1`; default :math:`\lceil T / \max(1, \log_2 T) \rceil`.

    Returns:
        A :class:`StepDecay` multiplier for ``torch.optim.lr_scheduler.LambdaLR``.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> opt = torch.optim.SGD([w], lr=1.0, momentum=0.9)
        >>> sched = torch.optim.lr_scheduler.LambdaLR(opt, step_decay_schedule(16, stage_length=4))
        >>> [step_decay_schedule(16, stage_length=4)(t) for t in (0, 3, 4, 8, 15)]
        [1.0, 1.0, 0.5, 0.25, 0.125]
    """
    total_steps = int(total_steps)
    if stage_length is None:
        stage_length = math.ceil(total_steps / max(1.0, math.log2(total_steps)))
    return StepDecay(decay, stage_length)
