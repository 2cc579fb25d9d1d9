"""Evaluation protocol: every user scores its candidates with its own private params.

For each user u the model sees ``ModelParams(private=store[u], shared=global)``
and its memory (most recent training positives), scores the candidates of an
:class:`~feddmr_jax.data.types.EvalSet` (sampled: 1 held-out positive + 99 fixed
negatives; full ranking: every item, training positives masked) and
:func:`feddmr_jax.metrics.ranking_metrics` turns the scores into per-user
metrics, averaged over users. Users are processed in fixed-size chunks (the last
one padded and masked), so one compiled scorer serves every round.
"""

from __future__ import annotations


import jax
import numpy as np

from feddmr_jax.data.types import EvalSet
from feddmr_jax.metrics import mean_metrics, ranking_metrics
from feddmr_jax.models.base import Context, Leaves, Model, ModelParams

Array = jax.Array


def make_scorer(model: Model, k: int = 10):
    """Jitted ``(shared, stacked_private, candidates, labels, mask, history,
    history_mask, user_mask) -> per-user metrics`` for a chunk of users."""

    def score_user(shared: Leaves, private: Leaves, candidates: Array,
                   history: Array, history_mask: Array) -> Array:
        return model.apply(ModelParams(private, shared), candidates,
                           Context(history, history_mask))

    @jax.jit
    def scorer(shared, stacked_private, candidates, labels, mask, history, history_mask,
               user_mask):
        scores = jax.vmap(score_user, in_axes=(None, 0, 0, 0, 0))(
            shared, stacked_private, candidates, history, history_mask)
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
      private_store: stacked private params ``[U, ...]``.
      eval_set: candidates/labels/mask ``[U, C]``.
      history, history_mask: ``[U, n]`` memory of every user.
      chunk_size: users scored per call.
    """
    num_users = eval_set.candidates.shape[0]
    size = min(chunk_size, num_users)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, num_users, size):
        users = np.arange(start, min(start + size, num_users))
        n_real = len(users)
        users = _pad_users(users, size)
        out = scorer(shared, jax.tree.map(lambda s: s[users], private_store),
                     eval_set.candidates[users], eval_set.labels[users],
                     eval_set.mask[users], history[users], history_mask[users],
                     np.arange(size) < n_real)
        for name, value in out.items():
            parts.setdefault(name, []).append(np.asarray(value)[:n_real])
    per_user = {name: np.concatenate(v) for name, v in parts.items()}
    return mean_metrics(per_user)
