"""Shape classes: the padded row width of every client, chosen on the host once per run.

A client runs ``ceil(N / B)`` minibatch steps of width ``min(B, N)`` for a row of
``N`` example slots (federated/client.py), so what a class costs is its *step
slots*: ``N`` below the batch size ``B``, ``ceil(N / B) * B`` above.
:func:`shape_classes` picks the class bounds that minimize the step slots of
all clients for a given number of classes (an exact dynamic programme over the
candidate bounds: multiples of ``WIDTH_ALIGN`` up to ``B``, multiples of ``B``
above), by default no more classes than the power-of-two rule of
:func:`example_width` would give, and cuts each class's row width down to its
largest client (rounded up to ``WIDTH_ALIGN``). :func:`auto_class_count`
chooses how many classes a run compiles (compile time against padding).
Each class is one compiled chunk program; the chunks are cut in rounds.py.
"""

from __future__ import annotations

import numpy as np

MIN_WIDTH = 32      # smallest class of the power-of-two rule (example_width)
WIDTH_ALIGN = 8     # class widths below the batch size are multiples of this
# What compiling one more chunk program costs, in example step slots trained: FedDMR's
# default on the project's 2-core CPU compiles a chunk program in about 10 s (62.6 s for 6
# programs) and trains a step slot in about 16 us (11.35 s for 701,120 slots per ml-100k
# round; benchmarks/HISTORY.md, session 4), i.e. about 6e5 slots. The lighter models compile
# faster but train a slot far faster still, so for them this undercounts a program's cost:
# auto_class_count then keeps more classes than their optimum, never fewer.
PROGRAM_SLOTS = 500_000
# How many rounds a plan is costed for (auto_class_count's ``slot_rounds`` is this times
# local epochs times the fraction of clients per round). A constant, not ``train.rounds``:
# the chunking sets the order in which the server sums client updates, so a plan that
# followed the run's length would make round r's result depend on how many rounds the run
# will have, and a run extended with --resume would differ from one of N rounds from the
# start (and compile new programs). 20 is the default run length: the short synthetic main
# job keeps 2 programs, ml-100k keeps all 6 of the power-of-two rule.
PLAN_ROUNDS = 20


def _pow2_ceil(x: np.ndarray) -> np.ndarray:
    x = np.maximum(np.asarray(x, np.int64), 1)
    return (1 << np.ceil(np.log2(x)).astype(np.int64)).astype(np.int64)


def example_width(lengths: np.ndarray, num_negatives: int, batch_size: int) -> np.ndarray:
    """The power-of-two rule: ``N`` a power of two from ``MIN_WIDTH`` up to the
    batch size, then a power-of-two multiple of it (the class count
    :func:`shape_classes` stays within by default)."""
    examples = np.asarray(lengths, np.int64) * (1 + num_negatives)
    small = np.minimum(np.maximum(_pow2_ceil(examples), MIN_WIDTH), batch_size)
    steps = _pow2_ceil(-(-examples // batch_size))
    return np.where(examples <= batch_size, small, steps * batch_size).astype(np.int64)


def step_slots(width: np.ndarray, batch_size: int) -> np.ndarray:
    """Example slots a client of row width ``N`` computes: ``ceil(N / B) * min(B, N)``."""
    width = np.asarray(width, np.int64)
    step = np.minimum(width, batch_size)
    return -(-width // np.maximum(step, 1)) * step


def _round_up(x: np.ndarray, to: int) -> np.ndarray:
    return -(-np.asarray(x, np.int64) // to) * to


def shape_classes(examples: np.ndarray, batch_size: int,
                  max_classes: int | None = None) -> np.ndarray:
    """Row width ``N`` of each client: at most ``max_classes`` widths, fewest step slots.

    Args:
      examples: ``[U]`` real examples per client (positives + negatives).
      batch_size: the local minibatch size ``B``.
      max_classes: most distinct widths; default the number of classes of
        :func:`example_width` (never more compiled programs than that rule).

    Returns:
      ``[U]`` int64 widths: the largest member of each class rounded up to
      ``WIDTH_ALIGN`` (at least 1); every client fits its width.
    """
    examples = np.maximum(np.asarray(examples, np.int64), 1)
    if examples.size == 0:
        return examples
    if max_classes is None:
        max_classes = _pow2_class_count(examples, batch_size)
    bounds, inverse, counts = _candidates(examples, batch_size)
    groups, _ = _best_groups(bounds, counts, max(1, max_classes))
    group_of = groups[inverse.reshape(-1)]
    top = np.zeros(groups.max() + 1, np.int64)
    np.maximum.at(top, group_of, examples)
    return _round_up(top, WIDTH_ALIGN)[group_of]


def _pow2_class_count(examples: np.ndarray, batch_size: int) -> int:
    """How many classes the power-of-two rule (:func:`example_width`) gives."""
    return len(np.unique(example_width(examples, 0, batch_size)))


def _candidates(examples: np.ndarray, batch_size: int):
    """Candidate class bounds in step slots (the cost of a class is its bound per
    member; above 16 steps in coarser quanta: at most 16 candidates per doubling).

    Returns:
      ``(bounds [D] sorted, inverse [U] candidate of each client, counts [D])``.
    """
    steps = -(-examples // batch_size)
    quantum = batch_size * np.maximum(_pow2_ceil(steps) // 16, 1)
    cost = np.where(examples <= batch_size, _round_up(examples, WIDTH_ALIGN),
                    -(-examples // quantum) * quantum)
    return np.unique(cost, return_inverse=True, return_counts=True)


def auto_class_count(examples: np.ndarray, batch_size: int, *, slot_rounds: float,
                     program_slots: float = PROGRAM_SLOTS,
                     max_classes: int | None = None) -> int:
    """How many shape classes a run should compile: compile time against padding.

    Minimizes ``k * program_slots + slot_rounds * slots(k)`` over ``k = 1 ..
    max_classes``, where ``slots(k)`` is the fewest step slots of all clients with
    ``k`` classes (:func:`shape_classes`) and ``slot_rounds`` how many times a
    client's slots are trained in the run (rounds x local epochs x the fraction
    of clients per round). A short run on little data (the synthetic main job)
    compiles one or two programs; a long run keeps the default count.

    Args:
      examples: ``[U]`` real examples per client.
      batch_size: the local minibatch size.
      slot_rounds: see above.
      program_slots: cost of compiling one chunk program, in step slots trained
        (:data:`PROGRAM_SLOTS`).
      max_classes: the largest count considered; default that of :func:`example_width`.
    """
    examples = np.maximum(np.asarray(examples, np.int64), 1)
    if examples.size == 0:
        return 1
    if max_classes is None:
        max_classes = _pow2_class_count(examples, batch_size)
    bounds, _, counts = _candidates(examples, batch_size)
    _, slots = _best_groups(bounds, counts, max(1, max_classes))
    total = np.arange(1, len(slots) + 1) * program_slots + slot_rounds * slots
    return int(np.argmin(total)) + 1


def _best_groups(bounds: np.ndarray, counts: np.ndarray, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Cuts sorted candidate bounds into at most ``k`` runs of consecutive candidates,
    minimizing ``sum(count * bound of the run's last candidate)``.

    Returns:
      ``([D] the run (0, 1, ...) of each candidate, fewest runs among equal costs;
      [min(k, D)] the least cost with exactly 1, 2, ... runs)``.
    """
    d = len(bounds)
    k = min(k, d)
    cum = np.concatenate([[0], np.cumsum(counts)]).astype(np.float64)
    i, j = np.meshgrid(np.arange(d), np.arange(d), indexing="ij")
    seg = np.where(i <= j, (cum[j + 1] - cum[i]) * bounds[j], np.inf)  # run i..j
    cost = [seg[0]]                    # cost[g][j]: candidates 0..j in exactly g + 1 runs
    start = [np.zeros(d, np.int64)]    # start[g][j]: first candidate of the last run
    for _ in range(1, k):
        total = np.concatenate([[np.inf], cost[-1][:-1]])[:, None] + seg
        start.append(np.argmin(total, axis=0))
        cost.append(total[start[-1], np.arange(d)])
    totals = np.array([c[-1] for c in cost])
    g = int(np.argmin(totals))
    runs, end = np.empty(d, np.int64), d - 1
    while end >= 0:
        first = int(start[g][end])
        runs[first:end + 1] = g
        end, g = first - 1, g - 1
    return runs, totals
