"""The ml-100k study of issue 13 and its session-5 follow-ups, in the per-dataset layout of
issue 24 (``docs/results/study_ml-100k/``), so that ``results_page.py`` reads it like the
other datasets until the ml-100k study is run again with ``feddmr_study.py``.

    python experiments/convert_ml100k_study.py       # docs/results/feddmr_study* -> study_ml-100k

What it does: every row gets ``dataset`` = ml-100k and ``study`` (which of the three studies
it comes from); the confirmation's stage ``confirm100`` becomes ``confirm`` (its rounds are
in the ``rounds`` column); the follow-ups' copies of runs of the first study (FedDMR's
``reference`` of session 5, FedNCF's first choice in its follow-up: the same configs, the
same runs) are left out; ``study_chosen.json`` holds each method's final choice (FedDMR and
FedNCF: their follow-ups'), with its number of screen points; ``study_rounds.csv`` is
computed (``study_rounds.py``); curves are kept for the confirmation runs only (the screen
runs' curves stay in the source folders). The figures are not changed. Point ids and ``point`` tags are
relative to the defaults of their study's code (the knob columns hold the resolved values).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs_io import write_rows  # noqa: E402
from study_knobs import BASELINES  # noqa: E402
from study_rounds import rounds_rows  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
# (folder, study label, point ids left out: copies of the first study's runs)
SOURCES = (("feddmr_study", "issue13", ()),
           ("feddmr_study_s5", "s5-feddmr", ("reference",)),
           ("fedncf_followup_s5", "s5-fedncf", ("p9b6f7d5b73",)))
DATASET = "ml-100k"


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _converted(rows: list[dict], study: str, dropped: tuple[str, ...]) -> list[dict]:
    out = []
    for r in rows:
        if r["point_id"] in dropped:
            continue
        stage = "confirm" if r["stage"].startswith("confirm") else r["stage"]
        out.append({"dataset": DATASET, **r, "stage": stage, "study": study})
    return out


def convert(results: Path, target: Path) -> None:
    """Writes ``target``'s CSVs and JSON from the three studies under ``results``."""
    runs, curves, chosen, screens = [], [], {}, {}
    for folder, study, dropped in SOURCES:
        src = results / folder
        new = _converted(_read(src / "study_runs.csv"), study, dropped)
        runs += new
        curves += [c for c in _converted(_read(src / "study_curves.csv"), study, dropped)
                   if c["stage"] == "confirm"]          # as feddmr_study.py writes them
        for method, pick in json.loads((src / "study_chosen.json").read_text()).items():
            chosen[method] = {**pick, "study": study}          # a later study's choice wins
        for r in new:
            if r["stage"].startswith("screen"):
                screens.setdefault(r["method"], set()).add((study, r["point_id"]))
    for method, pick in chosen.items():
        pick["screen_points"] = len(screens.get(method, ()))
    for c in curves:
        c.setdefault("upload_bytes", "")
        c.setdefault("download_bytes", "")
        for key in ("train_loss", "val_hr@10"):            # floats, written to 6 digits
            c[key] = float(c[key]) if c[key] != "" else ""
    knobs = [{"dataset": DATASET, **k} for k in _read(results / SOURCES[0][0] / "study_knobs.csv")]
    target.mkdir(parents=True, exist_ok=True)
    write_rows(target / "study_runs.csv", runs)
    write_rows(target / "study_curves.csv", curves, digits=6)
    write_rows(target / "study_knobs.csv", knobs)
    picks = {m: c["point_id"] for m, c in chosen.items()}
    write_rows(target / "study_rounds.csv", rounds_rows(DATASET, curves, picks, BASELINES))
    (target / "study_chosen.json").write_text(json.dumps(chosen, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(RESULTS), help="folder of the three studies")
    p.add_argument("--out", default=str(RESULTS / f"study_{DATASET}"), help="target folder")
    args = p.parse_args(argv)
    try:
        convert(Path(args.results), Path(args.out))
    except (OSError, KeyError, json.JSONDecodeError) as e:
        print(f"convert_ml100k_study.py: error: {e}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
