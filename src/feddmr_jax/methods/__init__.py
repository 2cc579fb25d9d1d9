"""The method registry: per method, its model config, builder and training recipe.

Each method is one file here (``feddmr.py``, ``fedmf.py``, ``fedncf.py``,
``pfedrec.py``, ``fedrap.py``, and the protocol probes ``local.py`` and
``popularity.py``) holding its whole recipe as a :class:`Method`
named ``METHOD``; :data:`METHODS` below is the one registry table, so a new
method is one new file plus one line in it, plus its engine-free half (config
class, ``[train]`` defaults, unused ``[train]`` keys) in
``method_configs.SPECS``, which the CLI and ``config.py`` read without
importing JAX. ``train.model`` names an entry of :data:`METHODS`; the entry
fixes the class of the ``[model]`` config section, how the model is built,
and what the engine does differently for it. Every method runs in the same
engine (federated/): the same round, client sampling, chunked ``vmap``,
aggregation and evaluation.

| method  | private (never uploaded)       | shared (averaged)        | local step         | eval   |
|---------|--------------------------------|--------------------------|--------------------|--------|
| feddmr  | user embedding                 | items, attention, head   | loss + Adam        | global |
| fedmf   | user embedding                 | items                    | loss + Adam        | global |
| fedncf  | user GMF and MLP embeddings    | both item tables, MLPs   | loss + Adam        | global |
| pfedrec | score head (user_head)         | items                    | head SGD, item SGD | local  |
| fedrap  | head, item personality D_u     | item commonality C       | loss + round SGD   | global |
| local   | head, own item table           | nothing                  | head SGD, item SGD | global |
| popularity | nothing                     | item counts              | add own positives  | global |

* **probes** (docs/protocol.md): ``local`` is PFedRec with its item table kept
  at home (no federation; far above chance only with the leaky ``reference``
  training negatives); ``popularity`` ranks by the participants' summed
  training counts (no learning; the floor of every table).
* **loss terms**: every gradient-step method trains ``BCE + model terms +
  proximal(train.mu) + l2(train.l2) + user terms`` (``experiment.build_loss``);
  FedRAP's model terms are its distance and sparsity regularizers.
* **local step**: PFedRec brings its own (``methods/pfedrec.py``: a head SGD
  step, then a second forward pass and an item SGD step, per batch); its loss
  is BCE plus the same proximal/l2/user terms.
* **per-round optimizer**: FedRAP's SGD learning rates decay per round
  (``round_decay ** (round - 1)``) and per local step; the engine builds the
  local step inside the trace from the round index, so nothing recompiles.
* **evaluation**: ``global`` scores with the server's shared params and the
  user's private params; ``local`` (PFedRec, as its reference code) scores
  with the user's own item table after its last local training (the engine
  keeps only the rows of the user's evaluation candidates:
  federated/private_store.py).
* **train defaults**: the reference protocol's ``[train]`` values, applied when
  a config is built from a file or the command line (``config.build_config``)
  and the user does not set them; every saved ``config.json`` records the
  values used. The baselines have no proximal term in their references, so
  their default ``mu`` is 0.
* **unused train keys**: ``[train]`` keys the method ignores (its learning
  rates live in ``[model]``); setting them in a file or by a flag is an error.
"""

from __future__ import annotations

from typing import Any

from feddmr_jax.errors import ConfigError
from feddmr_jax.method_configs import ModelConfig, get_spec, model_config_class, model_name_of
from feddmr_jax.methods import feddmr, fedmf, fedncf, fedrap, local, pfedrec, popularity
from feddmr_jax.methods.base import EVAL_MODES, OWN_OPTIMIZER, Method, no_terms
from feddmr_jax.models.base import Model

# The registry: one line per method (in the order of method_configs.SPECS, which
# holds each one's config class, [train] defaults and unused [train] keys).
METHODS: dict[str, Method] = {m.name: m for m in (
    feddmr.METHOD,
    fedmf.METHOD,
    fedncf.METHOD,
    pfedrec.METHOD,
    fedrap.METHOD,
    local.METHOD,
    popularity.METHOD,
)}

# Views of the registry by what config.py and the builders need.
MODEL_CONFIGS: dict[str, type] = {name: m.config for name, m in METHODS.items()}
MODELS = {name: m.build for name, m in METHODS.items()}


def get_method(name: str) -> Method:
    """The registry entry of ``name``.

    Raises:
      ConfigError: unknown name (the message lists the known ones).
    """
    get_spec(name)                    # the one "unknown model" message
    return METHODS[name]


def build_model(name: str, cfg: Any, num_items: int) -> Model:
    """Builds the model of the method registered under ``name`` from its config.

    Raises:
      ConfigError: unknown name, or ``cfg`` is not that method's config class.
    """
    method = get_method(name)
    if type(cfg) is not method.config:
        raise ConfigError(f"model {name!r} needs a {method.config.__name__} [model] section, "
                          f"got a {type(cfg).__name__}")
    return method.build(cfg, num_items)


def uses_dropout(model_cfg: Any) -> bool:
    """Whether the model needs a per-step dropout key (configs with a ``dropout`` field)."""
    return float(getattr(model_cfg, "dropout", 0.0)) > 0.0


__all__ = ["EVAL_MODES", "METHODS", "MODELS", "MODEL_CONFIGS", "Method", "ModelConfig",
           "OWN_OPTIMIZER", "build_model", "get_method", "model_config_class", "model_name_of",
           "no_terms", "uses_dropout"]
