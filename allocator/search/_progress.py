"""The live progress line of a search, for the command line (the library only reports).

The controller calls ``on_progress(status)`` with a :class:`SearchStatus` whenever a
trial starts or ends and about once a second in between; :class:`ProgressLine` draws it
on stderr: rewritten in place on a terminal, one line per finished trial otherwise.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

__all__ = ["ProgressLine", "SearchStatus"]


@dataclass(frozen=True)
class SearchStatus:
    """Where a search stands: counts, the Pareto front's size, the last trial that ended."""

    study: str
    target: int
    done: int
    running: int
    complete: int
    failed: int
    pruned: int
    pareto_size: int
    elapsed_s: float
    last: str = ""  # "trial 7 complete: val_accuracy=0.81 trainable_params=1234" or ""
    finished: bool = False

    def line(self) -> str:
        """One line, e.g. ``demo: 7/24 done, 2 running, 1 failed, pareto 4, 0:42``."""
        minutes, seconds = divmod(int(self.elapsed_s), 60)
        text = (
            f"{self.study}: {self.done}/{self.target} done, {self.running} running, "
            f"{self.failed} failed, pareto {self.pareto_size}, {minutes}:{seconds:02d}"
        )
        if self.pruned:
            text = text.replace(" failed,", f" failed, {self.pruned} pruned,")
        return text


class ProgressLine:
    """Draw :class:`SearchStatus` on a stream (stderr by default).

    Example:
        >>> import io
        >>> out = io.StringIO()
        >>> ProgressLine(out)(SearchStatus("s", 4, 1, 1, 1, 0, 0, 1, 3.0, last="trial 0 complete"))
        >>> out.getvalue()
        's: 1/4 done, 1 running, 0 failed, pareto 1, 0:03  (trial 0 complete)\\n'
    """

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._live = self._stream.isatty() if live is None else live
        self._last_done = -1
        self._width = 0
        self._last_draw = 0.0

    def __call__(self, status: SearchStatus) -> None:
        text = status.line() + (f"  ({status.last})" if status.last else "")
        if self._live:
            pad = " " * max(0, self._width - len(text))
            self._stream.write("\r" + text + pad + ("\n" if status.finished else ""))
            self._width = len(text)
            self._stream.flush()
        elif status.done != self._last_done or status.finished:
            if status.finished and status.done == self._last_done:
                return
            self._stream.write(text + "\n")
            self._stream.flush()
        self._last_done = status.done
        self._last_draw = time.monotonic()
