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
        return 1e-4 * jnp.sum(params.shared.tables["items"] ** 2)

    loss_fn = compose(data=bce(model.apply), prox=proximal(0.01), norm=item_norm)
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


def l2(weight: float) -> LossTerm:
    """Weight decay ``(weight / 2) * ||params||^2`` over private and shared leaves.

    In sparse mode the item tables hold only this round's rows, so the penalty
    covers the rows the client uses (the usual "regularize the batch's
    embeddings" reading); the dense mode penalizes the whole table.
    """

    def term(params: ModelParams, global_shared: Leaves, batch: Batch) -> Array:
        del global_shared, batch
        return 0.5 * weight * tree_sq_norm(params)

    return term


def compose(**terms: LossTerm) -> LossFn:
    """Sums named loss terms; returns ``(total, {name: value})``."""
    if not terms:
        raise ValueError("compose() needs at least one loss term")

    def loss_fn(params: ModelParams, global_shared: Leaves, batch: Batch):
        parts = {name: term(params, global_shared, batch) for name, term in terms.items()}
        return sum(parts.values()), parts

    return loss_fn
