"""The privacy/accuracy table of docs/privacy.md: user-level DP-FedAvg at several epsilons.

    python experiments/privacy_table.py --data-dir ../shared/data          # ml-100k, ~25 min
    python experiments/privacy_table.py --quick --out /tmp/p --doc /tmp/p/privacy.md

Runs the same federated job without privacy and with DP-FedAvg at target
epsilons (default 1, 5, 10; delta = 1 / (10 * users) < 1 / users). For each
target the noise multiplier is the smallest one whose accounted epsilon after
all rounds is within the target (``noise_for_epsilon``; sampling rate =
participants per round / users). Every run selects its round on validation
HR@10 and reports test metrics at that round. Writes
``<out>/privacy_<dataset>.csv`` and regenerates the section between the
``privacy-table`` markers of ``--doc`` (default docs/privacy.md).

Default job (chosen so that the 4 runs take about 15 minutes, at most ~25, on
the project's 2-core CPU with other jobs running: measured 1.0-1.3 s per round
and 0.7 s per evaluation of validation and test): FedMF (d = 32, Adam, lr 0.1
on embeddings), 150 rounds, **all** 943 clients every round (sampling rate
q = 1: the accounting is exact for the engine's sampler, no subsampling
amplification is claimed), 1 local epoch, batch 256, 4 negatives, item rows
averaged over the round's participants (``table_mean = participants``,
required by DP), server learning rate 1 (FedAvg), clip norm C = 5 (about the
median norm of a client's whole update in the first rounds: 10th/50th/90th
percentiles 5.5 / 7.5 / 15), evaluation every 5 rounds. ``--quick`` runs the
same pipeline on a tiny synthetic dataset in under a minute (a smoke test).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- privacy-table:begin -->", "<!-- privacy-table:end -->"
COLUMNS = ("run", "target_epsilon", "epsilon", "delta", "noise_multiplier", "clip",
           "rounds", "clients_per_round", "sampling_rate", "best_round", "val_hr@10",
           "test_hr@10", "test_ndcg@10", "test_auc", "minutes")


def base_raw(args: argparse.Namespace) -> dict:
    """The job every run shares, as ``{section: {key: value}}`` (a config file's tables)."""
    if args.quick:
        data = {"dataset": "synthetic", "synthetic_users": 40, "synthetic_items": 60,
                "synthetic_interactions": 8.0, "eval_negatives": 20}
        model, rounds, clients, batch, every = {"dim": 8}, 2, 0, 32, 1
    else:
        data = {"dataset": args.dataset, "data_dir": args.data_dir}
        model, rounds, clients, batch, every = {"dim": 32}, args.rounds, args.clients, 256, 5
    train = {"model": args.model, "rounds": rounds, "batch_size": batch,
             "table_mean": "participants", "server_lr": 1.0, "eval_every": every,
             "seed": args.seed, "checkpoint_every": 0}
    if clients:                                    # 0: every client, every round
        train["clients_per_round"] = clients
    return {"data": data, "model": model, "train": train}


def run_one(name: str, raw: dict, out: Path, target: float | None) -> dict:
    from feddmr_jax import config as config_lib
    from feddmr_jax.train import train

    cfg = config_lib.build_config(raw, source=f"privacy table run {name!r}")
    cfg.validate()
    start = time.perf_counter()
    summary = train(cfg, out / name, progress=False, overwrite=True)   # a rerun replaces it
    t = cfg.train
    users = summary["dataset"]["users"]
    per_round = min(t.clients_per_round or users, users)
    return {
        "run": name, "target_epsilon": target, "epsilon": summary.get("epsilon"),
        "delta": summary.get("delta"), "noise_multiplier": t.dp_noise if t.dp_clip else None,
        "clip": t.dp_clip, "rounds": summary["rounds_run"],
        "clients_per_round": per_round, "sampling_rate": per_round / users,
        "best_round": summary["best_round"], "val_hr@10": summary["val"]["hr@10"],
        "test_hr@10": summary["test"]["hr@10"], "test_ndcg@10": summary["test"]["ndcg@10"],
        "test_auc": summary["test"]["auc"],
        "minutes": (time.perf_counter() - start) / 60,
    }


def dp_runs(raw: dict, args: argparse.Namespace) -> list[tuple[str, dict, float | None]]:
    """``(name, config tables, target epsilon)`` of every run: non-private first."""
    from feddmr_jax import config as config_lib
    from feddmr_jax.data import load_dataset, split_interactions
    from feddmr_jax.privacy import noise_for_epsilon
    from feddmr_jax.privacy.plan import default_delta

    cfg = config_lib.build_config(raw)
    inter = load_dataset(cfg.data.dataset, cfg.data.data_dir, path=cfg.data.data_path,
                         **cfg.data.load_options())
    users = split_interactions(inter, scheme=cfg.data.split).num_users
    q = min(cfg.train.clients_per_round or users, users) / users
    delta = default_delta(users)
    runs = [("non-private", raw, None)]
    for target in args.epsilons:
        z = noise_for_epsilon(target, q, cfg.train.rounds, delta, args.accountant)
        train = {**raw["train"], "dp_clip": args.clip, "dp_noise": z, "dp_delta": delta,
                 "dp_accountant": args.accountant}
        runs.append((f"dp-eps{target:g}", {**raw, "train": train}, target))
    return runs


def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits else f"{value:.2e}"
    return str(value)


def table_markdown(rows: list[dict], raw: dict, command: str, accountant: str) -> str:
    t, d = raw["train"], raw["data"]
    lines = [
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d')}: dataset "
        f"`{d['dataset']}`, model `{t['model']}`, {t['rounds']} rounds, "
        f"{t.get('clients_per_round', 'all')} clients per round, `table_mean = participants`, "
        f"seed {t['seed']}; test metrics at the best validation HR@10 round "
        "(evaluated every "
        f"{t['eval_every']} rounds). Accountant: {accountant}; "
        "epsilon is the accounted value after the last round.",
        "",
        "| run | target epsilon | epsilon | delta | noise z | clip C | best round "
        "| val HR@10 | test HR@10 | test NDCG@10 | test AUC | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| " + " | ".join([
            r["run"], fmt(r["target_epsilon"], 1), fmt(r["epsilon"], 2), fmt(r["delta"], 6),
            fmt(r["noise_multiplier"], 3), fmt(r["clip"], 2), fmt(r["best_round"]),
            fmt(r["val_hr@10"]), fmt(r["test_hr@10"]), fmt(r["test_ndcg@10"]),
            fmt(r["test_auc"]), fmt(r["minutes"], 2)]) + " |")
    return "\n".join(lines)


def write_doc(doc: Path, section: str) -> None:
    """Replaces the text between the markers of ``doc`` (created if missing)."""
    block = f"{BEGIN}\n{section}\n{END}"
    text = doc.read_text() if doc.exists() else f"# Privacy table\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} has no {BEGIN} ... {END} markers")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(pattern.sub(lambda _: block, text, count=1))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--model", default="fedmf")
    p.add_argument("--rounds", type=int, default=150)
    p.add_argument("--clients", type=int, default=0, help="clients per round (0: all)")
    p.add_argument("--clip", type=float, default=5.0, help="DP clip norm C")
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 5.0, 10.0])
    p.add_argument("--accountant", default="rdp", choices=("rdp", "pld"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "results"), help="folder for the CSV and runs")
    p.add_argument("--doc", default=str(ROOT / "docs" / "privacy.md"))
    p.add_argument("--quick", action="store_true", help="tiny synthetic smoke test")
    args = p.parse_args(argv)

    from feddmr_jax.timing import enable_compilation_cache

    enable_compilation_cache()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = base_raw(args)
    rows = []
    for name, run_raw, target in dp_runs(raw, args):
        row = run_one(name, run_raw, out / "privacy_runs", target)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("run", "epsilon", "noise_multiplier",
                                              "test_hr@10", "test_auc", "minutes")}),
              flush=True)
    dataset = raw["data"]["dataset"]
    csv_path = out / f"privacy_{dataset}.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r[k] is None else r[k]) for k in COLUMNS})
    given = " ".join(argv if argv is not None else sys.argv[1:]).replace(f"{ROOT}/", "")
    command = f"python experiments/privacy_table.py {given}".strip()
    write_doc(Path(args.doc), table_markdown(rows, raw, command, args.accountant))
    print(f"wrote {csv_path} and the table in {args.doc}")
    assert all(r["epsilon"] is None or math.isfinite(r["epsilon"]) for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
