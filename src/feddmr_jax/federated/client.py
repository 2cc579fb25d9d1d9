"""One client's local training (unbatched; the client axis is added in parallel.py).

Each round a client starts from the broadcast shared params and its own private
params with a **fresh** optimizer state, runs ``local_epochs`` epochs over its
examples (reshuffled each epoch with its own key: ``sorting.epoch_order``) in
minibatches of ``batch_size`` (the last batch partial, as a DataLoader without
``drop_last``), and returns its new params. Examples are a fixed-size padded row with a mask;
padded minibatches are skipped exactly (no parameter or optimizer-state change),
so a client behaves the same whatever padding its shape class adds.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from feddmr_jax.federated.sorting import epoch_order
from feddmr_jax.losses import Batch, LossFn
from feddmr_jax.models.base import Context, Leaves, ModelParams

Array = jax.Array


class ClientData(NamedTuple):
    """One client's training data for one round (indices into its item tables).

    Attributes:
      items: ``[N]`` int32, positives then negatives then padding.
      labels: ``[N]`` float32.
      mask: ``[N]`` bool, True for real examples.
      history: ``[n]`` int32 memory (most recent training positives).
      history_mask: ``[n]`` bool.
      round_index: scalar int32, the round (1-based as in ``train.py``); read
        only by per-round local steps (see :func:`make_client_update`).
    """

    items: Array
    labels: Array
    mask: Array
    history: Array
    history_mask: Array
    round_index: Array | int = 0


class ClientResult(NamedTuple):
    """What a client's local training produces.

    Attributes:
      shared: new shared params (uploaded, possibly after clipping/noising).
      private: new private params (kept on the client).
      loss: mean composed loss over the steps taken.
      num_examples: real examples per epoch.
    """

    shared: Leaves
    private: Leaves
    loss: Array
    num_examples: Array


ClientUpdate = Callable[[Leaves, Leaves, ClientData, Array], ClientResult]


class LocalStep(NamedTuple):
    """How a client takes one minibatch step (a pair of pure functions).

    Attributes:
      init: ``params -> opt_state`` (called once per round: fresh state).
      step: ``(params, opt_state, global_shared, batch) -> (params, opt_state,
        loss)``.
    """

    init: Callable[[ModelParams], Any]
    step: Callable[[ModelParams, Any, Leaves, Batch], tuple[ModelParams, Any, Array]]


def gradient_step(loss_fn: LossFn, optimizer: optax.GradientTransformation) -> LocalStep:
    """The usual step: one ``value_and_grad`` of the composed loss, one optax update."""

    def step(params, opt_state, global_shared, batch):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, global_shared, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return LocalStep(init=optimizer.init, step=step)


def _select(pred: Array, on_true, on_false):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def make_client_update(local_step: LocalStep | Callable[[Array], LocalStep], *,
                       local_epochs: int, batch_size: int,
                       dropout_keys: bool = False) -> ClientUpdate:
    """Builds ``client_update(global_shared, private, data, key) -> ClientResult``.

    Args:
      local_step: the minibatch step (:func:`gradient_step` for a composed loss
        and an optax optimizer; methods such as PFedRec bring their own), or a
        function ``round_index -> LocalStep`` called inside the trace with the
        traced ``data.round_index`` (per-round optimizers such as FedRAP's
        learning-rate decay, without recompiling every round).
      local_epochs: epochs E over the client's examples.
      batch_size: minibatch size B; with ``N`` padded examples the client runs
        ``ceil(N / B)`` step slots per epoch, empty ones skipped.
      dropout_keys: pass a per-step key to the model (needed for dropout > 0).
    """

    def client_update(global_shared: Leaves, private: Leaves, data: ClientData,
                      key: Array) -> ClientResult:
        data = jax.tree.map(jnp.asarray, data)
        n = data.items.shape[0]
        width = min(batch_size, n)
        steps = -(-n // width)
        pad = steps * width - n
        context = Context(data.history, data.history_mask)
        params = ModelParams(private=private, shared=global_shared)
        step_fn = (local_step if isinstance(local_step, LocalStep)
                   else local_step(jnp.asarray(data.round_index)))
        opt_state = step_fn.init(params)

        def epoch(carry, epoch_index):
            params, opt_state = carry
            k_epoch = jax.random.fold_in(key, epoch_index)
            order = epoch_order(jax.random.fold_in(k_epoch, 0), data.mask)  # real first

            def batched(x):
                x = jnp.pad(x[order], (0, pad))
                return x.reshape(steps, width)

            items, labels, mask = batched(data.items), batched(data.labels), batched(data.mask)

            def step(carry, xs):
                params, opt_state = carry
                step_index, b_items, b_labels, b_mask = xs
                b_key = jax.random.fold_in(k_epoch, step_index + 1) if dropout_keys else None
                batch = Batch(b_items, b_labels, b_mask, context, b_key)
                new_params, new_opt_state, loss = step_fn.step(
                    params, opt_state, global_shared, batch)
                active = jnp.any(b_mask)
                carry = (_select(active, new_params, params),
                         _select(active, new_opt_state, opt_state))
                return carry, (jnp.where(active, loss, 0.0), active)

            return jax.lax.scan(step, (params, opt_state),
                                (jnp.arange(steps), items, labels, mask))

        (params, _), (losses, active) = jax.lax.scan(
            epoch, (params, opt_state), jnp.arange(local_epochs))
        num_steps = jnp.maximum(jnp.sum(active), 1)
        return ClientResult(shared=params.shared, private=params.private,
                            loss=jnp.sum(losses) / num_steps,
                            num_examples=jnp.sum(data.mask).astype(jnp.float32))

    return client_update
