"""What every model of the engine exposes, and the private/shared split.

The models themselves are ``flax.linen`` Modules (one file each); ``split.py``
turns a Module into the :class:`Model` the engine uses.

A model's parameters are a :class:`ModelParams`: the **private** leaves never leave
a client (user embeddings, personal heads), the **shared** leaves are uploaded and
aggregated. Both halves are :class:`Leaves`: ``tables`` holds item-indexed tables
(``[num_items, width]``; rows are gathered per client in sparse mode and their
deltas scatter-added by the server) and ``dense`` holds every other array.

This structure *is* the split: the engine uploads ``params.shared`` and nothing
else, so an audit only has to look at one field.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp

Array = jax.Array
PyTree = Any


class Leaves(NamedTuple):
    """Item-indexed tables and other (dense) arrays of one half of a model."""

    tables: dict[str, Array]
    dense: dict[str, Any]


class ModelParams(NamedTuple):
    """One client's view of a model: its private half and the shared half."""

    private: Leaves
    shared: Leaves


class Context(NamedTuple):
    """Per-client side information available to ``apply`` (unbatched).

    Attributes:
      history: ``[n]`` int32 indices (into the item tables the model sees) of the
        client's most recent training positives, oldest first.
      history_mask: ``[n]`` bool, False for padding slots.
    """

    history: Array
    history_mask: Array


class ApplyFn(Protocol):
    def __call__(self, params: ModelParams, items: Array, context: Context,
                 *, key: Array | None = None) -> Array:
        """Logits ``[B]`` for items ``[B]`` of one client."""


class Model(NamedTuple):
    """A recommendation model as pure functions.

    Attributes:
      name: registry name.
      init_shared: ``key -> Leaves`` global shared parameters.
      init_private: ``key -> Leaves`` one client's private parameters.
      apply: scores a batch of one client's items (see :class:`ApplyFn`).
      history_len: how many recent positives the model reads from ``Context``
        (0 = none).
      config: the model's frozen config dataclass.
    """

    name: str
    init_shared: Callable[[Array], Leaves]
    init_private: Callable[[Array], Leaves]
    apply: ApplyFn
    history_len: int
    config: Any


def empty_leaves() -> Leaves:
    return Leaves(tables={}, dense={})


def tree_sq_norm(tree: PyTree) -> Array:
    """Sum of squares of every leaf of ``tree`` (0.0 for an empty tree)."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)
