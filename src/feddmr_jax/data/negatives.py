"""Negative sampling for evaluation and training, vectorized.

Evaluation negatives: uniform item ids, then redraw only the entries that collide
(a known positive of the row's user, or -- where rows must be distinct -- a
repeat within the row), until none is left. Membership is a ``searchsorted``
on the sorted keys ``user * num_items + item`` of the positives. Rows that do
not settle within a few rounds (users who know most of the catalogue) are
finished exactly: a random permutation of the user's non-positive items.

Training negatives need no rejection: a uniform rank among the user's allowed
items is mapped to the item exactly (:func:`_nth_allowed`). In a round they
come from a counter-based draw (:func:`draw_train_negatives`): a hash of
``(seed, round, user, position)``, so each chunk of a round draws its own
clients' negatives alone, identical however the round is cut.

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
        raise DataError(f"user {split.user_ids[u]!r} has only {avail[u]} non-positive items "
                        f"of {split.num_items}, fewer than the {2 * num_negatives} distinct "
                        f"validation + test negatives needed ({short.size} such users); "
                        "lower num_negatives")
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


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MASK64 = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer: a bijective 64-bit mix of each uint64 entry."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _counter_bits(seed: int, round_index: int, user: np.ndarray,
                  counter: np.ndarray) -> np.ndarray:
    """Pseudo-random uint64 of each ``(seed, round, user, counter)`` (a counter-based hash).

    A pure function of its four words: the same entry gets the same bits
    whatever else is drawn in the same call.
    """
    key = _mix(np.array([seed & _MASK64], np.uint64) * _GOLDEN + np.uint64(1))
    key = _mix(key ^ (np.array([round_index & _MASK64], np.uint64) * _GOLDEN))
    h = _mix(key ^ (np.asarray(user).astype(np.uint64) * _GOLDEN))
    return _mix(h ^ (np.asarray(counter).astype(np.uint64) + _GOLDEN))


# _nth_allowed: users x items cells up to which the allowed items are listed densely
# (a [users, items] bool table, 4 MB) rather than searched; both give the same items.
DENSE_ALLOWED_CELLS = 1 << 22


def _nth_allowed(exclude: TrainCSR, users: np.ndarray, entry_user: np.ndarray,
                 bits: np.ndarray, dense: bool | None = None):
    """The r-th item (0-based, ascending) that ``exclude`` does not hold for each entry.

    Exact and rejection-free: with ``e_0 < e_1 < ...`` a user's excluded items,
    the r-th allowed item is ``r + #{i : e_i - i <= r}`` (one ``searchsorted``
    over the keys ``user * num_items + e_i - i`` of the given users only, so
    the work is proportional to these users, not to the population). When the
    users' ``[R, num_items]`` table is small (``DENSE_ALLOWED_CELLS``) the
    allowed items are instead listed in order (``flatnonzero`` of the table)
    and read at each entry's rank: the same items, about 3x faster per
    ml-100k chunk than a ``searchsorted`` of unsorted queries.

    Args:
      exclude: excluded items per user (CSR, sorted by item within a user).
      users: ``[R]`` distinct user ids, the only rows of ``exclude`` read.
      entry_user: ``[M]`` position in ``users`` of each entry's user.
      bits: ``[M]`` uint64 random bits; ``bits % allowed`` is the entry's rank
        (uniform up to a bias below ``num_items / 2**64``).

      dense: force the listing (True) or the search (False); None: by size.

    Returns:
      ``(items [M] int64, allowed [R] int64)``: the items, and each user's
      number of allowed items (an entry whose user has none gets an arbitrary
      item: callers refuse such users, :func:`_check_allowed`).
    """
    users = np.asarray(users, np.int64)
    num_items = exclude.num_items
    lengths = exclude.lengths_of(users)
    local = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
    start = np.repeat(exclude.indptr[users] - np.cumsum(lengths) + lengths, lengths)
    items = exclude.items[start + np.arange(local.size)].astype(np.int64)
    entry_user = np.asarray(entry_user, np.int64)
    if dense if dense is not None else len(users) * num_items <= DENSE_ALLOWED_CELLS:
        table = np.ones((len(users), num_items), bool)
        table[local, items] = False
        allowed = table.sum(1, dtype=np.int64)
        listed = np.flatnonzero(table)            # row by row, ascending within a row
        rank = (bits % np.maximum(allowed, 1).astype(np.uint64)[entry_user]).astype(np.int64)
        at = np.minimum((np.cumsum(allowed) - allowed)[entry_user] + rank, max(listed.size - 1, 0))
        picked = listed[at] if listed.size else np.zeros(entry_user.size, np.int64)
        return picked - entry_user * num_items, allowed
    keys = local * num_items + items
    keep = np.ones(keys.size, bool)
    keep[1:] = keys[1:] != keys[:-1]            # duplicates (an item in two parts)
    keys, local = keys[keep], local[keep]
    distinct = np.bincount(local, minlength=len(users)).astype(np.int64)
    row_start = np.cumsum(distinct) - distinct
    within = np.arange(keys.size) - np.repeat(row_start, distinct)
    adjusted = keys - within                    # local * I + (e_i - i), sorted
    allowed = num_items - distinct
    rank = (bits % np.maximum(allowed, 1).astype(np.uint64)[entry_user]).astype(np.int64)
    below = np.searchsorted(adjusted, entry_user * num_items + rank, side="right")
    return rank + below - row_start[entry_user], allowed


def _train_entries(train: TrainCSR, users: np.ndarray | None, num_negatives: int):
    """``(users, positives per user, position in users of each negative's user)``."""
    users = np.arange(train.num_users) if users is None else np.asarray(users, dtype=np.int64)
    lengths = train.lengths_of(users)
    entry_user = np.repeat(np.arange(len(users), dtype=np.int64), lengths * num_negatives)
    return users, lengths, entry_user


def _check_allowed(users: np.ndarray, lengths: np.ndarray, allowed: np.ndarray,
                   num_items: int) -> None:
    stuck = np.flatnonzero((lengths > 0) & (allowed <= 0))
    if stuck.size:
        raise DataError(f"user {users[stuck[0]]} has positives for all {num_items} "
                        "items, so no training negative can be drawn")


def sample_train_negatives(train: TrainCSR, exclude: TrainCSR, rng: np.random.Generator,
                           num_negatives: int = 4, users: np.ndarray | None = None) -> np.ndarray:
    """Draws fresh training negatives for each training positive.

    Each negative is uniform over the items ``exclude`` does not hold for its
    user (exactly, without rejection; repeats within a row allowed).

    Args:
      train: training positives (CSR); one output row per positive.
      exclude: items never to return (:func:`train_exclusions`), same users.
      rng: a Generator, seeded per round by the caller (e.g.
        ``np.random.default_rng([seed, round])``); each call draws afresh.
      num_negatives: negatives per positive.
      users: distinct user ids to cover, in this order; None = all users.

    Returns:
      ``[nnz of the selected users, num_negatives]`` int32, row-aligned with the
      concatenated CSR rows of ``users``.

    Raises:
      DataError: a selected user with positives has no non-positive item.
    """
    users, lengths, entry_user = _train_entries(train, users, num_negatives)
    bits = rng.integers(0, np.iinfo(np.uint64).max, entry_user.size, dtype=np.uint64,
                        endpoint=True)
    items, allowed = _nth_allowed(exclude, users, entry_user, bits=bits)
    _check_allowed(users, lengths, allowed, exclude.num_items)
    return items.astype(np.int32).reshape(-1, num_negatives)


def draw_train_negatives(train: TrainCSR, exclude: TrainCSR, users: np.ndarray, *,
                         seed: int, round_index: int, num_negatives: int = 4) -> np.ndarray:
    """Training negatives of ``users`` from a counter-based draw (per chunk of a round).

    Negative ``j`` of a user's ``p``-th training positive is the allowed item
    (uniform over the items ``exclude`` does not hold for the user) picked by
    the hash of ``(seed, round_index, user, p * num_negatives + j)``: a user's
    negatives depend only on these, never on which other users are drawn in
    the same call, so a round can be drawn chunk by chunk in any order.
    Work and memory are proportional to ``users`` and their rows only.

    Args:
      train: training positives (CSR); one output row per positive.
      exclude: items never to return (:func:`train_exclusions`), sorted by
        item within a user.
      users: distinct user ids, in output order.
      seed, round_index: the run's seed and the round.
      num_negatives: negatives per positive (repeats within a row allowed).

    Returns:
      ``[nnz of users, num_negatives]`` int32, row-aligned with the
      concatenated CSR rows of ``users``.

    Raises:
      DataError: a selected user with positives has no allowed item.
    """
    users, lengths, entry_user = _train_entries(train, users, num_negatives)
    per_user = lengths * num_negatives
    counter = np.arange(entry_user.size) - np.repeat(np.cumsum(per_user) - per_user, per_user)
    bits = _counter_bits(seed, round_index, users[entry_user], counter)
    items, allowed = _nth_allowed(exclude, users, entry_user, bits=bits)
    _check_allowed(users, lengths, allowed, exclude.num_items)
    return items.astype(np.int32).reshape(-1, num_negatives)
