"""The checkpoint protocol shared by the training-time trackers (tiny_subspace, outlier_eigenspaces)."""

from __future__ import annotations


class CheckpointTracker:
    """Call ``tracker(step)`` after every optimizer step: it measures when ``step`` is a multiple of ``every``.

    Subclasses set ``self.every`` and ``self._records`` (a list, one entry per measurement) and implement
    ``_measure(step)``.
    """

    every: int
    _records: list

    def __call__(self, step: int) -> bool:
        """Measure if ``step`` (an int ``>= 0``) is divisible by ``every``; returns whether it measured."""
        _check_step(step)
        if step % self.every:
            return False
        self._measure(step)
        return True

    def record(self, step: int) -> None:
        """Measure now and file it under ``step`` (an int ``>= 0``), whatever ``every`` says."""
        _check_step(step)
        self._measure(step)

    def __len__(self) -> int:
        return len(self._records)

    def _measure(self, step: int) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError


def _check_step(step) -> None:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
