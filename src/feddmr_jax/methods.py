"""The method registry: per model, its config, builder and training recipe in one entry.

``train.model`` names an entry of :data:`METHODS`; the entry fixes the class of
the ``[model]`` config section, how the model is built, and what the engine does
differently for it. Every method runs in the same engine (federated/): the same
round, client sampling, chunked ``vmap``, aggregation and evaluation.

| method  | private (never uploaded)       | shared (averaged)        | local step         | eval   |
|---------|--------------------------------|--------------------------|--------------------|--------|
| feddmr  | user embedding                 | items, attention, head   | loss + Adam        | global |
| fedmf   | user embedding                 | items                    | loss + Adam        | global |
| fedncf  | user GMF and MLP embeddings    | both item tables, MLPs   | loss + Adam        | global |
| pfedrec | score head (w, b)              | items                    | head SGD, item SGD | local  |
| fedrap  | head, item personality D_u     | item commonality C       | loss + round SGD   | global |

* **loss terms**: every gradient-step method trains ``BCE + model terms +
  proximal(train.mu) + l2(train.l2) + user terms`` (``train.build_loss``);
  FedRAP's model terms are its distance and sparsity regularizers.
* **local step**: PFedRec brings its own (``pfedrec_local_step``: a head SGD
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

from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from feddmr_jax.errors import ConfigError
from feddmr_jax.models import MODEL_CONFIGS, MODELS, FedRAPConfig, PFedRecConfig
from feddmr_jax.models.base import Model
from feddmr_jax.models.fedrap import fedrap_distance, fedrap_optimizer, fedrap_sparsity
from feddmr_jax.models.pfedrec import pfedrec_item_lr, pfedrec_local_step

if TYPE_CHECKING:
    from feddmr_jax.federated.client import LocalStep
    from feddmr_jax.losses import LossTerm

Array = jax.Array

EVAL_MODES = ("global", "local")


class Method(NamedTuple):
    """One registry entry.

    Attributes:
      name: the ``train.model`` value.
      config: dataclass of the ``[model]`` section.
      build: ``(config, num_items) -> Model``.
      loss_terms: ``model -> {name: term}``, model-specific terms added to BCE.
      local_step: ``(model, num_items, regularizers) -> LocalStep``, a custom
        minibatch step (``regularizers``: proximal, l2 and user terms), or None
        for the gradient step of the composed loss.
      round_optimizer: ``(config, round_index) -> optax transformation`` (round
        1-based, traced), replacing the ``[train]`` optimizer, or None.
      eval_mode: ``"global"`` or ``"local"`` (see the module docstring).
      train_defaults: ``[train]`` values of the reference protocol.
      unused_train: ``[train]`` keys this method ignores.
    """

    name: str
    config: type
    build: Callable[[Any, int], Model]
    loss_terms: Callable[[Model], dict[str, LossTerm]]
    local_step: Callable[[Model, int, dict[str, LossTerm]], LocalStep] | None = None
    round_optimizer: Callable[[Any, Array], optax.GradientTransformation] | None = None
    eval_mode: str = "global"
    train_defaults: Mapping[str, Any] = {}
    unused_train: tuple[str, ...] = ()


def _no_terms(model: Model) -> dict[str, LossTerm]:
    del model
    return {}


def _fedrap_terms(model: Model) -> dict[str, LossTerm]:
    cfg: FedRAPConfig = model.config
    return {"distance": fedrap_distance(cfg.lam), "sparsity": fedrap_sparsity(cfg.mu)}


def _fedrap_round_optimizer(cfg: FedRAPConfig, round_index: Array
                            ) -> optax.GradientTransformation:
    return fedrap_optimizer(cfg, jnp.maximum(round_index - 1, 0))   # the reference's 0-based round


def _pfedrec_step(model: Model, num_items: int, regularizers: dict[str, LossTerm]) -> LocalStep:
    cfg: PFedRecConfig = model.config
    return pfedrec_local_step(model.apply, head_lr=cfg.lr,
                              item_lr=pfedrec_item_lr(num_items, cfg.lr, cfg.lr_eta),
                              weight_decay=cfg.weight_decay, **regularizers)


# Learning rates of these methods are [model] fields: the [train] optimizer keys do nothing.
_OWN_OPTIMIZER = ("optimizer", "lr", "embedding_lr")



def _entry(name: str, loss_terms=_no_terms, **recipe) -> Method:
    """A method whose config class and builder are the model's (models/__init__.py)."""
    return Method(name, MODEL_CONFIGS[name], MODELS[name], loss_terms, **recipe)


METHODS: dict[str, Method] = {
    "feddmr": _entry("feddmr"),
    "fedmf": _entry("fedmf", train_defaults={"mu": 0.0}),
    "fedncf": _entry("fedncf", train_defaults={"mu": 0.0}),
    # Reference: github.com/Zhangcx19/IJCAI-23-PFedRec (train.py defaults).
    "pfedrec": _entry("pfedrec", local_step=_pfedrec_step, eval_mode="local",
                      train_defaults={"mu": 0.0, "table_mean": "participants",
                                      "weighting": "uniform", "batch_size": 256,
                                      "local_epochs": 1, "num_negatives": 4},
                      unused_train=_OWN_OPTIMIZER),
    # Reference: github.com/mtics/FedRAP (train.py at 550765d).
    "fedrap": _entry("fedrap", _fedrap_terms, round_optimizer=_fedrap_round_optimizer,
                     train_defaults={"mu": 0.0, "table_mean": "participants",
                                     "weighting": "uniform", "batch_size": 2048,
                                     "local_epochs": 10, "num_negatives": 4},
                     unused_train=_OWN_OPTIMIZER),
}
assert set(METHODS) == set(MODELS), "every registered model needs a method entry"


def get_method(name: str) -> Method:
    """The registry entry of ``name``.

    Raises:
      ConfigError: unknown name (the message lists the known ones).
    """
    if name not in METHODS:
        raise ConfigError(f"unknown model {name!r} (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]


def uses_dropout(model_cfg: Any) -> bool:
    """Whether the model needs a per-step dropout key (configs with a ``dropout`` field)."""
    return float(getattr(model_cfg, "dropout", 0.0)) > 0.0
