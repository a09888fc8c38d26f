"""A progress line for long evaluation runs: users done, elapsed, ETA, tokens and cost so far."""

import math
import time
from collections.abc import Callable
from typing import TextIO


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class ProgressBar:
    """Report one (method, slice) pass on a stream.

    On a terminal the line is redrawn in place; otherwise (a log file, CI) a
    line is written at most every `interval` seconds and always at the end, so
    logs stay short. The ETA extrapolates from the users done in this process
    only: users resumed from an earlier run took no time here.
    """

    def __init__(
        self,
        stream: TextIO,
        label: str,
        total: int,
        already: int = 0,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream, self.label, self.total = stream, label, total
        self.done, self.already = already, already
        self.tokens, self.cost_usd = 0, 0.0
        self.has_usage = False
        self.interval, self.clock = interval, clock
        self.started = clock()
        self.last_line = -math.inf
        self.tty = bool(getattr(stream, "isatty", lambda: False)())

    def advance(self, tokens: int | None = None, cost_usd: float | None = None) -> None:
        """Count one more finished user (and its tokens and cost, for LLM methods)."""
        self.done += 1
        if tokens is not None:
            self.has_usage = True
            self.tokens += tokens
            self.cost_usd += cost_usd or 0.0
        self.render()

    def line(self) -> str:
        """The current progress text."""
        elapsed = self.clock() - self.started
        fresh = self.done - self.already
        remaining = self.total - self.done
        eta = elapsed / fresh * remaining if fresh else math.inf
        pct = 100.0 * self.done / self.total if self.total else 100.0
        parts = [
            f"{self.label} {self.done}/{self.total} users ({pct:.0f}%)",
            f"elapsed {_duration(elapsed)}",
        ]
        if remaining:
            parts.append(f"ETA {_duration(eta)}")
        if self.has_usage:
            parts.append(f"{self.tokens:,} tokens")
            parts.append(f"${self.cost_usd:.4f}")
        return " | ".join(parts)

    def render(self, *, force: bool = False) -> None:
        """Write the line (in place on a terminal; throttled to `interval` otherwise)."""
        now = self.clock()
        finished = self.done >= self.total
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line() + ("\n" if finished else ""))
            self.stream.flush()
        elif force or finished or now - self.last_line >= self.interval:
            self.last_line = now
            print(self.line(), file=self.stream, flush=True)
