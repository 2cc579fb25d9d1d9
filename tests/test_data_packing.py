"""Padding ragged rows, recent history and client bucketing on hand-checked cases."""

from __future__ import annotations

import numpy as np
import pytest

from feddmr_jax.data import bucket_clients, pad_ragged, recent_history
from feddmr_jax.data.types import TrainCSR

INDPTR = np.array([0, 3, 3, 8, 9])
VALUES = np.array([1, 2, 3, 10, 11, 12, 13, 14, 7])


def test_pad_ragged_default_width():
    padded, mask = pad_ragged(INDPTR, VALUES, np.array([0, 1, 2, 3]))
    assert padded.tolist() == [[1, 2, 3, 0, 0], [0] * 5, [10, 11, 12, 13, 14], [7, 0, 0, 0, 0]]
    assert mask.sum(axis=1).tolist() == [3, 0, 5, 1]
    assert mask[0].tolist() == [True, True, True, False, False]


def test_pad_ragged_truncates_to_last_entries_and_pad_value():
    padded, mask = pad_ragged(INDPTR, VALUES, np.array([2, 0, 2]), width=2, pad_value=-1)
    assert padded.tolist() == [[13, 14], [2, 3], [13, 14]] and mask.all()
    padded, mask = pad_ragged(INDPTR, VALUES, np.array([3, 1]), width=3, pad_value=-1)
    assert padded.tolist() == [[7, -1, -1], [-1, -1, -1]]
    assert padded.dtype == VALUES.dtype


def test_pad_ragged_empty_selection():
    padded, mask = pad_ragged(INDPTR, VALUES, np.array([], dtype=np.int64))
    assert padded.shape == mask.shape == (0, 0)


def test_recent_history():
    csr = TrainCSR(indptr=INDPTR, items=VALUES.astype(np.int32), num_items=20)
    items, mask = recent_history(csr, 3)
    assert items.dtype == np.int32 and items.shape == (4, 3)
    assert items.tolist() == [[1, 2, 3], [0, 0, 0], [12, 13, 14], [7, 0, 0]]
    assert mask.tolist()[3] == [True, False, False]
    items, mask = recent_history(csr, 0, rows=np.array([2]))
    assert items.shape == mask.shape == (1, 0)


def test_bucket_clients_sorted_stable_chunks():
    lengths = np.array([3, 9, 3, 1, 9, 5, 3])
    chunks = bucket_clients(lengths, 3)
    assert [c.tolist() for c in chunks] == [[1, 4, 5], [0, 2, 6], [3]]
    flat = np.concatenate(chunks)
    assert sorted(flat.tolist()) == list(range(7))
    assert np.all(np.diff(lengths[flat]) <= 0)
    with pytest.raises(ValueError):
        bucket_clients(lengths, 0)
