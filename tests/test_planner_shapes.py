"""Shape classes: optimal for their number, never more than the power-of-two rule,
the reported slot fill equals the packed chunks, and a client's result does not
depend on how far its row is padded."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from feddmr_jax.data import load_dataset, split_interactions, train_csr, train_exclusions
from feddmr_jax.config import RunConfig
from feddmr_jax.errors import ConfigError
from feddmr_jax.federated.rounds import build_planner, plan_round
from feddmr_jax.federated.shape_classes import (PROGRAM_SLOTS, auto_class_count, example_width,
                                                shape_classes, step_slots)
from feddmr_jax.train import build_experiment, run_round

from engine_helpers import adam_reach, tiny_config
from float_compare import (ADAM_ULPS, assert_trees_close, assert_trees_equal, bound,
                           max_abs)


def _cost(width: np.ndarray, batch: int) -> int:
    return int(step_slots(width, batch).sum())


def _brute_force(examples: np.ndarray, batch: int, k: int) -> int:
    """Fewest step slots over every cut of the sorted candidate bounds into <= k runs."""
    cand = np.unique(np.where(examples <= batch, -(-examples // 8) * 8,
                              -(-examples // batch) * batch))
    best = None
    for runs in range(1, k + 1):
        for cuts in itertools.combinations(range(len(cand) - 1), runs - 1):
            tops = cand[list(cuts) + [len(cand) - 1]]
            width = tops[np.searchsorted(tops, np.where(
                examples <= batch, -(-examples // 8) * 8, -(-examples // batch) * batch))]
            cost = _cost(width, batch)
            best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classes_are_optimal_for_their_number(seed):
    rng = np.random.default_rng(seed)
    examples = rng.integers(1, 90, 40) * 5
    for k in (1, 2, 3):
        width = shape_classes(examples, 64, k)
        assert len(np.unique(width)) <= k
        assert np.all(width >= examples) and np.all(width % 8 == 0)
        assert _cost(width, 64) == _brute_force(examples, 64, k), k


def test_default_never_more_classes_than_the_power_of_two_rule():
    rng = np.random.default_rng(3)
    for batch in (16, 64, 256):
        lengths = np.maximum(1, (rng.pareto(1.2, 500) * 10).astype(int))
        old = example_width(lengths, 4, batch)
        new = shape_classes(lengths * 5, batch)
        assert len(np.unique(new)) <= len(np.unique(old))
        assert _cost(new, batch) <= _cost(old, batch)


@pytest.fixture(scope="module")
def ml100k(shared_data_dir):
    split = split_interactions(load_dataset("ml-100k", shared_data_dir), "loo")
    return train_csr(split), train_exclusions(split, "strict")


def _old_fill(train, batch, k, chunk):
    """The power-of-two planner's chunk shapes and step fill (its rule, recomputed here)."""
    width = example_width(train.lengths, k, batch)
    shapes, slots = [], 0
    for w, n in zip(*np.unique(width, return_counts=True)):
        per = int(min(chunk, max(1, chunk * batch // w), 1 << int(np.ceil(np.log2(n)))))
        shapes.append((per, int(w)))
        slots += -(-n // per) * per * int(step_slots(w, batch))
    return shapes, train.lengths.sum() * (1 + k) / slots


@pytest.mark.parametrize("batch, chunk", [(256, 64), (256, 16)])
def test_ml100k_less_padding_with_no_more_programs(ml100k, batch, chunk):
    train, exclude = ml100k
    planner = build_planner(train, exclude, history_len=50, num_negatives=4, batch_size=batch,
                            chunk_size=chunk, seed=0)
    old_shapes, old_fill = _old_fill(train, batch, 4, chunk)
    fill = planner.slot_fill()
    assert len(planner.chunk_shapes()) <= len(old_shapes)
    assert fill.step_fill > old_fill + 0.02
    assert fill.row_fill >= fill.step_fill
    # More classes (a config choice) pad less still, up to the minibatch bound.
    more = build_planner(train, exclude, history_len=50, num_negatives=4, batch_size=batch,
                         chunk_size=chunk, seed=0, max_classes=16).slot_fill()
    assert more.step_fill > fill.step_fill + 0.08


def test_slot_fill_counts_the_packed_chunks():
    exp = build_experiment(tiny_config(client_fraction=0.6))
    participants = np.arange(0, exp.split.num_users, 2)
    chunks = plan_round(exp.planner, participants, 3)
    fill = exp.planner.slot_fill(participants)
    assert fill.real == sum(int(c.mask.sum()) for c in chunks)
    assert fill.row_slots == sum(c.items.size for c in chunks)
    assert fill.step_slots == sum(len(c.client_ids) * int(step_slots(c.items.shape[1], 16))
                                  for c in chunks)
    assert {(len(c.client_ids), c.items.shape[1]) for c in chunks} <= set(
        exp.planner.chunk_shapes())


def _repad(row, width):
    """One client's row (unbatched ChunkData) padded to ``width`` example slots."""
    pad = width - row.items.shape[0]
    grow = lambda x: np.concatenate([np.asarray(x), np.zeros(pad, np.asarray(x).dtype)])
    return row._replace(items=grow(row.items), labels=grow(row.labels), mask=grow(row.mask))


def test_same_client_padded_to_two_widths_trains_identically():
    """Real examples are shuffled first and padded steps are skipped, so the
    width of a client's row (its shape class) changes nothing it computes.

    Bit for bit with XLA's fusion emitters, as training compiles: the suite's loop-fusion
    emitters at LLVM level 0 (tests/conftest.py) round a padded width's sums differently in
    the last bit (20 of 296 elements, 6e-8)."""
    exp = build_experiment(tiny_config(local_epochs=2, sparse=False))
    state = exp.algorithm.init(exp.keys["init"])
    client_fn = jax.jit(exp.algorithm.parts.client_fn,
                        compiler_options={"xla_cpu_use_fusion_emitters": True})
    chunks = plan_round(exp.planner, np.arange(exp.split.num_users), 1)
    rows = [jax.tree.map(lambda x, i=i: np.asarray(x)[i], c)
            for c in chunks for i in np.flatnonzero(c.client_mask)]
    one_step = next(r for r in rows if r.mask.sum() <= 16)       # batch size 16
    many_steps = next(r for r in rows if r.mask.sum() > 16)
    key = jax.random.key(5)
    for row in (one_step, many_steps):
        private = jax.tree.map(lambda s: s[row.client_ids], state.private_store)
        base = client_fn(state.shared, private, row, key)
        # it trained: far beyond the bound below (one Adam step moves an element by ~lr)
        assert max_abs(base.delta) > 100 * bound(ulps=ADAM_ULPS, scale=adam_reach(exp))
        n = int(row.mask.sum())
        # 40 more slots (empty steps at the end): the same steps, bit for bit.
        wide = client_fn(state.shared, private, _repad(row, row.items.shape[0] + 40), key)
        assert_trees_equal((wide.delta, wide.private, wide.loss),
                           (base.delta, base.private, base.loss), what="40 more slots")
        # No padding at all: a one-step client then runs one step of width n
        # instead of 16 (the same examples; sums over another width round
        # differently in the last bits, which Adam turns into lr x that relative
        # difference per step: float_compare.ADAM_ULPS over 2 epochs).
        trim = client_fn(state.shared, private, _trim(row, n), key)
        reach = adam_reach(exp, rounds=1)
        assert_trees_close(trim.delta, base.delta, ulps=ADAM_ULPS, scale=reach, what="delta")
        assert_trees_close(trim.private, base.private, ulps=ADAM_ULPS, scale=reach,
                           what="private")
        # The loss: batch means of forward passes (~100 roundings per logit, 2**8 ulps).
        assert_trees_close(trim.loss, base.loss, ulps=2**8, what="loss")


def _trim(row, width):
    return row._replace(items=row.items[:width], labels=row.labels[:width],
                        mask=row.mask[:width])


def test_auto_class_count_trades_programs_against_padding():
    rng = np.random.default_rng(4)
    examples = np.maximum(1, (rng.pareto(1.2, 900) * 10).astype(int)) * 5
    cap = len(np.unique(example_width(examples, 0, 256)))
    counts = [auto_class_count(examples, 256, slot_rounds=r) for r in (0.0, 1, 10, 100, 1e6)]
    assert counts[0] == 1                      # nothing to train: one program
    assert counts[-1] == cap                   # endless training: every class the rule allows
    assert counts == sorted(counts)            # longer runs never get fewer programs
    # the chosen count is the argmin of the stated cost, checked by brute force
    for r in (1, 10, 100):
        k = auto_class_count(examples, 256, slot_rounds=r)
        cost = lambda j: j * PROGRAM_SLOTS + r * _cost(shape_classes(examples, 256, j), 256)
        assert cost(k) <= min(cost(j) for j in range(1, cap + 1)) * (1 + 1e-3)


def test_the_main_job_compiles_fewer_programs_and_ml100k_keeps_its_classes(ml100k):
    main_job = build_experiment(RunConfig())                   # every default: synthetic
    assert len(main_job.planner.chunk_shapes()) <= 2
    train, exclude = ml100k
    planner = lambda **kw: build_planner(train, exclude, history_len=0, num_negatives=4,  # noqa: E731
                                         batch_size=256, chunk_size=64, seed=0, **kw)
    assert len(planner(slot_rounds=100).chunk_shapes()) == len(planner().chunk_shapes()) == 6
    assert len(planner(slot_rounds=100, max_classes=3).chunk_shapes()) == 3


def test_shape_classes_config(tmp_path):
    exp = build_experiment(tiny_config(shape_classes=1))
    assert len(exp.planner.chunk_shapes()) == 1
    with pytest.raises(ConfigError, match="train.shape_classes"):
        tiny_config(shape_classes=0).validate()


def test_a_round_is_the_same_whatever_the_class_count():
    """The class count changes only the padding (a client's shuffle does not depend on
    its row width), so one round gives the same state up to float rounding."""
    states = []
    for k in (1, 2):
        exp = build_experiment(tiny_config(shape_classes=k, local_epochs=2))
        assert len(exp.planner.chunk_shapes()) == k
        state = exp.algorithm.init(exp.keys["init"])
        state, _ = run_round(exp, state, 1)
        states.append(jax.tree.map(np.asarray, (state.shared, state.private_store)))
    # Another padding rounds a batch's sums differently; one round of Adam (2 epochs).
    assert_trees_close(states[0], states[1], ulps=ADAM_ULPS, scale=adam_reach(exp, rounds=1),
                       what="state")
