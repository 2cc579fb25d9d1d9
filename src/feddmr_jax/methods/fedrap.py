"""FedRAP's recipe (Li, Long, Zhou, "Federated Recommendation with Additive Personalization", ICLR 2024).

The model (:class:`feddmr_jax.models.FedRAP`): private item personality
``items_personal`` (D_u) and score head ``user_head``; shared item commonality
``items`` (C); ``logit(i) = user_head(D_u[i] + C[i])``. Local loss (:func:`fedrap_loss`), on the batch's rows::

    BCE - lam * mean_{b, k} (D_u[i_b, k] - C[i_b, k])^2 + mu * mean_{b, k} |C[i_b, k]|

What the reference code does (github.com/mtics/FedRAP; ``model/model.py`` at
97ae87c, ``model/loss.py``, ``model/engine.py`` and ``train.py`` at 550765d):

* Model (``model.py``): ``item_personality`` and ``item_commonality`` embeddings
  (N(0, 1) init), ``affine_output = Linear(d, 1)``, sigmoid of
  ``affine_output(personality + commonality)``.
* Loss (``loss.py``, ``regular='l1'``): ``BCELoss(pred, y) - lambda *
  MSELoss(D_rows, C_rows) + mu * L1Loss(C_rows, 0)``. The distance is
  **subtracted** (D is pushed away from C); both regularizers are elementwise
  means over the ``[B, d]`` rows looked up by the batch (duplicates counted),
  not the whole tables. Other ``regular`` values (not implemented): ``l2``
  (mean square), ``nuc`` (nuclear norm of the rows), ``inf``, ``none`` (mu = 0).
* lambda/mu schedule: ``engine.py`` computes ``self.lam, self.mu`` per round
  (``vary_param='tanh'``: ``tanh(round / 10) * lambda``; also sin, square, frac,
  fixed) but ``Loss`` reads the fixed ``config['lambda']``/``config['mu']``, so
  the schedule has no effect in that code. Not implemented.
* Optimizer (``federatedTrainOneRound``): one SGD per client per round, lr
  ``lr_network`` for the head and ``lr_args`` for D and C (C is trained locally
  too), ``weight_decay = l2_regularization`` on all; ``ExponentialLR(0.95)``
  stepped after every batch; after every round both lrs are multiplied by
  ``decay_rate``. :func:`fedrap_optimizer` builds this. torch's weight decay adds
  ``wd * param`` to the (dense) gradient of **every** row of D and C at every
  step, so a row the batch never reached still shrinks by ``1 - lr_t * wd``
  per step, and the uploaded C differs from the broadcast one on every row.
* Local epochs: ``local_epoch`` with early stopping once the relative change of
  the (cumulative) epoch loss is below ``tol`` — not implemented (fixed epochs).
* Upload and aggregation: head and D are deleted; the server sets C to the
  uniform mean of the participants' full C tables (``table_mean="participants"``).
* Evaluation (``federatedEvaluate``): each user scores with its own head and
  D_u from its last training and the server's aggregated C; a user who never
  trained uses the initial model with the global C.
* Defaults (``train.py`` at 550765d): ``lambda=0.1``, ``mu=0.1``,
  ``regular='l1'``, ``lr_network=0.5``, ``lr_args=200``,
  ``l2_regularization=1e-4``, ``decay_rate=0.97``, ``local_epoch=10``,
  ``tol=1e-4``, ``batch_size=2048``, ``latent_dim=32``, ``num_negative=4``,
  ``num_round=100``, ``clients_sample_ratio=1.0``, ``top_k=10``. (Another stored
  version, 11159ed, has ``lr_network=0.1``, ``lr_args=100``, ``l2=0``; the README
  runs ML-100K with ``--mu 1e-3 --l2_regularization 1e-6 --lr_network 1e-4
  --lr_args 1e3``.)
* Initialization (``federatedTrainOneRound``): every client starts from
  ``copy.deepcopy(self.model)``, one copy of the initial model: the **same**
  initial D and head for every client (then kept per client across rounds).

In the engine (registry entry ``fedrap``):

* **Memory.** D_u is a private item table, so the private store holds
  ``U x I x d`` floats (4 bytes each): 0.2 GB on ML-100K (943 x 1682 x 32),
  4.3 GB on Last.fm-2K (1892 x 17632), 12.2 GB on Amazon-Video (8072 x 11830).
  ``train.max_private_gb`` (default 4 GiB) bounds it: a larger store is refused
  before training with an error naming the sizes (lower ``model.dim`` or raise
  the bound if the machine has the memory).
* **Initialization differs from the reference**: each client's D_u and head
  come from its own key (``init_private_store``: ``fold_in(key, u)``), so
  clients start from different D_u and heads, where the reference gives all of
  them one copy. The shared C starts from one key, as in the reference.
* **Weight decay** (``weight_decay > 0``; :func:`decays_every_row`): as in the
  reference, every row of C and D_u decays at every local step, including rows
  the client did not touch (the held-out item's D_u row too).

  - Dense mode: the client trains on the whole tables (so every row decays)
    and, since every row changes, every row of its C counts as used: the
    server's mean is the reference's mean of full tables
    (``RoundConfig.row_decay``: the row mask is all-true; ``"touched"`` then
    equals ``"participants"``).
  - Sparse mode (default): a row client u does not gather evolves in a round
    as ``row -> row * f_u``, ``f_u = prod_t (1 - lr_t * wd)`` over its steps
    (lr_t with the step and round decays; each client its own number of
    steps). The client measures ``f_u`` on a probe row of ones in its local
    table (federated/parallel.py), scales its whole D_u by ``f_u`` when its
    rows are written back (then sets the trained rows; so an untouched D_u row
    after its owner's rounds is ``row * prod f``, as in dense mode), and
    uploads for C the excess ``new[i] - C[i] * f_u`` of its rows; the server
    adds ``C * sum_u w_u (f_u - 1) / W`` to every row (federated/aggregation.py).
    Equal to the dense mode up to float rounding (tested with weight decay
    1e-4 over 3 rounds). Only with ``aggregator = "mean"`` and without DP or
    secure aggregation (the excess upload is not a delta those can clip,
    noise or mask): with any of those, ``build_experiment`` runs FedRAP with
    weight decay in dense mode (``train.sparse`` is then not applied; the
    engine's ``build_algorithm`` refuses the combination with a ConfigError).
  - Other than that, a client reads only its local rows of D_u (its positives,
    negatives) and writes back only the rows it trained on, like the shared C
    rows.
* **Optimizer.** :func:`fedrap_optimizer` of round ``r - 1`` (the engine's rounds
  are 1-based), built inside the compiled step from the traced round index, so
  the per-round decay recompiles nothing; the ``[train]`` optimizer and lrs are
  unused. Reference ``[train]`` defaults: ``mu = 0`` (no proximal term),
  ``table_mean = "participants"``, batch 2048, 10 local epochs, 4 negatives.
* Evaluation is global: the server's C, the user's D_u and head.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from feddmr_jax.losses import Batch, LossFn, LossTerm, bce, compose, masked_mean
from feddmr_jax.method_configs import SPECS
from feddmr_jax.methods.base import Method, decays_every_row
from feddmr_jax.models.base import ApplyFn, Leaves, Model, ModelParams
from feddmr_jax.models.fedrap import FedRAPConfig, build_fedrap

Array = jax.Array
PERSONAL, COMMON = "items_personal", "items"   # the model's D_u and C tables


def _batch_rows(params: ModelParams, items: Array) -> tuple[Array, Array]:
    """``(D_u[items], C[items])``, each ``[B, d]``."""
    return params.private.tables[PERSONAL][items], params.shared.tables[COMMON][items]


def fedrap_distance(lam: float) -> LossTerm:
    """``-lam * mean((D_u[i] - C[i])^2)`` over the batch's real rows and all d columns.

    Args:
      lam: weight lambda (the term is subtracted, as in the reference).

    Returns:
      A loss term ``(params, global_shared, batch) -> scalar``.
    """
    def term(params: ModelParams, global_shared: Leaves, batch: Batch) -> Array:
        del global_shared
        personal, common = _batch_rows(params, batch.items)
        return -lam * masked_mean(jnp.mean(jnp.square(personal - common), -1), batch.mask)

    return term


def fedrap_sparsity(mu: float) -> LossTerm:
    """``mu * mean(|C[i]|)`` over the batch's real rows and all d columns.

    Args:
      mu: weight mu.

    Returns:
      A loss term ``(params, global_shared, batch) -> scalar``.
    """
    def term(params: ModelParams, global_shared: Leaves, batch: Batch) -> Array:
        del global_shared
        _, common = _batch_rows(params, batch.items)
        return mu * masked_mean(jnp.mean(jnp.abs(common), -1), batch.mask)

    return term


def fedrap_loss(apply: ApplyFn, cfg: FedRAPConfig, **extra_terms: LossTerm) -> LossFn:
    """The reference's local loss: BCE, distance and sparsity (plus ``extra_terms``).

    Args:
      apply: the FedRAP model's ``apply``.
      cfg: model config (``lam``, ``mu``).
      **extra_terms: further named loss terms ``(params, global_shared, batch)``.

    Returns:
      ``compose(data=bce(apply), distance=..., sparsity=..., **extra_terms)``.
    """
    return compose(data=bce(apply), distance=fedrap_distance(cfg.lam),
                   sparsity=fedrap_sparsity(cfg.mu), **extra_terms)


def fedrap_optimizer(cfg: FedRAPConfig, round_index: int | Array = 0
                     ) -> optax.GradientTransformation:
    """The reference's client optimizer for round ``round_index`` (0-based).

    Tables (D and C) use SGD with lr ``lr_args``, dense leaves (the head) lr
    ``lr_network``; both scaled by ``round_decay ** round_index`` and by
    ``step_decay ** step`` within the round, after torch-style weight decay.

    Args:
      cfg: model config.
      round_index: the round (scalar; may be traced).

    Returns:
      An optax transformation over :class:`ModelParams`.
    """
    scale = cfg.round_decay ** round_index

    def sgd(lr: float) -> optax.GradientTransformation:
        schedule = optax.exponential_decay(lr * scale, transition_steps=1,
                                           decay_rate=cfg.step_decay)
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.sgd(schedule))

    def labels(params: ModelParams) -> ModelParams:
        def half(leaves: Leaves) -> Leaves:
            return Leaves(tables=jax.tree.map(lambda _: "args", leaves.tables),
                          dense=jax.tree.map(lambda _: "network", leaves.dense))

        return ModelParams(private=half(params.private), shared=half(params.shared))

    return optax.multi_transform({"network": sgd(cfg.lr_network), "args": sgd(cfg.lr_args)},
                                 labels)


def loss_terms(model: Model) -> dict[str, LossTerm]:
    """The registry's ``loss_terms``: distance and sparsity with the [model] weights."""
    cfg: FedRAPConfig = model.config
    return {"distance": fedrap_distance(cfg.lam), "sparsity": fedrap_sparsity(cfg.mu)}


def round_optimizer(cfg: FedRAPConfig, round_index: Array) -> optax.GradientTransformation:
    """The registry's ``round_optimizer``: :func:`fedrap_optimizer` of the 0-based round."""
    return fedrap_optimizer(cfg, jnp.maximum(round_index - 1, 0))


# [train] defaults (the reference train.py's) and unused keys: method_configs.SPECS.
METHOD = Method.of(SPECS["fedrap"], build_fedrap, loss_terms, round_optimizer=round_optimizer,
                   row_decay=decays_every_row)
