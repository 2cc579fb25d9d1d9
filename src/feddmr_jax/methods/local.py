"""The ``local`` probe: PFedRec without federation (issue #11, docs/protocol.md).

The model (``models/local.py``: PFedRec's module with its table named
``items_personal``) is PFedRec's with every parameter private: each client trains its own item table
``items_personal`` and its score head ``user_head`` on its own data, and the
server aggregates nothing (the shared half is empty; a client uploads no
parameter). What it measures: how far a method can get with no collaboration.
With the leaky ``reference`` training negatives (``data.train_negatives``) a
purely local model learns "an item I was never given as a negative is my
positive" and scores far above every federated method; with ``strict``
negatives it is at chance (HR@10 about 0.1 with 100 candidates), because a
client knows nothing about items it has never seen.

Recipe: PFedRec's two-stage SGD step (:func:`~feddmr_jax.methods.pfedrec.pfedrec_local_step`,
head then item table, the reference learning rates ``lr`` and ``lr * num_items
* lr_eta``) applied to the client's private item table, and PFedRec's
reference ``[train]`` defaults: literally PFedRec with the item table kept at home.

Evaluation defaults to ``global``: the model is all-private, so "the server's
shared params with the client's private ones" *is* the model the client holds
after its last local training (PFedRec's ``local`` mode gives the same scores,
tested), without the ``[U, Cv + Ct]`` store of local-mode scores.

Memory: the private store holds ``U x I x d`` floats (users x items x dim);
``train.max_private_gb`` bounds it (``check_store_size`` counts the private
item table) and a larger store is refused with a one-line error.
"""

from __future__ import annotations

from feddmr_jax.federated.client import LocalStep
from feddmr_jax.losses import LossTerm
from feddmr_jax.method_configs import SPECS
from feddmr_jax.methods.base import Method, decays_every_row, no_terms
from feddmr_jax.methods.pfedrec import HEAD, ITEMS, pfedrec_item_lr, pfedrec_local_step
from feddmr_jax.models.base import Leaves, Model, ModelParams
from feddmr_jax.models.local import LocalConfig, build_local

PERSONAL = "items_personal"   # the model's private item table


def _pfedrec_view(params: ModelParams) -> ModelParams:
    """``local``'s params laid out as PFedRec's (private head, item table in ``shared``)."""
    return ModelParams(private=Leaves({}, {HEAD: params.private.dense[HEAD]}),
                       shared=Leaves({ITEMS: params.private.tables[PERSONAL]}, {}))


def _from_view(view: ModelParams) -> ModelParams:
    """Inverse of :func:`_pfedrec_view` (the shared half is empty)."""
    return ModelParams(private=Leaves({PERSONAL: view.shared.tables[ITEMS]},
                                      {HEAD: view.private.dense[HEAD]}),
                       shared=Leaves({}, {}))


def local_step(model: Model, num_items: int, regularizers: dict[str, LossTerm]) -> LocalStep:
    """PFedRec's step (:func:`pfedrec_local_step`) on the client's private item table.

    The step runs on the PFedRec layout of the params (item table where
    PFedRec keeps its shared one); the model and the regularizers see the
    real params, so e.g. ``train.l2`` covers the rows of the private table
    a minibatch reaches (losses.l2) and
    ``train.mu`` has nothing to pull towards (no shared params).

    Args:
      model: the ``local`` model.
      num_items: catalogue size I (sets the item learning rate, as in PFedRec).
      regularizers: proximal, l2 and user terms ``(params, global_shared, batch)``.

    Returns:
      The :class:`LocalStep`.
    """
    cfg: LocalConfig = model.config

    def apply(view, items, context, *, key=None):
        return model.apply(_from_view(view), items, context, key=key)

    def on_real_params(term: LossTerm) -> LossTerm:
        return lambda view, global_shared, batch: term(_from_view(view), global_shared, batch)

    inner = pfedrec_local_step(apply, head_lr=cfg.lr,
                               item_lr=pfedrec_item_lr(num_items, cfg.lr, cfg.lr_eta),
                               weight_decay=cfg.weight_decay,
                               **{k: on_real_params(t) for k, t in regularizers.items()})

    def step(params, opt_state, global_shared, batch):
        view, opt_state, loss = inner.step(_pfedrec_view(params), opt_state, global_shared,
                                           batch)
        return _from_view(view)._replace(shared=params.shared), opt_state, loss

    return LocalStep(init=lambda params: (), step=step)


# PFedRec's reference [train] values (method_configs.SPECS); no federation.
METHOD = Method.of(SPECS["local"], build_local, no_terms, local_step=local_step,
                   eval_mode="global", row_decay=decays_every_row)
