"""Evaluation protocol: every user scores its candidates with its own private params.

For each user u the model sees ``ModelParams(private=store[u], shared=global)``
and its memory (most recent training positives), scores the candidates of an
:class:`~feddmr_jax.data.types.EvalSet` (sampled: 1 held-out positive + 99 fixed
negatives; full ranking: every item, training positives masked) and
:func:`feddmr_jax.metrics.ranking_metrics` turns the scores into per-user
metrics, averaged over users. Users are processed in fixed-size chunks (the last
one padded and masked), so one compiled scorer serves every round.

Two cases read the store by rows (federated/private_store.py): models with
private item tables (FedRAP's item personality ``[U, I, d]``) and methods
evaluated with their local item tables (PFedRec: the store's evaluation view).
There each user scores on a local table holding only the rows of its candidates
and memory (:func:`~feddmr_jax.federated.parallel.localize`), so no ``[I, d]``
table is copied per user; with a view, the candidates' rows come from the
user's own trained rows instead of the global table.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np

from feddmr_jax.data.types import EvalSet
from feddmr_jax.errors import FeddmrError
from feddmr_jax.federated.parallel import local_rows, localize
from feddmr_jax.federated.private_store import gather_clients, split_view
from feddmr_jax.metrics import mean_metrics, ranking_metrics
from feddmr_jax.models.base import Context, Leaves, Model, ModelParams

Array = jax.Array


def score_user(model: Model, shared: Leaves, store: Leaves, user: Array, candidates: Array,
               history: Array, history_mask: Array, view_offset: Array | int = 0,
               *, by_rows: bool = False) -> Array:
    """Logits ``[C]`` of one user's candidates ``[C]`` (global ids).

    Args:
      model: the model.
      shared: global shared params.
      store: the stacked private store.
      user: scalar user id.
      candidates: ``[C]`` item ids; history, history_mask: ``[n]`` memory.
      view_offset: first column of these candidates in the store's evaluation
        view (0 for validation, the number of validation candidates for test).
      by_rows: score on a local table of the candidates' and memory's rows
        (needed for private tables or an evaluation view; see module docstring).
    """
    if not by_rows:
        private = split_view(gather_clients(store, user, None))[0]
        return model.apply(ModelParams(private, shared), candidates,
                           Context(history, history_mask))
    num_items = next(iter(shared.tables.values())).shape[0]
    c, n = candidates.shape[0], history.shape[0]
    rows, _, local_cand, local_hist = localize(
        candidates, jnp.ones(c, bool), history, history_mask, num_items,
        local_rows(c, n, num_items))
    private, view = split_view(gather_clients(store, user, rows))
    tables = {name: t[rows] for name, t in shared.tables.items()}
    for name, rows_of_user in (view or {}).items():
        own = jax.lax.dynamic_slice_in_dim(rows_of_user, view_offset, c)   # [C, d]
        tables[name] = tables[name].at[local_cand].set(own)
    return model.apply(ModelParams(private, Leaves(tables, shared.dense)), local_cand,
                       Context(local_hist, history_mask))


def make_scorer(model: Model, k: int = 10, *, by_rows: bool | None = None):
    """Jitted ``(shared, private_store, users, candidates, labels, mask, history,
    history_mask, user_mask, view_offset) -> per-user metrics`` for a chunk of users.

    ``by_rows`` (see :func:`score_user`) defaults to: the model has private
    tables; :func:`evaluate` switches to it when the store holds a view.
    """
    if by_rows is None:
        by_rows = bool(jax.eval_shape(model.init_private, jax.random.key(0)).tables)

    @jax.jit
    def scorer(shared, private_store, users, candidates, labels, mask, history, history_mask,
               user_mask, view_offset):
        rows_path = by_rows or split_view(private_store)[1] is not None
        one = lambda *a: score_user(model, *a, by_rows=rows_path)
        scores = jax.vmap(one, in_axes=(None, None, 0, 0, 0, 0, None))(
            shared, private_store, users, candidates, history, history_mask, view_offset)
        metrics = ranking_metrics(scores, labels, mask & user_mask[:, None], k=k)
        metrics["valid"] = metrics["valid"] & user_mask
        metrics["auc_valid"] = metrics["auc_valid"] & user_mask
        return metrics

    return scorer


def _pad_users(x: np.ndarray, size: int) -> np.ndarray:
    pad = size - x.shape[0]
    return x if pad == 0 else np.concatenate([x, np.repeat(x[:1], pad, axis=0)])


def evaluate(scorer, shared: Leaves, private_store: Leaves, eval_set: EvalSet,
             history: np.ndarray, history_mask: np.ndarray, *,
             chunk_size: int = 1024, view_offset: int = 0) -> dict[str, float]:
    """Mean metrics over users (see :func:`feddmr_jax.metrics.mean_metrics`).

    Args:
      scorer: from :func:`make_scorer`.
      shared: global shared params.
      private_store: stacked private params ``[U, ...]`` (read inside the
        scorer: by client, and private tables by rows).
      eval_set: candidates/labels/mask ``[U, C]``.
      history, history_mask: ``[U, n]`` memory of every user.
      chunk_size: users scored per call.
      view_offset: column of ``eval_set``'s first candidate in the store's
        evaluation view (methods evaluated locally; see :func:`score_user`).
    """
    num_users = eval_set.candidates.shape[0]
    size = min(chunk_size, num_users)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, num_users, size):
        users = np.arange(start, min(start + size, num_users))
        n_real = len(users)
        users = _pad_users(users, size)
        out = scorer(shared, private_store, users.astype(np.int32),
                     eval_set.candidates[users], eval_set.labels[users],
                     eval_set.mask[users], history[users], history_mask[users],
                     np.arange(size) < n_real, np.int32(view_offset))
        for name, value in out.items():
            parts.setdefault(name, []).append(np.asarray(value)[:n_real])
    per_user = {name: np.concatenate(v) for name, v in parts.items()}
    bad = np.flatnonzero(~per_user["finite"])
    if bad.size:   # ranked against the users by ranking_metrics; still an error here
        raise FeddmrError(f"evaluation: {bad.size} of {num_users} users have non-finite "
                          f"(NaN or inf) scores (first: user {bad[0]}); the model diverged")
    return mean_metrics(per_user)
