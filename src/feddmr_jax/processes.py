"""Many JAX processes (one per host, or per GPU): start the runtime, agree, wait.

A multi-process run is SPMD: every process runs the same program on the same
host data (host planning is deterministic, see
:mod:`feddmr_jax.federated.devices`), and the ``clients`` mesh spans every
process's devices. These helpers are what the training loop needs on top:
start the runtime (:func:`start`), tell the process that writes files
(:func:`is_primary`), wait for all (:func:`barrier`) and agree on a host-side
decision such as "a stop signal arrived" (:func:`any_process`). With one
process they do nothing.
"""

from __future__ import annotations

import jax
import numpy as np

from feddmr_jax.errors import ConfigError, FeddmrError

__all__ = ["any_process", "barrier", "check_launch", "is_primary", "start"]


def check_launch(coordinator: str | None, num_processes: int | None,
                 process_id: int | None) -> None:
    """Checks an explicit launch: all three given, ``HOST:PORT``, ``0 <= id < N``.

    Args:
      coordinator: ``HOST:PORT`` of process 0's coordination service, or None.
      num_processes: processes in the run, or None.
      process_id: this process's index, or None.

    Raises:
      ConfigError: some but not all are given, or a value is out of range.
    """
    given = {"--coordinator": coordinator, "--num-processes": num_processes,
             "--process-id": process_id}
    missing = [name for name, value in given.items() if value is None]
    if not missing:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--coordinator must be HOST:PORT (e.g. 10.0.0.1:1234), "
                              f"got {coordinator!r}")
        if num_processes < 1:
            raise ConfigError(f"--num-processes must be >= 1, got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"--process-id must be in [0, {num_processes - 1}] "
                              f"(--num-processes {num_processes}), got {process_id}")
    elif len(missing) < len(given):
        raise ConfigError("--coordinator, --num-processes and --process-id go together: "
                          f"missing {' and '.join(missing)} (give none of them to "
                          "auto-detect the cluster)")


def start(coordinator: str | None = None, num_processes: int | None = None,
          process_id: int | None = None, *, timeout_s: int = 300) -> None:
    """Starts JAX's multi-process runtime; call before any JAX computation.

    Without arguments :func:`jax.distributed.initialize` detects the cluster
    (SLURM, Open MPI, TPU pods, Kubernetes...). CPU collectives go over gloo.

    Args:
      coordinator: ``HOST:PORT`` of process 0 (None: auto-detect).
      num_processes: processes in the run (None: auto-detect).
      process_id: this process's index (None: auto-detect).
      timeout_s: how long to wait for every process to connect.

    Raises:
      ConfigError: a bad combination of arguments (:func:`check_launch`).
      FeddmrError: the runtime could not start (no cluster detected, timeout).
    """
    check_launch(coordinator, num_processes, process_id)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator,
                                   num_processes=num_processes, process_id=process_id,
                                   initialization_timeout=timeout_s)
    except (RuntimeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise FeddmrError(f"--distributed: jax.distributed.initialize failed ({first}); "
                          "outside SLURM/MPI/TPU pods pass --coordinator HOST:PORT "
                          "--num-processes N --process-id I") from err


def is_primary() -> bool:
    """Whether this is process 0, the one that writes run files and progress lines."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process has reached ``barrier(name)`` (no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on at least one (one process: ``flag``)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray(flag, np.int32))))
