"""A progress line per finished round of a run, on stderr, named after the run.

``train(progress=False)`` prints nothing while it runs (a FedDMR run on ml-100k: minutes of
silence); ``train(progress=True)`` prints unnamed lines, and on a terminal rewrites one in
place. The experiment scripts run many runs in a row, so :class:`RoundLines` follows the
run's ``metrics.jsonl`` (train() appends one record per round) from a background thread and
prints, for every new record::

    ml-100k fedmf default seed 0: round 3/20 loss 0.4123 val hr@10 0.4512 (1.2 s/round, ETA 20 s)
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import threading
from pathlib import Path


class RoundLines:
    """Context manager: while it is open, one stderr line per round appended to ``path``.

    Args:
      name: the run's name (what every line starts with).
      path: the run's ``metrics.jsonl``.
      total: the run's ``train.rounds``.
      interval: seconds between reads of the file.

    Rounds already in the file when it opens (a resumed run) are not printed again; the
    rounds written since the last read are printed when it closes.
    """

    def __init__(self, name: str, path: Path, total: int, interval: float = 1.0):
        self.name, self.path, self.total, self.interval = name, Path(path), total, interval
        self.last = 0
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"rounds {name}", daemon=True)

    def records(self) -> list[dict]:
        """The complete records in the file (a line still being written is left out)."""
        try:
            text = self.path.read_text()
        except OSError:
            return []
        lines = text.split("\n")[:-1]          # the last piece has no newline yet
        return [json.loads(line) for line in lines if line.strip()]

    def line(self, record: dict) -> str:
        """The progress line of one metrics.jsonl record."""
        r = record["round"]
        loss = record["train_loss"]     # None: no upload accepted in that round
        text = (f"{self.name}: round {r}/{self.total} "
                + ("no upload accepted" if loss is None else f"loss {loss:.4f}"))
        if "val" in record:
            text += f" val hr@10 {record['val'].get('hr@10', math.nan):.4f}"
        if "seconds" in record:
            steady = self.seconds[1:]          # the first round compiles
            eta = statistics.median(steady) * (self.total - r) if steady else None
            text += f" ({record['seconds']:.1f} s/round"
            text += f", ETA {eta:.0f} s)" if eta is not None and r < self.total else ")"
        return text

    def poll(self) -> None:
        """Prints the rounds written since the last call."""
        for record in self.records():
            if record["round"] > self.last:
                self.last = record["round"]
                self.seconds.append(float(record.get("seconds", 0.0)))
                print(self.line(record), file=sys.stderr, flush=True)

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except (ValueError, KeyError, TypeError):   # a record of another shape: no line
                continue

    def __enter__(self) -> RoundLines:
        self.last = max((r["round"] for r in self.records()), default=0)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()
