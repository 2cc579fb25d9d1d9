"""Server optimizers: the round's aggregated update as a pseudo-gradient.

Reddi et al., "Adaptive Federated Optimization", ICLR 2021. Write ``x_t`` for
the global shared params before round ``t`` and ``Delta_t`` for the round's
aggregated update (the weighted mean of the client deltas; the noisy mean under
DP; the median or trimmed mean with a robust aggregator). The server applies

* ``sgd`` (FedAvg at ``eta = 1``): ``x_{t+1} = x_t + eta * Delta_t``
  (``optax.sgd(eta)`` on the pseudo-gradient ``-Delta_t``);
* ``momentum`` (FedAvgM, heavy ball; Hsu et al. 2019):
  ``m_t = beta * m_{t-1} + Delta_t``, ``x_{t+1} = x_t + eta * m_t``;
* ``adagrad``, ``yogi``, ``adam``: Reddi et al.'s Algorithm 2, line by line::

    m_t = beta_1 * m_{t-1} + (1 - beta_1) * Delta_t                        (all three)
    v_t = v_{t-1} + Delta_t^2                                             (FedAdagrad)
    v_t = v_{t-1} - (1 - beta_2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)  (FedYogi)
    v_t = beta_2 * v_{t-1} + (1 - beta_2) * Delta_t^2                     (FedAdam)
    x_{t+1} = x_t + eta * m_t / (sqrt(v_t) + tau)

  with ``m_{-1} = 0`` and ``v_{-1} = tau^2`` (the algorithm asks ``v_{-1} >=
  tau^2``), no bias correction, ``tau`` (``server_eps``) outside the square
  root. FedAdagrad has no ``beta_2``.

Every transformation here is an optax ``GradientTransformationExtraArgs``: it
receives the pseudo-gradient ``g = -Delta_t`` (optax's sign convention, as
:func:`feddmr_jax.federated.aggregation.server_update` passes it) and returns
the increment added to ``x_t``. ``eta`` may be an optax schedule of the number
of server steps taken, i.e. of the round: round ``r`` (1-based) reads
``eta(r - 1)`` (federated/schedules.py; a round that secure aggregation aborts
takes no step); the count is in the state, hence in checkpoints.

**Untouched rows are frozen.** An item row no accepted upload reached this
round has ``Delta_t = 0`` there, and an adaptive or momentum optimizer would
still move it through its stale moments (``eta * m_{t-1} * beta / ...``) and
decay those moments as if the item had been seen with a zero update. Instead,
the ``touched`` extra argument (:func:`touched_rows`) marks per leaf where
the round's update counts, and elsewhere neither the parameter nor its
optimizer state changes (the step count still advances: it is the round). A
row is touched when

* mean and clipped mean (plain or under secure aggregation): its row weight is
  positive (``Accumulator.row_weight``: an accepted upload used the row);
* row decay (a method whose local optimizer decays every row): every row, as
  every participant changes every row;
* median and trimmed mean: some accepted upload holds a value for the row
  (the buffer has a non-NaN entry; exactly where ``robust_delta`` is not the
  zero of "no value");
* DP: every row, as the noise reaches every row;

and the dense leaves are touched when at least one upload was accepted (under
DP always). ``sgd`` needs no mask: its step is ``eta * Delta_t``, which is 0 on
untouched rows in every case above, so ``sgd`` at ``eta = 1`` stays
bit-identical to FedAvg.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from feddmr_jax.federated.aggregation import Accumulator
from feddmr_jax.models.base import Leaves

Array = jax.Array
LearningRate = float | Callable[[Array], Array]

SERVER_OPTIMIZERS = ("sgd", "momentum", "adam", "yogi", "adagrad")


class ServerMomentumState(NamedTuple):
    """FedAvgM's state.

    Attributes:
      count: server steps taken (rounds done), int32 scalar.
      m: momentum buffer ``m_{t-1}``, shaped like the shared params.
    """

    count: Array
    m: Any


class ServerAdaptiveState(NamedTuple):
    """FedAdagrad's, FedYogi's and FedAdam's state.

    Attributes:
      count: server steps taken (rounds done), int32 scalar.
      m: first moment ``m_{t-1}``, shaped like the shared params.
      v: second moment ``v_{t-1}``, shaped like the shared params.
    """

    count: Array
    m: Any
    v: Any


def _rate(learning_rate: LearningRate, count: Array) -> Array | float:
    return learning_rate(count) if callable(learning_rate) else learning_rate


def _mask(touched: Any, like: Any) -> Any:
    """``touched``, or True everywhere when None."""
    if touched is None:
        return jax.tree.map(lambda _: jnp.ones((), bool), like)
    return touched


def _keep(touched: Any, new: Any, old: Any) -> Any:
    """``new`` where touched, ``old`` elsewhere."""
    return jax.tree.map(lambda k, n, o: jnp.where(k, n, o), touched, new, old)


def fedavgm(learning_rate: LearningRate, momentum: float
            ) -> optax.GradientTransformationExtraArgs:
    """FedAvgM: heavy-ball momentum on the mean delta (see module docstring).

    Args:
      learning_rate: server rate ``eta`` or a schedule of the step count.
      momentum: ``beta`` in ``[0, 1)``.

    Returns:
      The transformation; ``update(g, state, params=None, *, touched=None)``.
    """

    def init(params: Any) -> ServerMomentumState:
        return ServerMomentumState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(updates, state: ServerMomentumState, params=None, *, touched=None, **extra):
        del params, extra
        touched = _mask(touched, updates)
        eta = _rate(learning_rate, state.count)
        delta = jax.tree.map(jnp.negative, updates)                    # Delta_t = -g
        m = jax.tree.map(lambda m, d: momentum * m + d, state.m, delta)  # beta m_{t-1} + Delta_t
        step = jax.tree.map(lambda k, m: jnp.where(k, eta * m, 0.0), touched, m)  # eta m_t
        return step, ServerMomentumState(optax.safe_increment(state.count),
                                         _keep(touched, m, state.m))

    return optax.GradientTransformationExtraArgs(init, update)


def _adaptive(second_moment: Callable[[Array, Array], Array], learning_rate: LearningRate,
              b1: float, eps: float) -> optax.GradientTransformationExtraArgs:
    """Reddi et al.'s Algorithm 2 with the given ``v`` update (lines 12-14)."""

    def init(params: Any) -> ServerAdaptiveState:
        return ServerAdaptiveState(jnp.zeros([], jnp.int32),
                                   jax.tree.map(jnp.zeros_like, params),          # m_{-1} = 0
                                   jax.tree.map(lambda p: jnp.full_like(p, eps ** 2), params))

    def update(updates, state: ServerAdaptiveState, params=None, *, touched=None, **extra):
        del params, extra
        touched = _mask(touched, updates)
        eta = _rate(learning_rate, state.count)
        delta = jax.tree.map(jnp.negative, updates)                               # Delta_t = -g
        m = jax.tree.map(lambda m, d: b1 * m + (1 - b1) * d, state.m, delta)       # line 11
        v = jax.tree.map(second_moment, state.v, delta)                            # lines 12-14
        step = jax.tree.map(lambda k, m, v: jnp.where(k, eta * m / (jnp.sqrt(v) + eps), 0.0),
                            touched, m, v)                                         # line 15
        return step, ServerAdaptiveState(optax.safe_increment(state.count),
                                         _keep(touched, m, state.m), _keep(touched, v, state.v))

    return optax.GradientTransformationExtraArgs(init, update)


def fedadagrad(learning_rate: LearningRate, b1: float, eps: float
               ) -> optax.GradientTransformationExtraArgs:
    """FedAdagrad: ``v_t = v_{t-1} + Delta_t^2`` (see module docstring)."""
    return _adaptive(lambda v, d: v + d * d, learning_rate, b1, eps)


def fedyogi(learning_rate: LearningRate, b1: float, b2: float, eps: float
            ) -> optax.GradientTransformationExtraArgs:
    """FedYogi: ``v_t = v_{t-1} - (1 - b2) Delta_t^2 sign(v_{t-1} - Delta_t^2)``."""
    return _adaptive(lambda v, d: v - (1 - b2) * d * d * jnp.sign(v - d * d),
                     learning_rate, b1, eps)


def fedadam(learning_rate: LearningRate, b1: float, b2: float, eps: float
            ) -> optax.GradientTransformationExtraArgs:
    """FedAdam: ``v_t = b2 v_{t-1} + (1 - b2) Delta_t^2`` (no bias correction)."""
    return _adaptive(lambda v, d: b2 * v + (1 - b2) * d * d, learning_rate, b1, eps)


def build_server_optimizer(name: str, learning_rate: LearningRate, *, momentum: float = 0.9,
                           b1: float = 0.9, b2: float = 0.99, eps: float = 1e-3
                           ) -> optax.GradientTransformation:
    """The server optimizer ``name`` (``train.server_optimizer``).

    Args:
      name: one of :data:`SERVER_OPTIMIZERS`.
      learning_rate: ``eta`` (``train.server_lr``) or a schedule of the round
        (federated/schedules.py).
      momentum: FedAvgM's ``beta`` (``train.server_momentum``).
      b1, b2, eps: ``beta_1``, ``beta_2``, ``tau`` of the adaptive optimizers
        (``train.server_b1``, ``server_b2``, ``server_eps``).

    Returns:
      ``optax.sgd(learning_rate)`` for ``sgd`` (today's FedAvg path, same
      bits and state), else the transformation of this module.

    Raises:
      ValueError: an unknown name.
    """
    if name == "sgd":
        return optax.sgd(learning_rate)
    if name == "momentum":
        return fedavgm(learning_rate, momentum)
    if name == "adam":
        return fedadam(learning_rate, b1, b2, eps)
    if name == "yogi":
        return fedyogi(learning_rate, b1, b2, eps)
    if name == "adagrad":
        return fedadagrad(learning_rate, b1, eps)
    raise ValueError(f"unknown server optimizer {name!r}; choose from {SERVER_OPTIMIZERS}")


def touched_rows(acc: Accumulator, *, dp: bool, robust: bool) -> Leaves:
    """Where the round's update counts, per shared leaf (see module docstring).

    Args:
      acc: the round's sums (unmasked).
      dp: DP-FedAvg is on (noise on every coordinate: everything touched).
      robust: a median or trimmed-mean round (``acc.buffer`` holds the uploads).

    Returns:
      :class:`Leaves` of bool arrays: tables ``[num_items, 1]``, dense leaves
      scalars (broadcast against the params).
    """
    if dp:
        return jax.tree.map(lambda _: jnp.ones((), bool), acc.delta_sum)
    if robust:
        tables = {k: jnp.any(~jnp.isnan(b[..., :1]), axis=0) for k, b in acc.buffer.tables.items()}
        any_upload = acc.accepted > 0
    else:
        tables = {k: (w > 0)[:, None] for k, w in acc.row_weight.items()}
        any_upload = acc.weight > 0
    return Leaves(tables, jax.tree.map(lambda _: any_upload, acc.delta_sum.dense))
