"""federated/client.py make_client_update against a hand-written loop.

A tiny model (logit = items[i] . u + w) and a plain Python loop with
``jax.grad`` and Adam written out by hand: ``local_epochs`` epochs, each over
the client's real examples in a fresh order (the documented key derivation:
``fold_in(fold_in(key, epoch), 0)``), minibatches of ``batch_size`` with the
last one partial, and batches holding only padding skipped entirely (Adam's
state does not move either: a zero-gradient Adam step would still move the
params through its momentum).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from feddmr_jax.federated.client import ClientData, gradient_step, make_client_update
from feddmr_jax.models.base import Leaves

from float_compare import ADAM_ULPS, adam_scale, assert_trees_close, bound

LR, B1, B2, EPS = 0.05, 0.9, 0.999, 1e-8
N, REAL, BATCH, EPOCHS, ITEMS, DIM = 13, 10, 4, 3, 6, 3
# optax's Adam and the hand-written one round differently (bias corrections, the
# masked mean); Adam moves an element by lr x a relative difference per step, over the
# 3 steps x EPOCHS (float_compare.ADAM_ULPS). A wrong order or key moves params by ~0.6.
ADAM_BOUND = dict(ulps=ADAM_ULPS, scale=adam_scale(LR, 3 * EPOCHS))
# The loss: a mean of 9 batch means of 3-term logits at params within ADAM_BOUND: 2**8 ulps.
LOSS_ULPS = 2**8


def _logits(table, u, w, items):
    return table[items] @ u + w


def engine_loss(params, global_shared, batch):
    """The same loss, in the engine's (params, global, batch) form."""
    del global_shared
    logits = _logits(params.shared.tables["items"], params.private.dense["u"],
                     params.shared.dense["w"], batch.items)
    loss = optax.sigmoid_binary_cross_entropy(logits, batch.labels)
    m = batch.mask.astype(jnp.float32)
    loss = jnp.sum(loss * m) / jnp.maximum(jnp.sum(m), 1.0)
    return loss, {"bce": loss}


def _data(seed=0):
    rng = np.random.default_rng(seed)
    items = rng.integers(0, ITEMS, N).astype(np.int32)
    labels = (np.arange(N) < 4).astype(np.float32)
    mask = np.arange(N) < REAL
    items[~mask], labels[~mask] = 0, 0.0
    return ClientData(items, labels, mask, np.zeros(2, np.int32), np.zeros(2, bool), 1)


def _init(seed=1):
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(ITEMS, DIM)).astype(np.float32)
    u = rng.normal(size=DIM).astype(np.float32)
    return table, u, np.float32(0.1)


def hand_loop(table, u, w, data, key, *, shuffle=True):
    """Plain loop: per epoch a fresh order, real examples first, skip empty batches."""
    params = [jnp.asarray(table), jnp.asarray(u), jnp.asarray(w)]
    m = [jnp.zeros_like(p) for p in params]
    v = [jnp.zeros_like(p) for p in params]
    t, losses = 0, []
    items, labels = np.asarray(data.items), np.asarray(data.labels)
    n = len(items)

    def loss(p, idx):
        y = optax.sigmoid_binary_cross_entropy(_logits(p[0], p[1], p[2], items[idx]), labels[idx])
        return jnp.mean(y)

    for epoch in range(EPOCHS):
        if shuffle:
            # federated/sorting.py::epoch_order: real examples by random words >> 17
            words = np.asarray(jax.random.bits(
                jax.random.fold_in(jax.random.fold_in(key, epoch), 0), (n,), jnp.uint32))
            real = [i for i in np.argsort(words >> 17, kind="stable") if data.mask[i]]
        else:
            real = list(np.flatnonzero(data.mask))
        for start in range(0, len(real), BATCH):       # empty (padding-only) batches: none
            idx = np.array(real[start:start + BATCH])
            value, grads = jax.value_and_grad(loss)(params, idx)
            losses.append(float(value))
            t += 1
            for j, g in enumerate(grads):
                m[j] = B1 * m[j] + (1 - B1) * g
                v[j] = B2 * v[j] + (1 - B2) * g * g
                m_hat, v_hat = m[j] / (1 - B1 ** t), v[j] / (1 - B2 ** t)
                params[j] = params[j] - LR * m_hat / (jnp.sqrt(v_hat) + EPS)
    return [np.asarray(p) for p in params], float(np.mean(losses)), t


def _engine(table, u, w, data, key):
    update = make_client_update(gradient_step(engine_loss, optax.adam(LR)),
                                local_epochs=EPOCHS, batch_size=BATCH)
    shared = Leaves({"items": jnp.asarray(table)}, {"w": jnp.asarray(w)})
    private = Leaves({}, {"u": jnp.asarray(u)})
    return jax.jit(update)(shared, private, data, key)


def test_client_update_equals_the_hand_written_loop():
    table, u, w = _init()
    data, key = _data(), jax.random.key(3)
    out = _engine(table, u, w, data, key)
    (ref_table, ref_u, ref_w), ref_loss, steps = hand_loop(table, u, w, data, key)
    # 10 real examples in batches of 4: 3 steps per epoch; the 4th slot (padding) is skipped.
    assert steps == 3 * EPOCHS
    assert_trees_close(out.shared.tables["items"], ref_table, **ADAM_BOUND, what="items")
    assert_trees_close(out.private.dense["u"], ref_u, **ADAM_BOUND, what="u")
    assert_trees_close(out.shared.dense["w"], ref_w, **ADAM_BOUND, what="w")
    assert_trees_close(out.loss, ref_loss, ulps=LOSS_ULPS, what="loss")
    assert float(out.num_examples) == REAL


def test_the_reference_is_sensitive_to_the_order_and_the_key():
    """Controls: an unshuffled loop, or another key, ends elsewhere (so the
    equivalence above pins the per-epoch shuffling)."""
    table, u, w = _init()
    data, key = _data(), jax.random.key(3)
    (shuffled, *_), _, _ = hand_loop(table, u, w, data, key)
    (plain, *_), _, _ = hand_loop(table, u, w, data, key, shuffle=False)
    (other, *_), _, _ = hand_loop(table, u, w, data, jax.random.key(4))
    assert np.max(np.abs(shuffled - plain)) > 100 * bound(**ADAM_BOUND)
    assert np.max(np.abs(shuffled - other)) > 100 * bound(**ADAM_BOUND)


def test_more_padding_means_more_skipped_batches_only():
    """The client padded to twice the width (4 more empty batch slots per epoch)
    still takes exactly the loop's 3 steps per epoch."""
    table, u, w = _init()
    data, key = _data(), jax.random.key(3)
    wide = ClientData(np.concatenate([data.items, np.zeros(N, np.int32)]),
                      np.concatenate([data.labels, np.zeros(N, np.float32)]),
                      np.concatenate([data.mask, np.zeros(N, bool)]),
                      data.history, data.history_mask, 1)
    out = _engine(table, u, w, wide, key)
    (ref_table, ref_u, _), ref_loss, steps = hand_loop(table, u, w, wide, key)
    assert steps == 3 * EPOCHS
    assert_trees_close(out.shared.tables["items"], ref_table, **ADAM_BOUND, what="items")
    assert_trees_close(out.private.dense["u"], ref_u, **ADAM_BOUND, what="u")
    assert_trees_close(out.loss, ref_loss, ulps=LOSS_ULPS, what="loss")
