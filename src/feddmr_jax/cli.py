"""Command line: ``feddmr data stats`` and ``feddmr train``.

Every user error (:class:`feddmr_jax.errors.FeddmrError`) is printed as one line
``feddmr: error: ...`` on stderr with exit code 2; ``--debug`` shows the traceback.

The engine (JAX, the models) is imported inside the command functions, not at
the top: ``feddmr --help`` and argument errors then answer without loading JAX.
No import here dodges a cycle.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Sequence

from feddmr_jax.errors import FeddmrError


class _Parser(argparse.ArgumentParser):
    """argparse without prefix abbreviations that reports usage errors as one
    line (with a "did you mean" for unknown flags) and exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message):  # noqa: D401 - argparse API
        raise _UsageError(message)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:       # the innermost (sub)parser reports them: it knows the flags
            raise _UsageError(_unknown_message(extras, self))
        return namespace, extras


def _unknown_message(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """``unrecognized argument --drop; did you mean --model-dropout or ...?``"""
    import difflib

    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    unknown = [x.split("=", 1)[0] for x in extras if x.startswith("-")] or extras[:1]
    stem = unknown[0].lstrip("-")
    near = ["--" + s for s in difflib.get_close_matches(stem, [f[2:] for f in flags], n=3,
                                                         cutoff=0.7)]
    near += [f for f in flags if len(stem) >= 3 and stem in f and f not in near]
    message = f"unrecognized argument{'s' * (len(unknown) > 1)} {' '.join(unknown)}"
    if near:
        message += f"; did you mean {' or '.join(near[:3])}?"
    return message + f" (see {parser.prog} --help)"


class _UsageError(Exception):
    pass


def _add_data_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="synthetic",
                   help="dataset name: ml-100k, ml-1m, lastfm-2k, amazon-video, csv, synthetic")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the dataset (default: $FEDDMR_DATA_DIR or the cache dir)")
    p.add_argument("--data-path", default=None,
                   help="file to read for amazon-video / csv datasets")


def _train_config(args: argparse.Namespace):
    """Config file (if any) with the given flags on top."""
    from feddmr_jax import cli_flags
    from feddmr_jax import config as config_lib

    raw = config_lib.read_config_file(args.config) if args.config else {}
    given = cli_flags.given_flags(args)
    overrides = cli_flags.overrides_of(given)
    file_train = raw.get("train", {}) if isinstance(raw.get("train", {}), dict) else {}
    cli_flags.check_flags_apply(given, overrides.get("train", {}).get("model")
                                or file_train.get("model") or config_lib.RunConfig().train.model)
    merged = {section: dict(values) for section, values in raw.items()}
    for section, values in overrides.items():
        if not isinstance(merged.get(section, {}), dict):
            raise FeddmrError(f"{args.config}: [{section}] must be a table")
        merged.setdefault(section, {}).update(values)
    source = ("command line" if not args.config
              else f"{args.config} (with the command line)" if given else str(args.config))
    cfg = config_lib.build_config(merged, source)
    cfg.validate()
    return cfg


def _run_train(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import time
    from pathlib import Path

    from feddmr_jax import cli_flags

    _check_distributed_args(args)
    finished = None
    if args.resume:
        given = [flag.flag for flag, _ in cli_flags.given_flags(args)]
        refused = [f for f in given if f != "--rounds"] + ["--config"] * bool(args.config) \
            + ["--out"] * bool(args.out) + ["--overwrite"] * args.overwrite
        if refused:
            raise FeddmrError("--resume continues with the run's saved config (only --rounds "
                              "may change, to extend it); drop " + ", ".join(refused))
        from feddmr_jax.checkpoint import run_dir_state
        from feddmr_jax.run_dir import finished_message, finished_summary, load_run_config

        out = Path(args.resume)
        if run_dir_state(out) != "has_run":
            raise FeddmrError(f"cannot resume: {out} holds no run")
        cfg = load_run_config(out)
        if "--rounds" in given:
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train,
                                                                     rounds=args.train__rounds))
            cfg.validate()
        finished = finished_summary(out, cfg)
    else:
        cfg = _train_config(args)      # config errors answer before JAX is loaded
        from feddmr_jax.checkpoint import run_dir_state

        out = Path(args.out or f"runs/{cfg.data.dataset}-{cfg.train.model}-"
                               f"{time.strftime('%Y%m%d-%H%M%S')}")
        if run_dir_state(out) == "has_run" and not args.overwrite:
            raise FeddmrError(f"output folder {out} holds another run; pass --resume "
                              f"{out} to continue it, --overwrite to replace it, or "
                              "choose another --out")
    primary = True
    if args.distributed:           # after the checks above, before any JAX computation
        from feddmr_jax import processes

        processes.start(args.coordinator, args.num_processes, args.process_id)
        primary = processes.is_primary()
    if finished is not None:       # nothing to train: every file is left as it is
        if primary:
            print(f"feddmr: {finished_message(out, finished)}", file=sys.stderr)
        return 0
    from feddmr_jax.train import Interrupted, train

    try:
        summary = train(cfg, out, progress=not args.quiet, resume=bool(args.resume),
                        overwrite=args.overwrite)
    except Interrupted as e:
        if primary:
            print(f"feddmr: {e}", file=sys.stderr)
        return 130
    if not primary:
        return 0
    keys = ("best_round", "val", "test", "epsilon", "delta", "round_seconds",
            "compile_seconds", "total_seconds")
    print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
    print(f"wrote {out / 'summary.json'} and {out / 'metrics.jsonl'}")
    return 0


def _check_distributed_args(args: argparse.Namespace) -> None:
    """The launch options: only with --distributed, and all three or none."""
    explicit = [name for name, value in (("--coordinator", args.coordinator),
                                         ("--num-processes", args.num_processes),
                                         ("--process-id", args.process_id)) if value is not None]
    if explicit and not args.distributed:
        raise FeddmrError(f"{' and '.join(explicit)}: add --distributed (launch options "
                          "of a multi-process run)")
    if explicit:
        from feddmr_jax.processes import check_launch      # imports JAX

        check_launch(args.coordinator, args.num_processes, args.process_id)


_TRAIN_EPILOG = """\
Every config flag shows its TOML key ([section.key]) and default. Defaults are
TrainConfig's; every --model other than feddmr starts from its method's
reference [train] values instead (feddmr_jax/methods/), listed after the
default as "model: value"; "unused" marks keys a model ignores (its learning
rates are [model] fields). [model] defaults are per model. Optional values
accept "none". --resume DIR --rounds N extends a run to N rounds.
"""


def build_parser() -> argparse.ArgumentParser:
    from feddmr_jax import cli_flags

    parser = _Parser(prog="feddmr", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", parser_class=_Parser)
    stats = data_sub.add_parser("stats", help="print dataset and split statistics")
    _add_data_source_args(stats)
    stats.add_argument("--split", default="loo", choices=("loo", "ratio"))
    stats.add_argument("--tie-break", default="row", choices=("row", "random"),
                       help="order among equal timestamps: file row or seeded random")
    stats.add_argument("--seed", type=int, default=0, help="seed of --tie-break random")
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.add_argument("--debug", action="store_true", help="show tracebacks")

    train = sub.add_parser("train", help="train a federated recommender and report metrics",
                           description="Flags override --config; no flags: a short job on "
                                       "the embedded synthetic dataset.",
                           epilog=_TRAIN_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = cli_flags.add_config_flags(train)
    run = groups["run"]
    run.add_argument("--config", help="TOML config file ([data], [model], [train])")
    run.add_argument("--out", help="output folder (default: runs/<dataset>-<model>-<time>)")
    run.add_argument("--overwrite", action="store_true",
                     help="replace the run in the output folder (its metrics, summary, "
                          "checkpoints)")
    run.add_argument("--resume", metavar="DIR",
                     help="continue the run in DIR from its newest checkpoint, with its saved "
                          "config; with --rounds N: extend it to N rounds")
    run.add_argument("--distributed", action="store_true",
                     help="one of several processes (jax.distributed): auto-detects SLURM, "
                          "MPI, TPU pods, or takes the three options below; process 0 writes "
                          "the run folder (docs/scaling.md: Many machines)")
    run.add_argument("--coordinator", metavar="HOST:PORT",
                     help="with --distributed: address of process 0's coordinator")
    run.add_argument("--num-processes", type=int, metavar="N",
                     help="with --distributed: number of processes")
    run.add_argument("--process-id", type=int, metavar="I",
                     help="with --distributed: this process's index, 0..N-1")
    run.add_argument("--quiet", action="store_true", help="no progress lines")
    run.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "data" and getattr(args, "data_command", None) == "stats":
        from feddmr_jax.data.stats import run_stats_command
        return run_stats_command(args)
    if args.command == "train":
        return _run_train(args)
    raise _UsageError("choose a command: 'feddmr data stats' or 'feddmr train' (see --help)")


@contextlib.contextmanager
def _plain_logging():
    """While the CLI runs: the package's warnings as plain ``feddmr: message`` lines
    on stderr (not ``WARNING:feddmr_jax.checkpoint:...``); restored afterwards."""
    import logging

    class _Stderr(logging.StreamHandler):
        """Writes to the current ``sys.stderr`` (tests replace it)."""

        stream = property(lambda self: sys.stderr, lambda self, value: None)

    logger = logging.getLogger("feddmr_jax")
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("feddmr: %(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        with _plain_logging():
            args = build_parser().parse_args(argv)
            return _dispatch(args)
    except _UsageError as e:
        print(f"feddmr: error: {e}", file=sys.stderr)
        return 2
    except FeddmrError as e:
        if debug:
            raise
        print(f"feddmr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
