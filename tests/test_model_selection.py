"""Model selection on validation: eval_every, best round, patience and early stop,
each checked against what the run wrote to metrics.jsonl."""

from __future__ import annotations

import json

from feddmr_jax.train import train

from engine_helpers import tiny_config
from run_helpers import LATEST_ON_TIES, assert_best_round, read_metrics


def _run(tmp_path, **train_overrides):
    cfg = tiny_config(checkpoint_every=0, select_metric="auc", **train_overrides)
    summary = train(cfg, tmp_path, progress=False)
    assert json.loads((tmp_path / "summary.json").read_text())["best_round"] == \
        summary["best_round"]
    return summary, read_metrics(tmp_path)


def _expected_stop(rows: list[dict], metric: str, patience: int) -> int | None:
    """The round at which ``patience`` evaluations in a row have not improved."""
    best, since = None, 0
    for r in rows:
        if "val" not in r:
            continue
        value = r["val"][metric]
        improved = best is None or (value >= best if LATEST_ON_TIES else value > best)
        best, since = (value, 0) if improved else (best, since + 1)
        if since >= patience:
            return r["round"]
    return None


def test_eval_every_evaluates_every_kth_and_the_last_round(tmp_path):
    summary, rows = _run(tmp_path, rounds=5, eval_every=2)
    assert [r["round"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["round"] for r in rows if "val" in r] == [2, 4, 5]
    assert all("test" not in r for r in rows if "val" not in r)
    assert_best_round(summary["best_round"], rows, "auc")
    best = next(r for r in rows if r["round"] == summary["best_round"])
    assert summary["val"] == best["val"] and summary["test"] == best["test"]
    assert not summary["stopped_early"] and summary["rounds_run"] == 5


def test_patience_stops_after_evaluations_without_improvement(tmp_path):
    summary, rows = _run(tmp_path, rounds=12, eval_every=2, patience=1, lr=0.05)
    stop = _expected_stop(rows, "auc", patience=1)
    assert stop is not None and stop < 12, "this setup is meant to stop early"
    assert rows[-1]["round"] == stop and summary["rounds_run"] == stop
    assert summary["stopped_early"]
    assert_best_round(summary["best_round"], rows, "auc")
    assert summary["best_round"] < stop
