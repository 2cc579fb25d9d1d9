"""The ``popularity`` baseline's model: one shared column of item counts.

Split (top-level parameters of :class:`Popularity`; see ``split.py``):
  private: nothing.
  shared:  table ``counts`` ``[num_items, 1]`` (zeros at init) — the round's
           aggregated training counts of every item.

Forward pass: ``logit(i) = counts[i]``; every client ranks its candidates by
the aggregated counts. How the counts are built (a local step that adds the
client's own positives, no learning) is ``feddmr_jax/methods/popularity.py``.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from feddmr_jax.method_configs import PopularityConfig
from feddmr_jax.models.base import Context, Model
from feddmr_jax.models.split import ParamSplit, module_model

Array = jax.Array
SPLIT = ParamSplit(private=(), tables=("counts",))


class Popularity(nn.Module):
    """``logit(i) = counts[i]``.

    Attributes:
      config: the (empty) config.
      num_items: rows of the count table.
    """

    config: PopularityConfig
    num_items: int

    @nn.compact
    def __call__(self, items: Array, context: Context, *, deterministic: bool = True) -> Array:
        """Logits ``[B]`` of items ``[B]`` (context is unused)."""
        del context, deterministic
        counts = self.param("counts", nn.initializers.zeros, (self.num_items, 1))
        return counts[items, 0]


def build_popularity(cfg: PopularityConfig, num_items: int) -> Model:
    """Builds the ``popularity`` :class:`Model` for a catalogue of ``num_items`` items.

    Args:
      cfg: model config (empty).
      num_items: catalogue size I.

    Returns:
      The model (empty private half); ``apply(params, items [B], context) -> counts [B]``.
    """
    cfg.validate()
    return module_model("popularity", Popularity(cfg, num_items), SPLIT, history_len=0,
                        config=cfg)
