"""experiments/study_rounds.py against hand-made curves: the mean over seeds, the first round
to reach the best baseline's best mean, the megabytes uploaded until then, and the rule of
``--extend`` (still rising over the last 10 rounds)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import study_rounds as sr  # noqa: E402


def _rows(method, point, seed, values, upload=None, stage="confirm"):
    return [{"dataset": "d", "method": method, "stage": stage, "point_id": point, "seed": seed,
             "round": r, "train_loss": 0.5, "val_hr@10": v,
             "upload_bytes": "" if upload is None else upload}   # per round
            for r, v in enumerate(values, 1)]


def test_still_rising():
    flat_then_up = [(r, 0.5) for r in range(1, 21)] + [(21, 0.51)]
    assert sr.still_rising(flat_then_up)                     # a new high in the last 10
    peaked = [(r, 0.5 + 0.01 * min(r, 8)) for r in range(1, 31)]
    assert not sr.still_rising(peaked)                       # best at round 8, then flat
    assert sr.still_rising(peaked, window=25)                # round 8 is in the last 25
    assert sr.still_rising([(1, 0.1), (2, 0.2)]) and not sr.still_rising([(1, 0.3), (2, 0.2)])
    assert not sr.still_rising([(1, 0.3)])                  # one round: nothing rises
    assert not sr.still_rising([(1, 0.3), (2, 0.3)])        # flat: not rising


def test_rounds_to_target_by_hand():
    """Baseline A peaks at mean 0.6 (round 3), B at 0.5; FedDMR's mean curve
    (0.3, 0.5, 0.55, 0.65, 0.7) reaches 0.6 at round 4 and peaks at round 5; its seeds uploaded
    100 and 300 bytes per round: 4 rounds = (400 + 1200) / 2 = 800 bytes = 0.0008 MB."""
    curves = (_rows("fedmf", "a", 0, [0.4, 0.5, 0.7, 0.5, 0.5])
              + _rows("fedmf", "a", 1, [0.4, 0.5, 0.5, 0.5, 0.5])          # mean 0.6 at 3
              + _rows("fedmf", "other", 0, [0.9] * 5)                       # not chosen
              + _rows("fedmf", "a", 0, [0.99] * 5, stage="screen30")        # not confirm
              + _rows("fedncf", "b", 0, [0.5] * 5)
              + _rows("feddmr", "c", 0, [0.2, 0.4, 0.5, 0.7, 0.7], upload=100)
              + _rows("feddmr", "c", 1, [0.4, 0.6, 0.6, 0.6, 0.7], upload=300))
    chosen = {"fedmf": "a", "fedncf": "b", "feddmr": "c"}
    mean = sr.mean_curve(sr.chosen_curves(curves, chosen)["feddmr"])
    assert [r for r, _ in mean] == [1, 2, 3, 4, 5]
    assert [v for _, v in mean] == pytest.approx([0.3, 0.5, 0.55, 0.65, 0.7])
    rows = {r["method"]: r for r in sr.rounds_rows("d", curves, chosen, ("fedmf", "fedncf"))}
    for r in rows.values():
        assert r["target_method"] == "fedmf" and r["target_val_hr@10"] == pytest.approx(0.6)
    assert (rows["feddmr"]["round_to_target"], rows["feddmr"]["best_round"]) == (4, 5)
    assert rows["feddmr"]["upload_mb_to_target"] == pytest.approx(800 / 1e6)
    assert rows["feddmr"]["best_val_hr@10"] == pytest.approx(0.7)
    assert (rows["fedmf"]["round_to_target"], rows["fedmf"]["best_round"]) == (3, 3)
    assert rows["fedmf"]["upload_mb_to_target"] == ""        # no byte counts: not invented
    assert rows["fedncf"]["round_to_target"] == ""           # never reaches 0.6
    assert rows["feddmr"]["rising_last_10"] and not rows["fedncf"]["rising_last_10"]
    assert sr.rising_methods(curves, chosen) == ["feddmr"]


def test_seeds_of_different_lengths_use_the_common_rounds():
    seeds = {"0": _rows("m", "p", 0, [0.1, 0.2, 0.3]), "1": _rows("m", "p", 1, [0.3, 0.4])}
    mean = sr.mean_curve(seeds)
    assert [r for r, _ in mean] == [1, 2] and [v for _, v in mean] == pytest.approx([0.2, 0.3])
