"""Optimistic online mirror descent with adaptive step sizes, for online convex optimisation between the
stochastic and the adversarial regimes.

References: Optimistic Online Mirror Descent for Bridging Stochastic and Adversarial Online Convex Optimization
(Chen, Zhang, Tu, Zhao, Zhang), 2023.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from paperzoo.core.accepts import Choice, Flag, Real, Tensor, accepts
from paperzoo.core.checks import check_int, check_tensor

__all__ = ["OptimisticOMD"]


class OptimisticOMD:
    r"""Optimistic OMD: play a mirror step along a guess of the next gradient, then update with the true one.

    References: Optimistic Online Mirror Descent for Bridging Stochastic and Adversarial Online Convex
    Optimization (Chen, Zhang, Tu, Zhao, Zhang), 2023 (optimistic OMD with the last gradient as the hint and the
    adaptive step size of its convex-and-smooth theorem).

    Round :math:`t = 1, 2, \dots`: :meth:`predict` plays

    .. math::
        x_t = \arg\min_{x \in \mathcal X}\; \eta_t \langle M_t, x\rangle + B_\psi(x, \hat x_t),

    the environment reveals :math:`g_t = \nabla f_t(x_t; \xi_t)`, and :meth:`update` sets

    .. math::
        \hat x_{t+1} = \arg\min_{x \in \mathcal X}\; \eta_t \langle g_t, x\rangle + B_\psi(x, \hat x_t),
        \qquad M_{t+1} = g_t \ (\text{or a user hint}),

    with :math:`M_1 = 0` and the adaptive step size

    .. math::
        \eta_t = \min\Bigl\{\frac{1}{4L},\; \frac{D}{\sqrt{\delta + \sum_{s<t}\|g_s - M_s\|_*^2}}\Bigr\},

    under which the expected regret on smooth SEA problems is
    :math:`O(\sqrt{\sigma_{1:T}^2} + \sqrt{\Sigma_{1:T}^2})`: it adapts to the cumulative stochastic variance and
    the cumulative adversarial variation without knowing either. The constants (the :math:`1/(4L)` cap, the
    offset :math:`\delta`, :math:`D` the domain diameter) are our reading of the paper's convex theorem; they
    change the regret's constant, not its rate. The paper's strongly convex and exp-concave step-size schedules
    are not implemented.

    Mirror maps: ``"euclidean"`` (:math:`\psi = \frac12\|x\|^2`, :math:`\mathcal X` the ball of radius
    ``radius`` around 0, projection by rescaling, dual norm :math:`\ell_2`, default :math:`D = 2\,`radius, the
    diameter); ``"entropy"`` (negative entropy on the probability simplex, multiplicative updates, dual norm
    :math:`\ell_\infty`, default :math:`D = \sqrt{\log d}`).

    With ``optimistic=False`` the hint is always zero: adaptive (AdaGrad-norm) online mirror descent, the
    natural non-optimistic baseline with the same step-size rule.

    Vectorised over independent runs: ``x0`` of shape ``(B, d)`` runs one learner per row (step sizes
    are per run); gradients passed to :meth:`update` have the same shape.

    Symbols: :math:`L` = ``smoothness`` (``None``: no :math:`1/(4L)` cap), :math:`D` = ``D``, :math:`\delta` =
    ``delta``.

    Args:
        x0: initial point :math:`\hat x_1`, shape ``(d,)`` or ``(B, d)`` (``B`` runs); must lie in the domain.
        mirror: ``"euclidean"`` or ``"entropy"``.
        radius: ball radius (Euclidean only), ``> 0``.
        D: the numerator of the step size, ``> 0`` (default as above).
        delta: :math:`\delta > 0`.
        smoothness: :math:`L > 0` or ``None``.
        optimistic: use the last gradient as the hint.

    Example:
        >>> import torch
        >>> c = torch.tensor([0.3, -0.2], dtype=torch.float64)
        >>> learner = OptimisticOMD(torch.zeros(2, dtype=torch.float64), radius=1.0, smoothness=1.0)
        >>> for t in range(200):
        ...     x = learner.predict()
        ...     learner.update(x - c)  # f_t(x) = |x - c|^2 / 2
        >>> bool((learner.predict() - c).abs().max() < 1e-3)
        True
    """

    @accepts(x0=Tensor(..., "d", max_batch_dims=1), mirror=Choice("euclidean", "entropy"), radius=Real(gt=0),
             D=Real(gt=0, optional=True), delta=Real(gt=0), smoothness=Real(gt=0, optional=True), optimistic=Flag(),
             example=lambda ctx: {"x0": torch.zeros(2, ctx.size("d"), dtype=ctx.dtype)})
    def __init__(self, x0: torch.Tensor, *, mirror: str = "euclidean", radius: float = 1.0, D: float | None = None,
                 delta: float = 1.0, smoothness: float | None = None, optimistic: bool = True):
        self.mirror, self.radius = mirror, float(radius)
        d = x0.shape[-1]
        if D is None:
            D = 2 * self.radius if mirror == "euclidean" else math.sqrt(max(math.log(d), 1e-12))
        self.D, self.delta = float(D), float(delta)
        self.smoothness = None if smoothness is None else float(smoothness)
        self.optimistic = optimistic
        if mirror == "euclidean":
            if bool((torch.linalg.vector_norm(x0, dim=-1) > self.radius * (1 + 1e-9)).any()):
                raise ValueError(f"x0 must lie in the ball of radius {self.radius}")
        elif bool((x0 <= 0).any()) or bool(((x0.sum(-1) - 1).abs() > 1e-6).any()):
            raise ValueError("x0 must lie in the interior of the probability simplex for mirror='entropy'")
        self.x_hat = x0.clone()
        self.hint = torch.zeros_like(x0)
        self.sum_sq = torch.zeros(x0.shape[:-1], dtype=x0.dtype, device=x0.device)
        self.t = 0
        self._played: torch.Tensor | None = None

    def step_size(self) -> torch.Tensor:
        """:math:`\\eta_t` for the current round, shape ``(...)``."""
        eta = self.D / torch.sqrt(self.delta + self.sum_sq)
        if self.smoothness is not None:
            eta = eta.clamp_max(1.0 / (4.0 * self.smoothness))
        return eta

    def _mirror_step(self, center: torch.Tensor, direction: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        if self.mirror == "euclidean":
            y = center - eta[..., None] * direction
            norm = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
            return y * torch.clamp(self.radius / norm.clamp_min(1e-300), max=1.0)
        # Multiplicative weights in the log domain: no overflow however large eta * direction gets.
        return torch.softmax(center.log() - eta[..., None] * direction, dim=-1)

    def predict(self) -> torch.Tensor:
        """Play :math:`x_t` (shape ``(..., d)``); repeated calls in one round return the same point."""
        if self._played is None:
            self._played = self._mirror_step(self.x_hat, self.hint, self.step_size())
        return self._played.clone()

    def update(self, grad: torch.Tensor, hint: torch.Tensor | None = None) -> None:
        """Observe :math:`g_t = \\nabla f_t(x_t)` (shape of ``x0``); ``hint`` overrides :math:`M_{t+1} = g_t`."""
        check_tensor("grad", grad)
        if grad.shape != self.x_hat.shape:
            raise ValueError(f"grad must have shape {tuple(self.x_hat.shape)}, got {tuple(grad.shape)}")
        if hint is not None:
            check_tensor("hint", hint)
            if hint.shape != grad.shape:
                raise ValueError(f"hint must have shape {tuple(grad.shape)}, got {tuple(hint.shape)}")
        if self._played is None:
            self.predict()
        eta = self.step_size()
        self.x_hat = self._mirror_step(self.x_hat, grad, eta)
        diff = grad - self.hint
        dual = (diff.square().sum(-1) if self.mirror == "euclidean" else diff.abs().amax(-1).square())
        self.sum_sq = self.sum_sq + dual
        if self.optimistic:
            self.hint = (grad if hint is None else hint).clone()
        self.t += 1
        self._played = None

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs to continue bit-identically."""
        return dict(x_hat=self.x_hat.clone(), hint=self.hint.clone(), sum_sq=self.sum_sq.clone(), t=self.t)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("x_hat", "hint", "sum_sq", "t"):
            if key not in state:
                raise ValueError(f"state must have the key {key!r}")
        if state["x_hat"].shape != self.x_hat.shape:
            raise ValueError(f"state['x_hat'] must have shape {tuple(self.x_hat.shape)}, "
                             f"got {tuple(state['x_hat'].shape)}")
        self.x_hat, self.hint = state["x_hat"].clone(), state["hint"].clone()
        self.sum_sq, self.t = state["sum_sq"].clone(), check_int("t", state["t"], low=0)
        self._played = None
