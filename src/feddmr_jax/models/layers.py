"""Small Flax building blocks shared by the models: an MLP and the initializers.

The initializers keep the distributions of the models before the Flax port:
embeddings ``N(0, init_scale^2)``, Glorot-uniform weights and zero biases for
the networks, and torch's ``Linear`` default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
for the PFedRec/FedRAP score heads.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Initializer = Callable[..., Array]

glorot = nn.initializers.glorot_uniform()


def embedding_init(scale: float) -> Initializer:
    """``N(0, scale^2)`` for item tables and user embeddings."""
    return nn.initializers.normal(stddev=scale)


def torch_linear_init(fan_in: int) -> Initializer:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, torch ``nn.Linear``'s default (weight and bias)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key: Array, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)

    return init


class MLP(nn.Module):
    """ReLU MLP ``x -> Dense(features[0]) -> ReLU -> ... -> Dense(features[-1])``.

    Attributes:
      features: output width of each layer (layers are named ``dense_0``, ...).
      activate_final: also apply a ReLU after the last layer (NeuMF's tower).
      final_init: kernel initializer of the last layer (default Glorot; FedDMR's pre-norm
        layers pass zeros so that a residual branch starts as the identity).
    """

    features: tuple[int, ...]
    activate_final: bool = False
    final_init: Initializer | None = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """``x [..., d_in] -> [..., features[-1]]``."""
        for i, width in enumerate(self.features):
            last = i == len(self.features) - 1
            init = self.final_init if last and self.final_init is not None else glorot
            x = nn.Dense(width, kernel_init=init, name=f"dense_{i}")(x)
            if i < len(self.features) - 1 or self.activate_final:
                x = nn.relu(x)
        return x
