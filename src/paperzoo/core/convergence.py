"""Shared pieces of every iterative solver (optim, transport, ...): the non-convergence warning and NaN guard.

Every solver returns its own ``NamedTuple`` (fields ``x``, ``n_iter``, ``converged``,
histories as tensors, then method-specific diagnostics). What they share lives here so that the message
format is the same everywhere::

    ConvergenceWarning: solve_prospect did not converge in 200 iterations (tol=1e-08); increase max_iter
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside paperzoo (the user's call), so that warnings point there
    through any number of paperzoo frames (the ``accepts`` wrapper, a solver calling a solver)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGE_ROOT):
        frame, level = frame.f_back, level + 1
    return level

__all__ = ["ConvergenceWarning", "warn_not_converged", "warn_stalled", "check_finite_iterate"]


class ConvergenceWarning(RuntimeWarning):
    """An iterative solver stopped at its iteration budget before meeting ``tol``."""


def warn_not_converged(name: str, max_iter: int, tol: float, knob: str, *, stacklevel: int | None = None) -> None:
    """Warn that ``name`` used all ``max_iter`` iterations without meeting ``tol``; ``knob`` says what to turn.

    The warning points at the user's call (``stacklevel=None``) unless a ``stacklevel`` is given."""
    warnings.warn(f"{name} did not converge in {max_iter} iterations (tol={tol}); {knob}", ConvergenceWarning,
                  stacklevel=stacklevel or _caller_stacklevel())


def warn_stalled(name: str, iteration: int, residual: float, tol: float, dtype: torch.dtype, *,
                 stacklevel: int | None = None) -> None:
    """Warn that ``name`` stopped early because its steps fell below ``dtype``'s resolution before meeting ``tol``
    (more iterations would not help: a wider dtype or a larger tol would)."""
    warnings.warn(f"{name} stalled at iteration {iteration} with residual {residual:.3g} > tol={tol}: its steps "
                  f"fell below {dtype}'s resolution; use float64 or a larger tol", ConvergenceWarning,
                  stacklevel=stacklevel or _caller_stacklevel())


def check_finite_iterate(name: str, x: torch.Tensor, iteration: int, knob: str) -> None:
    """Raise ``FloatingPointError`` when ``x`` holds NaN or inf (a diverged solver never returns silently)."""
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(f"{name} produced NaN or inf at iteration {iteration}; {knob}")
