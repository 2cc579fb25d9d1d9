"""Host-side planning of a round: examples, shape classes and chunks.

Every client is assigned once, from its number of training positives, to a
**shape class**: the padded example count ``N`` of its row (positives + fresh
negatives), a power of two from 32 up to the batch size, then a power-of-two multiple of
the batch size. Clients of one class are cut into chunks of a class-specific
number of clients so that a chunk holds at most ``chunk_size * batch_size``
example slots (bounded memory), and never more clients than the class has
(little client padding). Shapes therefore depend on the data only, not on the
round: after the first round nothing is compiled again.

A client's row is laid out the same way whatever chunk it lands in (its
positives, then its negatives, then padding), so its result does not depend on
chunking, sharding or the per-client loop.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from feddmr_jax.data.negatives import sample_train_negatives
from feddmr_jax.data.packing import pad_ragged, recent_history
from feddmr_jax.data.types import TrainCSR
from feddmr_jax.federated.parallel import ChunkData


MIN_WIDTH = 32


def _pow2_ceil(x: np.ndarray) -> np.ndarray:
    x = np.maximum(np.asarray(x, np.int64), 1)
    return (1 << np.ceil(np.log2(x)).astype(np.int64)).astype(np.int64)


def example_width(lengths: np.ndarray, num_negatives: int, batch_size: int) -> np.ndarray:
    """Padded example count ``N`` of each client's row (its shape class)."""
    examples = np.asarray(lengths, np.int64) * (1 + num_negatives)
    # Below MIN_WIDTH slots a separate compiled program costs more than the padding.
    small = np.minimum(np.maximum(_pow2_ceil(examples), MIN_WIDTH), batch_size)
    steps = _pow2_ceil(-(-examples // batch_size))
    return np.where(examples <= batch_size, small, steps * batch_size).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class RoundPlanner:
    """Everything fixed across rounds that is needed to build a round's chunks.

    Attributes:
      train: training positives (CSR, chronological).
      exclude: all known positives per user (never sampled as negatives).
      history, history_mask: ``[U, n]`` memory of every client.
      width: ``[U]`` shape class (padded example count) of every client.
      clients_per_chunk: shape class -> clients per chunk.
      num_negatives: negatives per positive.
      seed: base seed of the per-round negative sampling.
      eval_items: ``[U, M]`` evaluation candidates of every client, copied into
        its chunk rows (methods evaluated with local item tables), or None.
    """

    train: TrainCSR
    exclude: TrainCSR
    history: np.ndarray
    history_mask: np.ndarray
    width: np.ndarray
    clients_per_chunk: dict[int, int]
    num_negatives: int
    seed: int
    eval_items: np.ndarray | None = None

    @property
    def num_clients(self) -> int:
        return self.train.num_users

    def chunk_shapes(self) -> list[tuple[int, int]]:
        """``(clients, examples)`` of every chunk shape a round can produce."""
        return sorted((c, w) for w, c in self.clients_per_chunk.items())


def build_planner(train: TrainCSR, exclude: TrainCSR, *, history_len: int,
                  num_negatives: int, batch_size: int, chunk_size: int,
                  seed: int, devices: int = 1,
                  eval_items: np.ndarray | None = None) -> RoundPlanner:
    """Assigns shape classes and chunk sizes; precomputes every client's memory.

    ``devices``: chunks hold a multiple of this many clients, so that their
    client axis splits evenly over the device mesh (federated/devices.py).
    """
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    width = example_width(train.lengths, num_negatives, batch_size)
    budget = chunk_size * batch_size
    classes, counts = np.unique(width, return_counts=True)
    per_chunk = {}
    for w, n in zip(classes, counts):
        per = int(min(chunk_size, max(1, budget // w), _pow2_ceil(n)))
        per_chunk[int(w)] = -(-per // devices) * devices
    history, history_mask = recent_history(train, history_len)
    return RoundPlanner(train, exclude, history, history_mask, width, per_chunk,
                        num_negatives, seed,
                        None if eval_items is None else np.asarray(eval_items, np.int32))


def _examples(planner: RoundPlanner, clients: np.ndarray, round_index: int):
    """Flat examples of ``clients`` (positives then negatives per client)."""
    rng = np.random.default_rng([planner.seed, round_index])
    neg = sample_train_negatives(planner.train, planner.exclude, rng,
                                 planner.num_negatives, users=clients)
    k = planner.num_negatives
    lengths = planner.train.lengths[clients].astype(np.int64)
    ex_len = lengths * (1 + k)
    ex_indptr = np.concatenate([[0], np.cumsum(ex_len)])
    values = np.empty(ex_indptr[-1], np.int32)
    total_pos = int(lengths.sum())
    pos_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    within = np.arange(total_pos) - np.repeat(pos_start, lengths)
    starts = ex_indptr[:-1]
    pos_items = planner.train.items[np.repeat(planner.train.indptr[clients], lengths) + within]
    values[np.repeat(starts, lengths) + within] = pos_items
    neg_flat = neg.reshape(-1)
    neg_within = np.arange(total_pos * k) - np.repeat(pos_start * k, lengths * k)
    values[np.repeat(starts + lengths, lengths * k) + neg_within] = neg_flat
    return ex_indptr, values, lengths


def plan_round(planner: RoundPlanner, participants: np.ndarray, round_index: int, *,
               update_scale: np.ndarray | None = None,
               update_nan: np.ndarray | None = None) -> list[ChunkData]:
    """The chunks of one round as a list (see :func:`iter_round`)."""
    return list(iter_round(planner, participants, round_index,
                           update_scale=update_scale, update_nan=update_nan))


def iter_round(planner: RoundPlanner, participants: np.ndarray, round_index: int, *,
               update_scale: np.ndarray | None = None,
               update_nan: np.ndarray | None = None) -> Iterator[ChunkData]:
    """The chunks of one round (numpy arrays), grouped by shape class, packed lazily.

    The round's examples (positives and freshly drawn negatives) are drawn for
    every participant up front, so the draws do not depend on how the chunks
    are consumed; each chunk's padded arrays are built only when it is
    reached. The training loop therefore never holds more than one packed
    chunk (host memory stays bounded by the chunk size, not the number of
    participants), and packing the next chunk on the host overlaps with the
    device training the previous one (JAX dispatches asynchronously).

    Args:
      planner: from :func:`build_planner`.
      participants: sorted ids of the clients that train this round.
      round_index: seeds this round's negatives.
      update_scale, update_nan: ``[P]`` fault injection per participant
        (see federated/faults.py); default: honest clients.
    """
    participants = np.asarray(participants, np.int32)
    if update_scale is None:
        update_scale = np.ones(len(participants), np.float32)
    if update_nan is None:
        update_nan = np.zeros(len(participants), bool)
    ex_indptr, values, lengths = _examples(planner, participants, round_index)
    widths = planner.width[participants]
    for w in sorted(set(widths.tolist())):
        pos = np.flatnonzero(widths == w)
        per = planner.clients_per_chunk[w]
        for start in range(0, len(pos), per):
            sel = pos[start:start + per]
            pad = per - len(sel)
            sel_padded = np.concatenate([sel, np.repeat(sel[:1], pad)])
            items, mask = pad_ragged(ex_indptr, values, sel_padded, width=w)
            mask[len(sel):] = False
            labels = (np.arange(w)[None, :] < lengths[sel_padded][:, None]) & mask
            ids = participants[sel_padded]
            yield ChunkData(
                client_ids=ids.astype(np.int32),
                client_mask=np.arange(per) < len(sel),
                items=items.astype(np.int32), labels=labels.astype(np.float32),
                mask=mask, history=planner.history[ids],
                history_mask=planner.history_mask[ids] & (np.arange(per) < len(sel))[:, None],
                update_scale=update_scale[sel_padded].astype(np.float32),
                update_nan=update_nan[sel_padded] & (np.arange(per) < len(sel)),
                slot=np.where(np.arange(per) < len(sel), sel_padded,
                              len(participants)).astype(np.int32),
                eval_items=None if planner.eval_items is None else planner.eval_items[ids],
                round_index=np.full(per, round_index, np.int32))
