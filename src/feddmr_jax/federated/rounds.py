"""Host-side planning of a round: examples, shape classes and chunks.

Every client is assigned once, from its number of training examples
(positives + fresh negatives), to a **shape class**: the padded example count
``N`` of its row, chosen once per run in federated/shape_classes.py (fewest
step slots for the number of compiled programs). A client's result does not
depend on its width: its per-epoch shuffle puts real examples first, padded
steps are skipped exactly.

Clients of one class are cut into chunks of a class-specific number of
clients so that a chunk holds at most ``chunk_size * max(batch_size, 256)`` example
slots (bounded memory), and as evenly as possible (little client padding).
Shapes depend on the data only, not on the round: after the first round
nothing is compiled again.

Chunks are packed lazily (:func:`iter_round`): each one draws its own
clients' training negatives (a counter-based draw,
:func:`~feddmr_jax.data.train_negatives.draw_train_negatives`) and gathers their
memories from the CSR, so host memory is bounded by the chunk, not by the
number of participants. A client's row is laid out the same way whatever chunk
it lands in (its positives, then its negatives, then padding), so its result
does not depend on chunking, sharding or the per-client loop.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterator, NamedTuple

import numpy as np

from feddmr_jax.data.train_negatives import draw_train_negatives
from feddmr_jax.data.packing import pad_ragged, recent_history
from feddmr_jax.data.types import TrainCSR
from feddmr_jax.federated.parallel import ChunkData
from feddmr_jax.federated.shape_classes import auto_class_count, shape_classes, step_slots

BUDGET_BATCH = 256  # chunk_sizes: the slot budget is chunk_size x max(batch, this)


class SlotFill(NamedTuple):
    """Example slots of a round's chunks (padding clients included).

    Attributes:
      real: real examples.
      row_slots: slots of the chunks' example rows (``clients x N``).
      step_slots: slots the minibatch steps compute (``clients x ceil(N/B) x min(B, N)``).
    """

    real: int
    row_slots: int
    step_slots: int

    @property
    def row_fill(self) -> float:
        return self.real / max(self.row_slots, 1)

    @property
    def step_fill(self) -> float:
        return self.real / max(self.step_slots, 1)


@dataclasses.dataclass(frozen=True)
class RoundPlanner:
    """Everything fixed across rounds that is needed to build a round's chunks.

    Attributes:
      train: training positives (CSR, chronological).
      exclude: all known positives per user (never sampled as negatives).
      history_len: memory length ``n`` (:meth:`memory` builds it per block).
      width: ``[U]`` shape class (padded example count) of every client.
      clients_per_chunk: shape class -> clients per chunk.
      num_negatives: negatives per positive.
      batch_size: local minibatch size (what a step computes, :meth:`slot_fill`).
      seed: base seed of the per-round negative sampling.
      eval_items: ``[U, M]`` evaluation candidates of every client, copied into
        its chunk rows (methods evaluated with local item tables), or None.
    """

    train: TrainCSR
    exclude: TrainCSR
    history_len: int
    width: np.ndarray
    clients_per_chunk: dict[int, int]
    num_negatives: int
    batch_size: int
    seed: int
    eval_items: np.ndarray | None = None

    @property
    def num_clients(self) -> int:
        return self.train.num_users

    def chunk_shapes(self) -> list[tuple[int, int]]:
        """``(clients, examples)`` of every chunk shape a round can produce."""
        return sorted((c, w) for w, c in self.clients_per_chunk.items())

    def memory(self, clients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(history [R, n] int32, history_mask [R, n])`` of ``clients``, from the CSR."""
        return recent_history(self.train, self.history_len,
                              rows=np.asarray(clients, np.int64))

    @functools.cached_property
    def _all_memory(self) -> tuple[np.ndarray, np.ndarray]:
        return self.memory(np.arange(self.num_clients))

    @property
    def history(self) -> np.ndarray:
        """``[U, n]`` memory of every client (built on first use; training never
        uses it, evaluation can call :meth:`memory` per block instead)."""
        return self._all_memory[0]

    @property
    def history_mask(self) -> np.ndarray:
        """``[U, n]`` mask of :attr:`history`."""
        return self._all_memory[1]

    def slot_fill(self, participants: np.ndarray | None = None) -> SlotFill:
        """Real examples and padded slots of the chunks :func:`iter_round` packs
        for ``participants`` (default: every client), without drawing them."""
        clients = (np.arange(self.num_clients) if participants is None
                   else np.asarray(participants, np.int64))
        widths = self.width[clients]
        real = int(self.train.lengths_of(clients).sum()) * (1 + self.num_negatives)
        rows = steps = 0
        for w, n in zip(*np.unique(widths, return_counts=True)):
            per = self.clients_per_chunk[int(w)]
            padded = -(-int(n) // per) * per
            rows += padded * int(w)
            steps += padded * int(step_slots(w, self.batch_size))
        return SlotFill(real, rows, steps)


def chunk_sizes(width: np.ndarray, *, batch_size: int, chunk_size: int,
                devices: int = 1) -> dict[int, int]:
    """Clients per chunk of each shape class.

    At most ``chunk_size`` clients and ``chunk_size * max(batch_size,
    BUDGET_BATCH)`` example slots per chunk; a class is cut into that many
    chunks of equal size (so a full round pads fewer clients than one per
    chunk), rounded up to a multiple of ``devices``. The slot budget bounds a
    chunk's rows and local item tables (about ``N`` rows per client); a small
    batch does not shrink it below the budget of ``BUDGET_BATCH``, or a
    batch of 64 would train ml-100k's widest clients one per chunk.
    """
    budget = chunk_size * max(batch_size, BUDGET_BATCH)
    out = {}
    for w, n in zip(*np.unique(width, return_counts=True)):
        cap = int(min(chunk_size, max(1, budget // int(w))))
        per = -(-int(n) // -(-int(n) // cap))
        out[int(w)] = -(-per // devices) * devices
    return out


def build_planner(train: TrainCSR, exclude: TrainCSR, *, history_len: int,
                  num_negatives: int, batch_size: int, chunk_size: int,
                  seed: int, devices: int = 1,
                  eval_items: np.ndarray | None = None,
                  max_classes: int | None = None,
                  slot_rounds: float | None = None) -> RoundPlanner:
    """Assigns shape classes (:func:`shape_classes`) and chunk sizes (:func:`chunk_sizes`).

    ``devices``: chunks hold a multiple of this many clients, so that their
    client axis splits evenly over the device mesh (federated/devices.py).
    ``max_classes``: most shape classes (compiled chunk programs); default
    as many as the power-of-two rule (:func:`example_width`) gives, or, with
    ``slot_rounds`` (how often the run trains each client's slots), the count
    :func:`auto_class_count` chooses (at most that many).
    """
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    examples = train.lengths * (1 + num_negatives)
    if max_classes is None and slot_rounds is not None:
        max_classes = auto_class_count(examples, batch_size, slot_rounds=slot_rounds)
    width = shape_classes(examples, batch_size, max_classes)
    per_chunk = chunk_sizes(width, batch_size=batch_size, chunk_size=chunk_size,
                            devices=devices)
    return RoundPlanner(train, exclude, history_len, width, per_chunk, num_negatives,
                        batch_size, seed,
                        None if eval_items is None else np.asarray(eval_items, np.int32))


def _examples(planner: RoundPlanner, clients: np.ndarray, round_index: int):
    """CSR of the examples of ``clients`` (positives then negatives per client)."""
    neg = draw_train_negatives(planner.train, planner.exclude, clients, seed=planner.seed,
                               round_index=round_index, num_negatives=planner.num_negatives)
    k = planner.num_negatives
    lengths = planner.train.lengths_of(clients)   # per chunk: never an O(users) pass
    ex_len = lengths * (1 + k)
    ex_indptr = np.concatenate([[0], np.cumsum(ex_len)])
    values = np.empty(ex_indptr[-1], np.int32)
    total_pos = int(lengths.sum())
    pos_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    within = np.arange(total_pos) - np.repeat(pos_start, lengths)
    starts = ex_indptr[:-1]
    pos_items = planner.train.items[np.repeat(planner.train.indptr[clients], lengths) + within]
    values[np.repeat(starts, lengths) + within] = pos_items
    neg_within = np.arange(total_pos * k) - np.repeat(pos_start * k, lengths * k)
    values[np.repeat(starts + lengths, lengths * k) + neg_within] = neg.reshape(-1)
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

    Each chunk is built only when it is reached: its clients' training
    negatives are drawn then (counter-based, so a client's negatives depend
    only on the seed, the round and its id, not on the chunking), and their
    memories gathered from the CSR. The training loop therefore never holds
    more than one packed chunk (host memory stays bounded by the chunk size,
    not the number of participants), and packing the next chunk on the host
    overlaps with the device training the previous one (JAX dispatches
    asynchronously).

    Args:
      planner: from :func:`build_planner`.
      participants: sorted distinct ids of the clients that train this round.
      round_index: seeds this round's negatives.
      update_scale, update_nan: ``[P]`` fault injection per participant
        (see federated/faults.py); default: honest clients.
    """
    participants = np.asarray(participants, np.int32)
    if update_scale is None:
        update_scale = np.ones(len(participants), np.float32)
    if update_nan is None:
        update_nan = np.zeros(len(participants), bool)
    widths = planner.width[participants]
    by_width = np.argsort(widths, kind="stable")     # per class, participants in id order
    classes, starts = np.unique(widths[by_width], return_index=True)
    for w, pos in zip(classes.tolist(), np.split(by_width, starts[1:])):
        per = planner.clients_per_chunk[w]
        for start in range(0, len(pos), per):
            sel = pos[start:start + per]
            real = np.arange(per) < len(sel)
            sel_padded = np.concatenate([sel, np.repeat(sel[:1], per - len(sel))])
            ex_indptr, values, lengths = _examples(planner, participants[sel].astype(np.int64),
                                                   round_index)
            rows = np.where(real, np.arange(per), 0)      # padding: a copy of the first
            items, mask = pad_ragged(ex_indptr, values, rows, width=w)
            mask &= real[:, None]
            labels = (np.arange(w)[None, :] < lengths[rows][:, None]) & mask
            ids = participants[sel_padded]
            history, history_mask = planner.memory(ids)
            yield ChunkData(
                client_ids=ids.astype(np.int32),
                client_mask=real,
                items=items.astype(np.int32), labels=labels.astype(np.float32),
                mask=mask, history=history,
                history_mask=history_mask & real[:, None],
                update_scale=update_scale[sel_padded].astype(np.float32),
                update_nan=update_nan[sel_padded] & real,
                slot=np.where(real, sel_padded, len(participants)).astype(np.int32),
                eval_items=None if planner.eval_items is None else planner.eval_items[ids],
                round_index=np.full(per, round_index, np.int32))
