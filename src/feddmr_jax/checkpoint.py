"""Checkpoints: save and restore a typed training state with orbax, verified.

Orbax lives behind this module only. A checkpoint step holds two items, the
state pytree (``ocp.args.StandardSave``) and a JSON ``meta`` dict
(``ocp.args.JsonSave``); ``meta`` also carries an integrity record, the SHA-256
of the state's leaves and their paths, dtypes and shapes, checked on restore.
``restore`` never silently starts over: a bad newest step is reported, moved
aside and the newest older valid step is used; no valid step raises
:class:`~feddmr_jax.errors.FeddmrError`.

Many processes (``jax.distributed``): every process calls ``save``, ``restore``
and ``close`` in the same order (orbax synchronises them); process 0 writes the
files and alone moves bad steps aside. The state's arrays must be replicated
(as the training state is) or host arrays; the folder must be one that every
process sees (a shared file system).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import warnings
from typing import Any, Literal, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_policies

from feddmr_jax.errors import ConfigError, FeddmrError
from feddmr_jax.processes import barrier, is_primary

CHECKPOINT_DIRNAME = "checkpoints"  # sub-folder of a run directory
RUN_ARTIFACTS = ("metrics.jsonl", "summary.json", CHECKPOINT_DIRNAME)
RunDirState = Literal["empty", "has_run"]

_INTEGRITY_KEY = "__checkpoint__"  # reserved key of the stored meta dict
# 2: the models became Flax modules (parameter names and nesting changed, e.g.
# dense["head"]["w"] -> dense["user_head"]["kernel"]); format-1 steps are refused.
_FORMAT = 2
_COMMIT_FILES = ("_CHECKPOINT_METADATA", "commit_success.txt")  # orbax, at finalize
# How a state is written: one zarr array per leaf in chunks of at most 64 MB, without
# orbax's OCDBT store. What a save adds to the resident memory, a 4 GB array (FedRAP's
# private store on Lastfm-2K; benchmarks/bench_checkpoint_memory.py): orbax's defaults
# (OCDBT, one chunk per leaf) 11.4 GB, OCDBT with 64 MB chunks 7.7 GB, this 4.3 GB. Steps
# saved with OCDBT (this module's earlier format) restore as before: orbax reads either.
_CHUNK_BYTES = 1 << 26
_USE_OCDBT = False

logger = logging.getLogger(__name__)


class _NoOcdbtMergeNotice(logging.Filter):
    """Drops orbax's warning that it found no OCDBT files to merge: it tries at every save,
    OCDBT or not (orbax 0.12), and this module saves without OCDBT on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Skipping merge of OCDBT checkpoints" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoOcdbtMergeNotice())


class _BadCheckpoint(Exception):
    """A step is incomplete or its data differs from what was saved."""


def _host_leaves(tree: Any) -> list[tuple[str, np.ndarray]]:
    """Returns ``(path, host array)`` for each leaf, rejecting typed PRNG keys."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    for path, leaf in flat:
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
            raise TypeError(f"state leaf {jax.tree_util.keystr(path)} has dtype {dtype}: store "
                            "jax.random.key_data(key) and re-wrap it after restore")
        if (isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
                and not leaf.is_fully_replicated):
            raise TypeError(f"state leaf {jax.tree_util.keystr(path)} is split over several "
                            "processes: only replicated state can be checkpointed")
    host = jax.device_get([leaf for _, leaf in flat])  # one batched transfer
    return [(jax.tree_util.keystr(path), np.asarray(arr)) for (path, _), arr in zip(flat, host)]


def _leaf_specs(tree: Any) -> list[list]:
    """Returns ``[path, dtype, shape]`` per leaf; works on arrays and ShapeDtypeStructs."""
    specs = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not hasattr(leaf, "dtype"):
            leaf = np.asarray(leaf)
        specs.append([jax.tree_util.keystr(path), str(np.dtype(leaf.dtype)), list(leaf.shape)])
    return specs


def _digest(leaves: list[tuple[str, np.ndarray]]) -> str:
    """Returns the SHA-256 hex digest over leaf paths, dtypes, shapes and raw bytes."""
    h = hashlib.sha256()
    for name, arr in leaves:
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}|{arr.dtype}|{arr.shape}\n".encode())
        h.update(arr.reshape(-1).view(np.uint8))
    return h.hexdigest()


def _describe_mismatch(saved: list[list], wanted: list[list]) -> str:
    """Returns a one-line account of how two leaf-spec lists differ."""
    saved_d, wanted_d = ({p: f"{d}{shape}" for p, d, shape in specs} for specs in (saved, wanted))
    if saved_d.keys() != wanted_d.keys():
        return (f"leaves only in checkpoint: {sorted(saved_d.keys() - wanted_d.keys())[:5]}, "
                f"only in template: {sorted(wanted_d.keys() - saved_d.keys())[:5]}")
    bad = [p for p in saved_d if saved_d[p] != wanted_d[p]] or ["(order)"]
    return f"leaf {bad[0]}: checkpoint {saved_d.get(bad[0])}, template {wanted_d.get(bad[0])}"


def _reason(err: BaseException) -> str:
    """Returns a one-line description of an exception."""
    if isinstance(err, _BadCheckpoint):
        return str(err)
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"


class Checkpointer:
    """Saves and restores ``(state, meta)`` checkpoints under one folder.

    A thin wrapper over a stateful ``ocp.CheckpointManager``; it holds no arrays.
    Saves are synchronous: a checkpoint is complete on disk when ``save`` returns.

    Args:
      directory: folder of the step sub-folders (usually ``<run dir>/checkpoints``).
      keep: how many of the newest steps to keep (older ones are deleted).
      every: save only steps that are multiples of ``every`` unless forced.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, every: int = 1):
        if keep < 1 or every < 1:
            raise ConfigError(f"checkpoint keep and every must be >= 1, got keep={keep}, every={every}")
        self._directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=ocp_policies.FixedIntervalPolicy(every),
            preservation_policy=ocp_policies.LatestN(keep),
            enable_async_checkpointing=False,
            cleanup_tmp_directories=True,  # leftovers of saves cut short by a crash
        )
        self._manager = ocp.CheckpointManager(
            self._directory, options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(use_ocdbt=_USE_OCDBT),
                           "meta": ocp.JsonCheckpointHandler()})

    def all_steps(self) -> list[int]:
        """Returns the finalized steps on disk, oldest first (not yet verified)."""
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """Returns the newest finalized step, or None; ``restore`` verifies it."""
        return max(self.all_steps(), default=None)

    def save(self, step: int, state: Any, meta: Mapping[str, Any], *, force: bool = False) -> bool:
        """Saves ``state`` and ``meta`` as ``step`` if ``step % every == 0`` or ``force``.

        Args:
          step: round number; must not be older than the newest saved step.
          state: pytree of jax/numpy arrays (NamedTuples, dicts, flax dataclasses).
          meta: JSON-serialisable dict (e.g. config, RNG seed, metrics so far).
          force: save even when ``step`` is not a multiple of ``every``.

        Returns:
          True if a checkpoint was written; False if skipped by ``every`` or
          ``step`` is already the newest saved step.
        """
        step = int(step)
        if _INTEGRITY_KEY in meta:
            raise ValueError(f"meta key {_INTEGRITY_KEY!r} is reserved")
        json.dumps(dict(meta))  # fail before writing anything
        latest = self._manager.latest_step()  # cached; this object is the only writer
        if latest is not None and step <= latest:
            if step == latest:
                return False
            raise FeddmrError(f"cannot save step {step}: {self._directory} already holds "
                              f"step {latest}; resume from it or use a new run folder")
        leaves = _host_leaves(state)
        host_state = jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(state), [arr for _, arr in leaves])
        record = {"format": _FORMAT, "sha256": _digest(leaves), "leaves": _leaf_specs(host_state)}
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(host_state, save_args=jax.tree.map(
                lambda _: ocp.SaveArgs(chunk_byte_size=_CHUNK_BYTES), host_state)),
            meta=ocp.args.JsonSave({**meta, _INTEGRITY_KEY: record}))
        saved = self._manager.save(step, args=args, force=force)
        self._manager.wait_until_finished()
        return bool(saved)

    def restore(self, template_state: Any, step: int | None = None) -> tuple[int, Any, dict]:
        """Restores ``step`` or else the newest valid step, verified bitwise.

        Args:
          template_state: pytree of arrays or ``jax.ShapeDtypeStruct`` with the
            saved structure, dtypes and shapes; jax leaves keep their sharding.
          step: step to restore; None means the newest valid one, falling back
            past bad steps with a warning (they are renamed ``<step>.corrupt``).

        Returns:
          ``(step, state, meta)`` with ``state`` shaped like ``template_state``.

        Raises:
          FeddmrError: no valid step (or ``step`` is missing or bad).
          ConfigError: the checkpoint was written for a different state layout.
        """
        steps = self.all_steps()
        if not steps:
            raise FeddmrError(f"no checkpoint in {self._directory}")
        if step is not None and step not in steps:
            raise FeddmrError(f"no checkpoint for step {step} in {self._directory} (have {steps})")
        wanted = _leaf_specs(template_state)
        failures: list[tuple[int, str]] = []
        for candidate in [step] if step is not None else steps[::-1]:
            try:
                state, meta = self._restore_step(candidate, template_state, wanted)
            except ConfigError:
                raise
            except Exception as err:  # orbax/tensorstore raise many types  # noqa: BLE001
                failures.append((candidate, _reason(err)))
                continue
            if failures:
                self._set_aside(failures, restored=candidate)
            return candidate, state, meta
        detail = "; ".join(f"step {s}: {why}" for s, why in failures)
        raise FeddmrError(f"no valid checkpoint in {self._directory} ({detail})")

    def _restore_step(self, step: int, template: Any, wanted: list[list]) -> tuple[Any, dict]:
        """Restores and verifies one step; raises _BadCheckpoint or orbax errors."""
        step_dir = os.path.join(self._directory, str(step))
        missing = [f for f in _COMMIT_FILES if not os.path.exists(os.path.join(step_dir, f))]
        if missing:
            raise _BadCheckpoint(f"missing {', '.join(missing)} (save did not finish)")
        meta = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        record = meta.pop(_INTEGRITY_KEY, None) if isinstance(meta, dict) else None
        if not isinstance(record, dict) or {"sha256", "leaves"} - record.keys():
            raise _BadCheckpoint("meta has no integrity record")
        if record.get("format") != _FORMAT:
            raise ConfigError(f"checkpoint step {step} in {self._directory} has format "
                              f"{record.get('format')}, this version reads format {_FORMAT} "
                              "(the model parameters changed); start a new run folder")
        if record["leaves"] != wanted:
            raise ConfigError(f"checkpoint step {step} in {self._directory} does not match the "
                              f"state template: {_describe_mismatch(record['leaves'], wanted)}")
        args = ocp.args.Composite(state=ocp.args.StandardRestore(template))
        state = self._manager.restore(step, args=args).state
        leaves = _host_leaves(state)
        if _leaf_specs(state) != wanted or _digest(leaves) != record["sha256"]:
            raise _BadCheckpoint("SHA-256 of the restored state differs from the one saved")
        return jax.tree.map(_to_device_if_abstract, template, state), meta

    def _set_aside(self, failures: list[tuple[int, str]], *, restored: int) -> None:
        """Warns about bad steps newer than ``restored`` and renames them aside
        (process 0 only; the others wait for it)."""
        barrier("feddmr: bad checkpoints found")     # every process has read them
        for bad_step, why in failures if is_primary() else ():
            src = os.path.join(self._directory, str(bad_step))
            dst, n = f"{src}.corrupt", 1
            while os.path.exists(dst):
                dst, n = f"{src}.corrupt{n}", n + 1
            try:
                os.rename(src, dst)
                moved = f"moved to {os.path.basename(dst)}"
            except OSError as err:
                moved = f"could not move it aside ({_reason(err)}); delete it before saving"
            warnings.warn(f"checkpoint step {bad_step} in {self._directory} is invalid ({why}); "
                          f"{moved}; restoring step {restored}", RuntimeWarning, stacklevel=3)
        barrier("feddmr: bad checkpoints set aside")
        self._manager.reload()

    def close(self) -> None:
        """Waits for pending work and releases orbax resources."""
        self._manager.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_device_if_abstract(template_leaf: Any, leaf: Any) -> Any:
    """Puts a restored host array on device when its template was a ShapeDtypeStruct."""
    if isinstance(template_leaf, jax.ShapeDtypeStruct):
        return jax.device_put(leaf, template_leaf.sharding)
    return leaf


class StopFlag:
    """Set by SIGINT/SIGTERM so a training loop can save and stop after its round.

    A SIGINT while a stop is already requested restores the previous handlers and
    raises ``KeyboardInterrupt``. Use as a context manager to restore handlers.
    """

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self._signal_name: str | None = None
        self._previous: dict[int, Any] = {}  # handlers to put back

    @property
    def requested(self) -> bool:
        """Whether a stop was requested."""
        return self._signal_name is not None

    @property
    def signal_name(self) -> str | None:
        """Name of the first signal received (e.g. ``"SIGTERM"``), or None."""
        return self._signal_name

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("install_stop_handler must be called from the main thread")
        for signum in self._SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous[signum] = signal.SIG_DFL if previous is None else previous

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        if self.requested and signum == signal.SIGINT:
            self.restore_handlers()
            raise KeyboardInterrupt
        if not self.requested:
            self._signal_name = signal.Signals(signum).name
            logger.warning("received %s: saving and stopping after the current round "
                           "(press Ctrl-C again to abort now)", self._signal_name)

    def restore_handlers(self) -> None:
        """Puts back the handlers that were active before installation (idempotent)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self) -> "StopFlag":
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore_handlers()


def install_stop_handler() -> StopFlag:
    """Installs SIGINT and SIGTERM handlers that set a stop flag.

    Returns:
      The :class:`StopFlag`; call ``restore_handlers()`` or use it in ``with``.
    """
    flag = StopFlag()
    flag._install()
    return flag


def run_dir_state(out_dir: str | os.PathLike) -> RunDirState:
    """Tells whether ``out_dir`` holds a previous run, so the CLI can refuse to overwrite it.

    Args:
      out_dir: a run output folder (may not exist).

    Returns:
      ``"has_run"`` if it contains any of ``RUN_ARTIFACTS``, else ``"empty"``
      (missing, empty, or holding only unrelated files).
    """
    path = os.fspath(out_dir)
    if not os.path.exists(path):
        return "empty"
    if not os.path.isdir(path):
        raise FeddmrError(f"output path {path} exists and is not a folder")
    if any(os.path.exists(os.path.join(path, name)) for name in RUN_ARTIFACTS):
        return "has_run"
    return "empty"
