"""A run folder: its saved config, and the rules for overwriting, resuming and extending it."""

from __future__ import annotations

import json
from pathlib import Path

from feddmr_jax import config as config_lib
from feddmr_jax.checkpoint import RUN_ARTIFACTS, run_dir_state
from feddmr_jax.config import RunConfig


def truncate_metrics(path: Path, last_round: int) -> None:
    """Keeps the lines of rounds <= last_round (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["round"] <= last_round]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def load_run_config(out_dir: str | Path) -> RunConfig:
    """The config a run directory was started with (for ``--resume``)."""
    path = Path(out_dir) / "config.json"
    if not path.exists():
        raise config_lib.ConfigError(f"cannot resume: {path} not found (is {out_dir} a run folder?)")
    return config_lib.from_dict(json.loads(path.read_text()))


def clear_run(out_dir: str | Path) -> None:
    """Deletes a run's artifacts (metrics, summary, checkpoints, config) from ``out_dir``."""
    import shutil


    for name in (*RUN_ARTIFACTS, "config.json"):
        path = Path(out_dir) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _config_changes(saved: RunConfig, cfg: RunConfig) -> list[str]:
    """``section.key (saved X, given Y)`` for every value that differs, but train.rounds."""
    a, b = config_lib.to_dict(saved), config_lib.to_dict(cfg)
    out = []
    for section in a:
        for key in sorted(set(a[section]) | set(b.get(section, {}))):
            if (section, key) != ("train", "rounds") and \
                    a[section].get(key) != b.get(section, {}).get(key):
                out.append(f"{section}.{key} (saved {a[section].get(key)!r}, "
                           f"given {b.get(section, {}).get(key)!r})")
    return out


def prepare_out_dir(cfg: RunConfig, out: Path, *, resume: bool, overwrite: bool,
                    clear: bool = True) -> None:
    """Checks ``out`` before training: refuses to overwrite a run or to resume a changed one.

    Args:
      cfg: the config to train.
      out: the run folder.
      resume: continue the run in ``out`` (only ``train.rounds`` may differ from its config).
      overwrite: delete a previous run in ``out`` first.
      clear: whether this process deletes it (in a multi-process run only process 0
        does; the others check the same rules).

    Raises:
      ConfigError: ``out`` holds a run and neither flag is set; ``resume`` with
        no run, or with a config that differs in anything but ``train.rounds``.
    """

    has_run = run_dir_state(out) == "has_run"
    if resume and overwrite:
        raise config_lib.ConfigError("choose one of resume=True and overwrite=True")
    if resume:
        if not has_run:
            raise config_lib.ConfigError(f"cannot resume: {out} holds no run")
        changes = _config_changes(load_run_config(out), cfg)
        if changes:
            raise config_lib.ConfigError(
                f"cannot resume {out} with another config (only train.rounds may change): "
                + "; ".join(changes))
    elif has_run:
        if not overwrite:
            raise config_lib.ConfigError(
                f"output folder {out} holds another run; pass resume=True to continue it, "
                "overwrite=True to replace it, or choose another folder")
        if clear:
            clear_run(out)


def finished_summary(out_dir: str | Path, cfg: RunConfig) -> dict | None:
    """The summary of the run in ``out_dir`` when resuming it with ``cfg`` has nothing to train.

    The run is finished for ``cfg`` when its ``summary.json`` was written by its
    latest start (the summary's config is ``config.json``'s: an extension cut
    short by an interrupt is not finished), that config is ``cfg``, ``train.rounds``
    included, and the run did all its rounds or stopped early (``train.patience``).

    Args:
      out_dir: a run folder.
      cfg: the config to resume it with.

    Returns:
      The parsed ``summary.json``, or None (not finished, or no readable summary).
    """
    out = Path(out_dir)
    try:
        summary = json.loads((out / "summary.json").read_text())
        ran = config_lib.from_dict(summary["config"])
        saved = load_run_config(out)
    except (OSError, ValueError, KeyError, TypeError, config_lib.ConfigError):
        return None
    if ran != saved or ran != cfg:
        return None
    if summary.get("stopped_early") or summary.get("rounds_run") == cfg.train.rounds:
        return summary
    return None


def finished_message(out_dir: str | Path, summary: dict) -> str:
    """One line saying that the run in ``out_dir`` is finished and was left as it is."""
    rounds = summary.get("rounds_run")
    if summary.get("stopped_early"):
        how = (f"stopped early after {rounds} rounds, best round {summary.get('best_round')}; "
               "it cannot be extended")
    else:
        how = (f"{rounds} rounds; extend it with a larger train.rounds: --resume {out_dir} "
               "--rounds N")
    return (f"the run in {out_dir} is finished ({how}): nothing to train, its files are "
            "left as they are")
