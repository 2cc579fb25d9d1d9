"""The protocol table of docs/protocol.md (section 8): PFedRec's reference setting, the
leak probe, popularity.

    python experiments/protocol_table.py --data-dir ../shared/data --out results/protocol100

Each row is one ``feddmr train`` run on ml-100k (the command is printed in the
table and saved in the CSV), 1 seed, ``--rounds`` rounds (default 100), test
metrics at the best validation round:

* ``pfedrec`` on the PFedRec reference split (``pfedrec-order``) with the
  reference protocol: ``--tie-break row --train-negatives reference
  --eval-mode local`` (docs/protocol.md);
* the same with ``--model local`` (the leak probe: PFedRec without federation),
  and both again with ``--train-negatives strict``;
* ``popularity`` (one round is enough: it does not learn; it runs
  ``--rounds 1``) under the reference and the default protocol.

Outputs: ``<out>/runs/<name>/`` (run folders; resumable: a finished run is
reused, an interrupted one continues from its checkpoint) and
``docs/results/protocol_ml-100k.csv`` with ``--save`` (else ``<out>/``).
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from pathlib import Path

from feddmr_jax import cli_flags
from feddmr_jax import config as config_lib
from feddmr_jax.errors import ConfigError
from feddmr_jax.timing import enable_compilation_cache

sys.path.insert(0, str(Path(__file__).parent))
from run_folder import RunDiverged, run_one  # noqa: E402  (experiments/ is not a package)

METRICS = ("hr@10", "ndcg@10", "auc", "precision@10")
REFERENCE = ("--tie-break", "row", "--train-negatives", "reference", "--eval-mode", "local")
STRICT = ("--tie-break", "row", "--train-negatives", "strict", "--eval-mode", "local")

# name -> (model, data folder under --data-dir, protocol flags, rounds (None: --rounds))
RUNS = {
    "pfedrec_reference": ("pfedrec", "pfedrec-order", REFERENCE, None),
    "local_reference": ("local", "pfedrec-order", REFERENCE, None),
    "pfedrec_strict": ("pfedrec", "pfedrec-order", STRICT, None),
    "local_strict": ("local", "pfedrec-order", STRICT, None),
    "popularity_reference": ("popularity", "pfedrec-order",
                             ("--tie-break", "row", "--train-negatives", "reference"), 1),
    "popularity_default": ("popularity", ".", (), 1),
}


def command(model: str, data_dir: str, flags: tuple[str, ...], rounds: int) -> list[str]:
    """The ``feddmr train`` command of one row (what the table prints)."""
    return ["feddmr", "train", "--model", model, "--dataset", "ml-100k", "--data-dir", data_dir,
            *flags, "--rounds", str(rounds)]


def parse_train_flags(argv: list[str]) -> config_lib.RunConfig:
    """The config ``feddmr train`` builds from these flags (the CLI's own parser)."""
    parser = argparse.ArgumentParser(allow_abbrev=False)
    cli_flags.add_config_flags(parser)
    args = parser.parse_args(argv[2:])
    return config_lib.build_config(cli_flags.overrides_of(cli_flags.given_flags(args)),
                                   source="protocol_table.py")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--data-dir", default="../shared/data", help="folder holding ml-100k/ and "
                   "pfedrec-order/ml-100k/ (default ../shared/data)")
    p.add_argument("--rounds", type=int, default=100, help="rounds of the learning runs")
    p.add_argument("--runs", default=",".join(RUNS), help="comma list of rows to run")
    p.add_argument("--out", default="results/protocol100", help="run folders and CSV")
    p.add_argument("--save", action="store_true", help="write docs/results/protocol_ml-100k.csv")
    p.add_argument("--rerun-changed", action="store_true",
                   help="train again a finished run whose config changed (else an error)")
    args = p.parse_args(argv)
    enable_compilation_cache()
    out = Path(args.out)
    rows = []
    for name in args.runs.split(","):
        model, sub, flags, rounds = RUNS[name]
        data_dir = str(Path(args.data_dir) / sub) if sub != "." else args.data_dir
        cmd = command(model, data_dir, flags, rounds or args.rounds)
        cfg = parse_train_flags(cmd)
        try:
            summary = run_one(cfg, out / "runs" / name, name=name,
                              rerun_changed=args.rerun_changed)
        except (ConfigError, RunDiverged) as e:
            print(f"protocol_table.py: error: {e}", file=sys.stderr)
            return 2
        row = {"name": name, "command": shlex.join(cmd), "eval_mode": summary["eval_mode"],
               "best_round": summary["best_round"], "rounds": summary["rounds_run"]}
        for split in ("val", "test"):
            row.update({f"{split}_{m}": round(summary[split][m], 4) for m in METRICS})
        row["seconds_per_round"] = round(summary["round_seconds"], 3)
        rows.append(row)
        print(f"{name}: test hr@10 {row['test_hr@10']} ndcg@10 {row['test_ndcg@10']} "
              f"auc {row['test_auc']} (best round {row['best_round']})", flush=True)
    target = Path("docs/results") if args.save else out
    target.mkdir(parents=True, exist_ok=True)
    with open(target / "protocol_ml-100k.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {target / 'protocol_ml-100k.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
