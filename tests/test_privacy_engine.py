"""DP-FedAvg and simulated secure aggregation wired into the engine (issue 7).

Engine runs use FedNCF (item tables *and* shared dense MLP leaves, quick to
compile) on the tiny synthetic dataset of engine_helpers.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax import cli
from feddmr_jax import config as config_lib
from feddmr_jax.errors import ConfigError
from feddmr_jax.federated.aggregation import accumulate, init_accumulator
from feddmr_jax.federated.rounds import plan_round
from feddmr_jax.federated.sampling import sample_clients
from feddmr_jax.models.base import Leaves
from feddmr_jax.federated.secure_round import (SecureUpload, decode_upload, encoded_uploads,
                                               init_masked_accumulator, masked_accumulate,
                                               masked_uploads, unmask)
from feddmr_jax.privacy.plan import default_delta
from feddmr_jax.privacy.secure_agg import ring_partners, round_graph, sum_self_masks
from feddmr_jax.train import build_experiment, run_round, train

from engine_helpers import TINY_DATA, TINY_TRAIN, adam_reach, copy_tree, max_abs_diff
from float_compare import ADAM_ULPS, assert_trees_close, bound, max_abs

PLAIN = dict(table_mean="participants", mu=0.0)
# Jitted once here: eager lax.scan over mask partners dispatches op by op.
jit_uploads = jax.jit(masked_uploads, static_argnames="num_items")
jit_masked_accumulate = jax.jit(masked_accumulate)


def ncf_config(**train):
    cfg = config_lib.RunConfig(data=TINY_DATA, train=dataclasses.replace(TINY_TRAIN, **train))
    return config_lib.with_model(cfg, "fedncf", dim=8)


def run_rounds(cfg, rounds):
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    first = copy_tree(state)
    for r in range(1, rounds + 1):
        state, stats = run_round(exp, state, r)
    return exp, first, state, stats


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


# ---------------------------------------------------------------- secure aggregation


BITS = 20
# Fixed point: each upload value is rounded to a multiple of 2**-BITS, an error <= 2**-(BITS+1)
# = 2**(22 - BITS) ulps of 1 (federated/secure_round.py).
FIXED_POINT_ULPS = 2 ** (22 - BITS)


def _secure_sum_ulps(members: int, term_sum: float) -> float:
    """Budget, in ulps of 1, of a secure sum of ``members`` uploads against the plain
    float32 sum of the same uploads: FIXED_POINT_ULPS per upload, plus <= 1 ulp of a
    partial sum per addition of the plain sum, a partial sum being <= ``term_sum`` (the
    sum of its terms' magnitudes)."""
    return members * (FIXED_POINT_ULPS + term_sum)


def _graph(ids, k, absent=(), seed=0):
    return round_graph(np.asarray(ids), np.asarray(absent, np.int32), k,
                       np.random.default_rng(seed), jax.random.key(seed + 1), BITS)


@pytest.mark.parametrize("members, k", [(12, 4), (12, 0), (5, 8), (2, 2)])
def test_masking_graph_is_symmetric_with_k_distinct_partners(members, k):
    partners, valid = ring_partners(members, k, np.random.default_rng(3))
    width = members - 1 if k == 0 or k >= members - 1 else k
    assert partners.shape == valid.shape == (members, width) and valid.all()
    for p in range(members):
        assert len(set(partners[p].tolist())) == width and p not in partners[p]
        for q in partners[p]:
            assert p in partners[q]


def _chunk_deltas(key, clients, local_rows, num_items, dim):
    k1, k2, k3 = jax.random.split(key, 3)
    rows = jax.vmap(lambda k: jax.random.permutation(k, num_items)[:local_rows])(
        jax.random.split(k1, clients))
    delta = Leaves({"items": 0.05 * jax.random.normal(k2, (clients, local_rows, dim))},
                   {"w": 0.05 * jax.random.normal(k3, (clients, 6))})
    row_mask = jnp.arange(local_rows)[None, :] < jnp.array([local_rows - i % 3
                                                           for i in range(clients)])[:, None]
    return delta, rows.astype(jnp.int32), row_mask


def _flat(upload, c):
    return np.concatenate([np.ravel(v[c]) for v in jax.tree.leaves(upload)])


def test_masked_uploads_look_random_but_sum_to_the_plain_sum():
    clients, num_items, dim = 12, 30, 4
    ids = np.arange(100, 100 + clients) * 3
    delta, rows, row_mask = _chunk_deltas(jax.random.key(0), clients, 10, num_items, dim)
    weights, yes = jnp.ones(clients), jnp.ones(clients, bool)
    graph = _graph(ids, 4)
    masked = jit_uploads(delta, weights, ids, yes, rows, row_mask, graph, num_items=num_items)
    encoded = encoded_uploads(delta, weights, rows, row_mask, graph, num_items)
    assert all(x.dtype == jnp.uint32 for x in jax.tree.leaves(masked))
    raw, seen = decode_upload(encoded, BITS), decode_upload(masked, BITS)
    # The raw dense upload is the weighted delta on the client's used rows, 0 elsewhere.
    np.testing.assert_allclose(raw.delta.dense["w"], delta.dense["w"], atol=2.0**-BITS)
    assert np.mean(np.asarray(raw.delta.tables["items"]) == 0) > 0.5
    assert np.mean(np.asarray(seen.delta.tables["items"]) == 0) < 1e-3  # rows are hidden
    for c in range(clients):
        x, y = _flat(raw, c), _flat(seen, c)
        assert np.linalg.norm(y - x) > 100 * np.linalg.norm(x)
        words = _flat(masked, c).astype(np.float64) / 2.0**32       # uniform on [0, 1)
        assert abs(words.mean() - 0.5) < 0.08 and abs(words.std() - 12**-0.5) < 0.05
    # No linear relation between a leaf's raw and masked values (pooled over clients).
    for x, y in [(raw.delta.tables["items"], seen.delta.tables["items"]),
                 (raw.delta.dense["w"], seen.delta.dense["w"]),
                 (raw.row_weight["items"], seen.row_weight["items"])]:
        x, y = np.ravel(x), np.ravel(y)
        assert abs(np.corrcoef(x, y)[0, 1]) < 4 / np.sqrt(x.size)   # ~4 standard errors
    ring_sum = lambda t, sel=slice(None): jax.tree.map(  # noqa: E731
        lambda v: np.sum(np.asarray(v)[sel], 0, dtype=np.uint32), t)
    float_sum = lambda t, sel=slice(None): jax.tree.map(  # noqa: E731
        lambda v: np.sum(np.asarray(v, np.float64)[sel], 0), t)
    # The pair masks cancel in the sum; the self masks come off with the members' self seeds.
    template = jax.tree.map(lambda x: jnp.zeros(x.shape[1:], x.dtype), masked)
    own = sum_self_masks(jnp.asarray(ids), yes, graph.self_key, template)
    unmasked = jax.tree.map(lambda t, m: np.asarray(t, np.uint32) - np.asarray(m, np.uint32),
                            ring_sum(masked), own)
    # Decoding divides by exp2(BITS) (within an ulp): the decoded ring sum and the float64
    # sum of the decoded uploads differ by <= an ulp of each upload and of the sum.
    assert_trees_close(decode_upload(unmasked, BITS), float_sum(raw), ulps=clients + 1,
                       scale=max_abs(raw), what="unmasked sum")
    assert max_abs_diff(decode_upload(ring_sum(masked), BITS), float_sum(raw)) > 100
    # A partial sum (one chunk of clients) stays masked.
    partial = decode_upload(ring_sum(masked, slice(0, 6)), BITS)
    assert max_abs_diff(partial, float_sum(raw, slice(0, 6))) > 100


def test_server_sums_recover_absent_clients_masks():
    """Chunks into the accumulator; a dropped-out member and a rejected (NaN)
    upload leave masks that only unmask() removes; the result equals plain
    accumulation of the accepted clients, counts exactly."""
    clients, num_items, dim = 12, 30, 4
    ids = np.arange(clients) * 5 + 2
    delta, rows, row_mask = _chunk_deltas(jax.random.key(1), clients, 10, num_items, dim)
    delta = delta._replace(dense={"w": delta.dense["w"].at[7].set(jnp.nan)})  # rejected
    finite = jnp.arange(clients) != 7
    dropped = 4                                     # never uploads
    shared = Leaves({"items": jnp.zeros((num_items, dim))}, {"w": jnp.zeros(6)})
    acc = init_masked_accumulator(shared, _graph(ids, 4, absent=[ids[dropped]]))
    plain = init_accumulator(shared)
    weights = jnp.arange(1.0, clients + 1)          # integer weights ("examples")
    for chunk in (slice(0, 5), slice(5, 12)):
        sel = lambda t: jax.tree.map(lambda v: v[chunk], t)  # noqa: E731
        real = jnp.arange(clients)[chunk] != dropped
        args = (sel(delta), jnp.where(real, weights[chunk], 0.0), finite[chunk], real)
        acc = jit_masked_accumulate(acc, *args, jnp.asarray(ids[chunk]), rows[chunk],
                                    row_mask[chunk])
        plain = accumulate(plain, *args, rows[chunk], row_mask[chunk])
    assert np.asarray(acc.masks.absent).sum() == 2
    still_masked = decode_upload(SecureUpload(acc.delta_sum, acc.row_weight, acc.weight,
                                              acc.masks.overflow), BITS)
    assert max_abs_diff(still_masked.delta, plain.delta_sum) > 100
    assert max_abs_diff(still_masked.row_weight, plain.row_weight) > 100
    recovered = unmask(acc)
    assert recovered.masks is None
    # 10 accepted uploads of weight x delta (the NaN one excluded from the magnitudes).
    terms = float(recovered.weight) * max(float(np.nanmax(np.abs(np.asarray(x))))
                                          for x in jax.tree.leaves(delta))
    assert_trees_close(recovered.delta_sum, plain.delta_sum, scale=1.0,
                       ulps=_secure_sum_ulps(10, terms), what="recovered sum")
    assert max_abs_diff(recovered.row_weight, plain.row_weight) == 0.0
    assert float(recovered.weight) == float(plain.weight) == 78 - 5 - 8  # minus clients 4, 7
    assert (float(recovered.accepted), float(recovered.dropped)) == (10.0, 1.0)


def test_secure_agg_training_equals_plain_training():
    """Two rounds, SGD (smooth in its inputs), row mean over users of each row,
    20% dropouts recovered from pair seeds and 10% NaN uploads rejected."""
    common = dict(optimizer="sgd", lr=0.5, embedding_lr=None, client_dropout=0.2,
                  fault_nan=0.1, mu=0.0, aggregator="clipped_mean", clip_norm=50.0)
    _, _, plain, stats = run_rounds(ncf_config(**common), 2)
    _, _, secure, secure_stats = run_rounds(
        ncf_config(secure_agg=True, secure_agg_neighbors=4, **common), 2)
    assert (stats.accepted, stats.dropped, stats.unreported) == (
        secure_stats.accepted, secure_stats.dropped, secure_stats.unreported)
    assert stats.unreported > 0 and stats.dropped > 0
    # Each round the secure mean is within 2**-(BITS+1) of the float mean, which rounds
    # its sum and the step by a few ulps of the params (2**4); the next round's SGD carries
    # a starting difference along, at most doubled: 2 rounds x 2 x that, of max(1, |params|).
    budget = dict(ulps=2 * 2 * (FIXED_POINT_ULPS + 2**4), scale=max(1.0, max_abs(plain.shared)))
    assert_trees_close(secure.shared, plain.shared, **budget, what="shared")
    assert_trees_close(secure.private_store, plain.private_store, **budget, what="private")


def test_secure_agg_with_dp_equals_dp_alone():
    dp = dict(clients_per_round=12, dp_clip=0.2, dp_noise=0.8, client_dropout=0.2, **PLAIN)
    _, before, plain, _ = run_rounds(ncf_config(**dp), 1)
    _, _, secure, _ = run_rounds(ncf_config(secure_agg=True, **dp), 1)
    # Same local training and noise; the secure mean is within 2**-(BITS+1) of the float
    # mean, which rounds its sum and the step by a few ulps of the params (2**4).
    budget = dict(ulps=FIXED_POINT_ULPS + 2**4, scale=max(1.0, max_abs(plain.shared)))
    assert_trees_close(secure.shared, plain.shared, **budget, what="shared")
    assert max_abs_diff(plain.shared, before.shared) > 1000 * bound(**budget)


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
