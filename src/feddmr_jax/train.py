"""The training loop: sample, train, aggregate, evaluate, select on validation.

No maths lives here. :func:`build_experiment` (``experiment.py``, re-exported
here with :func:`run_round` and :func:`evaluate_state`) wires the pipeline
(dataset -> split -> evaluation sets -> model -> loss -> algorithm -> round
planner) and :func:`train` runs rounds, writes ``metrics.jsonl`` (one line per
round) and ``summary.json``, and returns the summary. Model selection uses the
validation split only; the test metrics reported are those of the best
validation round.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Mapping

import jax

from feddmr_jax import config as config_lib
from feddmr_jax.checkpoint import CHECKPOINT_DIRNAME, Checkpointer, install_stop_handler
from feddmr_jax.config import RunConfig
from feddmr_jax.errors import DivergedError
# The experiment's assembly and one round (experiment.py), re-exported: callers import them here.
from feddmr_jax.experiment import (Experiment, _mesh_devices, build_client_optimizer,  # noqa: F401
                                   build_experiment, build_local_step, build_loss,
                                   evaluate_state, local_eval_items, regularizers, run_round)
from feddmr_jax.federated.communication import RoundTraffic
from feddmr_jax.losses import LossTerm
from feddmr_jax.processes import any_process, barrier, is_primary
from feddmr_jax.progress import Progress
from feddmr_jax.rounds_to_target import curve_point, rounds_to_target
from feddmr_jax.run_dir import (clear_run, finished_message, finished_summary,  # noqa: F401
                                 load_run_config, prepare_out_dir, truncate_metrics)
from feddmr_jax.timing import CompileWatch, enable_compilation_cache

log = logging.getLogger(__name__)


def is_new_best(val: Mapping[str, float], best: Mapping[str, float] | None,
                metric: str) -> bool:
    """Whether a validation result replaces the best one so far.

    Ties go to the *later* round (``>=``), as in the PFedRec reference
    (``if hit_ratio >= best_val_hr``): with equal validation metrics the model
    trained longer is kept.

    Args:
      val: this evaluation's validation metrics.
      best: the best so far (None: nothing yet).
      metric: the selection metric (``train.select_metric``).
    """
    return best is None or val[metric] >= best[metric]


def _devices() -> list[str]:
    return [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, out_dir: Path, round_index: int, signal_name: str | None,
                 saved: bool = True):
        then = (f"checkpoint saved. Continue with: feddmr train --resume {out_dir}" if saved
                else "no checkpoint (train.keep_checkpoints = 0): the run cannot be resumed")
        super().__init__(f"stopped by {signal_name or 'a signal'} after round {round_index}; "
                         + then)
        self.round_index = round_index


@dataclasses.dataclass
class LoopState:
    """Host-side loop bookkeeping (saved in checkpoint meta as JSON)."""

    best_round: int | None = None
    best_val: dict | None = None
    best_test: dict | None = None
    evals_since_best: int = 0
    round_seconds: list = dataclasses.field(default_factory=list)
    stopped_early: bool = False
    rejected_streak: int = 0          # rounds in a row without an accepted upload
    upload_bytes: int = 0             # bytes uploaded by all clients so far
    download_bytes: int = 0           # bytes downloaded by all clients so far
    curve: list = dataclasses.field(default_factory=list)  # rounds_to_target.curve_point per eval

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def train(cfg: RunConfig, out_dir: str | Path | None = None, *,
          extra_terms: Mapping[str, LossTerm] | None = None,
          progress: bool = True, resume: bool = False, overwrite: bool = False,
          stop_after_round: int | None = None) -> dict[str, Any]:
    """Trains and evaluates; returns the summary (also written to ``out_dir``).

    JAX's persistent compilation cache is turned on first
    (:func:`feddmr_jax.timing.enable_compilation_cache`; ``FEDDMR_COMPILE_CACHE=off``
    disables it). A checkpoint is saved every ``train.checkpoint_every`` rounds
    and after the last round, so a finished run can be extended: resume it
    with a larger ``train.rounds`` (``train.keep_checkpoints = 0``: none is saved).

    Args:
      cfg: run configuration (e.g. :meth:`RunConfig.create`).
      out_dir: where ``config.json``, ``metrics.jsonl``, ``summary.json`` and
        ``checkpoints/`` go (None: nowhere, no checkpoints).
      extra_terms: additional loss terms ``{name: fn(params, global, batch)}``.
      progress: print progress lines on stderr.
      resume: continue the run in ``out_dir`` from its newest valid checkpoint;
        ``cfg`` must be its saved config (:func:`load_run_config`), except
        ``train.rounds``, which may grow to extend the run.
      overwrite: replace a run already in ``out_dir``.
      stop_after_round: stop (as if interrupted) after this round (for tests).

    In a multi-process run (:func:`feddmr_jax.processes.start` first) every
    process calls ``train`` with the same arguments; process 0 alone writes
    the files and progress lines, every process takes part in checkpoints,
    and a run resumes only with the process count that saved it.

    Returns:
      The summary: best validation round, its val and test metrics, timings,
      dataset size, and privacy figures of a DP run.

    Raises:
      ConfigError: ``out_dir`` holds a run and neither ``resume`` nor
        ``overwrite`` is set; a resumed run's config differs; nothing to resume.
      Interrupted: SIGINT/SIGTERM arrived; a checkpoint of the last finished
        round was saved first.
    """
    t0 = time.perf_counter()
    t = cfg.train
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise config_lib.ConfigError("resume=True needs the run folder (out_dir)")
    if out is not None:
        cfg.validate()
    if resume and (done := finished_summary(out, cfg)) is not None:
        log.warning(finished_message(out, done))      # nothing to train: files untouched
        return done
    if resume and not t.keep_checkpoints:
        raise config_lib.ConfigError(f"cannot resume {out}: train.keep_checkpoints = 0 saves "
                                     "no checkpoint")
    enable_compilation_cache()
    primary = is_primary()
    if out is not None:
        prepare_out_dir(cfg, out, resume=resume, overwrite=overwrite, clear=primary)
        barrier("feddmr: run folder checked")    # before process 0 writes into it
    watch = CompileWatch()
    bar = Progress(1, t.rounds, progress and primary)
    bar.note(f"building experiment: dataset {cfg.data.dataset}, model {t.model}, "
               f"{t.rounds} rounds...")
    exp = build_experiment(cfg, extra_terms=extra_terms)
    bar.note(f"built in {time.perf_counter() - t0:.1f}s ({exp.split.num_users} users, "
             f"{exp.split.num_items} items); compiling the initial state...")
    state = exp.algorithm.init(exp.keys["init"])
    loop = LoopState()
    first_round = 1
    ckpt = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if t.keep_checkpoints:
            ckpt = Checkpointer(out / CHECKPOINT_DIRNAME, keep=t.keep_checkpoints)
        if resume:
            step, state, meta = ckpt.restore(state)
            saved_by = meta.get("processes", 1)
            if saved_by != jax.process_count():
                raise config_lib.ConfigError(
                    f"cannot resume {out} with {jax.process_count()} process(es): its "
                    f"checkpoints were saved by {saved_by}; resume it with {saved_by}")
            loop = LoopState(**meta["loop"])
            if step > t.rounds:
                raise config_lib.ConfigError(f"cannot resume {out} with train.rounds = "
                                             f"{t.rounds}: it has run {step} rounds already")
            if loop.stopped_early and step < t.rounds:
                raise config_lib.ConfigError(
                    f"cannot extend {out}: it stopped early at round {step} (train.patience "
                    f"= {t.patience}, best round {loop.best_round})")
            first_round = bar.first = step + 1
            if primary:
                truncate_metrics(out / "metrics.jsonl", step)
            bar.note(f"resumed {out} from round {step}")
        elif primary:
            (out / "metrics.jsonl").write_text("")
        if primary:
            (out / "config.json").write_text(json.dumps(config_lib.to_dict(cfg), indent=2)
                                             + "\n")

    def save(r: int) -> None:         # every process: orbax coordinates, process 0 writes
        if ckpt is not None:
            ckpt.save(r, state, {"round": r, "loop": loop.to_json(), "seed": t.seed,
                                 "processes": jax.process_count()}, force=True)

    if first_round <= t.rounds:
        bar.note(f"initial state ready at {time.perf_counter() - t0:.1f}s; compiling the round "
                 "program (first round)...")
    last = first_round - 1
    try:
        with install_stop_handler() as stop:
            for r in range(first_round, t.rounds + 1):
                start, compiled = time.perf_counter(), watch.seconds
                traffic = RoundTraffic(exp.traffic)
                state, stats = run_round(exp, state, r, traffic)
                jax.block_until_ready(state.shared)
                seconds = time.perf_counter() - start
                loop.round_seconds.append(seconds)
                rejected = stats.accepted == 0      # nothing moved: not evaluated, never best
                loop.rejected_streak = loop.rejected_streak + 1 if rejected else 0
                if rejected and not stats.aborted:    # an abort has said why (algorithm.py)
                    log.warning("round %d: no upload accepted (%d non-finite, %d never reported); "
                                "the global model did not move", r, stats.dropped,
                                stats.unreported)
                record = {"round": r, "train_loss": None if rejected else stats.train_loss,
                          "accepted": stats.accepted, "aborted": stats.aborted,
                          "dropped_nonfinite": stats.dropped, "unreported": stats.unreported,
                          "seconds": seconds}
                if exp.privacy is not None and exp.privacy.epsilons is not None:
                    record["epsilon"] = exp.privacy.epsilons[r - 1]   # None: noise 0
                record.update(traffic.record())            # bytes (federated/communication.py)
                loop.upload_bytes += record["upload_bytes"]
                loop.download_bytes += record["download_bytes"]
                val = None
                if not rejected and (r % t.eval_every == 0 or r == t.rounds):
                    eval_start = time.perf_counter()
                    val = evaluate_state(exp, state, exp.val_set)
                    test = evaluate_state(exp, state, exp.test_set)
                    record.update(val=val, test=test,
                                  eval_seconds=time.perf_counter() - eval_start)
                    loop.curve.append(curve_point(r, val[t.select_metric], loop.upload_bytes,
                                                  loop.download_bytes))
                    if is_new_best(val, loop.best_val, t.select_metric):
                        loop.best_round, loop.best_val, loop.best_test = r, val, test
                        loop.evals_since_best = 0
                    else:
                        loop.evals_since_best += 1
                if out is not None and primary:
                    with open(out / "metrics.jsonl", "a") as f:
                        f.write(json.dumps(record) + "\n")
                bar.update(r, time.perf_counter() - start, watch.seconds - compiled,
                           stats.train_loss, val)
                last = r
                if t.patience is not None and loop.evals_since_best >= t.patience:
                    loop.stopped_early = True
                    log.info("early stop at round %d (best round %d)", r, loop.best_round)
                if t.max_rejected_rounds and loop.rejected_streak >= t.max_rejected_rounds:
                    save(r)
                    raise DivergedError(
                        f"no client upload was accepted in {loop.rejected_streak} rounds in a row "
                        f"(rounds {r - loop.rejected_streak + 1}-{r}; round {r}: {stats.dropped} "
                        f"non-finite, {stats.unreported} never reported"
                        + (", aborted by secure aggregation" if stats.aborted else "")
                        + f"): the run diverged or cannot aggregate; checkpoint of round {r} "
                        "saved (lower the learning rates, raise train.secure_agg_neighbors, "
                        "or raise train.max_rejected_rounds)")
                # A signal may reach some processes only: all stop together, or none.
                if any_process(stop.requested) or r == stop_after_round:
                    save(r)
                    raise Interrupted(out, r, stop.signal_name, saved=ckpt is not None)
                if loop.stopped_early:
                    break
                if t.checkpoint_every and r % t.checkpoint_every == 0:
                    save(r)
        save(last)                      # every run ends with a checkpoint: it can be extended
    finally:
        if ckpt is not None:
            ckpt.close()
    steady = loop.round_seconds[1:] or loop.round_seconds
    summary = {
        "config": config_lib.to_dict(cfg),
        "eval_mode": exp.eval_mode,
        "dataset": {"users": exp.split.num_users, "items": exp.split.num_items,
                    "train": len(exp.split.train), "val": len(exp.split.val),
                    "test": len(exp.split.test)},
        "best_round": loop.best_round,
        "val": loop.best_val,
        "test": loop.best_test,
        "rounds_run": len(loop.round_seconds),
        "stopped_early": loop.stopped_early,
        "round_seconds": statistics.median(steady),
        "first_round_seconds": loop.round_seconds[0],
        "compile_seconds": watch.seconds,
        "total_seconds": time.perf_counter() - t0,
        "devices": _devices(),
        "processes": jax.process_count(),
        "resumed": resume,
        "upload_bytes": loop.upload_bytes,       # every client, every round run
        "download_bytes": loop.download_bytes,
        "rounds_to_target": rounds_to_target(loop.curve, loop.best_round, t.select_metric),
    }
    if exp.privacy is not None:
        summary["privacy"] = exp.privacy.summary()
        if exp.privacy.epsilons is not None:
            summary["epsilon"] = exp.privacy.epsilons[len(loop.round_seconds) - 1]
            summary["delta"] = exp.privacy.delta
    if out is not None and primary:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
