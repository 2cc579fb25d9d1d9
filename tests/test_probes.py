"""The protocol probes (issue #11): `popularity` (aggregated training counts) and `local`
(PFedRec with every parameter private), checked against independent computations."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from feddmr_jax import cli
from feddmr_jax import config as config_lib
from feddmr_jax.config import RunConfig
from feddmr_jax.errors import ConfigError
from feddmr_jax.federated.private_store import PrivateStoreTooLarge, store_bytes
from feddmr_jax.models.local import LocalConfig
from feddmr_jax.models.pfedrec import PFedRecConfig
from feddmr_jax.train import build_experiment, evaluate_state, run_round, train

from engine_helpers import TINY_DATA
from float_compare import METRIC_ULPS, assert_trees_close

POP_DATA = dataclasses.replace(TINY_DATA, synthetic_users=40, synthetic_items=60,
                               synthetic_interactions=10.0, eval_negatives=20)


def _config(name: str, data=TINY_DATA, model: dict | None = None, **train) -> RunConfig:
    """A tiny run of ``name``: its reference [train] defaults, small batches, then ``train``."""
    raw = {"train": {"model": name, "rounds": 2, "batch_size": 16, "chunk_size": 4, **train},
           "model": model or {}}
    cfg = dataclasses.replace(config_lib.build_config(raw, "test"), data=data)
    cfg.validate()
    return cfg


def _numpy_hr(scores: np.ndarray, eval_set, k: int = 10) -> float:
    """HR@k of per-item ``scores`` on ``eval_set``, ties ranked pessimistically."""
    hits = []
    for cand, labels, mask in zip(eval_set.candidates, eval_set.labels, eval_set.mask):
        s, labels = scores[cand], labels & mask
        if not labels.any():
            continue
        pos = s[labels].max()
        rank = int(np.sum((s >= pos) & mask & ~labels))   # negatives at or above it
        hits.append(rank < k)
    return float(np.mean(hits))


@pytest.mark.parametrize("sparse", [True, False])
def test_popularity_after_one_round_ranks_by_training_counts(sparse):
    exp = build_experiment(_config("popularity", POP_DATA, sparse=sparse, chunk_size=8))
    assert exp.clients_per_round == exp.split.num_users          # every client, one round
    state, stats = run_round(exp, exp.algorithm.init(exp.keys["init"]), 1)
    assert stats.accepted == exp.split.num_users
    counts = np.bincount(exp.split.train["item"].to_numpy(), minlength=exp.split.num_items)
    table = np.asarray(state.shared.tables["counts"])[:, 0]
    # Server mean over participants = sum / P: positives only, sampled negatives add nothing.
    # Integer sums are exact; the division and the test's product round by an ulp each.
    assert_trees_close(table * exp.split.num_users, counts.astype(np.float64), ulps=4,
                       what="counts")
    assert not state.private_store.tables and not state.private_store.dense
    for eval_set in (exp.val_set, exp.test_set):
        got = evaluate_state(exp, state, eval_set)["hr@10"]
        assert_trees_close(got, _numpy_hr(counts.astype(np.float64), eval_set),
                           ulps=METRIC_ULPS, scale=1.0, what="hr@10")   # the same ranks


def test_popularity_refuses_loss_terms_and_optimizer_keys():
    with pytest.raises(ConfigError, match="no loss"):
        build_experiment(_config("popularity", mu=0.1))
    with pytest.raises(ConfigError, match="train.lr does not apply"):
        config_lib.build_config({"train": {"model": "popularity", "lr": 0.1}})


def _probe(train_negatives: str) -> dict:
    cfg = RunConfig.create(model="local", dataset="synthetic", rounds=20, num_negatives=16,
                           eval_every=20, checkpoint_every=0, train_negatives=train_negatives,
                           synthetic_users=100, synthetic_items=300)
    return train(cfg, progress=False)


def test_local_probe_leaks_with_reference_negatives_and_is_chance_with_strict():
    # 100 candidates per user: chance HR@10 is 0.1 (binomial sd 0.03 over 100 users).
    # Measured (seeds 0 and 1): reference 1.0 / 1.0, strict 0.05-0.14.
    leaky, honest = _probe("reference"), _probe("strict")
    for split in ("val", "test"):
        assert leaky[split]["hr@10"] >= 0.8, leaky[split]
        assert honest[split]["hr@10"] <= 0.3, honest[split]
        assert honest[split]["auc"] <= 0.65, honest[split]


def test_local_has_no_shared_params_and_local_eval_equals_global():
    results = {}
    for mode in ("global", "local"):
        exp = build_experiment(_config("local", model={"dim": 8}, eval_mode=mode))
        state = exp.algorithm.init(exp.keys["init"])
        assert not jax.tree.leaves(state.shared)                 # the server holds nothing
        for r in (1, 2):
            state, _ = run_round(exp, state, r)
        assert not jax.tree.leaves(state.shared)
        results[mode] = [evaluate_state(exp, state, s) for s in (exp.val_set, exp.test_set)]
    for g, loc in zip(results["global"], results["local"]):
        names = ("hr@10", "ndcg@10", "auc")
        assert_trees_close({k: g[k] for k in names}, {k: loc[k] for k in names},
                           ulps=METRIC_ULPS, scale=1.0, what="global vs local")  # same ranks


def test_local_refuses_a_store_above_max_private_gb():
    cfg = _config("local", model={"dim": 8}, max_private_gb=1e-6)
    with pytest.raises(PrivateStoreTooLarge) as err:
        build_experiment(cfg)
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, ConfigError)
    assert "items_personal" in message and "train.max_private_gb" in message
    # The bound counts the private item table: U x (I x d + head) float32.
    exp = build_experiment(dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, max_private_gb=4.0)))
    u, i = exp.split.num_users, exp.split.num_items
    assert store_bytes(exp.model, u) == u * (i * 8 + 8 + 1) * 4


@pytest.mark.parametrize("argv", [
    ["--model", "popularity", "--dataset", "synthetic", "--rounds", "1"],
    ["--model", "local", "--dataset", "synthetic", "--rounds", "2"],
])
def test_cli_trains_the_probes(tmp_path, argv):
    out = tmp_path / "run"
    assert cli.main(["train", *argv, "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_mode"] == "global"
    assert 0.0 <= summary["test"]["hr@10"] <= 1.0


def test_local_config_restates_pfedrec_defaults():
    assert dataclasses.asdict(LocalConfig()) == dataclasses.asdict(PFedRecConfig())
