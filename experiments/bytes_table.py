"""Bytes per round of every method on a dataset, counted from what travels (no training).

    python experiments/bytes_table.py --dataset ml-100k --data-dir ../shared/data

Each method at its validation-chosen point (``docs/results/study_<dataset>/study_chosen.json``,
else its reference values), seed 0, round 1: the round's chunks are packed as ``feddmr train``
packs them and counted by ``federated/communication.py`` (sparse uploads: the rows a client's
examples reach, with their ids, and the dense leaves; downloads: the global shared params to
every sampled client). Writes ``docs/results/bytes_<dataset>.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))    # experiments/ is not a package
from runs_io import write_rows  # noqa: E402
from server_opt_table import MB, round_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("feddmr", "fedmf", "fedncf", "pfedrec", "fedrap")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    chosen_file = ROOT / "docs/results" / f"study_{args.dataset}" / "study_chosen.json"
    chosen = json.loads(chosen_file.read_text()) if chosen_file.is_file() else {}
    rows = []
    for method in METHODS:
        settings = chosen.get(method, {}).get("settings", {})
        up, down = round_bytes(method, settings, [0], 1, args.data_dir, args.dataset)[1]
        rows.append({"dataset": args.dataset, "method": method,
                     "point": ",".join(f"{k}={v}" for k, v in sorted(settings.items()))
                     or "reference", "round": 1, "upload_mb": up / MB, "download_mb": down / MB})
        print(f"{method}: upload {up / MB:.1f} MB, download {down / MB:.1f} MB per round",
              file=sys.stderr)
    write_rows(ROOT / "docs/results" / f"bytes_{args.dataset}.csv", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
