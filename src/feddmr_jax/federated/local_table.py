"""A client's local item table (sparse mode): the rows it uses this round.

In sparse mode a client never sees the ``[I, d]`` item tables: the chunk step
(federated/parallel.py) gathers the rows of the distinct items of its examples
and memory into a local table, re-indexes its data into it (:func:`localize`,
:func:`local_view`), trains on that table and uploads the rows' deltas. Dense
mode (the full catalogue as the "local" table) goes through the same
:class:`LocalRows` so the client function does not care which mode runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from feddmr_jax.federated.sorting import unique_rows

if TYPE_CHECKING:
    from feddmr_jax.federated.parallel import ChunkData

Array = jax.Array


def local_rows(num_examples: int, history_len: int, num_items: int) -> int:
    """Local table size L for a shape class: every distinct id fits, plus a pad slot."""
    return min(num_items, num_examples + history_len) + 1


def localize(items: Array, mask: Array, history: Array, history_mask: Array,
             num_items: int, num_rows: int):
    """Maps one client's global item ids to rows of its local table.

    Returns:
      ``(rows [L], row_mask [L], local_items [N], local_history [n])``: global
      id of each local row (padding rows point at row 0, masked), and the
      examples and memory re-indexed into the local table.
    """
    ids = jnp.concatenate([jnp.where(mask, items, num_items),
                           jnp.where(history_mask, history, num_items)])
    uniq, inverse = unique_rows(ids, num_rows, num_items)    # jnp.unique, faster (sorting.py)
    row_mask = uniq < num_items
    n = items.shape[0]
    return jnp.where(row_mask, uniq, 0), row_mask, inverse[:n], inverse[n:]


class LocalRows(NamedTuple):
    """One client's local table and its data re-indexed into it (unbatched).

    Attributes:
      rows: ``[L]`` global item id of each local row (``arange(I)`` in dense mode).
      row_mask: ``[L]`` rows the client trains on this round (examples and
        memory): the rows it uploads and writes back to private tables.
      items: ``[N]`` examples as local rows.
      history: ``[n]`` memory as local rows.
      eval_items: ``[M]`` evaluation candidates as local rows, or None; with
        ``eval_rows``, rows of the *scoring* table ``[local table ; eval_rows]``.
      eval_rows: ``[M]`` global ids of the candidates, appended after the local
        table for scoring only (sparse mode without ``row_decay``), or None
        (candidates, if any, are rows of the local table itself).
    """

    rows: Array
    row_mask: Array
    items: Array
    history: Array
    eval_items: Array | None
    eval_rows: Array | None = None

    def table_rows(self) -> Array:
        """Global ids of the rows read from the tables: the local table, then
        the appended candidates (``eval_rows``) when there are any."""
        if self.eval_rows is None:
            return self.rows
        return jnp.concatenate([self.rows, self.eval_rows], -1)


def local_view(row: ChunkData, *, sparse: bool, num_items: int,
               row_decay: bool = False) -> LocalRows:
    """The local table of one client (sparse: the rows it uses; dense: all items).

    In sparse mode the table holds the distinct ids of the client's examples
    and memory. Evaluation candidates (when given) stay out of it: a row no
    example reaches does not change in local training, so a candidate's
    trained row is its local row if it has one and the global row it received
    otherwise, and the client scores ``[local table ; global candidate rows]``
    (``eval_rows``). Training then never carries the ``M`` candidate rows
    through its steps (PFedRec's item step updates its whole local table:
    ~200 candidate rows against ~100 example rows for most ml-100k clients).
    With ``row_decay`` untouched rows do change, so the candidates join the
    local table instead (present, not in ``row_mask``). The table's last row
    is always padding (the probe row of ``row_decay``, see
    ``make_local_client_fn`` in federated/parallel.py). In dense mode with
    ``row_decay`` every row changes, so every row is used.
    """
    if not sparse:
        # Full tables; the rows the client used are those it can change.
        row_mask = (jnp.zeros(num_items, bool)
                    .at[row.items].max(row.mask)
                    .at[row.history].max(row.history_mask))
        if row_decay:
            row_mask = jnp.ones(num_items, bool)
        return LocalRows(jnp.arange(num_items), row_mask, row.items, row.history,
                         row.eval_items)
    n, h = row.items.shape[0], row.history.shape[0]
    if row.eval_items is None or not row_decay:
        rows, row_mask, items, history = localize(
            row.items, row.mask, row.history, row.history_mask, num_items,
            local_rows(n, h, num_items))
        if row.eval_items is None:
            return LocalRows(rows, row_mask, items, history, None)
        table = rows.shape[0]
        ids = jnp.where(row_mask, rows, num_items)     # ascending, padding (num_items) last
        pos = jnp.minimum(jnp.searchsorted(ids, row.eval_items), table - 1)
        found = ids[pos] == row.eval_items
        m = row.eval_items.shape[0]
        return LocalRows(rows, row_mask, items, history,
                         jnp.where(found, pos, table + jnp.arange(m)), row.eval_items)
    m = row.eval_items.shape[0]
    num_rows = local_rows(n + m, h, num_items)
    rows, present, ext, history = localize(
        jnp.concatenate([row.items, row.eval_items]),
        jnp.concatenate([row.mask, jnp.ones(m, bool)]),
        row.history, row.history_mask, num_items, num_rows)
    items = ext[:n]
    used = (jnp.zeros(num_rows, bool).at[items].max(row.mask)
            .at[history].max(row.history_mask))
    return LocalRows(rows, present & used, items, history, ext[n:])
