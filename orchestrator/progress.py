"""Progress display for long work.

On a terminal, a live line (rich) shows the stage, the elapsed time and the latest status
(e.g. make's last compiled file and a file count). Elsewhere (CI, pipes), plain timestamped
lines are printed at each phase change and at most every ``interval`` seconds for status
updates, so logs stay short but a hang is still visible.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.status import Status

_console = Console(stderr=True, highlight=False)


def _interactive() -> bool:
    if os.environ.get("MMLAB_PROGRESS") == "plain" or os.environ.get("CI"):
        return False
    return sys.stderr.isatty()


def info(message: str) -> None:
    """A one-off line on stderr (never mixed into stdout results)."""
    if _interactive():
        _console.print(f"[bold cyan]mmlab[/] {message}", markup=True)
    else:
        print(f"[{time.strftime('%H:%M:%S')}] mmlab: {message}", file=sys.stderr, flush=True)


class Phase:
    """A named long step; call :meth:`update` with status text as work proceeds."""

    def __init__(self, stage: str, what: str, interval: float = 15.0):
        self.stage = stage
        self.what = what
        self.start = time.monotonic()
        self.interval = interval
        self._last_print = 0.0
        self._status: Status | None = None
        self.last = ""

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def _line(self, text: str) -> str:
        return f"{self.stage}: {self.what} [{self.elapsed:5.0f}s] {text}".rstrip()

    def update(self, text: str) -> None:
        self.last = text
        if self._status is not None:
            self._status.update(self._line(text))
        elif time.monotonic() - self._last_print >= self.interval:
            self._last_print = time.monotonic()
            info(self._line(text))


@contextmanager
def phase(stage: str, what: str, interval: float = 15.0) -> Iterator[Phase]:
    p = Phase(stage, what, interval)
    if _interactive():
        p._status = _console.status(p._line(""), spinner="dots")
        p._status.start()
    else:
        info(p._line("started"))
        p._last_print = time.monotonic()
    ok = False
    try:
        yield p
        ok = True
    finally:
        if p._status is not None:
            p._status.stop()
        info(f"{stage}: {what} {'done' if ok else 'FAILED'} in {p.elapsed:.1f}s")
