"""Evaluation negatives, vectorized (training negatives: data/train_negatives.py).

Uniform item ids, then redraw only the entries that collide (a known positive
of the row's user, or -- where rows must be distinct -- a repeat within the
row), until none is left. Membership is a ``searchsorted`` on the sorted keys
``user * num_items + item`` of the positives. Rows that do not settle within a
few rounds (users who know most of the catalogue) are finished exactly: a
random permutation of the user's non-positive items. Evaluation negatives
always avoid every positive of the user.
"""

from __future__ import annotations

import numpy as np

from feddmr_jax.data.splits import positives_csr
from feddmr_jax.data.types import EvalSet, Split, TrainCSR, id_text
from feddmr_jax.errors import DataError

_ROUNDS = 30
_DENSE_CHUNK = 1 << 24  # elements of one dense fallback block
EVAL_BLOCK_USERS = 1 << 14  # users per block of evaluation negatives (bounds the build's memory)


def _keys(csr: TrainCSR, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """Sorted int64 keys ``user * num_items + item`` of the entries of rows ``lo..hi-1``."""
    hi = csr.num_users if hi is None else hi
    indptr = csr.indptr[lo:hi + 1]
    user = np.repeat(np.arange(lo, hi, dtype=np.int64), np.diff(indptr))
    keys = user * csr.num_items + csr.items[indptr[0]:indptr[-1]]
    if keys.size > 1 and np.any(keys[1:] < keys[:-1]):
        keys = np.sort(keys)
    return keys


def _is_positive(keys: np.ndarray, user: np.ndarray, item: np.ndarray, num_items: int):
    q = user.astype(np.int64) * num_items + item
    if keys.size == 0:
        return np.zeros(q.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
    return keys[pos] == q


def _invalid(block: np.ndarray, user: np.ndarray, keys: np.ndarray, num_items: int,
             distinct: bool) -> np.ndarray:
    """``[R, K]`` True where an entry is a positive (or a repeat, if distinct)."""
    bad = _is_positive(keys, user[:, None], block, num_items)
    if distinct and block.shape[1] > 1:
        idx = np.argsort(block, axis=1, kind="stable")
        srt = np.take_along_axis(block, idx, axis=1)
        rep = np.zeros(block.shape, dtype=bool)
        rep[:, 1:] = srt[:, 1:] == srt[:, :-1]
        dup = np.empty_like(rep)
        np.put_along_axis(dup, idx, rep, axis=1)
        bad |= dup
    return bad


def _dense(rng: np.random.Generator, user: np.ndarray, width: int, keys: np.ndarray,
           num_items: int, distinct: bool) -> np.ndarray:
    """Exact sampling among each row's non-positive items (for crowded users)."""
    out = np.empty((len(user), width), dtype=np.int64)
    step = max(1, _DENSE_CHUNK // max(num_items, 1))
    for lo in range(0, len(user), step):
        u = user[lo:lo + step].astype(np.int64)
        a = np.searchsorted(keys, u * num_items)
        b = np.searchsorted(keys, (u + 1) * num_items)
        row = np.repeat(np.arange(len(u)), b - a)
        col = keys[np.arange(row.size) + np.repeat(a - (np.cumsum(b - a) - (b - a)), b - a)]
        scores = rng.random((len(u), num_items))
        scores[row, col - u[row] * num_items] = 2.0  # positives sort last
        perm = np.argsort(scores, axis=1)
        if distinct:
            out[lo:lo + step] = perm[:, :width]
        else:
            avail = (num_items - (b - a))[:, None]
            pick = (rng.random((len(u), width)) * avail).astype(np.int64)
            out[lo:lo + step] = np.take_along_axis(perm, pick, axis=1)
    return out


def _sample(rng: np.random.Generator, user: np.ndarray, width: int, keys: np.ndarray,
            num_items: int, distinct: bool) -> np.ndarray:
    """``[len(user), width]`` negatives for each row's user (see module doc)."""
    out = rng.integers(0, num_items, (len(user), width), dtype=np.int64)
    rows = np.arange(len(user))
    bad = _invalid(out, user, keys, num_items, distinct)
    for _ in range(_ROUNDS):
        rows = rows[bad.any(axis=1)]
        if rows.size == 0:
            return out
        bad = bad[bad.any(axis=1)]
        sub = out[rows]
        sub[bad] = rng.integers(0, num_items, int(bad.sum()))
        out[rows] = sub
        bad = _invalid(sub, user[rows], keys, num_items, distinct)
    rows = rows[bad.any(axis=1)]
    if rows.size:
        out[rows] = _dense(rng, user[rows], width, keys, num_items, distinct)
    return out


def sample_eval_negatives(split: Split, num_negatives: int = 99,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Samples fixed validation and test negatives for every user.

    Users are drawn in blocks of ``EVAL_BLOCK_USERS`` (in user order, one
    generator), so the build's memory is bounded by a block, not the
    population; with at most that many users (every bundled dataset) the
    negatives equal one draw over all users.

    Args:
      split: the split; negatives avoid all of a user's positives (any part).
      num_negatives: negatives per user for each of validation and test.
      seed: seed; the same split and seed give the same negatives.

    Returns:
      ``(val_neg, test_neg)``, each ``[num_users, num_negatives]`` int32; no
      repeats within a row, and a user's validation and test negatives are disjoint.

    Raises:
      DataError: a user has fewer than ``2 * num_negatives`` non-positive items.
    """
    val = np.empty((split.num_users, num_negatives), np.int32)
    test = np.empty((split.num_users, num_negatives), np.int32)
    _fill_eval_negatives(split, num_negatives, seed, val, test)
    return val, test


def _fill_eval_negatives(split: Split, num_negatives: int, seed: int, val_out: np.ndarray,
                         test_out: np.ndarray) -> None:
    """Writes :func:`sample_eval_negatives`' draws into ``[U, num_negatives]`` views."""
    pos = positives_csr(split)
    avail = split.num_items - pos.lengths
    short = np.flatnonzero(avail < 2 * num_negatives)
    if short.size:
        u = short[0]
        raise DataError(f"user {id_text(split.user_ids[u])} has only {avail[u]} non-positive items "
                        f"of {split.num_items}, fewer than the {2 * num_negatives} distinct "
                        f"validation + test negatives needed ({short.size} such users); "
                        "lower data.eval_negatives (--eval-negatives)")
    rng = np.random.default_rng(seed)
    for lo in range(0, split.num_users, EVAL_BLOCK_USERS):
        hi = min(split.num_users, lo + EVAL_BLOCK_USERS)
        neg = _sample(rng, np.arange(lo, hi), 2 * num_negatives, _keys(pos, lo, hi),
                      split.num_items, distinct=True)
        val_out[lo:hi] = neg[:, :num_negatives]
        test_out[lo:hi] = neg[:, num_negatives:]


def _one_per_user(frame, num_users: int, part: str) -> np.ndarray:
    user = frame["user"].to_numpy()
    if len(user) != num_users or np.any(user != np.arange(num_users)):
        raise DataError(f"split part '{part}' must hold exactly one item per user for "
                        "sampled (leave-one-out) evaluation")
    return frame["item"].to_numpy().astype(np.int32)


def build_eval_sets(split: Split, num_negatives: int = 99,
                    seed: int = 0) -> tuple[EvalSet, EvalSet]:
    """Builds the validation and test candidate sets.

    ``loo``: ``[U, 1 + num_negatives]`` candidates, the held-out positive in
    column 0 (labels True only there), then the sampled negatives; mask all True.
    ``ratio`` (full ranking): candidates are all items (a read-only broadcast
    ``[U, num_items]`` view), labels mark the user's validation (resp. test)
    items, and mask is False on the user's training items (and, for test, also
    on its validation items), which are not ranked; num_negatives and seed are unused.

    Args:
      split: the split.
      num_negatives: sampled negatives per user (loo).
      seed: sampling seed (loo).

    Returns:
      ``(val, test)`` :class:`EvalSet` objects.
    """
    u, n = split.num_users, split.num_items
    if split.scheme == "loo":
        cands = [np.empty((u, 1 + num_negatives), np.int32) for _ in range(2)]
        for part, cand in zip(("val", "test"), cands):
            cand[:, 0] = _one_per_user(getattr(split, part), u, part)
        _fill_eval_negatives(split, num_negatives, seed, cands[0][:, 1:], cands[1][:, 1:])
        # Labels (column 0) and mask (all True) are the same for every user: read-only
        # broadcast views of one row, no [U, 1 + num_negatives] arrays.
        labels = np.zeros((1, 1 + num_negatives), dtype=bool)
        labels[0, 0] = True
        labels = np.broadcast_to(labels, (u, 1 + num_negatives))
        mask = np.broadcast_to(np.ones((1, 1 + num_negatives), bool), labels.shape)
        return (EvalSet(candidates=cands[0], labels=labels, mask=mask),
                EvalSet(candidates=cands[1], labels=labels, mask=mask))
    cand = np.broadcast_to(np.arange(n, dtype=np.int32), (u, n))
    sets = []
    hidden = [split.train]
    for frame in (split.val, split.test):
        labels = np.zeros((u, n), dtype=bool)
        labels[frame["user"].to_numpy(), frame["item"].to_numpy()] = True
        mask = np.ones((u, n), dtype=bool)
        for h in hidden:
            mask[h["user"].to_numpy(), h["item"].to_numpy()] = False
        sets.append(EvalSet(candidates=cand, labels=labels, mask=mask))
        hidden.append(frame)
    return sets[0], sets[1]
