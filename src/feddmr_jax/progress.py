"""Progress lines of a training run on stderr, with an ETA from steady-state rounds."""

from __future__ import annotations

import math
import statistics
import sys
import time


class Progress:
    """Status lines on stderr: what is being built and compiled, then one line per round.

    On a terminal the round line is rewritten in place; otherwise (logs) one
    line per evaluated round and the last. The ETA uses the rounds of this
    process after its first (which compiles), less any compile time in them.
    """

    def __init__(self, first: int, total: int, enabled: bool):
        self.first, self.total, self.enabled = first, total, enabled
        self.tty = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()
        self.steady: list[float] = []
        self._open_line = False

    def note(self, text: str) -> None:
        """A message on a line of its own."""
        if self.enabled:
            print(("\n" if self._open_line else "") + text, file=sys.stderr, flush=True)
            self._open_line = False

    def eta(self, r: int) -> float | None:
        """Seconds left after round ``r``; None before a steady-state round was seen."""
        if not self.steady:
            return None
        return statistics.fmean(self.steady) * (self.total - r)

    def update(self, r: int, seconds: float, compile_seconds: float, loss: float,
               val: dict | None) -> None:
        """Reports round ``r``, which took ``seconds`` of which ``compile_seconds`` compiling."""
        if r == self.first:
            self.note(f"first round done in {seconds:.1f}s (compiling {compile_seconds:.1f}s)")
        else:
            self.steady.append(max(seconds - compile_seconds, 0.0))
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = self.eta(r)
        done = int(20 * r / self.total)
        line = (f"round {r}/{self.total} [{'#' * done}{'.' * (20 - done)}] "
                f"{elapsed:.0f}s ETA {'--' if eta is None else f'{eta:.0f}s'} loss {loss:.4f}")
        if val:
            line += f" val hr@10 {val.get('hr@10', math.nan):.4f} auc {val.get('auc', math.nan):.4f}"
        if self.tty:
            last = r == self.total
            print("\r" + line + "\033[K", end="\n" if last else "", file=sys.stderr, flush=True)
            self._open_line = not last
        elif val or r == self.total:
            print(line, file=sys.stderr, flush=True)
