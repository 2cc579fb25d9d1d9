"""An independent reference of one FedAvg round (FedMF and a one-layer FedDMR).

Written from the math of DESIGN.md section 1 and docs/paper_mapping.md, with no
engine code (nothing from ``feddmr_jax`` is imported here):

* local objective per minibatch: masked mean BCE on logits
  ``+ (mu/2) * ||shared - global||^2`` (item table and dense shared leaves);
* Adam (b1 0.9, b2 0.999, eps 1e-8), a fresh state every round, lr
  ``embedding_lr`` for the item table and the user embedding and ``lr`` for the
  network, written out in numpy;
* ``epochs`` local epochs; each epoch visits the client's real examples in the
  documented order of ``federated/sorting.py::epoch_order`` (real examples
  sorted by 32-bit random words keyed by ``fold_in(fold_in(client_key, epoch), 0)``
  over the padded row, shifted right by 17, ties in row order) in consecutive minibatches of ``min(batch_size, row width)``, the last
  one partial; the client's key is ``fold_in(round_key, client_id)``;
* the client's reported loss is the mean over its steps of the loss at the
  params before each step; the round's loss is the mean over participants;
* server: FedAvg, ``global + mean over participants of (shared_c - global)``
  (uniform weights; a client brings its whole table, so an untouched row
  contributes a zero delta: ``table_mean = "participants"``).

FedMF's gradients are written by hand in numpy (float32); FedDMR's forward
pass is written here in ``jax.numpy`` (tokens ``[p_u, E[i]]``, memory
``E[history]`` with the target masked, one post-norm layer of multi-head
attention over ``[tokens ; memory]`` and a ReLU FFN, LayerNorm eps 1e-6, head
MLP on ``[t_u, t_i, t_u * t_i]``) and differentiated by ``jax.grad``.

Parameters are plain dicts: ``{"user": [d], "items": [I, d], "dense": {...}}``
(``dense`` holds FedDMR's network, read by name from the engine's state).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# Arrays are float32, as in the engine. Adam's float32 rounding matters at 1e-5: the
# moment factors (1 - b) are rounded from their exact values (0.001 -> 0.001f), the bias
# corrections 1 - b^t are computed in float32 (1 - 0.999f = 0.00099998713), so a first
# step is g / |g| * (1 + 6.4e-6), and a round of float64 Adam lands ~1e-5 away.
DTYPE = np.float32
B1, B2, EPS = 0.9, 0.999, 1e-8
LN_EPS = 1e-6


class ClientRows(NamedTuple):
    """One client's examples for the round, in global item ids (numpy).

    Attributes:
      items, labels, mask: ``[N]`` the padded row (positives, negatives, padding).
      history, history_mask: ``[n]`` the memory.
    """

    items: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    history: np.ndarray
    history_mask: np.ndarray


# ---------------------------------------------------------------- schedule

def client_key(round_key: jax.Array, client_id: int) -> jax.Array:
    return jax.random.fold_in(round_key, int(client_id))


def epoch_order(key: jax.Array, epoch: int, mask: np.ndarray) -> np.ndarray:
    """Positions of the real examples of a row in the order the epoch visits them."""
    n = len(mask)
    words = np.asarray(jax.random.bits(
        jax.random.fold_in(jax.random.fold_in(key, epoch), 0), (n,), jnp.uint32)) >> 17
    real = np.flatnonzero(mask)
    return real[np.argsort(words[real], kind="stable")]


def minibatches(key, row: ClientRows, epochs: int, batch_size: int):
    """Yields the index arrays of every minibatch of the client's round."""
    width = min(batch_size, len(row.mask))
    for e in range(epochs):
        order = epoch_order(key, e, row.mask)
        for start in range(0, len(order), width):
            yield order[start:start + width]


# ---------------------------------------------------------------- Adam (by hand)

def flatten(params: dict) -> dict[str, np.ndarray]:
    """``{"a/b/c": array}`` of a nested dict (:data:`DTYPE` copies)."""
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in flatten(v).items()})
        else:
            out[k] = np.array(v, DTYPE)
    return out


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    out: dict = {}
    for path, v in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def is_embedding(path: str) -> bool:
    return path in ("user", "items")


def adam_update(p, g, m, v, t, lr):
    """One Adam step on arrays; returns ``(p, m, v)``."""
    g = g.astype(DTYPE)
    m = DTYPE(1 - B1) * g + DTYPE(B1) * m
    v = DTYPE(1 - B2) * g * g + DTYPE(B2) * v
    m_hat = m / (DTYPE(1) - DTYPE(B1) ** t)
    v_hat = v / (DTYPE(1) - DTYPE(B2) ** t)
    return (p - DTYPE(lr) * (m_hat / (np.sqrt(v_hat) + DTYPE(EPS)))).astype(DTYPE), m, v


# ---------------------------------------------------------------- one client, one server step

GradFn = Callable[[dict, np.ndarray, np.ndarray, ClientRows], tuple[float, dict]]


def client_round(params: dict, global_shared: dict, row: ClientRows, key: jax.Array,
                 grad_fn: GradFn, *, epochs: int, batch_size: int, lr: float,
                 embedding_lr: float, mu: float) -> tuple[dict, float]:
    """One client's local training.

    Args:
      params: ``{"user", "items", "dense"}`` at the start (global shared + own user).
      global_shared: the broadcast ``{"items", "dense"}`` (proximal anchor).
      row: the client's examples.
      key: the client's key (:func:`client_key`).
      grad_fn: ``(params, items [b], labels [b], row) -> (mean BCE, grads)``.
      epochs, batch_size, lr, embedding_lr, mu: the local schedule.

    Returns:
      ``(new params, mean loss over the steps)``.
    """
    flat = flatten(params)
    anchor = flatten(global_shared)
    m = {k: np.zeros_like(x) for k, x in flat.items()}
    v = {k: np.zeros_like(x) for k, x in flat.items()}
    losses = []
    for t, idx in enumerate(minibatches(key, row, epochs, batch_size), start=1):
        bce, grads = grad_fn(unflatten(flat), row.items[idx], row.labels[idx], row)
        grads = flatten(grads)
        prox = 0.0
        for k, a in anchor.items():           # shared leaves only
            diff = flat[k] - a
            prox += 0.5 * mu * float(np.sum(diff * diff))
            grads[k] = grads[k] + DTYPE(mu) * diff
        losses.append(bce + prox)
        for k in flat:
            step = embedding_lr if is_embedding(k) else lr
            flat[k], m[k], v[k] = adam_update(flat[k], grads[k], m[k], v[k], t, step)
    return unflatten(flat), float(np.mean(losses))


def fedavg(global_shared: dict, client_shared: list[dict]) -> dict:
    """``global + mean_c (shared_c - global)`` leaf by leaf (uniform weights)."""
    g = flatten(global_shared)
    mean = {k: x + np.mean([flatten(c)[k] - x for c in client_shared], axis=0)
            for k, x in g.items()}
    return unflatten(mean)


# ---------------------------------------------------------------- FedMF (numpy gradients)

def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def fedmf_grad(params: dict, items: np.ndarray, labels: np.ndarray, row: ClientRows):
    """Mean BCE of ``<p_u, E[i]>`` and its gradients, by hand."""
    del row
    u, table = params["user"], params["items"]
    z = table[items] @ u
    loss = float(np.mean(np.logaddexp(0.0, z) - labels * z))
    g = (sigmoid(z) - labels) / len(items)                   # d loss / d z
    g_table = np.zeros_like(table)
    np.add.at(g_table, items, g[:, None] * u[None, :])
    return loss, {"user": (g[:, None] * table[items]).sum(0), "items": g_table}


# ---------------------------------------------------------------- FedDMR (jnp forward, jax.grad)

def _layer_norm(x, p):
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean((x - mean) ** 2, -1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + LN_EPS) * p["scale"] + p["bias"]


def _dense(x, p):
    return x @ p["kernel"] + p["bias"]


def attention_layer(layer: dict, x, memory, memory_mask, heads: int):
    """One post-norm layer for one example: ``x [2, d]``, ``memory [n, d]``, ``memory_mask [n]``.

    Returns ``(new x [2, d], weights [heads, 2, 2 + n])``.
    """
    d = x.shape[-1]
    dh = d // heads
    wq, wk, wv = (layer[n]["kernel"].reshape(d, d) for n in ("query", "key", "value"))
    wo = layer["out"]["kernel"].reshape(d, d)
    source = jnp.concatenate([x, memory])                             # [2 + n, d]
    valid = jnp.concatenate([jnp.ones(2, bool), memory_mask]).astype(x.dtype)
    outs, all_w = [], []
    for h in range(heads):
        cols = slice(h * dh, (h + 1) * dh)
        q, k, v = x @ wq[:, cols], source @ wk[:, cols], source @ wv[:, cols]
        s = q @ k.T / np.sqrt(dh)                                     # [2, 2 + n]
        s = s - jnp.max(jnp.where(valid > 0, s, -jnp.inf), -1, keepdims=True)
        e = jnp.exp(jnp.where(valid > 0, s, 0.0)) * valid
        w = e / jnp.sum(e, -1, keepdims=True)
        outs.append(w @ v)
        all_w.append(w)
    x = _layer_norm(x + jnp.concatenate(outs, -1) @ wo, layer["norm_attention"])
    ffn = layer["ffn"]
    hidden = jax.nn.relu(_dense(x, ffn["dense_0"]))
    return _layer_norm(x + _dense(hidden, ffn["dense_1"]), layer["norm_ffn"]), jnp.stack(all_w)


def feddmr_logits(params: dict, items, history, history_mask, heads: int):
    """Logits ``[b]`` of one client's items (global ids), layers ``layer_0..``."""
    table, user, dense = params["items"], params["user"], params["dense"]
    layers = [dense[k] for k in sorted(dense) if k.startswith("layer_")]
    memory = table[history]

    def one(item):
        x = jnp.stack([user, table[item]])
        for layer in layers:
            x, _ = attention_layer(layer, x, memory, history_mask & (history != item), heads)
        f = jnp.concatenate([x[0], x[1], x[0] * x[1]])
        head = dense["head"]
        return _dense(jax.nn.relu(_dense(f, head["dense_0"])), head["dense_1"])[0]

    return jnp.stack([one(i) for i in items])


def feddmr_grad_fn(heads: int) -> GradFn:
    """Mean BCE of :func:`feddmr_logits` and its ``jax.grad`` (float32 forward)."""

    def loss(params, items, labels, history, history_mask):
        z = feddmr_logits(params, items, history, history_mask, heads)
        return jnp.mean(jnp.logaddexp(0.0, z) - labels * z)

    value_and_grad = jax.jit(jax.value_and_grad(loss))

    def grad_fn(params, items, labels, row: ClientRows):
        p32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
        value, grads = value_and_grad(p32, jnp.asarray(items), jnp.asarray(labels, jnp.float32),
                                      jnp.asarray(row.history), jnp.asarray(row.history_mask))
        return float(value), jax.tree.map(np.asarray, grads)

    return grad_fn
