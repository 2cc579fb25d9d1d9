"""Devices: the client axis of every chunk sharded over all devices.

One 1-D mesh with axis ``"clients"`` spans every device JAX sees: the local
ones, or, after :func:`jax.distributed.initialize`, those of every process
(the JAX runtime does the transport; there is no home-made one). Per chunk:

- the chunk's arrays (client axis 0) are split over the mesh,
  ``NamedSharding(mesh, P("clients"))``: each device trains its slice of the
  chunk's clients;
- the global shared params, the round's accumulator and the private store are
  replicated, ``NamedSharding(mesh, P())``: the scatter-add of the clients'
  deltas into the accumulator becomes a local partial sum plus an all-reduce,
  inserted by the compiler (GSPMD), and the private store write-back an
  all-gather.

Chunks hold a multiple of the device count of clients (the round planner pads
them, see :func:`feddmr_jax.federated.rounds.build_planner`). With one device
nothing is placed and the engine runs as before. In a multi-process run every
process builds the same chunks from the same seeds (host planning is
deterministic), so each one can hand its local slice to
:func:`jax.make_array_from_callback`.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["CLIENT_AXIS", "Mesh", "client_mesh", "mesh_size", "replicate", "shard_clients"]

CLIENT_AXIS = "clients"


def client_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh | None:
    """The 1-D ``clients`` mesh over ``devices`` (default: all), or None for one device."""
    devices = list(jax.devices() if devices is None else devices)
    if len(devices) <= 1:
        return None
    return Mesh(np.asarray(devices), (CLIENT_AXIS,))


def mesh_size(mesh: Mesh | None) -> int:
    """Devices in the mesh (1 without one): chunk sizes are a multiple of this."""
    return 1 if mesh is None else mesh.size


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def client_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(CLIENT_AXIS))


def _place(x: Any, sharding: NamedSharding) -> jax.Array:
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        # Already global (a previous jitted step's output): let jit reshard.
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Every leaf of ``tree`` replicated on the mesh (unchanged without a mesh)."""
    if mesh is None:
        return tree
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: _place(x, sharding), tree)


def shard_clients(tree: Any, mesh: Mesh | None) -> Any:
    """Every leaf split along axis 0 (the client axis) over the mesh."""
    if mesh is None:
        return tree
    sharding = client_sharded(mesh)

    def place(x):
        if np.shape(x)[0] % mesh.size:
            raise ValueError(f"chunk of {np.shape(x)[0]} clients does not split over "
                             f"{mesh.size} devices (plan chunks with devices={mesh.size})")
        return _place(x, sharding)

    return jax.tree.map(place, tree)
