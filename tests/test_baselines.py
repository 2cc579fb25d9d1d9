"""Baseline models: FedMF, FedNCF (NeuMF), PFedRec and FedRAP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddmr_jax.errors import ConfigError
from feddmr_jax.federated.client import ClientData, gradient_step, make_client_update
from feddmr_jax.losses import Batch
from feddmr_jax.models.base import Context, Leaves, ModelParams
from feddmr_jax.models.fedmf import FedMFConfig, build_fedmf
from feddmr_jax.models.fedncf import FedNCFConfig, build_fedncf
from feddmr_jax.methods.fedrap import (fedrap_distance, fedrap_loss, fedrap_optimizer,
                                       fedrap_sparsity)
from feddmr_jax.methods.pfedrec import pfedrec_item_lr, pfedrec_local_step
from feddmr_jax.models.fedrap import FedRAPConfig, build_fedrap
from feddmr_jax.models.pfedrec import PFedRecConfig, build_pfedrec

import reference_round
from float_compare import SGD_STEP_ULPS, assert_trees_close

NO_CONTEXT = Context(jnp.zeros((0,), jnp.int32), jnp.zeros((0,), bool))
ITEMS3 = jnp.array([[1.0, 0.0], [0.0, 1.0], [2.0, -1.0]])
ALL = jnp.array([0, 1, 2])


def params(private_dense=None, shared_tables=None, shared_dense=None, private_tables=None):
    return ModelParams(private=Leaves(private_tables or {}, private_dense or {}),
                       shared=Leaves(shared_tables or {}, shared_dense or {}))


def head(w, b):
    """The score head ``x @ w + b`` as the modules' ``nn.Dense(1)`` parameters."""
    return {"kernel": jnp.array(w)[:, None], "bias": jnp.array(b).reshape(1)}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------- forward passes

def test_fedmf_forward_hand_computed():
    model = build_fedmf(FedMFConfig(dim=2), num_items=3)
    p = params({"user": jnp.array([1.0, 2.0])}, {"items": ITEMS3})
    np.testing.assert_allclose(model.apply(p, ALL, NO_CONTEXT), [1.0, 2.0, 0.0])
    np.testing.assert_allclose(model.apply(p, jnp.array([2, 2]), NO_CONTEXT), [0.0, 0.0])


def test_fedncf_forward_hand_computed():
    model = build_fedncf(FedNCFConfig(dim=2, mlp_hidden=(2, 1)), num_items=3)
    p = params(
        {"user_gmf": jnp.array([1.0, 2.0]), "user_mlp": jnp.array([1.0, -1.0])},
        {"items_gmf": jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
         "items_mlp": jnp.array([[0.0, 1.0], [2.0, 0.0], [1.0, 1.0]])},
        {"mlp": {"dense_0": {"kernel": jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0],
                                                  [0.0, 1.0]]),
                             "bias": jnp.array([0.0, 0.5])},
                 "dense_1": {"kernel": jnp.array([[1.0], [2.0]]), "bias": jnp.array([-2.5])}},
         "out": {"kernel": jnp.array([[1.0], [1.0], [2.0]]), "bias": jnp.array([0.25])}})
    # GMF: [1,0], [0,2], [1,2]. MLP layer 1: relu([1,.5], [3,-.5], [2,.5]);
    # layer 2: relu(-.5, .5, .5) -> 0, .5, .5. Output: sum(gmf) + 2 h + .25.
    np.testing.assert_allclose(model.apply(p, ALL, NO_CONTEXT), [1.25, 3.25, 4.25])
    np.testing.assert_allclose(model.apply(p, jnp.array([2, 0]), NO_CONTEXT), [4.25, 1.25])


def test_fedncf_default_layer_sizes():
    model = build_fedncf(FedNCFConfig(dim=4), num_items=5)
    shared = model.init_shared(jax.random.PRNGKey(0))
    mlp = shared.dense["mlp"]
    assert [mlp["dense_0"]["kernel"].shape, mlp["dense_1"]["kernel"].shape] == [(8, 4), (4, 2)]
    assert shared.dense["out"]["kernel"].shape == (6, 1)


def test_pfedrec_forward_hand_computed():
    model = build_pfedrec(PFedRecConfig(dim=2), num_items=3)
    p = params({"user_head": head([1.0, 2.0], 0.5)}, {"items": ITEMS3})
    np.testing.assert_allclose(model.apply(p, ALL, NO_CONTEXT), [1.5, 2.5, 0.5])


def test_fedrap_forward_hand_computed():
    model = build_fedrap(FedRAPConfig(dim=2), num_items=3)
    personal = jnp.array([[0.0, 1.0], [1.0, 1.0], [-2.0, 0.0]])
    p = params({"user_head": head([1.0, 2.0], -1.0)}, {"items": ITEMS3},
               private_tables={"items_personal": personal})
    # (D + C) = [1,1], [1,2], [0,-1]  ->  @ [1,2] - 1
    np.testing.assert_allclose(model.apply(p, ALL, NO_CONTEXT), [2.0, 4.0, -3.0])


# ---------------------------------------------------------------- PFedRec local step

def numpy_pfedrec_step(table, w, b, items, labels, mask, head_lr, item_lr):
    """One reference batch: head SGD step, then a second pass and an item SGD step."""
    table, w, b = (np.array(x, np.float64) for x in (table, w, b))
    m = np.asarray(mask, np.float64)
    n = m.sum()
    rows = table[items]
    g = (sigmoid(rows @ w + b) - labels) * m / n            # d mean-BCE / d logit
    w = w - head_lr * (g[:, None] * rows).sum(0)
    b = b - head_lr * g.sum()
    prob = sigmoid(rows @ w + b)
    loss = -np.sum(m * (labels * np.log(prob) + (1 - labels) * np.log(1 - prob))) / n
    g = (prob - labels) * m / n
    grad_table = np.zeros_like(table)
    np.add.at(grad_table, items, g[:, None] * w[None, :])
    return table - item_lr * grad_table, w, b, loss


def test_pfedrec_item_lr():
    assert pfedrec_item_lr(1682) == pytest.approx(0.1 * 1682 * 80)
    assert pfedrec_item_lr(3, lr=0.5, lr_eta=2) == pytest.approx(3.0)


def test_pfedrec_local_step_matches_numpy():
    model = build_pfedrec(PFedRecConfig(dim=2), num_items=3)
    table = jnp.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]])
    w, b = jnp.array([0.2, -0.1]), jnp.array(0.05)
    items = np.array([0, 2, 2, 1, 0])
    labels = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    mask = np.array([True, True, True, True, False])     # last example is padding
    item_lr = pfedrec_item_lr(3, 0.1, 80)
    step = pfedrec_local_step(model.apply, head_lr=0.1, item_lr=item_lr)
    p = params({"user_head": head(w, b)}, {"items": table})
    batch = Batch(jnp.asarray(items), jnp.asarray(labels, jnp.float32), jnp.asarray(mask),
                  NO_CONTEXT)
    new, state, loss = jax.jit(step.step)(p, step.init(p), p.shared, batch)
    ref_table, ref_w, ref_b, ref_loss = numpy_pfedrec_step(
        table, w, b, items, labels, mask, 0.1, item_lr)
    # float32 against float64: the head's, then the items' SGD update (SGD_STEP_ULPS each,
    # of the largest value); the loss, a mean of 4 BCEs of 2-term logits: 2**4 ulps.
    got = (new.private.dense["user_head"]["kernel"][:, 0], new.private.dense["user_head"]
           ["bias"][0], new.shared.tables["items"])
    assert_trees_close(got, (ref_w, ref_b, ref_table), ulps=2 * SGD_STEP_ULPS, what="params")
    assert_trees_close(loss, ref_loss, ulps=2**4, what="loss")
    assert state == ()


ROW_ITEMS = np.array([0, 1, 3, 0])
ROW_LABELS = np.array([1.0, 0.0, 0.0, 0.0])
ROW_MASK = np.array([True, True, True, False])
ROW_KEY = jax.random.PRNGKey(2)


def run_client(model, step, *, epochs, batch_size):
    """One client's round on 4 examples (the last one padding) via the engine."""
    update = jax.jit(make_client_update(step, local_epochs=epochs, batch_size=batch_size))
    data = ClientData(jnp.asarray(ROW_ITEMS), jnp.asarray(ROW_LABELS, jnp.float32),
                      jnp.asarray(ROW_MASK), jnp.zeros((0,), jnp.int32), jnp.zeros((0,), bool))
    shared = model.init_shared(jax.random.PRNGKey(0))
    private = model.init_private(jax.random.PRNGKey(1))
    return shared, private, update(shared, private, data, ROW_KEY)


def client_batches(epochs, batch_size):
    """The row's minibatches in the order client.py documents (tests/reference_round.py)."""
    return list(reference_round.minibatches(
        ROW_KEY, reference_round.ClientRows(ROW_ITEMS, ROW_LABELS, ROW_MASK, None, None),
        epochs, batch_size))


def test_pfedrec_client_round_matches_numpy_loop():
    """2 epochs of batches [2, 1] (padding skipped) == the numpy two-pass step in that order."""
    model = build_pfedrec(PFedRecConfig(dim=2), num_items=4)
    item_lr = pfedrec_item_lr(4, 0.1, 2.0)
    step = pfedrec_local_step(model.apply, head_lr=0.1, item_lr=item_lr)
    shared, private, result = run_client(model, step, epochs=2, batch_size=2)
    batches = client_batches(2, 2)
    assert [len(b) for b in batches] == [2, 1, 2, 1]
    table = np.asarray(shared.tables["items"])
    w = np.asarray(private.dense["user_head"]["kernel"][:, 0])
    b = np.asarray(private.dense["user_head"]["bias"][0])
    losses = []
    for idx in batches:
        table, w, b, loss = numpy_pfedrec_step(table, w, b, ROW_ITEMS[idx], ROW_LABELS[idx],
                                               np.ones(len(idx), bool), 0.1, item_lr)
        losses.append(loss)
    # 4 batches of two SGD updates each (SGD_STEP_ULPS per update); the loss, a mean of
    # 4 batch means of 2-term logits: 2**4 ulps.
    got = (result.shared.tables["items"], result.private.dense["user_head"]["kernel"][:, 0],
           result.private.dense["user_head"]["bias"][0])
    assert_trees_close(got, (table, w, b), ulps=8 * SGD_STEP_ULPS, what="params")
    assert_trees_close(result.loss, np.mean(losses), ulps=2**4, what="loss")
    np.testing.assert_array_equal(result.shared.tables["items"][2], shared.tables["items"][2])


# ---------------------------------------------------------------- FedRAP regularizers

def fedrap_params():
    return params({"user_head": head([1.0, 1.0], 0.0)},
                  {"items": jnp.array([[0.0, 0.0], [5.0, 5.0], [1.0, -1.0]])},
                  private_tables={"items_personal": jnp.array([[1.0, 0.0], [0.0, 0.0],
                                                               [0.0, 2.0]])})


REG_BATCH = Batch(jnp.array([0, 2, 2, 1]), jnp.array([1.0, 0.0, 0.0, 1.0]),
                  jnp.array([True, True, True, False]), NO_CONTEXT)


def test_fedrap_regularizers_hand_computed():
    p = fedrap_params()
    # Real rows 0, 2, 2: (D - C)^2 means 0.5, 5, 5; |C| means 0, 1, 1.
    dist = fedrap_distance(0.3)(p, p.shared, REG_BATCH)
    np.testing.assert_allclose(dist, -0.3 * (0.5 + 5.0 + 5.0) / 3, rtol=1e-6)
    sparse = fedrap_sparsity(0.2)(p, p.shared, REG_BATCH)
    np.testing.assert_allclose(sparse, 0.2 * 2.0 / 3, rtol=1e-6)


def test_fedrap_loss_is_bce_minus_distance_plus_sparsity():
    cfg = FedRAPConfig(dim=2, lam=0.3, mu=0.2)
    model = build_fedrap(cfg, num_items=3)
    p = fedrap_params()
    total, parts = fedrap_loss(model.apply, cfg)(p, p.shared, REG_BATCH)
    logits = np.array([1.0, 2.0, 2.0])          # (D + C) @ [1, 1] for rows 0, 2, 2
    labels = np.array([1.0, 0.0, 0.0])
    bce = -np.mean(labels * np.log(sigmoid(logits)) + (1 - labels) * np.log(1 - sigmoid(logits)))
    expected = bce - 0.3 * 10.5 / 3 + 0.2 * 2.0 / 3
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    assert set(parts) == {"data", "distance", "sparsity"}


def test_fedrap_optimizer_lrs_and_decay():
    cfg = FedRAPConfig(dim=2, lr_network=0.5, lr_args=10.0, weight_decay=0.1,
                       step_decay=0.5, round_decay=0.9)
    p = fedrap_params()
    opt = fedrap_optimizer(cfg, round_index=2)
    grads = jax.tree.map(jnp.ones_like, p)
    state = opt.init(p)
    updates, state = opt.update(grads, state, p)
    w = p.private.dense["user_head"]["kernel"]
    np.testing.assert_allclose(updates.private.dense["user_head"]["kernel"],
                               -0.5 * 0.81 * (1 + 0.1 * w),
                               rtol=1e-6)
    c = p.shared.tables["items"]
    np.testing.assert_allclose(updates.shared.tables["items"], -10.0 * 0.81 * (1 + 0.1 * c),
                               rtol=1e-6)
    updates, _ = opt.update(grads, state, p)          # second step: lr * step_decay
    np.testing.assert_allclose(updates.shared.tables["items"],
                               -10.0 * 0.81 * 0.5 * (1 + 0.1 * c), rtol=1e-6)


def numpy_fedrap_sgd(params, items, labels, cfg, lr_scale):
    """One reference FedRAP step on a batch: hand-written gradients of
    BCE - lam * mean (D - C)^2 + mu * mean |C|, then torch SGD with weight decay
    on every parameter (whole tables), lr ``lr_args`` (tables) or ``lr_network``
    (head), times ``lr_scale``. Returns ``(params, loss)`` (loss before the step)."""
    personal, common, w, b = params
    n, d = len(items), personal.shape[1]
    rows = personal[items] + common[items]
    z = rows @ w + b
    diff = personal[items] - common[items]
    loss = (np.mean(np.logaddexp(0.0, z) - labels * z) - cfg.lam * np.mean(diff ** 2)
            + cfg.mu * np.mean(np.abs(common[items])))
    g = (sigmoid(z) - labels) / n                               # d BCE / d z
    g_rows = g[:, None] * w[None, :]
    g_personal, g_common = np.zeros_like(personal), np.zeros_like(common)
    np.add.at(g_personal, items, g_rows - cfg.lam * 2 * diff / (n * d))
    np.add.at(g_common, items, g_rows + cfg.lam * 2 * diff / (n * d)
              + cfg.mu * np.sign(common[items]) / (n * d))
    grads = (g_personal, g_common, (g[:, None] * rows).sum(0), g.sum())
    lrs = (cfg.lr_args, cfg.lr_args, cfg.lr_network, cfg.lr_network)
    new = tuple(p - lr * lr_scale * (gp + cfg.weight_decay * p)
                for p, gp, lr in zip(params, grads, lrs))
    return new, loss


def test_fedrap_client_round_matches_numpy_loop():
    """FedRAP's loss and optimizer in the client loop == numpy SGD with the per-step decay."""
    cfg = FedRAPConfig(dim=2, lam=0.3, mu=0.2, lr_network=0.5, lr_args=3.0,
                       weight_decay=0.05, step_decay=0.8)
    model = build_fedrap(cfg, num_items=4)
    step = gradient_step(fedrap_loss(model.apply, cfg), fedrap_optimizer(cfg))
    shared, private, result = run_client(model, step, epochs=2, batch_size=2)
    params = tuple(np.asarray(x, np.float64) for x in (
        private.tables["items_personal"], shared.tables["items"],
        private.dense["user_head"]["kernel"][:, 0], private.dense["user_head"]["bias"][0]))
    losses = []
    for t, idx in enumerate(client_batches(2, 2)):      # 4 steps: lr * step_decay ** t
        params, loss = numpy_fedrap_sgd(params, ROW_ITEMS[idx], ROW_LABELS[idx], cfg,
                                        cfg.step_decay ** t)
        losses.append(loss)
    personal, common, w, b = params
    # 4 SGD steps in float32 against float64 (SGD_STEP_ULPS each, of the largest param);
    # the loss, a mean of 4 batch losses (a BCE ~0.7 minus a distance term of the same
    # size: 2**4 ulps of 1, not of their small difference).
    got = (result.private.tables["items_personal"], result.shared.tables["items"],
           result.private.dense["user_head"]["kernel"][:, 0],
           result.private.dense["user_head"]["bias"][0])
    assert_trees_close(got, (personal, common, w, b), ulps=4 * SGD_STEP_ULPS, what="params")
    assert_trees_close(result.loss, np.mean(losses), ulps=2**4, scale=1.0, what="loss")
    # Row 2 is in no batch: only weight decay moved it, by (1 - lr * wd * decay^t) per step
    # (each step rounds the row and its factor: 2 ulps of the row).
    shrink = np.prod([1 - cfg.lr_args * cfg.weight_decay * cfg.step_decay ** t
                      for t in range(4)])
    assert_trees_close(result.shared.tables["items"][2],
                       shrink * np.asarray(shared.tables["items"][2]), ulps=4 * 2,
                       what="decayed row")


# ---------------------------------------------------------------- vmap and grad

BUILDERS = {
    "fedmf": lambda: build_fedmf(FedMFConfig(dim=4), 5),
    "fedncf": lambda: build_fedncf(FedNCFConfig(dim=4), 5),
    "pfedrec": lambda: build_pfedrec(PFedRecConfig(dim=4), 5),
    "fedrap": lambda: build_fedrap(FedRAPConfig(dim=4), 5),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_vmap_over_stacked_private_matches_loop(name):
    model = BUILDERS[name]()
    shared = model.init_shared(jax.random.PRNGKey(0))
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    stacked_private = jax.vmap(model.init_private)(keys)
    items = jnp.array([4, 0, 2, 2])
    in_axes = (ModelParams(private=0, shared=None), None, None)
    stacked_logits = jax.vmap(model.apply, in_axes=in_axes)(
        ModelParams(stacked_private, shared), items, NO_CONTEXT)
    assert stacked_logits.shape == (3, 4)
    for c in range(3):
        private = jax.tree.map(lambda x: x[c], stacked_private)
        # The batched and the single program may sum a logit's terms (a 4-term dot, or
        # FedNCF's MLP, ~30 roundings) in another order: 2**6 ulps of the logits.
        assert_trees_close(stacked_logits[c],
                           model.apply(ModelParams(private, shared), items, NO_CONTEXT),
                           ulps=2**6, what=f"client {c}")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_grad_reaches_every_used_leaf(name):
    model = BUILDERS[name]()
    p = ModelParams(model.init_private(jax.random.PRNGKey(1)),
                    model.init_shared(jax.random.PRNGKey(0)))
    items = jnp.array([1, 3])
    grads = jax.grad(lambda q: jnp.sum(model.apply(q, items, NO_CONTEXT)))(p)
    assert jax.tree.structure(grads) == jax.tree.structure(p)
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(leaf))
    for table in [*grads.shared.tables.values(), *grads.private.tables.values()]:
        np.testing.assert_array_equal(table[jnp.array([0, 2, 4])], 0.0)  # unused rows
        assert np.any(table[items] != 0.0)


def test_fedmf_grad_hand_computed():
    model = build_fedmf(FedMFConfig(dim=2), num_items=3)
    p = params({"user": jnp.array([1.0, 2.0])}, {"items": ITEMS3})
    grads = jax.grad(lambda q: jnp.sum(model.apply(q, jnp.array([0, 2]), NO_CONTEXT)))(p)
    np.testing.assert_allclose(grads.private.dense["user"], [3.0, -1.0])
    np.testing.assert_allclose(grads.shared.tables["items"], [[1, 2], [0, 0], [1, 2]])


# ---------------------------------------------------------------- configs

@pytest.mark.parametrize("cfg", [
    FedMFConfig(dim=0), FedNCFConfig(dim=1), FedNCFConfig(dim=4, mlp_hidden=(4, 0)),
    PFedRecConfig(dim=-1), PFedRecConfig(lr_eta=-1.0), FedRAPConfig(mu=-0.1),
    FedRAPConfig(step_decay=0.0),
])
def test_invalid_configs_raise(cfg):
    with pytest.raises(ConfigError):
        cfg.validate()
