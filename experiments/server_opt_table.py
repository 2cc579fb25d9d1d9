"""Rounds and megabytes to a FedAvg target with a server optimizer (issue 25), from committed files.

    python experiments/server_opt_table.py --data-dir ../shared/data

Reads two studies of ``experiments/feddmr_study.py`` on ml-100k:

* the FedAvg reference: ``docs/results/study_ml-100k/`` (each method's validation-chosen point,
  3 seeds x 100 rounds, server ``sgd`` at rate 1);
* the server-optimizer study: ``docs/results/server_opt_ml-100k/`` (the same points with the
  server optimizers of ``experiments/configs/server_opt_grid.json``, screened at 30 rounds on
  seed 0, the best on validation confirmed with 3 seeds x 50 rounds).

For each method it writes one row: the **target** (the mean over seeds of FedAvg's validation
HR@10 at round 100, as the issue defines it, and FedAvg's best mean validation HR@10), the first
round at which each mean validation curve reaches it, the megabytes uploaded and downloaded by
then (mean over seeds), and the test AUC and Precision@10 at each seed's best validation round
(mean and std). Bytes per round depend on the data, the seed and the round only (who takes
part, which rows their examples reach), not on the server optimizer, so FedAvg's are counted
by packing its rounds on the host (no training) and checked against the byte columns the
server-optimizer runs recorded for the rounds they share.

Writes ``<out>/server_opt_table.csv`` and ``<out>/server_opt_screen.csv`` (every screened
point), and the markdown between ``<!-- server-opt:begin -->`` and ``<!-- server-opt:end -->``
of ``docs/server_optimization.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))    # experiments/ is not a package
from runs_io import run_config, write_rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def mean_curve(curves: list[dict], method: str, point_id: str, stage: str) -> dict[int, float]:
    """Round -> validation HR@10 averaged over the seeds that reached the round (all of them)."""
    by_round: dict[int, list[float]] = {}
    for c in curves:
        if c["method"] == method and c["point_id"] == point_id and c["stage"] == stage:
            by_round.setdefault(int(c["round"]), []).append(float(c["val_hr@10"]))
    seeds = max(map(len, by_round.values()))
    return {r: statistics.mean(v) for r, v in sorted(by_round.items()) if len(v) == seeds}


def first_round(curve: dict[int, float], target: float) -> int | None:
    return next((r for r, v in curve.items() if v >= target), None)


def test_figures(runs: list[dict], method: str, point_id: str, stage: str) -> dict[str, str]:
    rows = [r for r in runs if r["method"] == method and r["point_id"] == point_id
            and r["stage"] == stage and r.get("status", "ok") == "ok"]
    out = {"seeds": len(rows)}
    for m in ("auc", "precision@10", "hr@10"):
        values = [float(r[f"test_{m}"]) for r in rows]
        out[f"test_{m}"] = statistics.mean(values)
        out[f"test_{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    out["best_rounds"] = " ".join(r["best_round"] for r in rows)
    return out


def round_bytes(method: str, settings: dict, seeds: list[int], rounds: int,
                data_dir: str | None, dataset: str = "ml-100k"
                ) -> dict[int, tuple[float, float]]:
    """Round -> (upload, download) bytes, mean over seeds, counted without training."""
    from feddmr_jax.experiment import build_experiment, round_chunks
    from feddmr_jax.federated.communication import RoundTraffic

    totals: dict[int, list[tuple[int, int]]] = {}
    for seed in seeds:
        cfg = run_config(method, settings, dataset=dataset, seed=seed, rounds=rounds,
                         data_dir=data_dir, extra={}, source="server_opt_table")
        exp = build_experiment(cfg)
        for r in range(1, rounds + 1):
            traffic = RoundTraffic(exp.traffic)          # run_round's chunks, untrained
            for _ in round_chunks(exp, r, traffic)[2]:
                pass
            rec = traffic.record()
            totals.setdefault(r, []).append((rec["upload_bytes"], rec["download_bytes"]))
    return {r: (statistics.mean(u for u, _ in v), statistics.mean(d for _, d in v))
            for r, v in totals.items()}


def cumulative_mb(per_round: dict[int, tuple[float, float]], upto: int | None):
    if upto is None:
        return None, None
    up = sum(per_round[r][0] for r in range(1, upto + 1))
    down = sum(per_round[r][1] for r in range(1, upto + 1))
    return up / MB, down / MB


def recorded_bytes(curves: list[dict], method: str, point_id: str, stage: str):
    by_round: dict[int, list[tuple[float, float]]] = {}
    for c in curves:
        if (c["method"] == method and c["point_id"] == point_id and c["stage"] == stage
                and c.get("upload_bytes")):
            by_round.setdefault(int(c["round"]), []).append(
                (float(c["upload_bytes"]), float(c["download_bytes"])))
    return {r: (statistics.mean(u for u, _ in v), statistics.mean(d for _, d in v))
            for r, v in by_round.items()}


def fmt(x, spec=".4f"):
    return "—" if x is None else format(x, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fedavg", default=str(ROOT / "docs/results/study_ml-100k"))
    p.add_argument("--study", default=str(ROOT / "docs/results/server_opt_ml-100k"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--page", default=str(ROOT / "docs/server_optimization.md"))
    args = p.parse_args(argv)
    fedavg, study = Path(args.fedavg), Path(args.study)
    ref_chosen = json.loads((fedavg / "study_chosen.json").read_text())
    chosen = json.loads((study / "study_chosen.json").read_text())
    ref_runs, ref_curves = read_csv(fedavg / "study_runs.csv"), read_csv(fedavg / "study_curves.csv")
    runs, curves = read_csv(study / "study_runs.csv"), read_csv(study / "study_curves.csv")
    table, screen = [], []
    for method, choice in chosen.items():
        if "point_id" not in choice:
            print(f"{method}: no choice ({choice})", file=sys.stderr)
            continue
        ref_id = ref_chosen[method]["point_id"]
        ref_curve = mean_curve(ref_curves, method, ref_id, "confirm")
        target_100 = ref_curve[100]
        target_best = max(ref_curve.values())
        opt_curve = mean_curve(curves, method, choice["point_id"], "confirm")
        seeds = [int(s) for s in choice["seeds"]]
        settings = dict(choice["settings"])
        base = {k: v for k, v in settings.items() if not k.startswith("train.server_")}
        fedavg_bytes = round_bytes(method, base, seeds, max(ref_curve), args.data_dir)
        recorded = recorded_bytes(curves, method, choice["point_id"], "confirm")
        mismatch = [r for r, b in recorded.items() if b != fedavg_bytes.get(r)]
        if mismatch:
            print(f"{method}: recorded bytes differ from the host count at rounds "
                  f"{mismatch[:5]}", file=sys.stderr)
            return 1
        row = {"dataset": "ml-100k", "method": method,
               "server": f"{settings.get('train.server_optimizer', 'sgd')}@"
                         f"{settings.get('train.server_lr', 1.0)}",
               "fedavg_val_hr@10_r100": target_100, "fedavg_best_val_hr@10": target_best,
               "confirm_rounds": max(opt_curve), "opt_best_val_hr@10": max(opt_curve.values())}
        for name, target in (("r100", target_100), ("best", target_best)):
            for who, curve in (("fedavg", ref_curve), ("opt", opt_curve)):
                r = first_round(curve, target)
                up, down = cumulative_mb(fedavg_bytes, r)
                row.update({f"{who}_round_to_{name}": r, f"{who}_up_mb_to_{name}": up,
                            f"{who}_down_mb_to_{name}": down})
        last = max(opt_curve)          # what FedAvg needs to match the optimizer's last round
        row["opt_val_hr@10_last"] = opt_curve[last]
        row["fedavg_round_to_opt_last"] = first_round(ref_curve, opt_curve[last])
        for who, figures in (("fedavg", test_figures(ref_runs, method, ref_id, "confirm")),
                             ("opt", test_figures(runs, method, choice["point_id"], "confirm"))):
            row.update({f"{who}_{k}": v for k, v in figures.items()})
        row["upload_mb_per_round"] = fedavg_bytes[1][0] / MB
        row["download_mb_per_round"] = fedavg_bytes[1][1] / MB
        table.append(row)
        for r in runs:
            if r["method"] == method and r["stage"].startswith("screen"):
                screen.append({"method": method, "point": r["point"], "rounds": r["rounds"],
                               "status": r.get("status", "ok"), "best_round": r["best_round"],
                               "val_hr@10": r["val_hr@10"], "val_auc": r["val_auc"]})
    write_rows(study / "server_opt_table.csv", table)
    write_rows(study / "server_opt_screen.csv", screen)
    write_page(Path(args.page), table, screen)
    return 0


def write_page(page: Path, table: list[dict], screen: list[dict]) -> None:
    lines = ["| method | server optimizer (chosen on validation) | target: FedAvg's mean val HR@10 "
             "at round 100 | FedAvg reaches it at round (MB up / down) | with the optimizer "
             "(MB up / down) | test AUC: FedAvg / optimizer | test Precision@10: FedAvg / "
             "optimizer |", "|---|---|---|---|---|---|---|"]
    for r in table:
        def at(who):
            rnd = r[f"{who}_round_to_r100"]
            if rnd is None:
                return f"not in {r['confirm_rounds']} rounds"
            return (f"{rnd} ({fmt(r[f'{who}_up_mb_to_r100'], ',.0f')} / "
                    f"{fmt(r[f'{who}_down_mb_to_r100'], ',.0f')})")
        lines.append(
            f"| {r['method']} | {r['server']} | {r['fedavg_val_hr@10_r100']:.4f} | {at('fedavg')} | "
            f"{at('opt')} | {r['fedavg_test_auc']:.4f} ± {r['fedavg_test_auc_std']:.4f} / "
            f"{r['opt_test_auc']:.4f} ± {r['opt_test_auc_std']:.4f} | "
            f"{r['fedavg_test_precision@10']:.4f} ± {r['fedavg_test_precision@10_std']:.4f} / "
            f"{r['opt_test_precision@10']:.4f} ± {r['opt_test_precision@10_std']:.4f} |")
    lines += ["", "Against FedAvg's best mean validation HR@10 (its peak, not round 100), and the "
              "other way round (the round at which FedAvg reaches what the optimizer has at its "
              "last round):", "",
              "| method | FedAvg's best mean val HR@10 | FedAvg reaches it at round | with the "
              "optimizer | the optimizer's mean val HR@10 at its last round | FedAvg reaches "
              "that at round | upload / download MB per round |",
              "|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['method']} | {r['fedavg_best_val_hr@10']:.4f} | {r['fedavg_round_to_best']} | "
            f"{r['opt_round_to_best'] or 'not in ' + str(r['confirm_rounds'])} | "
            f"{r['opt_val_hr@10_last']:.4f} (round {r['confirm_rounds']}) | "
            f"{r['fedavg_round_to_opt_last'] or 'not in 100'} | "
            f"{r['upload_mb_per_round']:.1f} / {r['download_mb_per_round']:.1f} |")
    lines += ["", "Every screened point (seed 0; validation HR@10 at its best round):", "",
              "| method | point | rounds | best round | val HR@10 | val AUC |",
              "|---|---|---|---|---|---|"]
    for s in screen:
        value = (f"{float(s['val_hr@10']):.4f} | {float(s['val_auc']):.4f}"
                 if s["status"] == "ok" else "diverged | —")
        lines.append(f"| {s['method']} | {s['point']} | {s['rounds']} | {s['best_round']} | "
                     f"{value} |")
    text = page.read_text()
    begin, end = "<!-- server-opt:begin -->", "<!-- server-opt:end -->"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    page.write_text(head + begin + "\n" + "\n".join(lines) + "\n" + end + tail)


if __name__ == "__main__":
    sys.exit(main())
