"""The ``local`` probe's model: PFedRec's score model with every parameter private.

Split (top-level parameters of PFedRec's module with its table named
``items_personal``; see ``split.py``):
  private: table ``items_personal`` ``[num_items, d]`` — the client's own item
           table (item-indexed, so sparse mode reads and writes its rows), and
           ``user_head`` = ``nn.Dense(1)`` — its score function.
  shared:  nothing. The server aggregates no parameter.

Forward pass for one client: ``logit(i) = user_head(items_personal[i])``, the
PFedRec forward pass (``models/pfedrec.py``) with the item table renamed so
that the privacy audit (federated/audit.py) reads it as private data. The
recipe (PFedRec's local step, no federation) is ``feddmr_jax/methods/local.py``.
"""

from __future__ import annotations

from feddmr_jax.method_configs import LocalConfig
from feddmr_jax.models.base import Model
from feddmr_jax.models.pfedrec import PFedRec
from feddmr_jax.models.split import ParamSplit, module_model

SPLIT = ParamSplit(private=("items_personal", "user_head"), tables=("items_personal",))


def build_local(cfg: LocalConfig, num_items: int) -> Model:
    """Builds the ``local`` :class:`Model` for a catalogue of ``num_items`` items.

    Args:
      cfg: model config (validated here).
      num_items: catalogue size I.

    Returns:
      The model (empty shared half); ``apply(params, items [B], context) -> logits [B]``.
    """
    cfg.validate()
    return module_model("local", PFedRec(cfg, num_items, table_name="items_personal"), SPLIT, history_len=0, config=cfg)
