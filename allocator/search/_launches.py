"""Which trial a controller may start next, under the study's launch lease.

Several controllers may run one study (see ``_sharing.py``). Holding the lease, a
controller takes over the trials of gone controllers, recounts the study from the
database, and asks Optuna for a trial claimed by itself only while the counted trials
plus the running ones are fewer than ``--trials`` (with a grid sampler: fewer than the
grid points left). Every engine launches through this one step.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from allocator.search._optuna_study import OptunaStudy
from allocator.search._recorder import Tally
from allocator.search._recovery import counted, recover
from allocator.search._sharing import ATTR_CONTROLLER, Controller
from allocator.search._store import StudyStore

if TYPE_CHECKING:
    import optuna

__all__ = ["GONE", "Launches"]

#: Why a trial of a gone controller was interrupted.
GONE = "the controller stopped while the trial ran"


class Launches:
    """The launch step of one controller on one study.

    Example:
        >>> launches = Launches(study, store, me, trials=24)  # doctest: +SKIP
        >>> trial = launches.next(tally)  # None: the study has all its trials  # doctest: +SKIP
    """

    def __init__(self, study: OptunaStudy, store: StudyStore, me: Controller, *, trials: int,
                 grid: Sequence[dict[str, Any]] | None = None, seed: int = 0) -> None:
        self.study, self.store, self.me = study, store, me
        self.trials = self.target = trials
        self.grid: list[dict[str, Any]] | None = None
        if grid is not None:
            self.grid = list(grid)
            random.Random(seed).shuffle(self.grid)
        #: Trials other live controllers run, as last read.
        self.others_running = 0

    def recover(self) -> None:
        """Fail and queue again the trials gone controllers left running (on resume)."""
        with self.me.lease():
            live = self.me.live()
            self.study.call(lambda: recover(self.study.study, self.store, reason=GONE, live=live),
                            "recover interrupted trials")

    def next(self, tally: Tally) -> optuna.Trial | None:
        """A new trial for this controller, or ``None`` if the study needs none now;
        ``tally`` is recounted from the study on the way."""
        from optuna.trial import TrialState

        with self.me.lease():
            live = self.me.live()
            self.study.call(
                lambda: recover(self.study.study, self.store, reason=GONE, live=live, repair=False),
                "recover interrupted trials",
            )
            trials = self.study.trials()
            tally.reset(trials)
            running = [t for t in trials if t.state == TrialState.RUNNING]
            self.others_running = sum(
                t.user_attrs.get(ATTR_CONTROLLER) != self.me.id for t in running
            )
            n_waiting = sum(t.state == TrialState.WAITING for t in trials)
            target, params = self.trials, None
            if self.grid is not None:
                seen = [t.params for t in trials if counted(t) or not t.state.is_finished()]
                left = [p for p in self.grid if p not in seen]
                target = min(target, tally.done + len(running) + n_waiting + len(left))
                if left and not n_waiting:
                    params = left[0]
            self.target = target
            if tally.done + len(running) >= target:
                return None
            return self.study.ask(controller=self.me.id, params=params, known=len(trials))
