"""The signal a trial raises when the search prunes it.

A user's trial function calls ``report(epoch, **metrics)``; when the search's pruner
(or early stopping) decides the trial is not worth finishing, ``report`` raises
:class:`TrialPruned` and the trial ends with status ``pruned``. A trial function may
catch it to clean up, and must then raise it again.

Example:
    >>> from trials import TrialPruned
    >>> try:
    ...     raise TrialPruned(3)
    ... except TrialPruned as stop:
    ...     stop.epoch
    3
"""

from __future__ import annotations

__all__ = ["TrialPruned"]


class TrialPruned(Exception):  # noqa: N818 - the name Optuna and Ray Tune users know
    """Raised by ``report`` when the trial is pruned; ``epoch`` is the last one reported."""

    def __init__(self, epoch: int | None = None) -> None:
        super().__init__(f"pruned after epoch {epoch}" if epoch is not None else "pruned")
        self.epoch = epoch
