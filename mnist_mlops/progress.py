"""Progress of long work as one plain line per report, which a node prints and the runner recognises.

A node reports with `Progress` (train per epoch, ingest per step on large sources, batch_score per
mini-batch): each report is a line such as `progress: epoch 2/3 loss 0.4100 ... 1830 img/s ETA 0:04`,
readable as it is in the node's log. The runner (`mnist_mlops.runner`) parses the lines back
(`Event.parse`) and shows them on its console as `[train] epoch 2/3 ...`: a line each where the console is
not a terminal (CI), one live bar rewritten in place where it is.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from typing import TextIO

MARK = "progress:"
LINE = re.compile(rf"^{MARK} (?P<unit>[\w-]+) (?P<done>\d+)/(?P<total>\d+)(?: (?P<figures>.*))?$")
BAR_WIDTH = 20
MIN_BAR_WIDTH = 5
"""A terminal's bar: 20 cells, fewer on a narrow terminal, none under five (the figures come first)."""


@dataclass(frozen=True)
class Event:
    """One report: `done` of `total` units of work, and the figures that go with it (already worded)."""

    unit: str
    done: int
    total: int
    figures: str = ""

    @classmethod
    def parse(cls, line: str) -> Event | None:
        """The event a node's output line reports, or None for any other line."""
        match = LINE.match(line.rstrip("\r\n"))
        if match is None:
            return None
        return cls(match["unit"], int(match["done"]), int(match["total"]), match["figures"] or "")

    def line(self) -> str:
        """As the node prints it."""
        return " ".join(filter(None, (MARK, f"{self.unit} {self.done}/{self.total}", self.figures)))

    def plain(self, label: str) -> str:
        """As a console that is not a terminal shows it."""
        return " ".join(filter(None, (f"[{label}] {self.unit} {self.done}/{self.total}", self.figures)))

    def bar(self, label: str, width: int) -> str:
        """As a terminal `width` columns wide shows it, on the line it rewrites: a bar after the count
        where there is room for one, the figures cut short where there is not."""
        count = f"[{label}] {self.unit} {self.done}/{self.total}"
        cells = min(BAR_WIDTH, width - len(self.plain(label)) - 3)
        if cells >= MIN_BAR_WIDTH:
            filled = cells * min(self.done, self.total) // max(self.total, 1)
            count += " [" + "#" * filled + "." * (cells - filled) + "]"
        return " ".join(filter(None, (count, self.figures)))[:width]


class Progress:
    """Reports `done` of `total` units as progress lines on `stream`, with the rate of `items` (images,
    files) and the time left extrapolated from the pace since `start` units were done (work resumed).
    `every_seconds` > 0 thins the reports of fast work to one per that many seconds; the first and the
    last always show."""

    def __init__(
        self,
        total: int,
        unit: str,
        *,
        items: str | None = None,
        start: int = 0,
        every_seconds: float = 0.0,
        eta: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.total, self.unit, self.items = total, unit, items
        self.start, self.every_seconds, self.eta = start, every_seconds, eta
        self.stream = stream
        self.started = time.perf_counter()
        self.reported_at: float | None = None

    def update(self, done: int, *, items: int = 0, **figures: float | int | str) -> None:
        """Report that `done` units are finished (`items` of them processed since this reporter began),
        with named figures (floats to four places)."""
        now = time.perf_counter()
        due = self.reported_at is None or now - self.reported_at >= self.every_seconds
        if not due and done < self.total:
            return
        self.reported_at = now
        elapsed = now - self.started
        words = [
            f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}"
            for name, value in figures.items()
        ]
        if self.items and items and elapsed > 0:
            words.append(f"{items / elapsed:.0f} {self.items}/s")
        worked = done - self.start
        if self.eta and done < self.total and worked > 0:
            words.append(f"ETA {clock(elapsed / worked * (self.total - done))}")
        event = Event(self.unit, done, self.total, " ".join(words))
        print(event.line(), file=self.stream or sys.stdout, flush=True)


def clock(seconds: float) -> str:
    """0:04, 12:30, 1:02:03: the time left as a person reads it."""
    minutes, whole = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{whole:02d}" if hours else f"{minutes}:{whole:02d}"
