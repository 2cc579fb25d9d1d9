"""One run folder of an experiment script: train it, reuse it, resume it, or record its divergence.

:func:`run_one` is what ``compare.py``, ``feddmr_study.py`` and ``protocol_table.py`` call
for every run. A run folder ``<out>/runs/.../`` holds, besides train()'s ``config.json``,
``metrics.jsonl``, ``summary.json`` (finished) and ``checkpoints/`` (unfinished):

* ``data_fingerprint.json``: the content of the data the run read (:func:`data_fingerprint`),
  written before training, so a run is matched by what it read, not by the spelling of
  ``data.data_dir`` / ``data.data_path``;
* ``diverged.json``: a run that diverged (non-finite scores or loss, or the engine stopped
  it with an error): its config, the error and the message. A folder with one is an
  outcome like ``summary.json``: it is not trained again.

Which config differences matter: every field but :data:`PATH_FIELDS` (the data's
content is compared instead) and :data:`KEEPING_FIELDS` (checkpoints and the store's bound). A finished or checkpointed run whose config differs in a
field that matters is never deleted silently: :class:`ConfigChanged`, unless
``rerun_changed``. The one exception, asked for with ``extend``: a finished run whose config
differs only by a smaller ``train.rounds`` is extended (``feddmr_study.py --extend``; a run
keeps its last checkpoint for that with ``keep_checkpoint``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Any

from feddmr_jax import config as config_lib
from feddmr_jax.checkpoint import CHECKPOINT_DIRNAME
from feddmr_jax.data import load_dataset
from feddmr_jax.data.paths import resolve_data_dir
from feddmr_jax.errors import ConfigError, DataError, DivergedError
from feddmr_jax.train import train

from round_lines import RoundLines

PATH_FIELDS = (("data", "data_dir"), ("data", "data_path"))   # where the data lies, not what
# How a run is kept, not what it computes (resumed runs equal uninterrupted ones, bitwise):
# e.g. FedRAP on Amazon-Video needs --set train.keep_checkpoints=0 train.max_private_gb=12,
# and the study's other methods' finished runs stay the same runs.
KEEPING_FIELDS = (("train", "checkpoint_every"), ("train", "keep_checkpoints"),
                  ("train", "max_private_gb"))
FINGERPRINT_FILE = "data_fingerprint.json"
DIVERGED_FILE = "diverged.json"


class RunDiverged(Exception):
    """The run diverged (now, or in an earlier invocation: its ``diverged.json``)."""

    def __init__(self, run_dir: Path, message: str):
        super().__init__(f"{run_dir}: diverged: {message}")
        self.run_dir, self.message = run_dir, message


class ConfigChanged(ConfigError):
    """A finished or checkpointed run was made with a config that differs where it matters."""


def is_divergence(err: BaseException) -> bool:
    """Whether an error raised by ``train()`` means the run diverged.

    Diverged: :class:`DivergedError` (evaluation's non-finite scores, or the engine's stop
    after ``train.max_rejected_rounds`` rounds without an accepted upload) and
    ``FloatingPointError`` (``jax_debug_nans``). Anything else (config and data errors, JAX
    runtime errors such as out of memory, a bug) says nothing about the model: it is raised.
    """
    return isinstance(err, (DivergedError, FloatingPointError))


def config_json(cfg: config_lib.RunConfig) -> dict[str, dict[str, Any]]:
    """``cfg`` as summary.json and config.json hold it (JSON types)."""
    return json.loads(json.dumps(config_lib.to_dict(cfg)))


def config_changes(saved: dict, wanted: dict) -> list[str]:
    """``section.key (saved X, given Y)`` for every field that differs, but
    :data:`PATH_FIELDS` and :data:`KEEPING_FIELDS`."""
    out = []
    for section in sorted(set(saved) | set(wanted)):
        a, b = saved.get(section, {}), wanted.get(section, {})
        for key in sorted(set(a) | set(b)):
            if ((section, key) not in PATH_FIELDS + KEEPING_FIELDS
                    and a.get(key) != b.get(key)):
                out.append(f"{section}.{key} (saved {a.get(key)!r}, given {b.get(key)!r})")
    return out


def _path_fields(config: dict) -> list:
    return [config.get(section, {}).get(key) for section, key in PATH_FIELDS]


@functools.lru_cache(maxsize=16)
def _content_fingerprint(dataset: str, data_dir: str | None, data_path: str | None,
                         where: tuple) -> dict:
    del where                                  # part of the cache key only
    inter = load_dataset(dataset, data_dir, path=data_path)
    digest = hashlib.sha256()
    for column in ("user", "item", "timestamp", "rating"):
        digest.update(inter.table[column].to_numpy().tobytes())
    for ids in (inter.user_ids, inter.item_ids):
        digest.update("\n".join(map(str, ids)).encode())
    return {"dataset": dataset, "rows": len(inter.table), "users": inter.num_users,
            "items": inter.num_items, "sha256": digest.hexdigest()}


def data_fingerprint(cfg: config_lib.RunConfig) -> dict | None:
    """The content of the interactions ``cfg`` reads: sizes and a SHA-256 of the parsed table.

    None for the synthetic dataset (its config fields fix its content). Computed once per
    process and data location (the location resolved as train() resolves it; a
    ``data.data_path`` file also by its size and modification time).

    Raises:
      DataError: the data cannot be read.
    """
    d = cfg.data
    if d.dataset == "synthetic":
        return None
    if d.data_path:
        path = Path(d.data_path).expanduser().resolve()
        stat = path.stat() if path.is_file() else None
        where = (str(path), *((stat.st_size, stat.st_mtime_ns) if stat else ()))
    else:                                      # $FEDDMR_DATA_DIR read now, as train() does
        where = (str(resolve_data_dir(d.data_dir)[0].resolve()),)
    return _content_fingerprint(d.dataset, d.data_dir, d.data_path, where)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def data_changes(run_dir: Path, saved: dict, cfg: config_lib.RunConfig) -> list[str]:
    """Whether the data ``cfg`` reads differs from the data the run in ``run_dir`` read.

    The run's recorded fingerprint is compared with the data now; a run from before
    fingerprints were recorded is compared by its saved paths (same paths: same data;
    other paths: both read now, a warning when the saved ones are gone).
    """
    if cfg.data.dataset == "synthetic":
        return []
    recorded = _read_json(run_dir / FINGERPRINT_FILE)
    if recorded is None:
        if _path_fields(saved) == _path_fields(config_json(cfg)):
            return []
        try:
            recorded = data_fingerprint(config_lib.from_dict(saved))
        except (DataError, ConfigError) as e:
            print(f"  {run_dir}: no data fingerprint recorded and its saved data path cannot "
                  f"be read ({e}); reused as is", file=sys.stderr)
            return []
    now = data_fingerprint(cfg)
    if recorded == now:
        return []
    return [f"data content (saved {recorded}, now {now})"]


def summary_problem(summary: dict, run_dir: Path) -> str | None:
    """Why a finished run counts as diverged (non-finite validation or last train loss)."""
    val = summary.get("val") or {}
    if not val or any(isinstance(v, float) and not math.isfinite(v) for v in val.values()):
        return f"non-finite or missing validation metrics {val}"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    last = json.loads(lines[-1]) if lines else {}
    if isinstance(last.get("train_loss"), float) and not math.isfinite(last["train_loss"]):
        return f"train loss {last['train_loss']} at round {last['round']}"
    return None


def record_divergence(run_dir: Path, wanted: dict, err: str, message: str) -> RunDiverged:
    """Writes ``diverged.json`` (checkpoints and summary removed); returns the error to raise."""
    metrics = run_dir / "metrics.jsonl"
    lines = [x for x in metrics.read_text().splitlines() if x.strip()] if metrics.is_file() else []
    last = json.loads(lines[-1])["round"] if lines else 0
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run_dir / CHECKPOINT_DIRNAME, ignore_errors=True)
    (run_dir / "summary.json").unlink(missing_ok=True)
    record = {"config": wanted, "error": err, "message": message, "last_round": last}
    (run_dir / DIVERGED_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return RunDiverged(run_dir, message)


def _changed(run_dir: Path, what: str, changes: list[str]) -> ConfigChanged:
    return ConfigChanged(
        f"{run_dir}: {what} run was made with another config: {'; '.join(changes)}. Pass "
        "--rerun-changed to delete it and train again, or choose another --out")


def rounds_grew(saved: dict, wanted: dict) -> bool:
    """Whether ``wanted`` is ``saved`` with a larger ``train.rounds`` and nothing else changed
    (where it matters): the run can be extended."""
    same = lambda c: {**c, "train": {k: v for k, v in c.get("train", {}).items()  # noqa: E731
                                     if k != "rounds"}}
    return (saved.get("train", {}).get("rounds", 0) < wanted["train"]["rounds"]
            and not config_changes(same(saved), same(wanted)))


def run_one(cfg: config_lib.RunConfig, run_dir: Path, *, name: str | None = None,
            rerun_changed: bool = False, keep_checkpoint: bool = False,
            extend: bool = False) -> dict[str, Any]:
    """Trains one run, or reuses / resumes / extends it; returns its summary.

    Args:
      cfg: the run's config.
      run_dir: its folder.
      name: what its progress lines on stderr say (default: the folder).
      rerun_changed: delete a finished or checkpointed run whose config changed where it
        matters, and train again (without: :class:`ConfigChanged`).
      keep_checkpoint: keep a finished run's last checkpoint (so it can be extended);
        without, it is deleted once the run is complete.
      extend: a finished run whose config differs only by a smaller ``train.rounds`` is
        extended to ``cfg``'s rounds: resumed from its last checkpoint (``train(resume=True)``
        with the larger rounds), or trained again from round 1 when it kept none (a round's
        result never depends on the run's total rounds, so both give the same rounds). A
        diverged run stays diverged.

    Raises:
      RunDiverged: the run diverged, now or in an earlier invocation (not trained again).
      ConfigChanged: see ``rerun_changed``.
    """
    run_dir = Path(run_dir)
    wanted = config_json(cfg)
    grow = False
    for outcome in (DIVERGED_FILE, "summary.json"):
        record = _read_json(run_dir / outcome)
        if record is None:
            continue
        changes = config_changes(record["config"], wanted)
        changes = changes or data_changes(run_dir, record["config"], cfg)
        if extend and rounds_grew(record["config"], wanted) \
                and not data_changes(run_dir, record["config"], cfg):
            if outcome == DIVERGED_FILE:
                raise RunDiverged(run_dir, record["message"])
            grow = True
            break
        if not changes:
            if outcome == DIVERGED_FILE:
                raise RunDiverged(run_dir, record["message"])
            return record
        if not rerun_changed:
            raise _changed(run_dir, "a finished", changes)
        print(f"  {run_dir}: config changed ({'; '.join(changes)}): training it again",
              file=sys.stderr)
        shutil.rmtree(run_dir)
    saved, ckpt = _read_json(run_dir / "config.json"), run_dir / CHECKPOINT_DIRNAME
    trained = ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir())
    resume = False
    if saved is not None and trained:
        changes = config_changes(saved, wanted) or data_changes(run_dir, saved, cfg)
        if extend and rounds_grew(saved, wanted):
            changes = []                        # an extension (or an interrupted one)
        if changes and not rerun_changed:
            raise _changed(run_dir, "an unfinished (checkpointed)", changes)
        resume = not changes
        if resume:                              # its own path spelling, the wanted rounds
            saved["train"]["rounds"] = wanted["train"]["rounds"]
            cfg = config_lib.from_dict(saved)
    elif grow:
        print(f"  {run_dir}: no checkpoint kept: trained again from round 1 to "
              f"{cfg.train.rounds} rounds", file=sys.stderr)
    if run_dir.exists() and not resume:
        shutil.rmtree(run_dir)                 # nothing trained, --rerun-changed, or regrown
    fingerprint = None if resume else data_fingerprint(cfg)
    if fingerprint is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=2) + "\n")
    try:
        with RoundLines(name or str(run_dir), run_dir / "metrics.jsonl", cfg.train.rounds):
            summary = train(cfg, run_dir, progress=False, resume=resume)
    except Exception as e:                     # noqa: BLE001  (sorted by is_divergence)
        if not is_divergence(e):
            raise
        raise record_divergence(run_dir, wanted, type(e).__name__, str(e)) from e
    problem = summary_problem(summary, run_dir)
    if problem is not None:
        raise record_divergence(run_dir, wanted, "non-finite", problem)
    if not keep_checkpoint:
        shutil.rmtree(ckpt, ignore_errors=True)       # complete: keep only the results
    return summary
