"""Secure aggregation never sums a lone member: configurations where every round
would have one are refused at build time, and a round in which dropouts leave a
member of the sum without a partner is aborted (no update applied), as
Bonawitz et al.'s server aborts a round below its threshold."""

from __future__ import annotations

import logging

import jax
import numpy as np
import pytest

from feddmr_jax.errors import ConfigError
from feddmr_jax.federated.faults import assign_faults
from feddmr_jax.federated.rounds import iter_round
from feddmr_jax.federated.sampling import sample_clients
from feddmr_jax.privacy.secure_agg import round_graph
from feddmr_jax.train import build_experiment, run_round

from engine_helpers import copy_tree, ncf_config

SECURE = dict(secure_agg=True, aggregator="clipped_mean", clip_norm=1.0)


@pytest.mark.parametrize("train, message", [
    (dict(clients_per_round=1), "needs at least 2 clients per round, got 1"),
    (dict(clients_per_round=2, client_dropout=0.3), "removes 1 of the 2 clients"),
    (dict(clients_per_round=4, client_dropout=0.25, fault_nan=0.5), "removes 3 of the 4"),
])
def test_configurations_with_a_lone_member_every_round_are_refused(train, message):
    with pytest.raises(ConfigError, match=message):
        build_experiment(ncf_config(**SECURE, **train))


def test_a_round_with_a_lone_member_is_aborted(caplog):
    exp = build_experiment(ncf_config(**SECURE, clients_per_round=6, secure_agg_neighbors=2))
    state = exp.algorithm.init(exp.keys["init"])
    before = copy_tree(state.shared)
    sampled = sample_clients(exp.keys["sample"], 1, exp.split.num_users, exp.clients_per_round)
    # Ring k = 2: drop both partners of the first member on the ring; it is alone in the sum.
    graph = round_graph(sampled, np.zeros(0, np.int32), 2, np.random.default_rng(0),
                        jax.random.key(1))
    gone = graph.ids[graph.partners[0]]
    graph = round_graph(sampled, gone, 2, np.random.default_rng(0), jax.random.key(1))
    present = np.setdiff1d(sampled, gone)
    faults = assign_faults(present, 1, 0, exp.cfg.train.faults())
    chunks = iter_round(exp.planner, faults.participants, 1)
    with caplog.at_level(logging.WARNING):
        state, stats = exp.algorithm.apply(state, chunks, jax.random.key(2), masks=graph)
    assert stats.aborted and stats.accepted == 0 and np.isnan(stats.train_loss)
    assert "round aborted, no update applied: 1 client(s)" in caplog.text
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.shared)):
        np.testing.assert_array_equal(a, np.asarray(b))     # the global model did not move
    # The same round without the dropouts is applied (the abort is the lone member's doing).
    state, stats = run_round(exp, state, 1)
    assert not stats.aborted and stats.accepted == 6
