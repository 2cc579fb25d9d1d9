"""Helpers shared by the benchmark scripts (not part of the package).

Timing of one round (lazy as ``train`` runs it, or planned first); the
machine/device description; peak-memory readers; config overrides from the
command line; and the common output (a table, a JSON file, and the same JSON
object as the last stdout line).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np

from feddmr_jax import config as config_lib
from feddmr_jax.config import RunConfig
from feddmr_jax.federated.algorithm import FedState, RoundStats
from feddmr_jax.federated.parallel import ChunkData
from feddmr_jax.federated.rounds import iter_round, plan_round
from feddmr_jax.federated.sampling import sample_clients
from feddmr_jax.train import Experiment

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"      # committed figures: written only with --save
SCRATCH = ROOT / "runs" / "bench"              # default output (git-ignored): trying a benchmark
                                               # leaves the tree clean


def default_data_dir() -> str:
    """``$FEDDMR_DATA_DIR``, else ``shared/data`` next to the checkout (or inside it)."""
    if "FEDDMR_DATA_DIR" in os.environ:
        return os.environ["FEDDMR_DATA_DIR"]
    for folder in (ROOT.parent / "shared" / "data", ROOT / "shared" / "data"):
        if folder.is_dir():
            return str(folder)
    return str(ROOT.parent / "shared" / "data")


def arg_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser: first docstring line as description, the rest as epilog."""
    return argparse.ArgumentParser(description=doc.splitlines()[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="\n".join(doc.splitlines()[1:]))


def add_round_source_args(p: argparse.ArgumentParser) -> None:
    """--dataset, --data-dir, --clients-per-round, --one-class (bench_round, bench_flops)."""
    p.add_argument("--dataset", default="ml-100k", help="dataset (default ml-100k)")
    p.add_argument("--data-dir", default=default_data_dir())
    p.add_argument("--clients-per-round", type=int, default=None, help="default: all clients")
    p.add_argument("--one-class", type=int, default=None, metavar="K",
                   help="train only K fixed clients of the most populous shape class")


def add_output_args(p: argparse.ArgumentParser, name: str) -> None:
    """--out PATH and --save (write the committed ``benchmarks/results/<name>.json``)."""
    p.add_argument("--out", default=None,
                   help=f"JSON path (default: runs/bench/{name}.json, a git-ignored scratch "
                        f"file; with --save: benchmarks/results/{name}.json)")
    p.add_argument("--save", action="store_true",
                   help="record the figures in benchmarks/results/ (committed files)")


def default_out(name: str, save: bool = False) -> str:
    """``benchmarks/results/<name>.json`` with ``save``, else the scratch ``runs/bench/``."""
    return str((RESULTS if save else SCRATCH) / f"{name}.json")


# ---------------------------------------------------------------- machine

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict[str, Any]:
    """What ran the benchmark: JAX backend and device, host CPU and load."""
    dev = jax.devices()[0]
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {"backend": jax.default_backend(), "device": dev.device_kind,
            "device_count": jax.device_count(),
            "host": f"{_cpu_model()} x{os.cpu_count()} cpus",
            "load_avg_1min": load, "jax": jax.__version__}


# ---------------------------------------------------------------- memory

def proc_status_mb(field: str) -> float | None:
    """A ``/proc/self/status`` memory field (``VmHWM``, ``VmRSS``) in MB, or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Resets this process's peak RSS (``VmHWM``), Linux >= 4.0; False if not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def device_memory_mb() -> dict[str, float]:
    """Peak and current bytes in use on device 0 (empty where the backend has no stats)."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # noqa: BLE001 - some backends raise instead of returning None
        stats = {}
    out = {}
    for key, name in (("peak_bytes_in_use", "device_peak_mb"),
                      ("bytes_in_use", "device_in_use_mb"),
                      ("bytes_limit", "device_limit_mb")):
        if key in stats:
            out[name] = round(stats[key] / 2**20, 1)
    return out


# ---------------------------------------------------------------- configs

def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(text: str | None) -> dict[str, Any]:
    """``"attention=false,dim=16"`` -> ``{"attention": False, "dim": 16}``."""
    out: dict[str, Any] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise SystemExit(f"expected key=value, got {part!r}")
        key, value = part.split("=", 1)
        out[key.strip()] = _parse_value(value.strip())
    return out


def with_overrides(cfg: RunConfig, *, source: str = "command line",
                   **sections: dict[str, Any]) -> RunConfig:
    """``cfg`` with ``{section: {key: value}}`` applied (type-checked by the config module)."""
    sections = {k: v for k, v in sections.items() if v}
    return config_lib.apply_overrides(cfg, sections, source=source) if sections else cfg


def replace(cfg: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """``dataclasses.replace`` on sections: ``replace(cfg, model={"attention": False})``."""
    return dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **values)
                                       for name, values in sections.items()})


# ---------------------------------------------------------------- timing

class RoundTiming(NamedTuple):
    """Seconds of one round, in two parts that add up to its wall time.

    Eager rounds (``timed_round(lazy=False)``): ``plan_s`` packs every chunk
    first, ``train_s`` then trains and aggregates. Lazy rounds (as ``train``
    runs them): ``plan_s`` is the host's packing time spent *inside* the
    round (chunks packed while the device trains earlier ones) and ``train_s``
    the rest of the round's wall time (dispatch, waiting for the device).
    """

    plan_s: float
    train_s: float
    stats: RoundStats

    @property
    def total_s(self) -> float:
        return self.plan_s + self.train_s


class TimedIterator:
    """Wraps an iterator and sums the seconds spent producing its items (``seconds``)."""

    def __init__(self, items):
        self._items, self.seconds = iter(items), 0.0

    def __iter__(self):
        return self

    def __next__(self):
        t = time.perf_counter()
        try:
            return next(self._items)
        finally:
            self.seconds += time.perf_counter() - t


def participants_of(exp: Experiment, round_index: int) -> np.ndarray:
    return sample_clients(exp.keys["sample"], round_index, exp.split.num_users,
                          exp.clients_per_round)


def timed_round(exp: Experiment, state: FedState, round_index: int,
                participants: np.ndarray | None = None, *, lazy: bool = True,
                per_chunk: Callable[[ChunkData], ChunkData] | None = None
                ) -> tuple[FedState, RoundTiming]:
    """One round, timed (see :class:`RoundTiming`).

    Args:
      exp: the experiment.
      state: the state (donated).
      round_index: the round (seeds sampling, negatives and client keys).
      participants: train these clients instead of the round's sample.
      lazy: pack chunks lazily as :func:`feddmr_jax.train.run_round` does
        (``iter_round``: host packing overlaps the device's training), or the
        whole plan first (``plan_round``; training then timed alone, e.g. for
        FLOP rates).
      per_chunk: applied to each packed chunk before training (counted as
        packing), e.g. dropping padding clients for the per-client loop.
    """
    if participants is None:
        participants = participants_of(exp, round_index)
    key = jax.random.fold_in(exp.keys["train"], round_index)
    t0 = time.perf_counter()
    if lazy:
        packed = iter_round(exp.planner, participants, round_index)
        chunks = TimedIterator(packed if per_chunk is None else map(per_chunk, packed))
        state, stats = exp.algorithm.apply(state, chunks, key)
        jax.block_until_ready((state.shared, state.private_store))
        wall = time.perf_counter() - t0
        return state, RoundTiming(chunks.seconds, wall - chunks.seconds, stats)
    chunks = plan_round(exp.planner, participants, round_index)
    if per_chunk is not None:
        chunks = [per_chunk(c) for c in chunks]
    t1 = time.perf_counter()
    state, stats = exp.algorithm.apply(state, chunks, key)
    jax.block_until_ready((state.shared, state.private_store))
    return state, RoundTiming(t1 - t0, time.perf_counter() - t1, stats)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def rounded(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}") if np.isfinite(x) else x


def rounded_tree(tree, digits: int = 4):
    """Every float of a nested dict/list rounded to ``digits`` significant digits."""
    if isinstance(tree, dict):
        return {k: rounded_tree(v, digits) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [rounded_tree(v, digits) for v in tree]
    if isinstance(tree, float):
        return rounded(tree, digits)
    return tree


# ---------------------------------------------------------------- output

def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain fixed-width table (first column left-aligned, the rest right-aligned)."""
    cells = [[str(h) for h in header]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if not np.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return "" if v is None else str(v)


def emit(figures: dict[str, Any], out: str | os.PathLike) -> None:
    """Writes ``figures`` to ``out`` and prints it as the last stdout line."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written {path}")
    print(json.dumps(figures), flush=True)
