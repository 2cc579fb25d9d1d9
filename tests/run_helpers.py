"""Independent expectations about a finished run, read from its files."""

from __future__ import annotations

import os

import json
from pathlib import Path

# Ties in the selection metric go to the LATEST round (train.py selects with
# ``>=``). Until the best-round-ties change is merged train.py keeps the
# earliest one, so an assertion that meets a tie fails there: that is this
# constant's doing, not the run's.
LATEST_ON_TIES = True


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl``, one per round."""
    text = (Path(run_dir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def expected_best_round(rows: list[dict], metric: str) -> int:
    """The round whose validation ``metric`` is the largest (latest among ties).

    Args:
      rows: metrics.jsonl rows; rows without a ``val`` entry (rounds that
        were not evaluated) are ignored.
      metric: the selection metric (``train.select_metric``).

    Returns:
      The round index.
    """
    evaluated = [(r["val"][metric], r["round"]) for r in rows if "val" in r]
    if not evaluated:
        raise AssertionError("no evaluated round in metrics.jsonl")
    best = max(value for value, _ in evaluated)
    tied = [rnd for value, rnd in evaluated if value == best]
    return max(tied) if LATEST_ON_TIES else min(tied)


def assert_best_round(actual: int, rows: list[dict], metric: str) -> None:
    """``actual`` is :func:`expected_best_round`; a mismatch on a tie says so."""
    expected = expected_best_round(rows, metric)
    if actual != expected:
        values = [(r["round"], r["val"][metric]) for r in rows if "val" in r]
        tie = sum(v == max(x for _, x in values) for _, v in values) > 1
        raise AssertionError(
            f"best_round {actual}, expected {expected} from val {metric} {values}"
            + (" (a tie: the latest round wins once train.py selects with >=, "
               "see run_helpers.LATEST_ON_TIES)" if tie else ""))


def assert_best_round_of(actual: int, run_dir: str | Path) -> None:
    """:func:`assert_best_round` for a run folder, with its own select_metric."""
    config = json.loads((Path(run_dir) / "config.json").read_text())
    assert_best_round(actual, read_metrics(run_dir), config["train"]["select_metric"])


def subprocess_env(*xla_flags: str) -> dict[str, str]:
    """``os.environ`` for a subprocess, its ``XLA_FLAGS`` cut to the suite's compile
    settings (tests/conftest.py's ``TEST_XLA_FLAGS``) plus ``xla_flags``: a device count set
    by whoever runs the suite must not reach a test that chooses its processes' devices."""
    keep = [f for f in os.environ.get("XLA_FLAGS", "").split()
            if f.startswith(("--xla_backend_optimization_level", "--xla_cpu_use_fusion_emitters"))]
    env = dict(os.environ)
    flags = " ".join([*keep, *xla_flags])
    if flags:
        env["XLA_FLAGS"] = flags
    else:
        env.pop("XLA_FLAGS", None)
    return env
