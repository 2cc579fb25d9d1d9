"""One engine round against an independent reference (tests/reference_round.py).

The engine's round (``build_experiment`` + ``exp.algorithm.apply``) and a plain
per-client loop written from the math (numpy Adam, numpy FedMF gradients, a
hand-written FedDMR forward pass under ``jax.grad``) see the same inputs: the
initial state, the round's chunks from the planner (examples, labels,
memories: data, not code under test) and the round key. They must agree to
float rounding (through Adam: tests/float_compare.py) on the new shared params,
every private param and the round's loss, in sparse and dense mode. Two epochs
and batches smaller than a client's row exercise the per-epoch shuffle, the
partial last batch and Adam's step count.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from feddmr_jax.config import DataConfig, RunConfig, TrainConfig
from feddmr_jax.federated.rounds import plan_round
from feddmr_jax.models.feddmr import FedDMRConfig
from feddmr_jax.models.fedmf import FedMFConfig
from feddmr_jax.train import build_experiment

import reference_round as ref
from engine_helpers import adam_reach
from float_compare import ADAM_ULPS, assert_trees_close, bound

DATA = DataConfig(dataset="synthetic", synthetic_users=16, synthetic_items=30,
                  synthetic_interactions=6.0, eval_negatives=5)
TRAIN = TrainConfig(rounds=1, local_epochs=2, batch_size=8, chunk_size=4, lr=0.03,
                    embedding_lr=0.1, mu=0.5, table_mean="participants", weighting="uniform",
                    optimizer="adam", server_lr=1.0)
MODELS = {
    "fedmf": FedMFConfig(dim=4),
    "feddmr": FedDMRConfig(dim=4, heads=2, layers=1, history_len=3, norm="post"),
}
ROUND = 3


def _numpy(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


def _engine_and_reference(name: str, sparse: bool, **ref_overrides):
    cfg = RunConfig(data=DATA, model=MODELS[name],
                    train=dataclasses.replace(TRAIN, model=name, sparse=sparse))
    exp = build_experiment(cfg, sequential=False)
    state = exp.algorithm.init(exp.keys["init"])
    init = _numpy(state)                         # the engine donates its state
    participants = np.array([0, 2, 3, 5, 8, 9, 11, 14])
    chunks = plan_round(exp.planner, participants, ROUND)
    round_key = jax.random.fold_in(exp.keys["train"], ROUND)
    new_state, stats = exp.algorithm.apply(state, chunks, round_key)

    # ---- reference, from the same inputs
    t = dict(epochs=TRAIN.local_epochs, batch_size=TRAIN.batch_size, lr=TRAIN.lr,
             embedding_lr=TRAIN.embedding_lr, mu=TRAIN.mu)
    t.update(ref_overrides)
    grad_fn = (ref.fedmf_grad if name == "fedmf"
               else ref.feddmr_grad_fn(MODELS[name].heads))
    global_shared = {"items": init.shared.tables["items"], "dense": init.shared.dense}
    users = init.private_store.dense["user"].copy()
    client_shared, losses, seen = [], [], []
    for chunk in chunks:
        for c in np.flatnonzero(chunk.client_mask):
            cid = int(chunk.client_ids[c])
            row = ref.ClientRows(chunk.items[c], chunk.labels[c], chunk.mask[c],
                                 chunk.history[c], chunk.history_mask[c])
            params = {"user": users[cid], **global_shared}
            new, loss = ref.client_round(params, global_shared, row,
                                         ref.client_key(round_key, cid), grad_fn, **t)
            users[cid] = new["user"]
            client_shared.append({"items": new["items"], "dense": new.get("dense", {})})
            losses.append(loss)
            seen.append(cid)
    assert sorted(seen) == participants.tolist()
    expected = ref.fedavg(global_shared, client_shared)
    return init, new_state, stats, expected, users, float(np.mean(losses)), adam_reach(exp)


def _assert_round_matches(name, sparse, **ref_overrides):
    init, state, stats, expected, users, loss, reach = _engine_and_reference(
        name, sparse, **ref_overrides)
    # float32 both, summed and fused differently: one round of Adam, which moves an
    # element by lr x a gradient's relative rounding difference per step (ADAM_ULPS).
    budget = dict(ulps=ADAM_ULPS, scale=reach)
    assert_trees_close(state.shared.tables["items"], expected["items"], **budget, what="items")
    engine_dense = ref.flatten(_numpy(state.shared.dense))
    assert set(engine_dense) == set(ref.flatten(expected.get("dense", {})))
    assert_trees_close(engine_dense, ref.flatten(expected.get("dense", {})), **budget,
                       what="dense")
    assert_trees_close(state.private_store.dense["user"], users, **budget, what="users")
    assert stats.accepted == 8
    # The loss: means of batch means of forward passes (~100 roundings each): 2**8 ulps.
    assert_trees_close(stats.train_loss, loss, ulps=2**8, what="loss")
    # The round moved things far more than the tolerance (the comparison has teeth; the
    # mean over 8 clients dilutes the items' step to ~0.04, a lost mu term moves them 0.23).
    assert np.max(np.abs(expected["items"] - init.shared.tables["items"])) > 10 * bound(**budget)
    assert np.max(np.abs(users - init.private_store.dense["user"])) > 10 * bound(**budget)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("name", ["fedmf", "feddmr"])
def test_engine_round_matches_independent_reference(name, sparse):
    _assert_round_matches(name, sparse)


def test_reference_without_proximal_term_disagrees():
    """Control: the same comparison fails when the reference drops (mu/2)||.||^2."""
    with pytest.raises(AssertionError):
        _assert_round_matches("fedmf", True, mu=0.0)
