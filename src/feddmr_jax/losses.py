"""Loss terms and their composition.

A loss term is a plain function ``(params, global_shared, batch) -> scalar``:

* ``params`` — the client's current :class:`~feddmr_jax.models.base.ModelParams`;
* ``global_shared`` — the shared half as broadcast by the server this round
  (:class:`~feddmr_jax.models.base.Leaves`; in sparse mode both hold only the
  item rows this client uses, which changes nothing for the terms below);
* ``batch`` — one minibatch of the client (:class:`Batch`).

:func:`compose` sums named terms into the function that ``jax.value_and_grad``
differentiates; the per-term values come back as auxiliary output. To add your
own regularizer, write one such function and pass it to ``compose`` (or to the
trainer's ``extra_terms``)::

    def item_norm(params, global_shared, batch):
        table = params.shared.tables["items"]
        used = batch_rows(batch, table.shape[0])[:, None]
        return 1e-4 * jnp.sum(jnp.where(used, table ** 2, 0.0))

    loss_fn = compose(data=bce(model.apply), prox=proximal(0.01), norm=item_norm)

A term on item tables should read only rows the client uses (as above: the
batch's rows, :func:`batch_rows`): a term on whole tables sees the client's
local table in sparse mode and the catalogue in dense mode, and the two modes
then train differently (see :func:`l2`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from feddmr_jax.models.base import ApplyFn, Context, Leaves, ModelParams, tree_sq_norm

Array = jax.Array
LossTerm = Callable[[ModelParams, Leaves, "Batch"], Array]
LossFn = Callable[[ModelParams, Leaves, "Batch"], tuple[Array, dict[str, Array]]]


class Batch(NamedTuple):
    """One minibatch of one client (unbatched over clients).

    Attributes:
      items: ``[B]`` int32 item indices (into the tables the model sees).
      labels: ``[B]`` float32 in {0, 1}.
      mask: ``[B]`` bool, False for padding examples.
      context: the client's memory.
      key: dropout key for this step, or None.
    """

    items: Array
    labels: Array
    mask: Array
    context: Context
    key: Array | None = None


def binary_cross_entropy(logits: Array, labels: Array, *, where: Array | None = None) -> Array:
    """Per-example BCE on logits; 0 where ``where`` is False. Shapes ``[B]``."""
    loss = optax.sigmoid_binary_cross_entropy(logits, labels)
    return loss if where is None else jnp.where(where, loss, 0.0)


def masked_mean(values: Array, mask: Array) -> Array:
    """Mean of ``values`` over ``mask`` (0 when the mask is empty)."""
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def bce(apply: ApplyFn) -> LossTerm:
    """The data term: masked mean BCE of the model's logits on the batch."""

    def term(params: ModelParams, global_shared: Leaves, batch: Batch) -> Array:
        del global_shared
        logits = apply(params, batch.items, batch.context, key=batch.key)
        return masked_mean(binary_cross_entropy(logits, batch.labels, where=batch.mask),
                           batch.mask)

    return term


PROX_SCOPES = ("all", "dense")


def proximal(mu: float, scope: str = "all") -> LossTerm:
    """FedProx term ``(mu / 2) * ||shared(params) - global_shared||^2``.

    Args:
      mu: the coefficient.
      scope: ``"all"`` (every shared leaf: item-table rows and networks) or ``"dense"``
        (the shared networks only; item rows move freely, as the rows a client touches
        are its own evidence about those items).
    """
    if scope not in PROX_SCOPES:
        raise ValueError(f"proximal scope must be one of {PROX_SCOPES}, got {scope!r}")

    def term(params: ModelParams, global_shared: Leaves, batch: Batch) -> Array:
        del batch
        local, ref = params.shared, global_shared
        if scope == "dense":
            local, ref = local.dense, ref.dense
        diff = jax.tree.map(jnp.subtract, local, ref)
        return 0.5 * mu * tree_sq_norm(diff)

    return term


def batch_rows(batch: Batch, num_rows: int) -> Array:
    """``[num_rows]`` bool: the table rows the batch reaches (its real examples'
    items and its memory's), each once however often it occurs."""
    context = batch.context
    return (jnp.zeros(num_rows, bool).at[batch.items].max(batch.mask)
            .at[context.history].max(context.history_mask))


def l2(weight: float) -> LossTerm:
    """L2 penalty ``(weight / 2) * (||dense leaves||^2 + ||batch rows||^2)``.

    Every dense leaf, private and shared (networks, user embeddings), counts
    whole. Of the item tables, private and shared, only the rows this
    minibatch reaches count (:func:`batch_rows`: the distinct items of its real
    examples and of its memory): the usual "regularize the batch's
    embeddings" reading.

    Why only those rows: a row's penalty and gradient then do not depend on
    the other rows of the table, so sparse mode (the client's local table of
    this round's rows) and dense mode (the whole catalogue) compute the same
    update of every row, with any client optimizer: a row no batch reaches
    gets no l2 gradient in either mode. (A penalty on whole tables moves every
    row of the catalogue in dense mode, by ``1 - lr * weight`` per SGD step but
    by about ``lr`` per Adam step, where the gradient is normalized: no per-row
    factor that sparse mode could apply to rows it never gathered.) The loss
    value is the same in both modes up to the order of summation; the gradient
    is bit-identical. A method's own torch-style ``weight_decay``, which does
    decay every row (FedRAP, PFedRec), is ``Method.row_decay``
    (methods/base.py, federated/parallel.py).

    Args:
      weight: the coefficient.

    Returns:
      A loss term ``(params, global_shared, batch) -> scalar``.
    """

    def term(params: ModelParams, global_shared: Leaves, batch: Batch) -> Array:
        del global_shared
        total = tree_sq_norm((params.private.dense, params.shared.dense))
        for table in (*params.private.tables.values(), *params.shared.tables.values()):
            used = batch_rows(batch, table.shape[0])[:, None]
            total = total + jnp.sum(jnp.where(used, jnp.square(table.astype(jnp.float32)), 0.0))
        return 0.5 * weight * total

    return term


def compose(**terms: LossTerm) -> LossFn:
    """Sums named loss terms; returns ``(total, {name: value})``."""
    if not terms:
        raise ValueError("compose() needs at least one loss term")

    def loss_fn(params: ModelParams, global_shared: Leaves, batch: Batch):
        parts = {name: term(params, global_shared, batch) for name, term in terms.items()}
        return sum(parts.values()), parts

    return loss_fn
