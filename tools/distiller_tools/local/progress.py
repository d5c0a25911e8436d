"""`distiller run` progress on stderr: a line per wave, or one line redrawn in place on a terminal."""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import time
from dataclasses import dataclass
from typing import IO


@dataclass(frozen=True)
class WaveStatus:
    """Where a run stands after a wave (work until nothing was left to receive)."""

    delivered: int
    waiting: int
    next_due: float | None
    """When the earliest waiting retry is due (seconds since the epoch)."""
    dead_lettered: int
    parked: int = 0

    def describe(self, now: float, *, terse: bool = False) -> str:
        """`delivered D, waiting for retry W (next due HH:MM:SS UTC, in Ss), dead-lettered X[, parked P]`;
        `terse` (a terminal line) says `waiting W (next HH:MM:SS UTC, in Ss)`."""
        waiting = f"waiting {self.waiting}" if terse else f"waiting for retry {self.waiting}"
        if self.waiting and self.next_due is not None:
            due = dt.datetime.fromtimestamp(self.next_due, dt.UTC).strftime("%H:%M:%S")
            next_due = "next" if terse else "next due"
            waiting += f" ({next_due} {due} UTC, in {max(0, math.ceil(self.next_due - now))}s)"
        parked = f", parked {self.parked}" if self.parked else ""
        return f"delivered {self.delivered}, {waiting}, dead-lettered {self.dead_lettered}{parked}"


class Progress:
    """`distiller run` progress: a line per wave, or, on a terminal, one line redrawn in place (\\r)
    with a bar of settled (delivered or dead-lettered) deliveries and a countdown to the next retry,
    cut to the terminal's width (a wrapped line could not be redrawn)."""

    BAR_WIDTH = 10

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.tty = stream is not None and stream.isatty()
        self.width = _terminal_width(stream) if self.tty else 0
        self.waves = 0
        self._status: WaveStatus | None = None
        self._shown = ""
        self._drawn_second = -1

    def wave(self, status: WaveStatus) -> None:
        """A wave ended: say where the run stands."""
        if self.stream is None:
            return
        self.waves += 1
        self._status = status
        if self.tty:
            self._draw(time.time())
        else:
            self.stream.write(f"distiller run: wave {self.waves}: {status.describe(time.time())}\n")
            self.stream.flush()

    def tick(self) -> None:
        """While waiting for retries: a terminal's countdown moves once a second."""
        now = time.time()
        if self.tty and self._status is not None and int(now) != self._drawn_second:
            self._draw(now)

    def clear(self) -> None:
        """A wave starts: take the terminal line away, so what the handlers log starts on a line of its own."""
        if self.tty and self._shown:
            self._write("\r" + " " * len(self._shown) + "\r")
            self._shown = ""

    def finish(self) -> None:
        """The run is over: leave the terminal line in place, ended."""
        if self.tty and self._status is not None:
            self._draw(time.time())
            self._write("\n")
            self._shown = ""

    def _draw(self, now: float) -> None:
        assert self._status is not None
        status = self._status
        settled = status.delivered + status.dead_lettered
        known = settled + status.waiting
        filled = round(self.BAR_WIDTH * settled / known) if known else self.BAR_WIDTH
        line = f"[{'#' * filled}{'.' * (self.BAR_WIDTH - filled)}] {status.describe(now, terse=True)}"
        line = line[: self.width - 1]
        self._write("\r" + line.ljust(len(self._shown)))
        self._shown = line
        self._drawn_second = int(now)

    def _write(self, text: str) -> None:
        assert self.stream is not None
        self.stream.write(text)
        self.stream.flush()


def _terminal_width(stream: IO[str] | None) -> int:
    """Columns of the terminal `stream` writes to (`$COLUMNS`, else 80, when it cannot say)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns if stream is not None else 80
    except (OSError, ValueError):  # not a file descriptor (io.UnsupportedOperation is both)
        return shutil.get_terminal_size((80, 24)).columns
