"""Negative sampling for evaluation and training, vectorized.

All samplers draw uniform item ids, then redraw only the entries that collide
(a known positive of the row's user, or -- where rows must be distinct -- a
repeat within the row), until none is left. Membership is a ``searchsorted``
on the sorted keys ``user * num_items + item`` of the positives. Rows that do
not settle within a few rounds (users who know most of the catalogue) are
finished exactly: a random permutation of the user's non-positive items.

Which positives a *training* negative avoids is a protocol choice
(:func:`train_exclusions`): ``strict`` (default) avoids only the client's
training positives, since a client cannot know its future; ``reference``
also avoids its validation and test items, as the NCF, PFedRec and FedRAP
code does, which leaks the held-out items to models with per-user item
parameters (docs/protocol.md). Evaluation negatives always avoid every
positive of the user.
"""

from __future__ import annotations

import numpy as np

from feddmr_jax.data.splits import positives_csr
from feddmr_jax.data.types import EvalSet, Split, TrainCSR
from feddmr_jax.errors import DataError

TRAIN_NEGATIVES = ("strict", "reference")
_ROUNDS = 30
_DENSE_CHUNK = 1 << 24  # elements of one dense fallback block


def _keys(csr: TrainCSR) -> np.ndarray:
    """Sorted int64 keys ``user * num_items + item`` of a CSR's entries."""
    user = np.repeat(np.arange(csr.num_users, dtype=np.int64), np.diff(csr.indptr))
    keys = user * csr.num_items + csr.items
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
    pos = positives_csr(split)
    avail = split.num_items - pos.lengths
    short = np.flatnonzero(avail < 2 * num_negatives)
    if short.size:
        u = short[0]
        raise DataError(f"user {split.user_ids[u]!r} has only {avail[u]} non-positive items "
                        f"of {split.num_items}, fewer than the {2 * num_negatives} distinct "
                        f"validation + test negatives needed ({short.size} such users); "
                        "lower num_negatives")
    rng = np.random.default_rng(seed)
    neg = _sample(rng, np.arange(split.num_users), 2 * num_negatives, _keys(pos),
                  split.num_items, distinct=True).astype(np.int32)
    return neg[:, :num_negatives], neg[:, num_negatives:]


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
        val_neg, test_neg = sample_eval_negatives(split, num_negatives, seed)
        sets = []
        for part, neg in (("val", val_neg), ("test", test_neg)):
            pos = _one_per_user(getattr(split, part), u, part)
            cand = np.concatenate([pos[:, None], neg], axis=1)
            labels = np.zeros(cand.shape, dtype=bool)
            labels[:, 0] = True
            sets.append(EvalSet(candidates=cand, labels=labels, mask=np.ones(cand.shape, bool)))
        return sets[0], sets[1]
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


def train_exclusions(split: Split, train_negatives: str = "strict") -> TrainCSR:
    """The items each client never draws as a training negative.

    Args:
      split: the split.
      train_negatives: ``"strict"``: the client's training positives;
        ``"reference"``: all its positives (train, validation and test; leaky).

    Returns:
      :class:`TrainCSR` sorted by item within each user (for :func:`sample_train_negatives`).

    Raises:
      DataError: unknown ``train_negatives``.
    """
    if train_negatives not in TRAIN_NEGATIVES:
        raise DataError(f"unknown train_negatives {train_negatives!r}; "
                        f"known: {', '.join(TRAIN_NEGATIVES)}")
    parts = ("train",) if train_negatives == "strict" else ("train", "val", "test")
    return positives_csr(split, parts)


def sample_train_negatives(train: TrainCSR, exclude: TrainCSR, rng: np.random.Generator,
                           num_negatives: int = 4, users: np.ndarray | None = None) -> np.ndarray:
    """Draws fresh training negatives for each training positive.

    Args:
      train: training positives (CSR); one output row per positive.
      exclude: items never to return (:func:`train_exclusions`), same users.
      rng: a Generator, seeded per round by the caller (e.g.
        ``np.random.default_rng([seed, round])``); each call draws afresh.
      num_negatives: negatives per positive (repeats within a row allowed).
      users: user ids to cover, in this order; None = all users.

    Returns:
      ``[nnz of the selected users, num_negatives]`` int32, row-aligned with the
      concatenated CSR rows of ``users``.

    Raises:
      DataError: a selected user with positives has no non-positive item.
    """
    users = np.arange(train.num_users) if users is None else np.asarray(users, dtype=np.int64)
    lengths = train.indptr[users + 1] - train.indptr[users]
    avail = exclude.num_items - (exclude.indptr[users + 1] - exclude.indptr[users])
    stuck = np.flatnonzero((lengths > 0) & (avail <= 0))
    if stuck.size:
        raise DataError(f"user {users[stuck[0]]} has positives for all {exclude.num_items} "
                        "items, so no training negative can be drawn")
    row_user = np.repeat(users, lengths)
    return _sample(rng, row_user, num_negatives, _keys(exclude), exclude.num_items,
                   distinct=False).astype(np.int32)
