"""Communication accounting (federated/communication.py) and rounds to target
(rounds_to_target.py), checked against counts made from what the clients upload."""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from feddmr_jax.federated.audit import audit_round
from feddmr_jax.federated.communication import RoundTraffic
from feddmr_jax.federated.rounds import plan_round
from feddmr_jax.federated.sampling import sample_clients
from feddmr_jax.privacy.plan import round_privacy
from feddmr_jax.train import build_experiment, run_round, train

from engine_helpers import tiny_config
from run_helpers import read_metrics

SECURE = dict(secure_agg=True, aggregator="clipped_mean", clip_norm=5.0)


def _config(**train):
    cfg = tiny_config(clients_per_round=6, **train)
    # A catalogue larger than a client's rows: sparse uploads are smaller than tables.
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, synthetic_items=300))


def _nbytes(tree) -> int:
    return sum(np.asarray(x).nbytes for x in jax.tree.leaves(tree))


def _by_hand(exp, state, round_index, mode) -> list[int]:
    """Each participant's upload, counted from its client function's output."""
    participants = sample_clients(exp.keys["sample"], round_index, exp.split.num_users,
                                  exp.clients_per_round)
    _, masks = round_privacy(exp.privacy, round_index, participants, np.zeros(0, np.int32))
    key = jax.random.key(0)           # the values do not matter, only what is sent
    sizes = []
    for chunk in plan_round(exp.planner, participants, round_index):
        if mode == "secure":          # the masked dense upload, as the audit lists it
            entries = audit_round(exp.algorithm, chunk, masks=masks)
            one = sum(math.prod(e.shape) * np.dtype(e.dtype).itemsize for e in entries
                      if e.path.startswith("upload.masked"))
            sizes += [one] * int(chunk.client_mask.sum())
            continue
        for c in np.flatnonzero(chunk.client_mask):
            row = jax.tree.map(lambda x: x[c], chunk)
            private = jax.tree.map(lambda s: s[chunk.client_ids[c]], state.private_store)
            out = exp.algorithm.parts.client_fn(state.shared, private, row, key)
            if mode == "dense":       # whole tables, dense leaves and the row-use mask
                sizes.append(_nbytes(out.delta) + np.asarray(out.row_mask).nbytes)
                continue
            used = np.asarray(out.row_mask)
            rows = np.asarray(out.rows)[used]
            values = [np.asarray(t)[used] for t in out.delta.tables.values()]
            sizes.append(rows.nbytes + sum(v.nbytes for v in values) + _nbytes(out.delta.dense))
    return sizes


@pytest.mark.parametrize("mode, train", [("sparse", {}), ("dense", {"sparse": False}),
                                         ("secure", SECURE)])
def test_round_bytes_equal_a_count_of_the_uploaded_arrays(mode, train):
    exp = build_experiment(_config(**train))
    assert exp.traffic.mode == mode
    state = exp.algorithm.init(exp.keys["init"])
    expected = _by_hand(exp, state, 1, mode)
    download = _nbytes(state.shared)
    traffic = RoundTraffic(exp.traffic)
    run_round(exp, state, 1, traffic)
    record = traffic.record()
    assert record["upload_bytes"] == sum(expected)
    assert record["upload_bytes_max"] == max(expected)
    assert record["upload_bytes_mean"] == pytest.approx(np.mean(expected), rel=1e-12)
    assert record["download_bytes"] == download * exp.clients_per_round
    assert record["download_bytes_mean"] == record["download_bytes_max"] == download
    if mode == "sparse":
        assert max(expected) < download     # a client sends its rows, not the tables


def test_metrics_and_summary_record_bytes_and_rounds_to_target(tmp_path):
    cfg = _config(rounds=4, eval_every=1, select_metric="ndcg@10", client_dropout=0.2)
    summary = train(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path)
    assert summary["upload_bytes"] == sum(r["upload_bytes"] for r in rows) > 0
    assert summary["download_bytes"] == sum(r["download_bytes"] for r in rows) > 0
    for r in rows:            # dropped-out clients download but never upload
        reporting = r["accepted"] + r["dropped_nonfinite"]
        assert r["upload_bytes_mean"] * reporting == pytest.approx(r["upload_bytes"], rel=1e-12)
        assert r["download_bytes"] == r["download_bytes_max"] * (reporting + r["unreported"])
    # Rounds to target, from metrics.jsonl alone.
    values = [(r["round"], r["val"]["ndcg@10"]) for r in rows]
    best = max(v for _, v in values)
    best_round = max(rnd for rnd, v in values if v == best)       # ties: the later round
    got = summary["rounds_to_target"]
    assert got["metric"] == "ndcg@10" and got["best"]["round"] == best_round
    assert got["best"]["value"] == best == summary["val"]["ndcg@10"]
    for key, fraction in (("95%", 0.95), ("99%", 0.99)):
        first = next(rnd for rnd, v in values if v >= fraction * best)
        assert got[key]["round"] == first
        assert got[key]["upload_bytes"] == sum(r["upload_bytes"] for r in rows[:first])
        assert got[key]["download_bytes"] == sum(r["download_bytes"] for r in rows[:first])
    assert json.loads((tmp_path / "summary.json").read_text())["rounds_to_target"] == got
