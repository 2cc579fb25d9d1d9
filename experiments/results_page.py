"""The top of docs/results.md (issue 24): the three-dataset table, the paper's claim, the
ablations and the rounds to a target, from the committed files of each dataset's study.

    python experiments/results_page.py            # docs/results/study_<dataset>/ -> docs/results.md

Reads ``<results>/study_<dataset>/`` (``study_runs.csv``, ``study_curves.csv``,
``study_chosen.json``; written by ``feddmr_study.py``) for ml-100k, lastfm-2k and
amazon-video, uses the datasets present and says which are missing, and writes its section
between ``<!-- results:begin -->`` and ``<!-- results:end -->`` of ``--page`` (inserted under
the page's title the first time; a rerun replaces it), plus one figure per dataset
(``<figures>/study_<dataset>_val_hr10.png``: mean validation HR@10 per round of every
method). Each dataset's line names the commit of its ``study_runs.csv``. It chooses nothing:
the chosen points are the studies', the best baseline is chosen on validation
(``results_tables.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_tables import (CLAIM_METRICS, PAPER_CLAIM, StudyFiles, chosen_summary,  # noqa: E402
                            claim, claim_average, load_study, missing, rounds_table)
from runs_io import METRICS, pyplot  # noqa: E402
from study_knobs import ABLATIONS, FLOOR, METHODS  # noqa: E402
from study_plan import DATASETS  # noqa: E402
from study_rounds import chosen_curves, mean_curve  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
NAMES = {"feddmr": "FedDMR", "fedmf": "FedMF", "fedncf": "FedNCF", "pfedrec": "PFedRec",
         "fedrap": "FedRAP", FLOOR: "popularity (floor)",
         "feddmr_no_attention": "FedDMR, no attention", "feddmr_1layer": "FedDMR, 1 layer"}
SHORT = {"hr@10": "HR@10", "ndcg@10": "NDCG@10", "auc": "AUC", "precision@10": "Precision@10"}


def data_commit(path: Path) -> str:
    """The last commit of ``path`` (short hash and date), and whether it has uncommitted
    changes; ``unknown`` outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=path.parent, capture_output=True,
                              text=True, check=True).stdout.strip()
    try:
        last = git("log", "-1", "--format=%h (%cs)", "--", path.name)
        dirty = git("status", "--porcelain", "--", path.name)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not in a git checkout)"
    if not last:
        return "not committed yet"
    return last + (", with uncommitted changes" if dirty else "")


def stage_rounds(study: StudyFiles) -> str:
    """The rounds of the screen and of the confirmation, as the rows hold them."""
    def rounds(prefix: str) -> str:
        found = sorted({int(r["rounds"]) for r in study.runs if r["stage"].startswith(prefix)
                        and r["method"] != FLOOR})
        return "/".join(map(str, found)) or "none"
    return f"screen {rounds('screen')} rounds (seed 0), confirmation {rounds('confirm')} rounds"


def _ms(row: dict, key: str) -> str:
    return f"{row[f'{key}_mean']:.4f} ± {row[f'{key}_std']:.4f}"


def main_table(summaries: dict[str, list[dict]]) -> list[str]:
    cols = " | ".join(SHORT[m] for m in METRICS)
    lines = [f"| dataset | method | chosen point | screen points | seeds | rounds | {cols} "
             "| val HR@10 |", "|" + "---|" * (7 + len(METRICS))]
    for dataset, summary in summaries.items():
        for s in summary:
            if s["method"] in ABLATIONS:
                continue
            cells = " | ".join(_ms(s, f"test_{m}") for m in METRICS)
            lines.append(f"| {dataset} | {NAMES.get(s['method'], s['method'])} | "
                         f"`{s['point']}` | {s['screen_points']} | {s['seeds']} | "
                         f"{s['rounds']} | {cells} | {s['val_hr@10_mean']:.4f} |")
    return lines


def claim_lines(summaries: dict[str, list[dict]]) -> list[str]:
    claims = {d: c for d, s in summaries.items() if (c := claim(s)) is not None}
    lines = ["The best baseline of a metric: the baseline (FedMF, FedNCF, PFedRec, FedRAP; not "
             "the popularity floor) whose chosen point has the highest mean **validation** value "
             "of that metric; FedDMR's relative difference is on the test means "
             "(FedDMR / best - 1).", "",
             "| dataset | AUC: best baseline | FedDMR vs it | Precision@10: best baseline | "
             "FedDMR vs it | mean of the two |", "|---|---|---|---|---|---|"]
    for dataset, c in claims.items():
        both = sum(c[m][1] for m in CLAIM_METRICS) / len(CLAIM_METRICS)
        lines.append(f"| {dataset} | {NAMES[c['auc'][0]]} | {c['auc'][1]:+.2f}% | "
                     f"{NAMES[c['precision@10'][0]]} | {c['precision@10'][1]:+.2f}% | "
                     f"{both:+.2f}% |")
    if not claims:
        return ["No dataset has both FedDMR and a baseline confirmed: no claim line."]
    avg = claim_average(claims)
    lines += ["", f"**Paper claim** (+{PAPER_CLAIM}% on average over AUC and Precision): "
              f"averaged over the {len(claims)} dataset(s) present ({', '.join(claims)}), "
              f"FedDMR vs the best baseline: AUC **{avg['auc']:+.2f}%**, Precision@10 "
              f"**{avg['precision@10']:+.2f}%**, both **{avg['all']:+.2f}%**."]
    return lines


def ablation_lines(summaries: dict[str, list[dict]]) -> list[str]:
    lines = ["| dataset | variant | seeds | rounds | " + " | ".join(SHORT[m] for m in METRICS)
             + " | AUC vs FedDMR |", "|" + "---|" * (5 + len(METRICS))]
    found = False
    for dataset, summary in summaries.items():
        full = next((s for s in summary if s["method"] == "feddmr"), None)
        for s in summary:
            if s["method"] in ABLATIONS:
                found = True
                vs = (f"{s['test_auc_mean'] - full['test_auc_mean']:+.4f}" if full else "")
                lines.append(f"| {dataset} | {NAMES[s['method']]} | {s['seeds']} | "
                             f"{s['rounds']} | " + " | ".join(_ms(s, f"test_{m}")
                                                              for m in METRICS) + f" | {vs} |")
    return lines if found else ["No ablation confirmed yet."]


def rounds_lines(tables: dict[str, list[dict]]) -> list[str]:
    lines = ["| dataset | method | best mean val HR@10 | its round | round reaching the target "
             "| MB uploaded to reach it | rising at the end |", "|---|---|---|---|---|---|---|"]
    for dataset, rows in tables.items():
        for r in rows:
            reach = r["round_to_target"] if r["round_to_target"] != "" else "not reached"
            mb = r["upload_mb_to_target"]
            mb = "n/a" if mb == "" else f"{mb:,.1f}" if mb >= 1 else f"{mb:.2g}"
            lines.append(f"| {dataset} | {NAMES.get(r['method'], r['method'])} | "
                         f"{r['best_val_hr@10']:.4f} | {r['best_round']} | {reach} | {mb} | "
                         f"{'yes' if r['rising_last_10'] else 'no'} |")
    targets = {d: (rows[0]["target_method"], rows[0]["target_val_hr@10"])
               for d, rows in tables.items() if rows and rows[0]["target_method"]}
    lines += ["", "Target per dataset: the best baseline's best mean validation HR@10 (" + "; ".join(
        f"{d}: {NAMES[m]} {v:.4f}" for d, (m, v) in targets.items()) + "). Means over seeds, "
        "round by round; MB: bytes every client uploaded up to that round, mean over seeds "
        "(n/a: the run's metrics.jsonl had no byte counts)."]
    return lines


def plot_curves(study: StudyFiles, path: Path) -> bool:
    """Mean validation HR@10 per round of every method's chosen point (popularity: a line)."""
    plt = pyplot("validation curves")
    picks = {m: p["point_id"] for m, p in study.chosen.items() if "point_id" in p}
    grouped = chosen_curves(study.curves, picks)
    if plt is None or not grouped:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for method, seeds in sorted(grouped.items(), key=lambda ms: (
            METHODS.index(ms[0]) if ms[0] in METHODS else len(METHODS))):
        curve = mean_curve(seeds)
        label = NAMES.get(method, method)
        if method == FLOOR:
            ax.axhline(curve[-1][1], color="grey", linestyle=":", label=label)
        else:
            ax.plot(*zip(*curve), label=label, linestyle="--" if method in ABLATIONS else "-")
    ax.set(xlabel="round", ylabel="validation HR@10 (mean over seeds)", title=study.dataset)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def in_progress(results: Path, dataset: str) -> str:
    """`` In progress: N runs done ...`` when a study's run folders are there without its
    CSVs (they are written when the study ends); else empty."""
    runs = results / f"study_{dataset}" / "runs"
    done = (sum(1 for f in runs.rglob("*.json") if f.name in ("summary.json", "diverged.json"))
            if runs.is_dir() else 0)
    if not done:
        return ""
    return (f". In progress: {done} run(s) done (finished or diverged) under "
            f"`study_{dataset}/runs/`; "
            f"`python experiments/feddmr_study.py --dataset {dataset} --top 1 --out "
            f"docs/results/study_{dataset}` reuses them and continues")


def section(studies: dict[str, StudyFiles], absent: list[str], results: Path,
            figures: Path, page: Path) -> str:
    """The markdown between the markers."""
    summaries = {d: chosen_summary(s) for d, s in studies.items()}
    lines = [BEGIN, "## FedDMR against the baselines on three datasets", "",
             "_Generated by `python experiments/results_page.py` from "
             f"`{results.relative_to(ROOT) if results.is_relative_to(ROOT) else results}"
             "/study_<dataset>/`; do not edit by hand._", ""]
    for d, s in studies.items():
        note = s.folder / "README.md"            # a converted study's (rows with ``study``)
        source = (f" {note.read_text().splitlines()[0].lstrip('# ')}"
                  if note.is_file() and "study" in s.runs[0] else "")
        lines.append(f"- {d}: {stage_rounds(s)}; `study_runs.csv` of commit "
                     f"{data_commit(s.folder / 'study_runs.csv')}.{source}")
    lines += [f"- {d}: **missing** (no `study_{d}/study_runs.csv`; run `python "
              f"experiments/feddmr_study.py --dataset {d}`){in_progress(results, d)}"
              for d in absent]
    lines += ["", "### Test at the best validation round (chosen points, mean ± std over seeds)",
              "", *main_table(summaries), "", "### The paper's claim", "", *claim_lines(summaries),
              "", "### Ablations (FedDMR's chosen point)", "", *ablation_lines(summaries), "",
              "### Rounds to the best baseline's validation HR@10", "",
              *rounds_lines({d: rounds_table(s) for d, s in studies.items()}), "",
              "### Validation HR@10 per round", ""]
    for d, s in studies.items():
        fig = figures / f"study_{d}_val_hr10.png"
        if plot_curves(s, fig):
            rel = fig.relative_to(page.parent) if fig.is_relative_to(page.parent) else fig
            lines.append(f"![{d}: validation HR@10 per round]({rel})")
    gaps = [f"- {d}: {line}" for d, s in studies.items() for line in missing(s)]
    lines += ["", "### What is missing", "", *(gaps or ["- nothing"]),
              *[f"- {d}: the whole study" for d in absent], END]
    return "\n".join(lines) + "\n"


def write_section(page: Path, text: str) -> None:
    """``text`` between the markers of ``page`` (under its first line the first time)."""
    old = page.read_text() if page.is_file() else "# Results\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + text.rstrip("\n") + rest.split(END, 1)[1]
    else:
        first, _, rest = old.partition("\n")
        new = f"{first}\n\n{text}\n{rest.lstrip(chr(10))}"
    page.write_text(new)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(ROOT / "docs" / "results"),
                   help="folder of the study_<dataset>/ folders (default docs/results)")
    p.add_argument("--page", default=str(ROOT / "docs" / "results.md"), help="page to write")
    p.add_argument("--figures", default=str(ROOT / "docs" / "figures"), help="figure folder")
    args = p.parse_args(argv)
    results, studies, absent = Path(args.results).resolve(), {}, []
    try:
        for dataset in DATASETS:
            study = load_study(results / f"study_{dataset}", dataset)
            if study is None:
                absent.append(dataset)
            else:
                studies[dataset] = study
    except (OSError, ValueError) as e:
        print(f"results_page.py: error: {e}", file=sys.stderr)
        return 2
    if not studies:
        print(f"results_page.py: error: no study_<dataset>/study_runs.csv under {results}",
              file=sys.stderr)
        return 2
    page = Path(args.page).resolve()
    write_section(page, section(studies, absent, results, Path(args.figures).resolve(), page))
    print(f"{page}: {', '.join(studies)} written; missing: {', '.join(absent) or 'none'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
