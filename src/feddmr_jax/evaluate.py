"""Evaluation protocol: every user scores its candidates with its own private params.

For each user u the model sees ``ModelParams(private=store[u], shared=global)``
and its memory (most recent training positives), scores the candidates of an
:class:`~feddmr_jax.data.types.EvalSet` (sampled: 1 held-out positive + 99 fixed
negatives; full ranking: every item, training positives masked) and
:func:`feddmr_jax.metrics.ranking_metrics` turns the scores into per-user
metrics, averaged over users. Users are processed in fixed-size chunks (the last
one padded and masked), so one compiled scorer serves every round.

Models with private item tables (FedRAP's item personality ``[U, I, d]``) read
the store by rows (federated/private_store.py): each user scores on a local
table holding only the rows of its candidates and memory
(:func:`~feddmr_jax.federated.local_table.localize`), so no ``[I, d]`` table is
copied per user.

That is the ``global`` evaluation mode. In ``local`` mode (``train.eval_mode``;
PFedRec's reference) each client's scores were computed by the engine right
after its last local training and kept in the private store
(``EVAL_SCORES``); :func:`evaluate_stored` ranks them. Which mode a run uses is
:func:`resolve_eval_mode`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from feddmr_jax.data.types import EvalSet
from feddmr_jax.errors import ConfigError, DivergedError
from feddmr_jax.federated.local_table import local_rows, localize
from feddmr_jax.federated.private_store import gather_clients, split_scores
from feddmr_jax.metrics import mean_metrics, ranking_metrics
from feddmr_jax.models.base import Context, Leaves, Model, ModelParams

Array = jax.Array

EVAL_MODES = ("global", "local")


def resolve_eval_mode(requested: str | None, method_default: str, split_scheme: str) -> str:
    """The evaluation mode a run uses.

    Args:
      requested: ``train.eval_mode`` (None or ``"default"``: the method's own).
      method_default: the method's reference mode (``Method.eval_mode``).
      split_scheme: ``data.split``; ``local`` needs sampled candidates (``loo``).

    Returns:
      ``"global"`` or ``"local"``.

    Raises:
      ConfigError: ``local`` with the full-ranking ``ratio`` split.
    """
    mode = method_default if requested in (None, "default") else requested
    if mode not in EVAL_MODES:
        raise ConfigError(f"train.eval_mode must be default, global or local, got {mode!r}")
    if mode == "local" and split_scheme != "loo":
        raise ConfigError(f"train.eval_mode 'local' stores every client's scores of sampled "
                          f"candidates, but data.split = {split_scheme!r} ranks all items; "
                          "use --eval-mode global or --split loo")
    return mode


def score_user(model: Model, shared: Leaves, store: Leaves, user: Array, candidates: Array,
               history: Array, history_mask: Array, *, by_rows: bool = False) -> Array:
    """Logits ``[C]`` of one user's candidates ``[C]`` (global ids).

    Args:
      model: the model.
      shared: global shared params.
      store: the stacked private store.
      user: scalar user id.
      candidates: ``[C]`` item ids; history, history_mask: ``[n]`` memory.
      by_rows: score on a local table of the candidates' and memory's rows
        (needed for private tables; see module docstring).
    """
    if not by_rows:
        private = split_scores(gather_clients(store, user, None))[0]
        return model.apply(ModelParams(private, shared), candidates,
                           Context(history, history_mask))
    # Catalogue size: a shared table's rows, else a private table's ([U, I, d]; `local`).
    num_items = (next(iter(shared.tables.values())).shape[0] if shared.tables
                 else next(iter(store.tables.values())).shape[1])
    c, n = candidates.shape[0], history.shape[0]
    rows, _, local_cand, local_hist = localize(
        candidates, jnp.ones(c, bool), history, history_mask, num_items,
        local_rows(c, n, num_items))
    private = split_scores(gather_clients(store, user, rows))[0]
    tables = {name: t[rows] for name, t in shared.tables.items()}
    return model.apply(ModelParams(private, Leaves(tables, shared.dense)), local_cand,
                       Context(local_hist, history_mask))


def make_scorer(model: Model, k: int = 10, *, by_rows: bool | None = None):
    """Jitted ``(shared, private_store, users, candidates, labels, mask, history,
    history_mask, user_mask) -> per-user metrics`` for a chunk of users.

    ``by_rows`` (see :func:`score_user`) defaults to: the model has private tables.
    """
    if by_rows is None:
        by_rows = bool(jax.eval_shape(model.init_private, jax.random.key(0)).tables)

    @jax.jit
    def scorer(shared, private_store, users, candidates, labels, mask, history, history_mask,
               user_mask):
        one = lambda *a: score_user(model, *a, by_rows=by_rows)
        scores = jax.vmap(one, in_axes=(None, None, 0, 0, 0, 0))(
            shared, private_store, users, candidates, history, history_mask)
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
             chunk_size: int = 1024) -> dict[str, float]:
    """Mean metrics over users (see :func:`feddmr_jax.metrics.mean_metrics`).

    Args:
      scorer: from :func:`make_scorer`.
      shared: global shared params.
      private_store: stacked private params ``[U, ...]`` (read inside the
        scorer: by client, and private tables by rows).
      eval_set: candidates/labels/mask ``[U, C]``.
      history, history_mask: ``[U, n]`` memory of every user.
      chunk_size: users scored per call.
    """
    def block(users, real):
        return scorer(shared, private_store, users.astype(np.int32), eval_set.candidates[users],
                      eval_set.labels[users], eval_set.mask[users], history[users],
                      history_mask[users], real)

    return _mean_over_blocks(block, eval_set.candidates.shape[0], chunk_size)


def _mean_over_blocks(block, num_users: int, chunk_size: int) -> dict[str, float]:
    """Mean metrics of every user, computed ``chunk_size`` users at a time.

    ``block(users [size], real [size]) -> {metric: [size]}`` scores one padded block
    (the last block repeats its first user; ``real`` is False there), so every call
    has the same shape and one program serves every block. Refuses users with
    non-finite scores.
    """
    size = min(chunk_size, num_users)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, num_users, size):
        users = np.arange(start, min(start + size, num_users))
        n_real = len(users)
        out = block(_pad_users(users, size), np.arange(size) < n_real)
        for name, value in out.items():
            parts.setdefault(name, []).append(np.asarray(value)[:n_real])
    return _checked_mean({name: np.concatenate(v) for name, v in parts.items()})


def _checked_mean(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean metrics; refuses users with non-finite scores.

    ``ranking_metrics`` already ranks a non-finite score against its user (never a
    hit), but a diverged model is an error of the run, not a low metric.
    """
    bad = np.flatnonzero(~per_user["finite"])
    if bad.size:
        raise DivergedError(f"evaluation: {bad.size} of {len(per_user['finite'])} users have "
                          f"non-finite (NaN or inf) scores (first: user {bad[0]}); the model "
                          "diverged")
    return mean_metrics(per_user)


@functools.partial(jax.jit, static_argnames="k")
def _stored_metrics(scores, labels, mask, user_mask, *, k):
    metrics = ranking_metrics(scores, labels, mask & user_mask[:, None], k=k)
    metrics["valid"] = metrics["valid"] & user_mask
    metrics["auc_valid"] = metrics["auc_valid"] & user_mask
    return metrics


def evaluate_stored(private_store: Leaves, eval_set: EvalSet, *, offset: int = 0, k: int = 10,
                    chunk_size: int = 1024) -> dict[str, float]:
    """Mean metrics of the scores kept in the store (``local`` evaluation mode).

    Args:
      private_store: the stacked private store holding ``EVAL_SCORES`` ``[U, M]``
        (validation columns first, then test).
      eval_set: candidates/labels/mask ``[U, C]``; its scores are the store's
        columns ``offset .. offset + C``.
      offset: 0 for the validation set, its number of candidates for the test set.
      k: cut-off of the top-k metrics.
      chunk_size: users ranked per call.

    Raises:
      ValueError: the store holds no scores, or too few columns.
    """
    stored = split_scores(private_store)[1]
    num_users, c = eval_set.candidates.shape
    if stored is None or stored.shape[1] < offset + c:
        raise ValueError("the private store holds no evaluation scores of these candidates "
                         "(local evaluation needs eval_items in build_algorithm)")
    def block(users, real):
        return _stored_metrics(stored[users, offset:offset + c], eval_set.labels[users],
                               eval_set.mask[users], real, k=k)

    return _mean_over_blocks(block, num_users, chunk_size)
