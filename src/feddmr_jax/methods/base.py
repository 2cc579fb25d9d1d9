"""What a method is: one registry entry (:class:`Method`) and the shared defaults.

A method file (``methods/<name>.py``) builds one :class:`Method` named
``METHOD`` from its model (``feddmr_jax.models``) and its recipe; the registry
in ``methods/__init__.py`` lists them.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import jax
import optax

from feddmr_jax.federated.client import LocalStep
from feddmr_jax.losses import LossTerm
from feddmr_jax.method_configs import OWN_OPTIMIZER, MethodSpec
from feddmr_jax.models.base import Model

Array = jax.Array

EVAL_MODES = ("global", "local")

# OWN_OPTIMIZER ([train] keys of the client optimizer) is defined with the method specs.
__all__ = ["EVAL_MODES", "OWN_OPTIMIZER", "Method", "decays_every_row", "no_terms"]


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
      eval_mode: ``"global"`` or ``"local"`` (see ``methods/__init__.py``).
      train_defaults: ``[train]`` values of the reference protocol, and engine
        settings measured per method that change no result (``chunk_size``).
      unused_train: ``[train]`` keys this method ignores.
      row_decay: ``config -> bool``, whether the method's optimizer changes
        every row of the item tables, used or not (weight decay;
        ``RoundConfig.row_decay``), or None (never).
      cpu_compiler_options: XLA options for compiling the method's chunk step on
        the CPU backend (``feddmr_jax/compiler_options.py``; measured per method).
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
    row_decay: Callable[[Any], bool] | None = None
    cpu_compiler_options: Mapping[str, str] = {}

    @classmethod
    def of(cls, spec: MethodSpec, build: Callable[[Any, int], Model],
           loss_terms: Callable[[Model], dict[str, LossTerm]], **recipe: Any) -> "Method":
        """The entry of ``spec`` (name, config class, ``train_defaults``,
        ``unused_train``: ``feddmr_jax/method_configs.py``) with its recipe."""
        return cls(spec.name, spec.config, build, loss_terms,
                   train_defaults=spec.train_defaults, unused_train=spec.unused_train, **recipe)


def decays_every_row(cfg: Any) -> bool:
    """A ``row_decay`` for configs with a torch-style ``weight_decay``: when positive,
    the local SGD moves every table row, used or not (``p -= lr * wd * p``).

    Only the method's own ``weight_decay`` counts: ``train.l2``
    (:func:`feddmr_jax.losses.l2`) penalizes only the item rows of each
    minibatch, so a row no batch reaches does not move under it, in sparse and
    dense mode alike, and it needs no row decay."""
    return cfg.weight_decay > 0


def no_terms(model: Model) -> dict[str, LossTerm]:
    """No model-specific loss terms (BCE and the ``[train]`` regularizers only)."""
    del model
    return {}
