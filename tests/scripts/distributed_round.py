"""One tiny FedDMR round in ``num_processes`` JAX processes (jax.distributed on 127.0.0.1).

Usage: ``distributed_round.py TESTS_DIR OUT.npz PROCESS_ID NUM_PROCESSES PORT``.
Every process runs the same program (SPMD): the same planned chunks, split
over the devices of all processes; the round's aggregate is an all-reduce
across processes. Process 0 writes the new global shared params and round
statistics to OUT.npz. With NUM_PROCESSES = 1 no runtime is started (the
single-process reference).
"""

from __future__ import annotations

import sys

import jax
import numpy as np

tests_dir, out_path, pid, nproc, port = sys.argv[1:6]
pid, nproc = int(pid), int(nproc)
sys.path.insert(0, tests_dir)
if nproc > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}",
                               num_processes=nproc, process_id=pid,
                               initialization_timeout=120)

from engine_helpers import adam_reach, tiny_config  # noqa: E402

from feddmr_jax.timing import enable_compilation_cache  # noqa: E402
from feddmr_jax.train import build_experiment, evaluate_state, run_round  # noqa: E402


def main() -> None:
    enable_compilation_cache()
    exp = build_experiment(tiny_config(chunk_size=8))
    state = exp.algorithm.init(exp.keys["init"])
    before = [np.asarray(x) for x in jax.tree.leaves(state.shared)]
    state, stats = run_round(exp, state, 1)
    moved = max(float(np.max(np.abs(np.asarray(x) - b)))
                for x, b in zip(jax.tree.leaves(state.shared), before))
    val = evaluate_state(exp, state, exp.val_set)
    leaves = jax.tree_util.tree_flatten_with_path(state.shared)[0]
    arrays = {jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}
    if pid == 0:
        np.savez(out_path, processes=jax.process_count(), devices=jax.device_count(),
                 accepted=stats.accepted, train_loss=stats.train_loss, moved=moved,
                 adam_reach=adam_reach(exp, 1), val_hr=val['hr@10'], val_auc=val['auc'],
                 **arrays)
    if nproc > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
