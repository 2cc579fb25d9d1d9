"""PFedRec's recipe (Zhang et al., "Dual Personalization on Federated Recommendation", IJCAI 2023).

The model (:class:`feddmr_jax.models.PFedRec`): a private score head
``user_head`` (``nn.Dense(1)``) on the shared item table ``items``.

What the reference code does (github.com/Zhangcx19/IJCAI-23-PFedRec, commit
f65423f; files ``mlp.py``, ``engine.py``, ``train.py``, ``data.py``):

* Model (``mlp.py``, ``MLP``): ``embedding_item`` (``nn.Embedding``, N(0, 1)
  init), ``affine_output = Linear(d, 1)`` (torch default init
  U(-1/sqrt(d), 1/sqrt(d)) for weight and bias), then ``Sigmoid``.
* Local step (``engine.py``, ``fed_train_single_batch``), per minibatch: forward,
  BCE, backward, SGD step on the score head only (lr ``lr``); then a **second
  forward pass** with the updated head, BCE, backward, SGD step on the item
  table only (lr ``lr * num_items * lr_eta``, ``fed_train_a_round``). Both SGDs
  use ``weight_decay = l2_regularization`` (default 0), no momentum; the
  optimizers are created anew every round. The batch loss it returns and logs
  is the **second** pass's (``loss_i``); the round's client loss is the
  sample-weighted mean of those (``loss += loss_i * len(batch)``, cumulative over
  epochs). :func:`pfedrec_local_step` returns the same second-pass loss; the
  engine's logged client loss (``federated/client.py``, shared by every method)
  is the *unweighted* mean over the client's steps, which differs from the
  reference's only when a client's last batch is partial. It is a diagnostic
  (training and aggregation never read it), so it is kept as every method's
  engine loss rather than special-cased here.
* Defaults (``train.py``): ``lr=0.1``, ``lr_eta=80``, ``latent_dim=32``,
  ``batch_size=256``, ``local_epoch=1``, ``num_round=100``, ``num_negative=4``
  (resampled every round), ``clients_sample_ratio=1.0``, ``l2_regularization=0``.
* Aggregation (``aggregate_clients_params``): uniform mean over the round's
  participants of their full uploaded state (the item table, and also the head
  bias, because only ``affine_output.weight`` is deleted before upload); clients
  load only ``embedding_item.weight`` from the server, so the averaged bias is
  never used. Untouched item rows enter the mean with the broadcast value
  (the engine's ``table_mean="participants"``).
* Initialization: every client starts from one copy of the same initial model
  (same head for everyone); a client's head is then kept across rounds.
* Evaluation (``fed_evaluate``): every user who has trained scores its test and
  99 negative items with **its own stored state after its last local training**,
  i.e. its private head and its *locally updated* item table (the personalized
  item view), not the server's aggregated table; a user who never trained uses
  the initial model. Model selection is by validation HR@10.

In the engine (registry entry ``pfedrec``): the local step is
:func:`pfedrec_local_step`, the reference's ``[train]`` values are the
defaults (``mu = 0``, ``table_mean = "participants"``, batch 256, 1 epoch, 4
negatives), and evaluation is *local*: right after local training each client
scores its validation and test candidates with its trained head and item rows,
and the logits go to its private store (``[U, Cv + Ct]``, not a ``[U, I, d]``
table; federated/private_store.py), which the evaluator uses. A candidate row
the client did not train on is the global row it received in that round (the
candidates stay out of the local table the item step updates:
federated/parallel.py, ``local_view``), as in the reference's stored client state.

Weight decay (``weight_decay > 0``, reference default 0): torch's SGD decays every
row of the item table, trained or not, and the whole table is uploaded; the
engine does the same (``row_decay``: dense mode uploads every row, sparse mode
measures the decay on a probe row, federated/parallel.py).

Not reproduced: the shared initial head (the engine initializes each client
from its own key), the uploaded-but-unused head bias, and ``BCELoss``'s clamp
of ``log`` at -100 (we use the exact BCE on logits).
"""

from __future__ import annotations

import jax

from feddmr_jax.federated.client import LocalStep
from feddmr_jax.losses import Batch, LossTerm, bce, compose
from feddmr_jax.method_configs import SPECS
from feddmr_jax.methods.base import Method, decays_every_row, no_terms
from feddmr_jax.models.base import ApplyFn, Leaves, Model, ModelParams
from feddmr_jax.models.pfedrec import PFedRecConfig, build_pfedrec

Array = jax.Array
HEAD, ITEMS = "user_head", "items"   # the model's private head and shared item table


def pfedrec_item_lr(num_items: int, lr: float = 0.1, lr_eta: float = 80.0) -> float:
    """The reference's item-table learning rate ``lr * num_items * lr_eta``.

    Args:
      num_items: catalogue size I (the full catalogue, also in sparse mode).
      lr: the head learning rate.
      lr_eta: the multiplier.

    Returns:
      The item SGD learning rate (13456.0 for ML-100K's 1682 items).
    """
    return lr * num_items * lr_eta


def _with_head(params: ModelParams, head: dict[str, Array]) -> ModelParams:
    dense = {**params.private.dense, HEAD: head}
    return params._replace(private=params.private._replace(dense=dense))


def _with_items(params: ModelParams, items: Array) -> ModelParams:
    tables = {**params.shared.tables, ITEMS: items}
    return params._replace(shared=params.shared._replace(tables=tables))


def _sgd(value, grad, lr: float, weight_decay: float):
    """torch ``SGD`` without momentum: ``p -= lr * (g + weight_decay * p)``."""
    return jax.tree.map(lambda p, g: p - lr * (g + weight_decay * p), value, grad)


def pfedrec_local_step(apply: ApplyFn, *, head_lr: float, item_lr: float,
                       weight_decay: float = 0.0, **extra_terms: LossTerm) -> LocalStep:
    """PFedRec's two-stage minibatch step (``engine.py``, ``fed_train_single_batch``).

    Per batch: ``head <- head - head_lr * d loss / d head`` at the current
    params, then, with the **updated** head, a second forward/backward and
    ``items <- items - item_lr * d loss / d items``. The loss is
    ``bce(apply)`` plus ``extra_terms`` (e.g. ``prox=proximal(mu)``), the same in
    both passes. No optimizer state.

    Args:
      apply: the PFedRec model's ``apply``.
      head_lr: SGD lr of ``private.dense["user_head"]`` (reference: 0.1).
      item_lr: SGD lr of ``shared.tables["items"]`` (:func:`pfedrec_item_lr`).
      weight_decay: torch-style SGD weight decay of both steps.
      **extra_terms: further named loss terms ``(params, global_shared, batch)``.

    Returns:
      A :class:`LocalStep` whose ``step`` returns the second pass's loss (the
      value the reference logs).
    """
    loss_fn = compose(data=bce(apply), **extra_terms)

    def step(params: ModelParams, opt_state, global_shared: Leaves, batch: Batch):
        def head_loss(head):
            return loss_fn(_with_head(params, head), global_shared, batch)[0]

        head = params.private.dense[HEAD]
        params = _with_head(params, _sgd(head, jax.grad(head_loss)(head), head_lr,
                                         weight_decay))

        def item_loss(items):
            return loss_fn(_with_items(params, items), global_shared, batch)[0]

        items = params.shared.tables[ITEMS]
        loss, g_items = jax.value_and_grad(item_loss)(items)
        params = _with_items(params, _sgd(items, g_items, item_lr, weight_decay))
        return params, opt_state, loss

    return LocalStep(init=lambda params: (), step=step)


def local_step(model: Model, num_items: int, regularizers: dict[str, LossTerm]) -> LocalStep:
    """The registry's ``local_step``: :func:`pfedrec_local_step` with the [model] lrs."""
    cfg: PFedRecConfig = model.config
    return pfedrec_local_step(model.apply, head_lr=cfg.lr,
                              item_lr=pfedrec_item_lr(num_items, cfg.lr, cfg.lr_eta),
                              weight_decay=cfg.weight_decay, **regularizers)


# [train] defaults (the reference train.py's) and unused keys: method_configs.SPECS.
METHOD = Method.of(SPECS["pfedrec"], build_pfedrec, no_terms, local_step=local_step,
                   eval_mode="local", row_decay=decays_every_row)
