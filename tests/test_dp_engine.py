"""DP-FedAvg wired into the engine: config checks, clipping, noise, accounting, CLI, resume.

Engine runs use FedNCF (item tables *and* shared dense MLP leaves, quick to
compile) on the tiny synthetic dataset of engine_helpers (``ncf_config``).
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from feddmr_jax import cli
from feddmr_jax import config as config_lib
from feddmr_jax.errors import ConfigError
from feddmr_jax.federated.rounds import plan_round
from feddmr_jax.federated.sampling import sample_clients
from feddmr_jax.privacy.plan import default_delta
from feddmr_jax.train import build_experiment, run_round, train

from engine_helpers import (PLAIN, TINY_TRAIN, adam_reach, copy_tree, max_abs_diff, ncf_config,
                            run_rounds)
from float_compare import ADAM_ULPS, assert_trees_close, bound, max_abs


def tree_norm(tree) -> float:
    return math.sqrt(sum(float(np.sum(np.asarray(x, np.float64) ** 2))
                         for x in jax.tree.leaves(tree)))


def tree_sub(a, b):
    return jax.tree.map(lambda x, y: np.asarray(x, np.float64) - np.asarray(y, np.float64), a, b)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("train, message", [
    (dict(dp_clip=1.0), "train.table_mean='touched' cannot be used with DP"),
    (dict(dp_clip=1.0, table_mean="participants", aggregator="median"), "train.aggregator"),
    (dict(dp_clip=1.0, table_mean="participants", weighting="examples"), "train.weighting"),
    (dict(dp_noise=1.0), "train.dp_noise needs train.dp_clip"),
    (dict(dp_delta=1e-5), "train.dp_delta needs train.dp_clip"),
    (dict(dp_clip=-1.0, table_mean="participants"), "train.dp_clip must be positive"),
    (dict(dp_clip=1.0, dp_noise=-1.0, table_mean="participants"), "train.dp_noise"),
    (dict(dp_clip=1.0, dp_delta=2.0, table_mean="participants"), "train.dp_delta must be in"),
    (dict(dp_clip=1.0, dp_accountant="moments", table_mean="participants"), "dp_accountant"),
    (dict(secure_agg=True, aggregator="trimmed_mean"), "cannot be used with train.secure_agg"),
    (dict(secure_agg=True, secure_agg_neighbors=3), "secure_agg_neighbors must be even"),
    (dict(secure_agg=True, secure_agg_bits=31), "secure_agg_bits must be in"),
    (dict(secure_agg=True, weighting="examples", aggregator="clipped_mean"),
     "train.weighting='examples' cannot be used with train.secure_agg"),
    (dict(secure_agg=True), "train.secure_agg needs a bound on each upload"),
])
def test_incompatible_privacy_settings_name_the_field(train, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dataclasses.replace(TINY_TRAIN, **train).validate()


def test_delta_must_be_below_one_over_users():
    with pytest.raises(ConfigError, match=r"train.dp_delta=0.05 must be below 1 / number of users"):
        build_experiment(ncf_config(dp_clip=1.0, dp_noise=1.0, dp_delta=0.05, **PLAIN))
    exp = build_experiment(ncf_config(dp_clip=1.0, dp_noise=1.0, **PLAIN))
    assert exp.privacy.delta == default_delta(exp.split.num_users) == 1 / (10 * 24)


# ---------------------------------------------------------------- DP-FedAvg


def test_clipping_bounds_a_clients_whole_update():
    """One participant, server lr 1, no noise: the global change is its clipped update."""
    clip = 1e-3
    _, before, after, stats = run_rounds(ncf_config(clients_per_round=1, dp_clip=clip, **PLAIN), 1)
    assert stats.accepted == 1
    change = tree_sub(after.shared, before.shared)
    # Measured as after - before, each changed value carries the rounding of the new
    # param (<= EPS32 / 2 of it): the norm is clip up to sqrt(changed) times that.
    changed = sum(int(np.count_nonzero(x)) for x in jax.tree.leaves(change))
    slack = bound(ulps=0.5 * changed ** 0.5, scale=max_abs(after.shared))
    assert tree_norm(change) <= clip + bound(ulps=4, scale=clip) + slack
    assert tree_norm(change) >= 0.99 * clip           # the raw update was larger: clipped
    assert tree_norm(change.dense) > 0 and tree_norm(change.tables) > 0  # both kinds of leaf


def test_dp_without_noise_is_the_mean_of_clipped_updates():
    """Independent reference: each participant's update from the client function,
    clipped in numpy over all its shared leaves (used rows only), summed, / m."""
    clip = 0.05
    cfg = ncf_config(clients_per_round=10, dp_clip=clip, **PLAIN)
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    before = copy_tree(state)
    r = 1
    participants = sample_clients(exp.keys["sample"], r, exp.split.num_users, 10)
    client_fn = jax.jit(exp.algorithm.parts.client_fn)
    round_key = jax.random.fold_in(exp.keys["train"], r)
    total = jax.tree.map(lambda x: np.zeros(x.shape, np.float64), before.shared)
    norms = []
    for chunk in plan_round(exp.planner, participants, r):
        for c in np.flatnonzero(chunk.client_mask):
            row = jax.tree.map(lambda x: x[c], chunk)
            cid = int(chunk.client_ids[c])
            private = jax.tree.map(lambda s: s[cid], before.private_store)
            out = client_fn(before.shared, private, row, jax.random.fold_in(round_key, cid))
            used = np.asarray(out.row_mask)[:, None]
            tables = {k: np.where(used, np.asarray(d, np.float64), 0.0)
                      for k, d in out.delta.tables.items()}
            dense = jax.tree.map(lambda x: np.asarray(x, np.float64), out.delta.dense)
            norm = tree_norm((tables, dense))
            norms.append(norm)
            scale = min(1.0, clip / norm)
            for k, t in tables.items():
                np.add.at(total.tables[k], np.asarray(out.rows), scale * t)
            total = total._replace(dense=jax.tree.map(lambda s, d: s + scale * d,
                                                      total.dense, dense))
    assert len(norms) == 10 and max(norms) > clip      # clipping is active
    state, _ = run_round(exp, state, r)
    change = tree_sub(state.shared, before.shared)
    expected = jax.tree.map(lambda s: s / 10, total)
    # The reference calls the client function one client at a time, the engine a vmapped
    # chunk: fused differently, one round of Adam apart (float_compare.ADAM_ULPS); the
    # clipping and the mean only shrink that difference.
    budget = dict(ulps=ADAM_ULPS, scale=adam_reach(exp))
    assert_trees_close(change, expected, **budget, what="clipped mean")
    # ... and not the plain (unclipped) FedAvg mean.
    _, _, plain, _ = run_rounds(ncf_config(clients_per_round=10, **PLAIN), 1)
    assert max_abs_diff(tree_sub(plain.shared, before.shared), expected) > 100 * bound(**budget)


def test_noise_covers_every_coordinate_with_std_z_clip_over_m():
    clip, z, m = 0.1, 2.0, 12
    base = dict(clients_per_round=m, dp_clip=clip, **PLAIN)
    exp, _, quiet, _ = run_rounds(ncf_config(**base), 1)
    _, _, noisy, _ = run_rounds(ncf_config(dp_noise=z, **base), 1)
    noise = np.concatenate([np.ravel(x) for x in
                            jax.tree.leaves(tree_sub(noisy.shared, quiet.shared))])
    assert noise.size > 500
    assert np.all(noise != 0)                 # untouched item rows are noised too
    assert noise.std() == pytest.approx(z * clip / m, rel=0.1)   # ~4 standard errors
    assert abs(noise.mean()) < 4 * z * clip / m / math.sqrt(noise.size)
    assert max_abs_diff(noisy.private_store, quiet.private_store) == 0.0  # round 1: same clients


def test_cli_flags_metrics_and_summary_epsilon_match_dp_accounting(tmp_path):
    import dp_accounting

    toml = tmp_path / "run.toml"
    toml.write_text("[data]\ndataset = \"synthetic\"\nsynthetic_users = 30\n"
                    "synthetic_items = 40\nsynthetic_interactions = 8.0\neval_negatives = 10\n")
    out = tmp_path / "run"
    argv = ["train", "--config", str(toml), "--model", "fedncf", "--dim", "8",
            "--rounds", "3", "--batch-size", "16", "--chunk-size", "8", "--quiet",
            "--clients-per-round", "10", "--table-mean", "participants", "--dp-clip", "0.5",
            "--dp-noise", "1.1", "--dp-delta", "0.001", "--dp-accountant", "rdp",
            "--secure-agg", "--secure-agg-neighbors", "4", "--secure-agg-bits", "18",
            "--out", str(out)]
    assert cli.main(argv) == 0
    saved = json.loads((out / "config.json").read_text())["train"]
    assert (saved["dp_clip"], saved["dp_noise"], saved["dp_delta"], saved["dp_accountant"],
            saved["secure_agg"], saved["secure_agg_neighbors"], saved["secure_agg_bits"]) == (
        0.5, 1.1, 0.001, "rdp", True, 4, 18)
    assert config_lib.from_dict(json.loads((out / "config.json").read_text())).train.dp_clip == 0.5

    def direct(rounds):
        acct = dp_accounting.rdp.RdpAccountant()
        event = dp_accounting.PoissonSampledDpEvent(10 / 30, dp_accounting.GaussianDpEvent(1.1))
        acct.compose(event, rounds)
        return acct.get_epsilon(0.001)

    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["round"] for line in lines] == [1, 2, 3]
    for line in lines:
        assert line["epsilon"] == pytest.approx(direct(line["round"]), rel=1e-9)
    assert lines[0]["epsilon"] < lines[1]["epsilon"] < lines[2]["epsilon"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epsilon"] == pytest.approx(direct(3), rel=1e-9)
    assert summary["delta"] == 0.001
    assert summary["privacy"]["sampling_rate"] == pytest.approx(1 / 3)
    assert summary["privacy"]["secure_agg"] is True


def test_dp_resume_is_bitwise_reproducible(tmp_path):
    from feddmr_jax.train import Interrupted

    cfg = ncf_config(rounds=2, clients_per_round=8, dp_clip=0.2, dp_noise=1.0,
                     checkpoint_every=1, **PLAIN)
    full = train(cfg, tmp_path / "full", progress=False)
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "cut", progress=False, stop_after_round=1)
    resumed = train(cfg, tmp_path / "cut", progress=False, resume=True)
    assert resumed["val"] == full["val"] and resumed["test"] == full["test"]
    assert resumed["epsilon"] == full["epsilon"]
    assert (tmp_path / "full" / "metrics.jsonl").read_text().count("epsilon") == 2


def test_dp_flags_compose_with_the_defaults(tmp_path):
    """`feddmr train --dataset synthetic --rounds 3 --dp-clip 1.0 --dp-noise 1.0`
    (smaller data and model for speed) runs: the DP-compatible row mean is chosen,
    said in summary.json; an explicit --table-mean touched stays an error."""
    toml = tmp_path / "run.toml"
    toml.write_text("[data]\nsynthetic_users = 30\nsynthetic_items = 40\n"
                    "synthetic_interactions = 8.0\neval_negatives = 10\n")
    out = tmp_path / "run"
    base = ["train", "--config", str(toml), "--dataset", "synthetic", "--rounds", "3",
            "--dp-clip", "1.0", "--dp-noise", "1.0", "--model", "fedmf", "--dim", "8",
            "--batch-size", "16", "--quiet"]
    assert cli.main(base + ["--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert math.isfinite(summary["epsilon"]) and summary["epsilon"] > 0
    assert summary["privacy"]["table_mean"] == "participants"
    assert summary["config"]["train"]["table_mean"] == "participants"
    assert cli.main(base + ["--table-mean", "touched", "--out", str(tmp_path / "x")]) == 2
