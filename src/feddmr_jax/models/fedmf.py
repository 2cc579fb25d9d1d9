"""FedMF: federated matrix factorization (a private user vector, a shared item table).

Split (see :class:`feddmr_jax.models.base.ModelParams`):
  private: ``dense["user"]`` ``[d]`` — the user embedding, never uploaded.
  shared:  ``tables["items"]`` ``[num_items, d]`` — the item table, averaged.

Forward pass for one client::

    logit(i) = <p_u, E[i]>

No bias terms; train it with the usual :func:`feddmr_jax.losses.bce` term and
:func:`feddmr_jax.federated.client.gradient_step`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from feddmr_jax.models.base import Context, Leaves, Model, ModelParams
from feddmr_jax.models.checks import check_fields

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FedMFConfig:
    """FedMF hyperparameters."""

    dim: int = 32              # embedding size d
    init_scale: float = 0.1    # std of the normal initializer of both embeddings

    def validate(self) -> None:
        check_fields(self, positive=("dim",), non_negative=("init_scale",))


def build_fedmf(cfg: FedMFConfig, num_items: int) -> Model:
    """Builds the FedMF :class:`Model` for a catalogue of ``num_items`` items.

    Args:
      cfg: model config (validated here).
      num_items: catalogue size I.

    Returns:
      The model; ``apply(params, items [B], context) -> logits [B]``.
    """
    cfg.validate()
    d = cfg.dim

    def init_shared(key: Array) -> Leaves:
        return Leaves(tables={"items": cfg.init_scale * jax.random.normal(key, (num_items, d))},
                      dense={})

    def init_private(key: Array) -> Leaves:
        return Leaves(tables={}, dense={"user": cfg.init_scale * jax.random.normal(key, (d,))})

    def apply(params: ModelParams, items: Array, context: Context, *,
              key: Array | None = None) -> Array:
        """Logits ``[B]`` of items ``[B]`` (context and key are unused)."""
        del context, key
        table = params.shared.tables["items"]                        # [I, d]
        return jnp.dot(table[items], params.private.dense["user"])   # [B]

    return Model(name="fedmf", init_shared=init_shared, init_private=init_private,
                 apply=apply, history_len=0, config=cfg)
