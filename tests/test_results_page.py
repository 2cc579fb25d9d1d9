"""experiments/results_page.py on a tiny fake set of study files (two datasets): the table,
the claim line with numbers computed by hand, the best baseline chosen on validation (the
test columns changing nothing), the ablations, the rounds to target, the figure, what is
missing, and a rerun replacing its section between the markers."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import results_page  # noqa: E402
import results_tables  # noqa: E402

METRICS = ("hr@10", "ndcg@10", "auc", "precision@10")


def _run(dataset, method, point, seed, *, test_auc, test_p, val_auc, val_p, stage="confirm"):
    row = {"dataset": dataset, "method": method, "stage": stage, "step": 0, "knob": "confirm",
           "point_id": point, "point": point, "seed": seed, "rounds": 3, "status": "ok",
           "best_round": 3, "s_per_round": 1.0, "wall_s": 3.0, "message": ""}
    for m in METRICS:
        row[f"val_{m}"], row[f"test_{m}"] = 0.5, 0.5
    row.update({"val_auc": val_auc, "val_precision@10": val_p, "test_auc": test_auc,
                "test_precision@10": test_p})
    return row


def _curve(dataset, method, point, seed, values, upload=1000):
    return [{"dataset": dataset, "method": method, "stage": "confirm", "point_id": point,
             "seed": seed, "round": r, "train_loss": 0.3, "val_hr@10": v, "upload_bytes": upload,
             "download_bytes": 2 * upload} for r, v in enumerate(values, 1)]


def _write(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / name, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)


def _ml100k(folder: Path, flip_test: bool = False) -> None:
    """FedDMR 'pd' (test AUC 0.86 / 0.88, P@10 0.060 / 0.062); FedNCF: best validation AUC,
    FedMF: best validation P@10 (but FedMF is best on test AUC: not the AUC baseline)."""
    d = "ml-100k"
    runs = [_run(d, "feddmr", "pscreen", 0, test_auc=0.99, test_p=0.99, val_auc=0.1, val_p=0.1,
                 stage="screen30"),
            *(_run(d, "feddmr", "pd", s, test_auc=a, test_p=p, val_auc=0.85, val_p=0.06)
              for s, a, p in ((0, 0.86, 0.060), (1, 0.88, 0.062))),
            *(_run(d, "fedncf", "pn", s, test_auc=0.90, test_p=0.050, val_auc=0.86, val_p=0.055)
              for s in (0, 1)),
            *(_run(d, "fedmf", "pm", s, test_auc=0.95, test_p=0.070, val_auc=0.80, val_p=0.058)
              for s in (0, 1)),
            *(_run(d, "popularity", "reference", s, test_auc=0.79, test_p=0.04, val_auc=0.79,
                   val_p=0.04) for s in (0, 1)),
            *(_run(d, "feddmr_no_attention", "pd", s, test_auc=0.85, test_p=0.06, val_auc=0.8,
                   val_p=0.05) for s in (0, 1))]
    if flip_test:
        runs = [{k: (1.0 - v if k.startswith("test_") else v) for k, v in r.items()}
                for r in runs]
    curves = [*_curve(d, "feddmr", "pd", 0, [0.3, 0.5, 0.6]),
              *_curve(d, "feddmr", "pd", 1, [0.3, 0.5, 0.6]),
              *_curve(d, "fedncf", "pn", 0, [0.5, 0.55, 0.5]),
              *_curve(d, "fedmf", "pm", 0, [0.4, 0.4, 0.4])]
    _write(folder, "study_runs.csv", runs)
    _write(folder, "study_curves.csv", curves)
    chosen = {m: {"point_id": p, "settings": {}, "screen_points": 7}
              for m, p in (("feddmr", "pd"), ("fedncf", "pn"), ("fedmf", "pm"),
                           ("popularity", "reference"), ("feddmr_no_attention", "pd"))}
    chosen["fedrap"] = {"skipped": "private store of 11.4 GiB over train.max_private_gb"}
    (folder / "study_chosen.json").write_text(json.dumps(chosen))


def _lastfm(folder: Path) -> None:
    d = "lastfm-2k"
    runs = [*(_run(d, "feddmr", "qd", s, test_auc=0.80, test_p=0.05, val_auc=0.7, val_p=0.05)
              for s in (0, 1)),
            *(_run(d, "pfedrec", "qp", s, test_auc=0.75, test_p=0.04, val_auc=0.7, val_p=0.04)
              for s in (0, 1))]
    _write(folder, "study_runs.csv", runs)
    _write(folder, "study_curves.csv", [*_curve(d, "feddmr", "qd", 0, [0.2, 0.3]),
                                        *_curve(d, "pfedrec", "qp", 0, [0.25, 0.25])])
    (folder / "study_chosen.json").write_text(json.dumps(
        {"feddmr": {"point_id": "qd", "settings": {}}, "pfedrec": {"point_id": "qp"}}))


@pytest.fixture()
def site(tmp_path):
    results = tmp_path / "docs" / "results"
    _ml100k(results / "study_ml-100k")
    _lastfm(results / "study_lastfm-2k")
    page = tmp_path / "docs" / "results.md"
    page.write_text("# Results\n\nStatus: old text kept.\n")
    return results, page, tmp_path / "docs" / "figures"


def _main(results, page, figures) -> str:
    assert results_page.main(["--results", str(results), "--page", str(page),
                              "--figures", str(figures)]) == 0
    return page.read_text()


def test_table_claim_and_what_is_missing(site):
    text = _main(*site)
    assert text.startswith("# Results\n\n<!-- results:begin -->")
    assert text.rstrip().endswith("Status: old text kept.")
    assert "| ml-100k | FedDMR | `pd` | 7 | 2 | 3 |" in text
    assert "0.8700 ± 0.0141" in text                      # FedDMR test AUC, seeds 0.86 / 0.88
    # ml-100k: AUC baseline FedNCF (validation 0.86): 0.87 / 0.90 - 1 = -3.33%; P@10
    # baseline FedMF (validation 0.058): 0.061 / 0.070 - 1 = -12.86%; mean -8.10%.
    assert "| ml-100k | FedNCF | -3.33% | FedMF | -12.86% | -8.10% |" in text
    # lastfm-2k: PFedRec alone: 0.80 / 0.75 - 1 = +6.67%, 0.05 / 0.04 - 1 = +25.00%.
    assert "| lastfm-2k | PFedRec | +6.67% | PFedRec | +25.00% | +15.83% |" in text
    # Over the two datasets: AUC (-3.333 + 6.667) / 2 = +1.67%; P@10 (-12.857 + 25) / 2 =
    # +6.07%; all four: +3.87%.
    assert ("AUC **+1.67%**, Precision@10 **+6.07%**, both **+3.87%**" in text
            and "2 dataset(s) present (ml-100k, lastfm-2k)" in text)
    assert "| ml-100k | FedDMR, no attention | 2 | 3 |" in text and "| -0.0200 |" in text
    assert "amazon-video: **missing**" in text and "amazon-video: the whole study" in text
    assert "ml-100k: fedrap: skipped (private store" in text
    assert "ml-100k: feddmr_1layer: no confirmed point yet" in text
    assert "lastfm-2k: popularity: no confirmed point yet" in text
    assert "unknown (not in a git checkout)" in text
    assert "- ml-100k: screen 3 rounds (seed 0), confirmation 3 rounds;" in text


def test_rounds_to_target_and_figures(site):
    text = _main(*site)
    # ml-100k target: FedNCF's best mean 0.55 (round 2); FedDMR reaches it at round 3, after
    # 3 x 1000 bytes = 0.003 MB; FedMF never does.
    assert "| ml-100k | FedDMR | 0.6000 | 3 | 3 | 0.003 | yes |" in text
    assert "| ml-100k | FedMF | 0.4000 | 1 | not reached | n/a | no |" in text
    assert "ml-100k: FedNCF 0.5500" in text and "lastfm-2k: PFedRec 0.2500" in text
    pytest.importorskip("matplotlib")
    for dataset in ("ml-100k", "lastfm-2k"):
        assert (site[2] / f"study_{dataset}_val_hr10.png").stat().st_size > 1000
        assert f"(figures/study_{dataset}_val_hr10.png)" in text


def test_the_best_baseline_is_chosen_on_validation(site):
    results = site[0]
    before = results_tables.chosen_summary(results_tables.load_study(
        results / "study_ml-100k", "ml-100k"))
    _ml100k(results / "study_ml-100k", flip_test=True)   # test now favours the others
    after = results_tables.chosen_summary(results_tables.load_study(
        results / "study_ml-100k", "ml-100k"))
    for metric in ("auc", "precision@10"):
        assert (results_tables.best_baseline(before, metric)["method"]
                == results_tables.best_baseline(after, metric)["method"])
    assert results_tables.best_baseline(after, "auc")["method"] == "fedncf"
    assert results_tables.best_baseline(after, "precision@10")["method"] == "fedmf"


def test_a_rerun_replaces_its_section(site):
    first = _main(*site)
    _lastfm_gone = site[0] / "study_lastfm-2k" / "study_runs.csv"
    _lastfm_gone.unlink()
    second = _main(*site)
    assert second.count("<!-- results:begin -->") == 1 and second.count("<!-- results:end -->") == 1
    assert "lastfm-2k: **missing**" in second and "lastfm-2k: **missing**" not in first
    assert second.rstrip().endswith("Status: old text kept.")


def test_a_study_without_its_csvs_is_reported_in_progress(site):
    """Run folders of an unfinished study (its CSVs are written when it ends): the page counts
    the runs done (summary.json or diverged.json; a folder with neither is unfinished) and
    names the command."""
    runs = site[0] / "study_amazon-video" / "runs" / "feddmr" / "screen30"
    for point, outcome in (("pa", "summary"), ("pb", "diverged"), ("pc", None)):
        folder = runs / point / "seed0"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        if outcome:
            (folder / f"{outcome}.json").write_text("{}")
    text = _main(*site)
    assert ("amazon-video: **missing** (no `study_amazon-video/study_runs.csv`; run `python "
            "experiments/feddmr_study.py --dataset amazon-video`). In progress: 2 run(s) done "
            "(finished or diverged) under `study_amazon-video/runs/`") in text
    assert "lastfm-2k: **missing**" not in text and "In progress" not in text.split("amazon")[0]


def test_no_study_is_a_one_line_error(tmp_path, capsys):
    assert results_page.main(["--results", str(tmp_path), "--page", str(tmp_path / "p.md")]) == 2
    assert "no study_<dataset>/study_runs.csv" in capsys.readouterr().err
