"""SMB: stochastic gradient descent bolstered by a per-tensor model-building step.

References: Bolstering Stochastic Gradient Descent with Model Building (Birbil, Martin, Onay, Öztoprak), 2024.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from paperzoo.core.accepts import Real, Tensor, accepts
from paperzoo.core.checks import check_nonnegative, check_number, check_positive
from paperzoo.optim._common import NONFINITE, CheckedOptimizer, NonFiniteGradientError, check_dense_grad

__all__ = ["SMB", "smb_model_step"]


def _smb_model_step(s: torch.Tensor, g: torch.Tensor, g_trial: torch.Tensor, eta: float) -> torch.Tensor:
    """Unchecked :func:`smb_model_step` (the optimizer's per-step path)."""
    sf, gf, y = s.reshape(-1), g.reshape(-1), (g_trial - g).reshape(-1)
    ss, yy, gg = sf.dot(sf), y.dot(y), gf.dot(gf)
    ys, yg, sg = y.dot(sf), y.dot(gf), sf.dot(gf)
    sigma = 0.5 * (ss.sqrt() * (yy.sqrt() + gg.sqrt() / eta) - ys)
    theta = (ys + 2.0 * sigma) ** 2 - ss * yy
    degenerate = (sigma <= 0) | (theta <= 0)
    # sigma > 0 and theta > 0 whenever g != 0 (Cauchy-Schwarz); guard the denominators rather than branch.
    sigma_safe = torch.where(degenerate, torch.ones_like(sigma), sigma)
    theta_safe = torch.where(degenerate, torch.ones_like(theta), theta)
    cg = -ss / (2.0 * sigma_safe)
    cs = cg / theta_safe * (-(ys + 2.0 * sigma) * yg + yy * sg)
    cy = cg / theta_safe * (-(ys + 2.0 * sigma) * sg + ss * yg)
    d = cs * s + cg * g + cy * (g_trial - g)
    return torch.where(degenerate, torch.zeros_like(d), d)


# One parameter tensor of any shape (up to 8 dimensions); the three must share it (checked in the body).
_ANY_RANK = (1, 0, 2, 3, 4, 5, 6, 7, 8)  # the first is the rank of the example
@accepts(s=Tensor(ndims=_ANY_RANK), g=Tensor(ndims=_ANY_RANK, degenerate=("zeros",)), g_trial=Tensor(ndims=_ANY_RANK),
         eta=Real(gt=0))
def smb_model_step(s: torch.Tensor, g: torch.Tensor, g_trial: torch.Tensor, eta: float) -> torch.Tensor:
    r"""SMB's model step for one tensor: the minimiser of the local model built from one trial step.

    With the trial step :math:`s` (taken from :math:`x`), the gradient :math:`g` at :math:`x` and
    :math:`g^+` at :math:`x + s` (same mini-batch), :math:`y = g^+ - g` and

    .. math::
        \sigma = \tfrac12\left(\|s\|\,(\|y\| + \|g\|/\eta) - y^\top s\right), \qquad
        \theta = (y^\top s + 2\sigma)^2 - \|s\|^2\|y\|^2,

    the new step (taken from :math:`x`) is :math:`d = c_s s + c_g g + c_y y` with

    .. math::
        c_g = -\frac{\|s\|^2}{2\sigma}, \quad
        c_s = \frac{c_g}{\theta}\left(-(y^\top s + 2\sigma)\, y^\top g + \|y\|^2 s^\top g\right), \quad
        c_y = \frac{c_g}{\theta}\left(-(y^\top s + 2\sigma)\, s^\top g + \|s\|^2 y^\top g\right).

    :math:`\sigma` is the regularisation weight of the model, chosen so that the step is never longer than
    :math:`\eta\|s\|` (checked numerically in the tests); on a linear function (:math:`y = 0`) the step is exactly
    :math:`-\eta\|s\|\,g/\|g\|`. A tensor whose gradient is zero gets a zero step (the formula would be 0/0).

    Args:
        s: trial step, any shape.
        g: gradient at the start point, shape of ``s``.
        g_trial: gradient at the trial point, shape of ``s``.
        eta: :math:`\eta > 0`.

    Returns:
        The step :math:`d`, shape of ``s``.

    Example:
        >>> g = torch.tensor([1.0, 0.0]); s = -0.5 * g
        >>> [round(v, 6) + 0.0 for v in smb_model_step(s, g, g.clone(), 0.9).tolist()]  # linear: eta * |s| along -g
        [-0.45, 0.0]
    """
    _check_same_shapes(s=s, g=g, g_trial=g_trial)
    return _smb_model_step(s, g, g_trial, float(eta))


def _check_same_shapes(**tensors: torch.Tensor) -> None:
    (first, x), *rest = tensors.items()
    for name, t in rest:
        if t.shape != x.shape:
            raise ValueError(f"{name} must have the shape of {first} {tuple(x.shape)}, got {tuple(t.shape)}")


def _value(loss) -> float:
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


class SMB(CheckedOptimizer):
    r"""SMB: an SGD trial step, kept when it passes a stochastic Armijo test, else replaced by a model step.

    References: Bolstering Stochastic Gradient Descent with Model Building (Birbil, Martin, Onay, Öztoprak), 2024
    (Algorithm 1, SMB with the same mini-batch for both evaluations).

    Each :meth:`step` calls the closure at the current point :math:`x` (loss :math:`f`, gradient :math:`g`),
    takes the trial step :math:`s = -\alpha g` and calls the closure again at :math:`x + s` (loss :math:`f^+`,
    gradient :math:`g^+`, on the same mini-batch: the closure must not draw a new one). The trial point is kept
    when the stochastic Armijo condition holds,

    .. math::
        f^+ \le f - c \sum_{\text{groups}} \alpha \|g\|^2,

    and otherwise every parameter tensor moves instead to :math:`x + d`, with :math:`d` the model step of
    :func:`smb_model_step` built from that tensor's own :math:`(s, g, g^+)` (the paper's per-tensor
    "diagonalisation": each layer gets its own step length and direction).

    Symbols: :math:`\alpha` = ``lr``, :math:`c` = ``c``, :math:`\eta` = ``eta``; the paper's defaults are
    ``lr=1, c=0.1, eta=0.99`` (those of the authors' package).

    Deviations from the authors' package: with several parameter groups the trial step and the Armijo test are
    global (one sum over the groups, each with its own :math:`\alpha`), where the package loops over groups and
    re-evaluates the closure per group; with one group the two agree. The package's "SMBi" variant (a fresh
    mini-batch for the model step) and its step-size auto-scheduling are not implemented. The model step is
    skipped when :math:`\|g\| <` ``grad_tol`` (the package's fixed 1e-8).

    Cost: two closure calls (loss and gradient) per step, whether or not the model step is taken.

    Args:
        params: parameters or parameter-group dicts (``lr``, ``c``, ``eta`` may be set per group).
        lr: trial step size :math:`\alpha \ge 0`.
        c: Armijo constant, in ``[0, 1)``.
        eta: model step length factor, ``> 0``.
        grad_tol: gradient norm below which no model step is built, ``>= 0``.
        nonfinite: what a step does with a NaN or inf gradient: ``"raise"`` (default), ``"skip"`` or ``"ignore"``
            (see :class:`~paperzoo.optim.CheckedOptimizer`). Both gradients are checked, :math:`g` before the trial
            step and :math:`g^+` after it; for a non-finite :math:`g^+` the parameters are put back at :math:`x`
            (and ``p.grad`` back to :math:`g`) before the step raises or is skipped.

    State: ``state["n_steps"]`` and ``state["n_model_steps"]`` (optimizer-level counters; their ratio is the
    fraction of rejected trial steps the paper's auto-scheduler reacts to).

    Example:
        >>> import torch
        >>> from paperzoo.optim import SMB
        >>> w = torch.nn.Parameter(torch.tensor([2.0, -3.0]))
        >>> opt = SMB([w], lr=2.0)  # far too large for SGD on this problem; the model step copes
        >>> def closure():
        ...     opt.zero_grad()
        ...     loss = (w ** 2).sum()
        ...     loss.backward()
        ...     return loss
        >>> for _ in range(50):
        ...     _ = opt.step(closure)
        >>> bool(w.abs().max() < 1e-3)
        True
    """

    @accepts(lr=Real(ge=0), c=Real(ge=0, lt=1), eta=Real(gt=0), grad_tol=Real(ge=0), nonfinite=NONFINITE)
    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1.0, c: float = 0.1,
                 eta: float = 0.99, grad_tol: float = 1e-8, *, nonfinite: str = "raise"):
        super().__init__(params, dict(lr=lr, c=c, eta=eta, grad_tol=grad_tol, nonfinite=nonfinite))
        self.state["n_steps"] = 0
        self.state["n_model_steps"] = 0

    def _check_group(self, group: dict[str, Any]) -> None:
        group["lr"] = check_nonnegative("lr", group["lr"])
        group["c"] = check_number("c", group["c"], low=0.0, high=1.0, high_inclusive=False)
        group["eta"] = check_positive("eta", group["eta"])
        group["grad_tol"] = check_nonnegative("grad_tol", group["grad_tol"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One SMB step; ``closure`` zeroes the gradients, evaluates the loss on a fixed mini-batch, calls
        ``backward`` and returns the loss. Returns the loss at the starting point."""
        if closure is None:
            raise ValueError("SMB needs a closure: step(closure) where closure zeroes the gradients, computes the "
                             "loss on the current mini-batch, calls backward() and returns the loss")
        closure = torch.enable_grad()(closure)
        loss = closure()
        live = [[p for p in group["params"] if p.grad is not None] for group in self.param_groups]
        for p in (p for params in live for p in params):
            check_dense_grad(type(self).__name__, p.grad)
        if self._skip_for_nonfinite():
            return loss
        # The trial gradient is checked at x + s: keep x to put the parameters back exactly if it is non-finite.
        guarded = any(group["nonfinite"] != "ignore" for group in self.param_groups)
        starts = [[p.detach().clone() for p in params] for params in live] if guarded else None
        work = []  # (group, params, starting gradients, trial steps)
        decrease = 0.0
        gnorm_sq = 0.0
        for group, params in zip(self.param_groups, live):
            grads = [p.grad.detach().clone() for p in params]
            steps = [g.mul(-group["lr"]) for g in grads]
            sq = sum(float(g.double().square().sum()) for g in grads)
            decrease += group["c"] * group["lr"] * sq
            gnorm_sq += sq
            for p, s in zip(params, steps):
                p.add_(s)
            work.append((group, params, grads, steps))
        trial_loss = closure()
        if guarded:
            try:
                skip = self._skip_for_nonfinite(grads=[[p.grad for p in params if p.grad is not None]
                                                       for params in live])
            except NonFiniteGradientError:
                self._restore(work, starts)
                raise
            if skip:
                self._restore(work, starts)
                return loss
        self.state["n_steps"] += 1
        if gnorm_sq ** 0.5 < min(group["grad_tol"] for group in self.param_groups) or not work:
            return loss
        if _value(trial_loss) <= _value(loss) - decrease:
            return loss
        self.state["n_model_steps"] += 1
        for group, params, grads, steps in work:
            for p, g, s in zip(params, grads, steps):
                g_trial = p.grad if p.grad is not None else torch.zeros_like(g)
                d = _smb_model_step(s, g, g_trial, float(group["eta"]))  # the unchecked per-step path
                # The model step is taken from x, and the parameter currently sits at x + s.
                p.add_(d - s)
        return loss

    @staticmethod
    def _restore(work, starts) -> None:
        """Put every parameter back at its starting point ``x`` and its gradient back to ``g``."""
        for (_, params, grads, _), xs in zip(work, starts):
            for p, g, x in zip(params, grads, xs):
                p.copy_(x)
                p.grad = g
