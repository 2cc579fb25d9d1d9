"""The ``popularity`` baseline: rank every item by its aggregated training count.

No learning. Each round a participating client uploads its training item
counts (how often each item is among its own training **positives**; sampled
negatives, label 0, count nothing), the server averages the uploads, and every
client ranks its candidates by the result: the floor row of every results
table. It runs through the engine's ordinary round, aggregation and
evaluation:

* model (:class:`feddmr_jax.models.popularity.Popularity`): one shared table
  ``counts [num_items, 1]``, zeros at init; ``score(i) = counts[i]``. Nothing
  is private.
* local step (:func:`count_step`): per minibatch, add ``label * mask`` to the
  rows of the batch's items. After one epoch the client's table is the
  broadcast one plus its counts, so its upload (the delta) is exactly its
  counts, on the rows it used (sparse mode) or on the whole table.
* aggregation: with ``table_mean = "participants"`` and ``weighting =
  "uniform"`` (forced by the defaults below) and the FedAvg server step
  (``server_lr = 1``), one round adds ``sum of the participants' counts / P``
  to the table, which ranks items exactly as the sum does (a positive factor
  changes no ranking). With every client in one round this is the global
  training popularity; with partial participation the table accumulates the
  rounds' means, an unbiased estimate of it (up to scale). ``touched`` or
  ``examples`` would rank by a different quantity and are not this baseline.

Evaluation is ``global`` (every client ranks by the server's counts). ``[train]``
keys of an optimizer are errors (nothing is optimized); ``train.mu``,
``train.l2`` and user loss terms are refused when the step is built.
"""

from __future__ import annotations

import jax.numpy as jnp

from feddmr_jax.errors import ConfigError
from feddmr_jax.federated.client import LocalStep
from feddmr_jax.losses import LossTerm
from feddmr_jax.method_configs import SPECS
from feddmr_jax.methods.base import Method, no_terms
from feddmr_jax.models.base import Leaves, Model, ModelParams
from feddmr_jax.models.popularity import build_popularity

COUNTS = "counts"   # the model's shared count table


def count_step() -> LocalStep:
    """A minibatch "step" that adds the batch's positives to the count table.

    ``counts[items[b]] += labels[b] * mask[b]``: padding examples and negatives
    (label 0) add nothing. No optimizer state; the loss reported is 0.

    Returns:
      The :class:`LocalStep`.
    """

    def step(params: ModelParams, opt_state, global_shared: Leaves, batch):
        del global_shared
        counts = params.shared.tables[COUNTS]
        add = jnp.where(batch.mask, batch.labels, 0.0).astype(counts.dtype)
        counts = counts.at[batch.items, 0].add(add)
        shared = params.shared._replace(tables={**params.shared.tables, COUNTS: counts})
        return params._replace(shared=shared), opt_state, jnp.zeros((), jnp.float32)

    return LocalStep(init=lambda params: (), step=step)


def local_step(model: Model, num_items: int, regularizers: dict[str, LossTerm]) -> LocalStep:
    """The registry's ``local_step``: :func:`count_step`.

    Raises:
      ConfigError: loss terms were asked for (``train.mu``, ``train.l2`` or
        user terms): popularity has no loss.
    """
    del model, num_items
    if regularizers:
        raise ConfigError("model 'popularity' has no loss: set train.mu and train.l2 to 0 and "
                          f"add no loss terms (got: {', '.join(sorted(regularizers))})")
    return count_step()


# [train] defaults and unused keys: method_configs.SPECS.
METHOD = Method.of(SPECS["popularity"], build_popularity, no_terms, local_step=local_step,
                   eval_mode="global")
