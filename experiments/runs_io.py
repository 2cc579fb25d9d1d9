"""What the experiment scripts share besides the run folder: configs from flat settings,
the ``--set`` / ``--seeds`` flags, CSV rows with a status, run curves and the plot backend.

``compare.py`` and ``feddmr_study.py`` import these (``experiments/`` is not a package: a
script puts its own folder on ``sys.path``); the run folder itself is ``run_folder.py``.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from feddmr_jax import config as config_lib

METRICS = ("hr@10", "ndcg@10", "auc", "precision@10")
OK, DIVERGED = "ok", "diverged"          # the ``status`` column of a run's CSV row


def nest(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"section.key": value}`` as ``{section: {key: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        out.setdefault(section, {})[name] = value
    return out


def run_config(model: str, settings: dict[str, Any], *, dataset: str, seed: int, rounds: int,
               data_dir: str | None, extra: dict[str, Any],
               source: str) -> config_lib.RunConfig:
    """A run's validated config: ``model``'s reference values, the scripts' fixed values
    (validation every round, one checkpoint kept), ``extra`` (``--set``), then ``settings``.

    Args:
      model: ``train.model``.
      settings: ``{"section.key": value}``, applied last.
      dataset, seed, rounds, data_dir: ``data.dataset``, ``train.seed``, ``train.rounds``,
        ``data.data_dir`` (None: not set, ``$FEDDMR_DATA_DIR`` or the cache).
      extra: ``{"section.key": value}`` of ``--set``.
      source: what a config error names.

    Raises:
      ConfigError: an unknown key or invalid value.
    """
    raw = nest({"data.dataset": dataset, "train.model": model, "train.rounds": rounds,
                "train.seed": seed, "train.eval_every": 1, "train.keep_checkpoints": 1,
                **({"data.data_dir": data_dir} if data_dir else {}), **extra, **settings})
    cfg = config_lib.build_config(raw, source=source)
    cfg.validate()
    return cfg


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set SECTION.KEY=VALUE`` flags as ``{"section.key": value}`` (JSON values, else text)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: ``N`` (seeds 0..N-1) or a comma list."""
    parts = [int(p) for p in text.split(",") if p.strip()]
    return list(range(parts[0])) if len(parts) == 1 else parts


def diverged_fields(columns: list[str], message: str) -> dict[str, Any]:
    """A diverged run's cells: the status, every one of ``columns`` empty, the message."""
    return {"status": DIVERGED, **dict.fromkeys(columns, ""), "message": message}


def is_ok(row: dict) -> bool:
    """Whether a CSV row is a run that finished (rows without a status column did)."""
    return row.get("status", OK) in (OK, "")


def write_rows(path: Path, rows: list[dict], digits: int | None = None) -> None:
    """CSV of ``rows``; columns: the union, in order of first appearance. No rows: no file.

    ``digits``: write floats with that many significant digits (per-round curves: 6 keep
    every HR@10 of a dataset of up to 10^5 users apart and halve the file), else in full.
    """
    if not rows:
        return
    if digits is not None:
        rows = [{k: (f"{v:.{digits}g}" if isinstance(v, float) else v) for k, v in r.items()}
                for r in rows]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def read_records(run_dir: Path) -> list[dict]:
    """The rounds of a run's ``metrics.jsonl`` (none when it has no such file)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def val_curve(run_dir: Path) -> list[tuple[int, float]]:
    """``(round, validation HR@10)`` of every evaluated round of a run."""
    return [(r["round"], r["val"]["hr@10"]) for r in read_records(run_dir) if "val" in r]


def pyplot(what: str):
    """``matplotlib.pyplot`` on the Agg backend, or None (and a note on stderr) without it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed (pip install .[plot]): no {what}", file=sys.stderr)
        return None
    return plt


def seed_stats(runs: list[dict]) -> dict[str, float]:
    """``{split}_{metric}_mean`` and ``_std`` over ``runs`` (one CSV row per seed) for the
    validation and test columns of every metric of :data:`METRICS` (std 0 for one run)."""
    out = {}
    for split in ("val", "test"):
        for m in METRICS:
            values = [float(r[f"{split}_{m}"]) for r in runs]
            out[f"{split}_{m}_mean"] = statistics.mean(values)
            out[f"{split}_{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out
