"""The audit of what the server receives and stores, for every registered model."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax import config as config_lib
from feddmr_jax.federated.rounds import plan_round
from feddmr_jax.methods import MODELS
from feddmr_jax.federated.audit import (AuditEntry, PrivacyLeakError, audit_round,
                                      check_no_private, find_leaks, format_audit,
                                      model_leaf_paths, model_path)
from feddmr_jax.privacy.plan import round_privacy
from feddmr_jax.train import build_experiment

from engine_helpers import TINY_DATA, TINY_TRAIN, tiny_config

# What the issue names as private, per model: user embeddings, score heads,
# personal item views (local histories are client data, checked separately).
NAMED_PRIVATE = {
    "feddmr": [".dense['user']"],
    "fedmf": [".dense['user']"],
    "fedncf": [".dense['user_gmf']", ".dense['user_mlp']"],
    "pfedrec": [".dense['user_head']['kernel']", ".dense['user_head']['bias']"],
    "fedrap": [".tables['items_personal']", ".dense['user_head']['kernel']"],
    "local": [".tables['items_personal']", ".dense['user_head']['kernel']"],
    "popularity": [],                 # nothing private: the uploads are the client's counts
}


def experiment(name: str, **train):
    if name == "feddmr":
        return build_experiment(tiny_config(**train))
    if name == "popularity":
        train = {"mu": 0.0, **train}                   # no loss, so no proximal term
    cfg = config_lib.RunConfig(data=TINY_DATA, train=dataclasses.replace(TINY_TRAIN, **train))
    sizes = {} if name == "popularity" else {"dim": 8}      # popularity has no [model] keys
    return build_experiment(config_lib.with_model(cfg, name, **sizes))


def first_round(exp):
    """A real chunk of round 1 and the round's masking graph (None without secure agg)."""
    sampled = np.arange(exp.split.num_users)
    chunk = plan_round(exp.planner, sampled, 1)[0]
    _, masks = round_privacy(exp.privacy, 1, sampled, np.zeros(0, np.int32))
    return chunk, masks


def test_every_registered_model_is_covered():
    assert set(NAMED_PRIVATE) <= set(MODELS), "a baseline is not registered"
    assert set(MODELS) <= set(NAMED_PRIVATE), "new model: add its private leaves here"


@pytest.mark.parametrize("mode", ["plain", "secure_dp"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_private_leaf_reaches_the_server(name, mode):
    train = {} if mode == "plain" else dict(
        secure_agg=True, dp_clip=0.5, dp_noise=1.0, table_mean="participants", mu=0.0)
    exp = experiment(name, **train)
    chunk, masks = first_round(exp)
    server = check_no_private(exp.algorithm, chunk, masks=masks)   # raises on a leak
    entries = audit_round(exp.algorithm, chunk, masks=masks)
    private, shared = model_leaf_paths(exp.algorithm)
    for path in NAMED_PRIVATE[name]:
        assert path in private
    assert not any(model_path(e.path) in private for e in server)
    # The private leaves are all in the clients' storage ...
    assert private <= {model_path(e.path) for e in entries if e.role == "client_store"}
    # ... the server keeps exactly the shared half across rounds ...
    kept = {model_path(e.path) for e in entries if e.path.startswith("server_state.shared")}
    assert kept == shared
    # ... and the local history stays client data.
    assert any(e.path == "client_data.history" for e in entries)
    assert not any("history" in e.path for e in server)
    uploads = {e.path: e.shape for e in entries if e.role == "upload"}
    num_items, dim = exp.split.num_items, 8
    if mode == "plain":
        assert "upload.rows" in uploads                  # sparse rows reveal touched items
    else:
        assert not any("rows" in p or "row_mask" in p for p in uploads)
        tables = {p: s for p, s in uploads.items() if ".tables[" in p}
        shared = jax.eval_shape(exp.algorithm.init, jax.random.key(0)).shared.tables
        widths = {"popularity": 1}.get(name, dim)      # popularity's table: one count per item
        # Dense: one full table per shared table (`local` has none and uploads no table).
        assert len(tables) == len(shared)
        assert all(s == (num_items, widths) for s in tables.values())
        assert all(e.dtype == "uint32" for e in entries
                   if e.path.startswith("upload.masked"))
    assert "| upload |" in format_audit(server)


def test_audit_catches_a_chunk_step_that_keeps_private_params():
    exp = experiment("fedmf")
    chunk, _ = first_round(exp)
    leaky_step = jax.jit(lambda shared, store, acc, chunk, key:
                         (store, acc._replace(buffer=store), jnp.zeros(())))
    leaky = exp.algorithm._replace(chunk_step=leaky_step)
    with pytest.raises(PrivacyLeakError, match=r"server_round.acc.buffer.dense\['user'\]"):
        check_no_private(leaky, chunk)


def test_audit_catches_a_client_that_uploads_its_user_embedding():
    exp = experiment("feddmr")
    chunk, _ = first_round(exp)
    honest = exp.algorithm.parts.client_fn

    def leaky_client(shared, private, row, key):
        out = honest(shared, private, row, key)
        dense = {**out.delta.dense, "user": out.private.dense["user"]}
        return out._replace(delta=out.delta._replace(dense=dense))

    parts = exp.algorithm.parts._replace(client_fn=leaky_client)
    with pytest.raises(PrivacyLeakError, match=r"upload.delta.dense\['user'\].*private model leaf"):
        check_no_private(exp.algorithm._replace(parts=parts), chunk)


def test_find_leaks_rules():
    private, shared = {".dense['user']"}, {".tables['items']", ".dense['user_bias']"}
    entry = lambda path, role="server_state": AuditEntry(role, path, (8,), "float32")  # noqa: E731
    leaks = find_leaks([entry("server_state.shared.tables['items']"),
                        entry("server_state.shared.dense['user']"),
                        entry("server_round.acc.delta_sum.dense['mystery']"),
                        entry("server_state.shared.dense['user_bias']"),
                        entry("upload.history", "upload"),
                        entry("client_store.dense['user']", "client_store")], private, shared)
    reasons = {e.path: why for e, why in leaks}
    assert set(reasons) == {"server_state.shared.dense['user']",
                            "server_round.acc.delta_sum.dense['mystery']",
                            "server_state.shared.dense['user_bias']", "upload.history"}
    assert "private model leaf" in reasons["server_state.shared.dense['user']"]
    assert "not a leaf of the shared half" in reasons["server_round.acc.delta_sum.dense['mystery']"]
    assert "named like private data" in reasons["upload.history"]
    with pytest.raises(ValueError, match="both the private and the shared half"):
        find_leaks([], {".dense['w']"}, {".dense['w']"})
