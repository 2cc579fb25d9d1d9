"""Per-dataset presets from a study's choice: ``experiments/configs/<dataset>/<method>.toml``.

    python experiments/study_presets.py docs/results/study_lastfm-2k
    feddmr train --config experiments/configs/lastfm-2k/feddmr.toml --data-dir ../shared/data

Run after the confirmation (``experiments/feddmr_study.py``): for every searched method with
a chosen point in ``<study>/study_chosen.json`` (chosen on validation), a TOML config for
``feddmr train --config``: the dataset, the method, the confirmation's rounds, and the
settings the study chose on top of the method's reference values. The engine's defaults stay
one configuration; a preset is where a dataset's validation asked for other values. A preset
is rewritten whole; methods without a choice (skipped, diverged) get none.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feddmr_jax.errors import ConfigError  # noqa: E402
from study_knobs import KNOBS  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "configs"


def toml_value(value: Any) -> str:
    """A TOML literal of a config value (str, bool, int, float).

    Raises:
      ConfigError: None or another type (TOML has no null).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                         ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        return json.dumps(value)               # a TOML basic string is a JSON string
    raise ConfigError(f"no TOML literal for {value!r}: write this setting by hand")


def preset_text(dataset: str, method: str, choice: dict, source: str) -> str:
    """The TOML of one method's choice on ``dataset``."""
    tables: dict[str, dict[str, Any]] = {"data": {"dataset": dataset},
                                         "train": {"model": method, "rounds": choice["rounds"]}}
    for key, value in sorted(choice["settings"].items()):
        section, _, name = key.partition(".")
        tables.setdefault(section, {})[name] = value
    mean = choice.get("validation_mean", {})
    seeds = ", ".join(map(str, choice.get("seeds", [])))
    lines = [f"# {method} on {dataset}: the point experiments/feddmr_study.py chose on "
             "validation",
             f"# ({source}: point {choice['point_id']}, mean validation HR@10 "
             f"{mean.get('val_hr@10', float('nan')):.4f} / AUC {mean.get('val_auc', float('nan')):.4f}"
             f" over seeds {seeds}, {choice['rounds']} rounds).",
             "# Written by experiments/study_presets.py; the settings not named here are the "
             "method's reference values.",
             f"# feddmr train --config experiments/configs/{dataset}/{method}.toml "
             "--data-dir ../shared/data"]
    for section in ("data", "train", "model"):
        if section in tables:
            lines += ["", f"[{section}]"]
            lines += [f"{k} = {toml_value(v)}" for k, v in tables[section].items()]
    return "\n".join(lines) + "\n"


def study_dataset(study: Path) -> str:
    """The ``dataset`` column of ``study_runs.csv`` (one value).

    Raises:
      ConfigError: no such file, no column, or several datasets.
    """
    path = study / "study_runs.csv"
    if not path.is_file():
        raise ConfigError(f"{path}: not found (run experiments/feddmr_study.py first)")
    with open(path, newline="") as f:
        names = {row.get("dataset") for row in csv.DictReader(f)}
    if len(names) != 1 or None in names or "" in names:
        raise ConfigError(f"{path}: needs one value in its dataset column, got {sorted(map(str, names))}")
    return names.pop()


def write_presets(study: Path, configs: Path = CONFIGS) -> list[Path]:
    """Writes the presets of ``study``'s choices; returns the files written."""
    dataset = study_dataset(study)
    path = study / "study_chosen.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found (the confirmation writes it)")
    chosen = json.loads(path.read_text())
    written = []
    for method, choice in chosen.items():
        if method not in KNOBS or "settings" not in choice or "diverged" in choice:
            continue
        target = configs / dataset / f"{method}.toml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(preset_text(dataset, method, choice, str(path)))
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", help="the study's --out folder (study_runs.csv, study_chosen.json)")
    p.add_argument("--configs", default=str(CONFIGS),
                   help="where <dataset>/<method>.toml go (default experiments/configs)")
    args = p.parse_args(argv)
    try:
        written = write_presets(Path(args.study), Path(args.configs))
    except (ConfigError, OSError, json.JSONDecodeError) as e:
        print(f"study_presets.py: error: {e}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
