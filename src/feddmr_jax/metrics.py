"""Per-user ranking metrics in pure ``jax.numpy``.

Inputs are one row per user and one column per candidate item: ``scores``
``[users, candidates]`` (higher = more relevant), ``labels`` ``[users,
candidates]`` (True = held-out positive) and an optional ``mask`` ``[users,
candidates]`` that marks real candidates (False = padding). The same code serves
the sampled protocol (1 positive + 99 negatives per user) and full ranking
(several positives against every unseen item, rows padded to a common width).

Definitions (only real candidates take part; padding changes nothing):

- **rank** of a candidate = 1 + #(real candidates with a strictly greater score)
  + #(*other* real candidates with an equal score). Ties count against the
  item (pessimistic), so a constant scorer gets no credit:
  with 1 positive tied with 99 negatives its rank is 100.
- ``hr@k`` = 1 if some positive has rank <= k, else 0.
- ``precision@k`` = #(positives with rank <= k) / k.
- ``recall@k`` = #(positives with rank <= k) / #positives.
- ``ndcg@k`` = DCG / IDCG with DCG = sum over positives with rank <= k of
  1 / log2(rank + 1), and IDCG the DCG of min(#positives, k) positives at
  ranks 1, 2, ....
- ``mrr`` = 1 / (rank of the best-ranked positive) (no cut-off).
- ``auc`` = fraction of (real positive, real negative) pairs in which the
  positive has the greater score, ties counted 1/2 (Mann-Whitney U divided by
  #positives * #negatives, computed from average ranks).

A user is ``valid`` when it has at least one real positive; ``auc_valid``
additionally requires at least one real negative. Metrics of invalid users are
0 and must be excluded when averaging (:func:`mean_metrics` does that).

**Non-finite scores** (NaN, +-inf: a diverged model) count against the user:
a non-finite positive ranks below every candidate and a non-finite negative
above every candidate, so such a score is never a hit and never helps AUC (a
NaN compares false with everything, which would otherwise make a NaN positive
rank 1). Other users are unaffected. The per-user flag ``finite`` says whether
all of a user's real scores were finite; evaluation refuses non-finite scores
(``evaluate.py``).

Cost: one sort and two binary searches per row, O(C log C) time and O(U * C)
memory; no ``[U, C, C]`` tensor.
"""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

_FLAG_KEYS = ("valid", "auc_valid", "finite")


def _count_below(
    scores: jax.Array, mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Counts, for each candidate, real candidates with a smaller / not larger score.

    Args:
      scores: ``[users, candidates]`` float scores (no NaN).
      mask: ``[users, candidates]`` bool, True = real candidate.

    Returns:
      ``(less, less_equal)``, both ``[users, candidates]`` int32: the number of
      real candidates of the same row with score ``<`` resp. ``<=`` the
      candidate's score (``less_equal`` includes the candidate itself when real).
    """
    # Padding goes to +inf, after every real score; it is then never "< s", and
    # is "<= s" only for s = +inf, where capping at the real count corrects it.
    sorted_scores = jnp.sort(jnp.where(mask, scores, jnp.inf), axis=-1)
    search = jax.vmap(jnp.searchsorted, in_axes=(0, 0, None))
    less = search(sorted_scores, scores, "left").astype(jnp.int32)
    less_equal = search(sorted_scores, scores, "right").astype(jnp.int32)
    num_real = jnp.sum(mask, axis=-1, keepdims=True, dtype=jnp.int32)
    return jnp.minimum(less, num_real), jnp.minimum(less_equal, num_real)


def pessimistic_ranks(
    scores: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """1-based pessimistic rank of every candidate among the real candidates.

    Args:
      scores: ``[users, candidates]`` float scores.
      mask: ``[users, candidates]`` bool, True = real candidate (None = all).

    Returns:
      ``[users, candidates]`` int32: ``#(real candidates with score >= own)``,
      counting the candidate itself; meaningless at padding entries.
    """
    scores = jnp.asarray(scores)
    scores = jnp.where(scores == 0, jnp.zeros_like(scores), scores)  # -0.0 == 0.0
    if mask is None:
        mask = jnp.ones(scores.shape, bool)
    less, _ = _count_below(scores, jnp.asarray(mask, bool))
    num_real = jnp.sum(mask, axis=-1, keepdims=True, dtype=jnp.int32)
    return num_real - less


def ranking_metrics(
    scores: jax.Array,
    labels: jax.Array,
    mask: jax.Array | None = None,
    k: int = 10,
) -> dict[str, jax.Array]:
    """Per-user ranking metrics (see the module docstring for definitions).

    jit-compatible with ``k`` static:
    ``jax.jit(ranking_metrics, static_argnames="k")``.

    Args:
      scores: ``[users, candidates]`` float scores, higher = more relevant.
      labels: ``[users, candidates]`` bool (or 0/1), True = positive.
      mask: ``[users, candidates]`` bool, True = real candidate; None = all real.
      k: cut-off for hr, ndcg, precision and recall (a positive Python int).

    Returns:
      Dict of ``[users]`` arrays: float32 ``hr@{k}``, ``ndcg@{k}``,
      ``precision@{k}``, ``recall@{k}``, ``mrr``, ``auc`` (0 for invalid
      users) and bool ``valid``, ``auc_valid``, ``finite`` (every real score
      of the user is finite; non-finite ones rank against the user, see the
      module docstring).
    """
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    k = int(k)
    scores = jnp.asarray(scores)
    if not jnp.issubdtype(scores.dtype, jnp.floating):
        scores = scores.astype(jnp.float32)
    scores = jnp.where(scores == 0, jnp.zeros_like(scores), scores)  # -0.0 == 0.0
    if mask is None:
        mask = jnp.ones(scores.shape, bool)
    mask = jnp.asarray(mask, bool)
    positive = jnp.asarray(labels, bool) & mask
    negative = ~jnp.asarray(labels, bool) & mask
    finite = jnp.isfinite(scores)
    # Non-finite: a positive ranks last, a negative first (never a hit).
    scores = jnp.where(finite, scores, jnp.where(positive, -jnp.inf, jnp.inf))

    less, less_equal = _count_below(scores, mask)
    num_real = jnp.sum(mask, axis=-1, keepdims=True, dtype=jnp.int32)
    rank = num_real - less  # [U, C] pessimistic, >= 1 at real entries

    num_pos = jnp.sum(positive, axis=-1, dtype=jnp.int32)
    num_neg = jnp.sum(negative, axis=-1, dtype=jnp.int32)
    valid = num_pos > 0
    auc_valid = valid & (num_neg > 0)
    f32 = jnp.float32

    hit = positive & (rank <= k)
    num_hit = jnp.sum(hit, axis=-1, dtype=jnp.int32)
    hr = (num_hit > 0).astype(f32)
    precision = num_hit.astype(f32) / k
    recall = jnp.where(valid, num_hit / jnp.maximum(num_pos, 1), 0.0).astype(f32)

    gains = jnp.where(hit, 1.0 / jnp.log2(rank.astype(f32) + 1.0), 0.0)
    dcg = jnp.sum(gains, axis=-1)
    ideal = jnp.cumsum(1.0 / jnp.log2(jnp.arange(2, k + 2, dtype=f32)))
    idcg = ideal[jnp.clip(num_pos, 1, k) - 1]
    ndcg = jnp.where(valid, dcg / idcg, 0.0).astype(f32)

    best_rank = jnp.min(jnp.where(positive, rank, jnp.iinfo(jnp.int32).max), axis=-1)
    mrr = jnp.where(valid, 1.0 / jnp.maximum(best_rank, 1).astype(f32), 0.0)

    # Mann-Whitney: twice the average ascending rank is
    # 2 * less + (#equal incl. self) + 1, an integer; keep sums exact in int32.
    twice_avg_rank = less + less_equal + 1
    rank_sum2 = jnp.sum(jnp.where(positive, twice_avg_rank, 0), axis=-1)
    u2 = rank_sum2 - num_pos * (num_pos + 1)
    pairs = jnp.maximum(num_pos, 1).astype(f32) * jnp.maximum(num_neg, 1).astype(f32)
    auc = jnp.where(auc_valid, u2.astype(f32) / (2.0 * pairs), 0.0).astype(f32)

    return {
        f"hr@{k}": hr,
        f"ndcg@{k}": ndcg,
        f"precision@{k}": precision,
        f"recall@{k}": recall,
        "mrr": mrr.astype(f32),
        "auc": auc,
        "valid": valid,
        "auc_valid": auc_valid,
        "finite": jnp.all(finite | ~mask, axis=-1),
    }


def mean_metrics(
    per_user: Mapping[str, jax.Array], valid: jax.Array | None = None
) -> dict[str, float]:
    """Averages per-user metrics over valid users.

    Args:
      per_user: output of :func:`ranking_metrics` (``[users]`` arrays).
      valid: ``[users]`` bool of users to average over; None = ``per_user
        ["valid"]``. Pass e.g. ``per_user["valid"] & user_mask`` to drop padded
        users. ``auc`` is further restricted to ``per_user["auc_valid"]`` when
        present.

    Returns:
      Dict metric name -> Python float mean (NaN when no user counts); the
      ``valid`` / ``auc_valid`` flags are not averaged.
    """
    # Host-side reduction (the result is Python floats): numpy, float64 sums.
    if valid is None:
        valid = per_user["valid"]
    valid = np.asarray(valid, bool)
    out = {}
    for name, values in per_user.items():
        if name in _FLAG_KEYS:
            continue
        use = valid
        if name == "auc" and "auc_valid" in per_user:
            use = valid & np.asarray(per_user["auc_valid"], bool)
        count = int(np.sum(use))
        values = np.asarray(values, np.float64)
        out[name] = float(np.sum(values[use]) / count) if count else float("nan")
    return out
