"""The one place a Flax Module becomes the engine's :class:`~.base.Model`.

A model Module declares its parameters at the top level under names that say
where they go (:class:`ParamSplit`): **private** names stay on the client,
everything else is **shared**; item-indexed tables ``[rows, width]`` (also
listed in ``tables``) go to ``Leaves.tables``, where the engine gathers a
client's rows in sparse mode and scatter-adds their deltas, and every other
top-level parameter (a submodule's whole subtree, or one array) goes to
``Leaves.dense``::

    {"params": {"user": .., "items": .., "layer_0": {..}, "head": {..}}}
      -> ModelParams(private=Leaves({}, {"user": ..}),
                     shared=Leaves({"items": ..}, {"layer_0": {..}, "head": {..}}))

:func:`merge_params` is the inverse. ``apply`` runs ``module.apply`` on the
merged variables.

**Item tables and sparse mode.** In sparse mode the engine hands a client a
*local* table of the rows it uses this round (its ids re-indexed into it), so
the row count of the tables ``apply`` receives is not the catalogue size. The
modules therefore hold their item tables as plain top-level ``self.param``
arrays of ``num_items`` rows and index them with ``table[ids]``, and ``apply``
clones the module with ``num_items`` = the rows of the tables it is given
(Flax checks a parameter's shape against the module's attributes on every
``apply``). We do not use ``nn.Embed``: its lookup is ``jnp.take`` with NaN for
out-of-range ids, and a submodule would nest each table one level deeper than
the plain ``[rows, width]`` array the engine, the private store and the
checkpoints expect.

**Names and the privacy audit.** ``federated/audit.py`` flags a server-side leaf
whose path contains one of the words user/personal/history/private/eval_scores;
so private names should contain one of them and shared names must not.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from feddmr_jax.models.base import Context, Leaves, Model, ModelParams

Array = jax.Array


class ParamSplit(NamedTuple):
    """Where a module's top-level parameters go.

    Attributes:
      private: names that never leave the client.
      tables: names of item-indexed tables ``[rows, width]`` (private or shared).
    """

    private: tuple[str, ...]
    tables: tuple[str, ...]


def split_params(params: Mapping[str, Any], split: ParamSplit) -> ModelParams:
    """A module's ``variables["params"]`` as :class:`ModelParams`.

    Args:
      params: the top-level parameter dict of the module.
      split: the module's :class:`ParamSplit`.

    Returns:
      The private and shared halves, each with its tables and dense leaves.
    """
    def half(names: list[str]) -> Leaves:
        return Leaves(tables={k: params[k] for k in names if k in split.tables},
                      dense={k: params[k] for k in names if k not in split.tables})

    return ModelParams(private=half([k for k in params if k in split.private]),
                       shared=half([k for k in params if k not in split.private]))


def merge_params(params: ModelParams) -> dict[str, Any]:
    """Inverse of :func:`split_params`: one top-level parameter dict."""
    return {**params.shared.tables, **params.shared.dense,
            **params.private.tables, **params.private.dense}


def table_rows(params: ModelParams, default: int) -> int:
    """Rows of the item tables in ``params`` (``default`` when it has none)."""
    tables = [*params.shared.tables.values(), *params.private.tables.values()]
    return tables[0].shape[0] if tables else default


def bind_rows(module: nn.Module, params: ModelParams) -> nn.Module:
    """``module`` with ``num_items`` = the rows of the tables in ``params``."""
    rows = table_rows(params, module.num_items)
    return module if rows == module.num_items else module.clone(num_items=rows)


def module_model(name: str, module: nn.Module, split: ParamSplit, *, history_len: int,
                 config: Any) -> Model:
    """The engine's :class:`Model` of a Flax model module.

    Args:
      name: registry name.
      module: a Module with attribute ``num_items`` (the catalogue size: rows
        of its item tables at init) and ``__call__(items [B], context, *,
        deterministic) -> logits [B]`` for one client; dropout (if any) draws
        from the ``"dropout"`` rng stream.
      split: which of its top-level parameters are private and which are tables.
      history_len: memory size n the module reads from ``Context`` (0 = none).
      config: the model's frozen config dataclass.

    Returns:
      The model. ``init_shared``/``init_private`` each run ``module.init`` and
      keep their half; they are jitted, so the other half is never computed.
      ``apply(params, items, context, key=None)`` is deterministic when
      ``key`` is None and uses ``key`` as the dropout rng otherwise.
    """
    def init(key: Array) -> ModelParams:
        items = jnp.zeros((1,), jnp.int32)
        context = Context(jnp.zeros((history_len,), jnp.int32), jnp.zeros((history_len,), bool))
        return split_params(module.init({"params": key}, items, context)["params"], split)

    def apply(params: ModelParams, items: Array, context: Context, *,
              key: Array | None = None) -> Array:
        rngs = None if key is None else {"dropout": key}
        return bind_rows(module, params).apply(
            {"params": merge_params(params)}, items, context,
            deterministic=key is None, rngs=rngs)

    return Model(name=name, init_shared=jax.jit(lambda key: init(key).shared),
                 init_private=jax.jit(lambda key: init(key).private), apply=apply,
                 history_len=history_len, config=config)
