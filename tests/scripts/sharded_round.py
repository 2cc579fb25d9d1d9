"""Runs tiny FedDMR rounds on a 'clients' mesh of every visible device and on one device.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=8``; prints one
JSON line: the device count, the devices a chunk was split over, the max
abs difference between the sharded and the single-device results (shared
params, private store, train losses, validation metrics), and the scales the
test's rounding bounds are relative to (Adam's reach over the rounds, the loss).
"""

from __future__ import annotations

import dataclasses
import json
import sys

import jax
import numpy as np

sys.path.insert(0, sys.argv[1])                    # tests/ (engine_helpers)
from engine_helpers import adam_reach, max_abs_diff, tiny_config  # noqa: E402

from feddmr_jax.federated.devices import client_mesh, shard_clients  # noqa: E402
from feddmr_jax.federated.rounds import plan_round  # noqa: E402
from feddmr_jax.timing import enable_compilation_cache  # noqa: E402
from feddmr_jax.train import build_experiment, evaluate_state, run_round  # noqa: E402

ROUNDS = 2


def run(devices: int):
    cfg = tiny_config(chunk_size=8)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, devices=devices))
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    start = jax.tree.map(np.array, state.shared)       # the engine donates its state
    losses = []
    for r in range(1, ROUNDS + 1):
        state, stats = run_round(exp, state, r)
        losses.append(stats.train_loss)
    val = evaluate_state(exp, state, exp.val_set)
    return exp, state, losses, val, max_abs_diff(state.shared, start)


def main() -> None:
    enable_compilation_cache()
    n = jax.device_count()
    exp, sharded, loss_s, val_s, _ = run(n)
    _, single, loss_1, val_1, moved = run(1)
    # Where a chunk lands on the mesh (the engine's own placement).
    chunk = plan_round(exp.planner, np.arange(exp.split.num_users), 1)[0]
    placed = shard_clients(chunk, client_mesh())
    print(json.dumps({
        "devices": n,
        "chunk_devices": len(placed.items.sharding.device_set),
        "chunk_clients": int(chunk.client_ids.shape[0]),
        "store_devices": len(jax.tree.leaves(sharded.private_store)[0].sharding.device_set),
        "shared_diff": max_abs_diff(sharded.shared, single.shared),
        "private_diff": max_abs_diff(sharded.private_store, single.private_store),
        "loss_diff": float(np.max(np.abs(np.subtract(loss_s, loss_1)))),
        "val_diff": max(abs(val_s[k] - val_1[k]) for k in val_1),
        "shared_norm": float(sum(np.sum(np.square(np.asarray(x)))
                                 for x in jax.tree.leaves(single.shared))),
        "moved": moved,
        "adam_reach": adam_reach(exp, ROUNDS),
        "loss_scale": float(np.max(np.abs(loss_1))),
    }))


if __name__ == "__main__":
    main()
