"""Seeded synthetic implicit-feedback data with planted low-rank structure.

Generative model (all numpy, vectorized, processed in chunks of users):

- Items belong to ``num_factors`` latent clusters (balanced, random) and have
  Zipf-like popularity ``pop_i = rank_i ** -popularity_exponent`` (random ranks).
- User u has a cluster mixture ``theta_u ~ Dirichlet(concentration)``; a small
  concentration makes users focus on one or two clusters.
- Each interaction picks an item from ``p(i | u) = (1 - w) * sum_c theta_uc *
  pop_i [i in c] / mass_c + w * pop_i / sum(pop)`` with ``w = popularity_weight``:
  a non-negative rank-(num_factors + 1) factorization, so a factor model can
  recover it while a popularity ranker cannot (it only sees the ``w`` part and
  the marginal). Components are drawn per user with one multinomial, items by
  inverse CDF over cumulative popularity (a guide table, O(1) per draw).
- Activity is power-law: ``n_u = min_interactions + floor(Lomax(activity_exponent)
  * scale)`` with the scale set so the mean is about ``mean_interactions``,
  capped at ``num_items // 5``. Repeated draws are merged (one row per user and
  item) and users left short are topped up with fresh draws (then uniform
  draws), so every user has at least ``min_interactions`` distinct items.
- Timestamps: per user an active window (random start and length, inside a
  two-year span from 2017-07-14), each interaction uniform in it; independent of the items.

Items never drawn are dropped and the rest renumbered (``item_ids`` keeps the
generator's ids), so ``num_items`` can be slightly below the requested value.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from feddmr_jax.data.types import Interactions
from feddmr_jax.errors import DataError

_T0 = 1_500_000_000
_SPAN = 2 * 365 * 86_400


@dataclasses.dataclass(frozen=True)
class _Catalogue:
    """Items grouped by cluster, with cumulative popularity for inverse-CDF sampling.

    Component ``c < C`` is cluster c; component ``C`` is global popularity.
    """

    order: np.ndarray    # [I] item id at each position (items sorted by cluster)
    cum: np.ndarray      # [I] cumulative popularity along ``order``
    guide: np.ndarray    # [G] first position whose cum exceeds g * total / G
    start: np.ndarray    # [C + 1] cumulative mass before each component
    mass: np.ndarray     # [C + 1] popularity mass of each component


def _catalogue(rng: np.random.Generator, num_items: int, num_factors: int,
               exponent: float) -> _Catalogue:
    cluster = rng.permutation(np.arange(num_items) % num_factors)
    pop = (rng.permutation(num_items) + 1.0) ** -exponent
    order = np.argsort(cluster, kind="stable")
    cum = np.cumsum(pop[order])
    mass = np.bincount(cluster, weights=pop, minlength=num_factors)
    start = np.concatenate([[0.0], np.cumsum(mass)[:-1], [0.0]])
    mass = np.concatenate([mass, [cum[-1]]])
    grid = np.arange(8 * num_items) * (cum[-1] / (8 * num_items))
    guide = np.searchsorted(cum, grid, side="right")
    return _Catalogue(order=order, cum=cum, guide=guide, start=start, mass=mass)


def _draw(rng: np.random.Generator, cat: _Catalogue, component: np.ndarray) -> np.ndarray:
    """Draws one item per entry of ``component`` by guide-table inverse CDF."""
    q = cat.start[component] + rng.random(len(component)) * cat.mass[component]
    g = len(cat.guide)
    last = len(cat.cum) - 1
    pos = cat.guide[np.minimum((q * (g / cat.cum[-1])).astype(np.int64), g - 1)]
    pos = np.minimum(pos, last)
    active = np.flatnonzero((cat.cum[pos] <= q) & (pos < last))
    while active.size:  # a few forward steps inside one guide cell
        pos[active] += 1
        active = active[(cat.cum[pos[active]] <= q[active]) & (pos[active] < last)]
    return cat.order[pos].astype(np.int64)


def _components(rng: np.random.Generator, weights: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per user, draws ``counts[u]`` mixture components (grouped by component)."""
    per = rng.multinomial(counts, weights)
    return np.repeat(np.tile(np.arange(weights.shape[1]), len(counts)), per.ravel())


def _unique_sorted(keys: np.ndarray) -> np.ndarray:
    keys = np.sort(keys)
    keep = np.ones(len(keys), dtype=bool)
    keep[1:] = keys[1:] != keys[:-1]
    return keys[keep]


def _chunk(rng: np.random.Generator, cat: _Catalogue, want: np.ndarray, num_items: int,
           concentration: float, popularity_weight: float,
           min_interactions: int) -> np.ndarray:
    """Returns sorted unique keys ``local_user * num_items + item`` of one chunk."""
    b, c = len(want), len(cat.mass) - 1
    theta = rng.dirichlet(np.full(c, concentration), size=b)
    weights = np.concatenate([(1 - popularity_weight) * theta,
                              np.full((b, 1), popularity_weight)], axis=1)
    weights /= weights.sum(axis=1, keepdims=True)
    uloc = np.repeat(np.arange(b), want)
    keys = _unique_sorted(uloc * num_items + _draw(rng, cat, _components(rng, weights, want)))
    for attempt in range(64):  # top up users that drew duplicates
        have = np.bincount(keys // num_items, minlength=b)
        floor = want if attempt < 2 else np.minimum(want, min_interactions)
        short = np.flatnonzero(have < floor)
        if short.size == 0:
            return keys
        need = want[short] - have[short]
        n_extra = 2 * need + 4
        extra_u = np.repeat(short, n_extra)
        if attempt < 3:
            extra_i = _draw(rng, cat, _components(rng, weights[short], n_extra))
        else:  # uniform draws always terminate
            extra_i = rng.integers(0, num_items, len(extra_u))
        cand = _unique_sorted(extra_u * num_items + extra_i)
        pos = np.minimum(np.searchsorted(keys, cand), len(keys) - 1)
        cand = cand[keys[pos] != cand]
        # keep a random subset of at most ``need`` new items per short user
        cu = cand // num_items
        order = np.lexsort((rng.random(len(cand)), cu))
        cand, cu = cand[order], cu[order]
        rank = np.arange(len(cand)) - np.searchsorted(cu, cu)
        room = np.zeros(b, np.int64)
        room[short] = need
        keys = np.sort(np.concatenate([keys, cand[rank < room[cu]]]))
    raise RuntimeError("synthetic: top-up did not converge")  # unreachable in practice


def _concat_free(parts: list[np.ndarray]) -> np.ndarray:
    """Concatenates and empties ``parts`` (keeps peak memory near one copy)."""
    out = np.concatenate(parts)
    parts.clear()
    return out


def generate_synthetic(num_users: int = 2000, num_items: int = 1000,
                       mean_interactions: float = 30.0, seed: int = 0, *,
                       num_factors: int | None = None, concentration: float = 0.1,
                       popularity_weight: float = 0.1, popularity_exponent: float = 0.7,
                       activity_exponent: float = 2.0, min_interactions: int = 5,
                       chunk_users: int = 100_000) -> Interactions:
    """Generates a seeded synthetic implicit-feedback dataset (see module doc).

    Args:
      num_users: number of users (all kept; each has >= min_interactions items).
      num_items: catalogue size requested (never-drawn items are dropped).
      mean_interactions: target mean number of distinct items per user.
      seed: seed of ``np.random.default_rng``; same seed, same data.
      num_factors: number of latent clusters; default ``clip(num_items // 100, 2, 16)``.
      concentration: Dirichlet parameter of user cluster mixtures (small = focused).
      popularity_weight: share of draws from global popularity.
      popularity_exponent: Zipf exponent of item popularity.
      activity_exponent: Lomax tail exponent of user activity (> 1).
      min_interactions: minimum distinct items per user.
      chunk_users: users per chunk (bounds memory).

    Returns:
      Interactions with rating 1.0, rows sorted by (user, item).
    """
    if num_users < 1 or num_items < 2 * min_interactions:
        raise DataError(f"synthetic: need num_users >= 1 and num_items >= {2 * min_interactions}, "
                        f"got num_users={num_users}, num_items={num_items}")
    if mean_interactions < min_interactions or activity_exponent <= 1:
        raise DataError(f"synthetic: need mean_interactions >= {min_interactions} and "
                        f"activity_exponent > 1, got {mean_interactions}, {activity_exponent}")
    c = int(num_factors or np.clip(num_items // 100, 2, 16))
    rng = np.random.default_rng(seed)
    cat = _catalogue(rng, num_items, c, popularity_exponent)
    scale = (mean_interactions - min_interactions + 0.5) * (activity_exponent - 1)
    extra = np.floor(rng.pareto(activity_exponent, num_users) * scale)
    cap = max(min_interactions, num_items // 5)
    want = np.minimum(min_interactions + extra, cap).astype(np.int64)
    start = rng.integers(0, _SPAN - 86_400, num_users)
    length = rng.integers(86_400, _SPAN - start + 1)
    users, items, stamps = [], [], []
    for lo in range(0, num_users, chunk_users):
        keys = _chunk(rng, cat, want[lo:lo + chunk_users], num_items, concentration,
                      popularity_weight, min_interactions)
        user = (keys // num_items + lo).astype(np.int32)
        users.append(user)
        items.append((keys % num_items).astype(np.int32))
        stamps.append(_T0 + start[user] + (rng.random(len(user)) * length[user]).astype(np.int64))
    del keys
    user, item, ts = _concat_free(users), _concat_free(items), _concat_free(stamps)
    present = np.bincount(item, minlength=num_items) > 0
    item_ids = np.flatnonzero(present)
    if len(item_ids) < num_items:
        item = (np.cumsum(present) - 1).astype(np.int32)[item]
    table = pd.DataFrame({"user": user, "item": item, "timestamp": ts,
                          "rating": np.ones(len(user), np.float32)}, copy=False)
    return Interactions(name="synthetic", table=table, user_ids=np.arange(num_users),
                        item_ids=item_ids, duplicates_removed=0)
