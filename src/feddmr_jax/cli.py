"""Command line: ``feddmr data stats`` and ``feddmr train``.

Every user error (:class:`feddmr_jax.errors.FeddmrError`) is printed as one line
``feddmr: error: ...`` on stderr with exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from feddmr_jax.errors import FeddmrError


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message):  # noqa: D401 - argparse API
        raise _UsageError(message)


class _UsageError(Exception):
    pass


def _add_data_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="synthetic",
                   help="dataset name: ml-100k, ml-1m, lastfm-2k, amazon-video, csv, synthetic")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the dataset (default: $FEDDMR_DATA_DIR or the cache dir)")
    p.add_argument("--data-path", default=None,
                   help="file to read for amazon-video / csv datasets")


# flag -> (config section, key, type, help); defaults live in feddmr_jax.config.
_TRAIN_FLAGS = {
    "--dataset": ("data", "dataset", str, "ml-100k, ml-1m, lastfm-2k, amazon-video, csv, synthetic"),
    "--data-dir": ("data", "data_dir", str, "folder with the dataset files"),
    "--data-path": ("data", "data_path", str, "file for amazon-video / csv"),
    "--split": ("data", "split", str, "loo or ratio"),
    "--tie-break": ("data", "tie_break", str,
                    "order among equal timestamps: row (file order) or random (seeded)"),
    "--train-negatives": ("data", "train_negatives", str,
                          "strict (avoid training positives) or reference (also val/test; leaky)"),
    "--eval-mode": ("train", "eval_mode", str,
                    "default (the method's), global or local (docs/protocol.md)"),
    "--model": ("train", "model", str,
                "feddmr, fedmf, fedncf, pfedrec or fedrap (its reference [train] values "
                "are the defaults: see feddmr_jax/methods.py)"),
    "--rounds": ("train", "rounds", int, "communication rounds"),
    "--local-epochs": ("train", "local_epochs", int, "local epochs per round"),
    "--batch-size": ("train", "batch_size", int, "local minibatch size"),
    "--num-negatives": ("train", "num_negatives", int, "training negatives per positive"),
    "--clients-per-round": ("train", "clients_per_round", int, "participants per round"),
    "--client-fraction": ("train", "client_fraction", float, "fraction of clients per round"),
    "--optimizer": ("train", "optimizer", str, "client optimizer: adam or sgd"),
    "--lr": ("train", "lr", float, "client learning rate"),
    "--embedding-lr": ("train", "embedding_lr", float,
                       "learning rate of embeddings (default: --lr)"),
    "--mu": ("train", "mu", float, "proximal coefficient (0 = FedAvg)"),
    "--l2": ("train", "l2", float, "weight decay"),
    "--weighting": ("train", "weighting", str, "uniform or examples"),
    "--table-mean": ("train", "table_mean", str, "touched or participants"),
    "--server-lr": ("train", "server_lr", float, "server learning rate (1 = FedAvg)"),
    "--aggregator": ("train", "aggregator", str, "mean, clipped_mean, median, trimmed_mean"),
    "--clip-norm": ("train", "clip_norm", float, "clipped_mean: L2 bound of each upload"),
    "--trim-fraction": ("train", "trim_fraction", float, "trimmed_mean: fraction per end"),
    "--chunk-size": ("train", "chunk_size", int, "clients per chunk (bounds memory)"),
    "--devices": ("train", "devices", int, "devices the clients are split over (default: all)"),
    "--dense": ("train", "sparse", bool, "train on full item tables (reference mode)"),
    "--eval-every": ("train", "eval_every", int, "evaluate every k rounds"),
    "--patience": ("train", "patience", int, "early stopping patience (evaluations)"),
    "--seed": ("train", "seed", int, "master seed"),
    "--checkpoint-every": ("train", "checkpoint_every", int, "save a checkpoint every k rounds"),
    "--keep-checkpoints": ("train", "keep_checkpoints", int, "newest checkpoints to keep"),
    "--dim": ("model", "dim", int, "embedding size"),
    "--heads": ("model", "heads", int, "attention heads"),
    "--layers": ("model", "layers", int, "attention layers"),
    "--history-len": ("model", "history_len", int, "memory size (0 = none)"),
    "--ffn-dim": ("model", "ffn_dim", int, "feed-forward width"),
    "--model-dropout": ("model", "dropout", float, "dropout rate inside the model"),
    "--fault-nan": ("train", "fault_nan", float, "fraction of sampled clients uploading NaN"),
    "--fault-scale": ("train", "fault_scale", float,
                      "fraction of sampled clients uploading a scaled update"),
    "--fault-factor": ("train", "fault_factor", float,
                       "scale of those updates (default 100; -1 flips the sign)"),
    "--dropout": ("train", "client_dropout", float,
                  "fraction of sampled clients that never report"),
    "--no-attention": ("model", "attention", bool, "ablation: no attention layers"),
    "--init-scale": ("model", "init_scale", float, "std of the embedding initializers"),
    "--lr-eta": ("model", "lr_eta", float, "pfedrec: item lr = lr * items * lr_eta"),
    "--lam": ("model", "lam", float, "fedrap: weight of the personality-commonality distance"),
    "--dp-clip": ("train", "dp_clip", float,
                  "user-level DP-FedAvg: L2 clip norm of each client's whole update"),
    "--dp-noise": ("train", "dp_noise", float,
                   "DP noise multiplier z (noise std z * clip on the sum of updates)"),
    "--dp-delta": ("train", "dp_delta", float,
                   "DP delta (default 1 / (10 * users); must be < 1 / users)"),
    "--dp-accountant": ("train", "dp_accountant", str, "privacy accountant: rdp or pld"),
    "--secure-agg": ("train", "secure_agg", bool,
                     "simulated secure aggregation (pairwise-masked dense uploads)"),
    "--secure-agg-neighbors": ("train", "secure_agg_neighbors", int,
                               "mask partners per client (even; 0 = all participants)"),
    "--secure-agg-bits": ("train", "secure_agg_bits", int,
                          "fixed-point fractional bits of masked uploads (default 20)"),
}


def _train_config(args: argparse.Namespace):
    """Config file (if any) with the given flags on top."""
    from feddmr_jax import config as config_lib

    raw = config_lib.read_config_file(args.config) if args.config else {}
    overrides: dict[str, dict] = {}
    given = []
    for flag, (section, key, typ, _) in _TRAIN_FLAGS.items():
        value = getattr(args, f"{section}__{key}")
        if value is None:
            continue
        if flag == "--dense" or flag == "--no-attention":
            value = False
        overrides.setdefault(section, {})[key] = value
        given.append(flag)
    file_train = raw.get("train", {}) if isinstance(raw.get("train", {}), dict) else {}
    _check_flags_apply(given, overrides.get("train", {}).get("model")
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


def _check_flags_apply(flags: list[str], model: object) -> None:
    """Model-specific flags, and [train] flags the model ignores, are errors."""
    import dataclasses

    from feddmr_jax.methods import get_method

    if not isinstance(model, str):
        return                                 # reported by the config builder
    method = get_method(model)
    keys = [f.name for f in dataclasses.fields(method.config)]
    for flag in flags:
        section, key = _TRAIN_FLAGS[flag][:2]
        if section == "model" and key not in keys:
            raise FeddmrError(f"{flag} does not apply to --model {model} "
                              f"(its [model] keys: {', '.join(keys)})")
        if section == "train" and key in method.unused_train:
            raise FeddmrError(f"{flag} does not apply to --model {model}: its learning "
                              f"rates are [model] fields ({', '.join(keys)})")


def _clear_run(out) -> None:
    import shutil

    from feddmr_jax.checkpoint import RUN_ARTIFACTS

    for name in (*RUN_ARTIFACTS, "config.json"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _run_train(args: argparse.Namespace) -> int:
    import json
    import time
    from pathlib import Path

    from feddmr_jax.checkpoint import run_dir_state
    from feddmr_jax.timing import enable_compilation_cache
    from feddmr_jax.train import Interrupted, load_run_config, train

    if args.resume:
        given = [flag for flag, (section, key, _, _) in _TRAIN_FLAGS.items()
                 if getattr(args, f"{section}__{key}") is not None]
        if args.config or args.out or given:
            raise FeddmrError("--resume continues with the run's saved config; drop "
                              + ", ".join(given + ["--config"] * bool(args.config)
                                          + ["--out"] * bool(args.out)))
        out = Path(args.resume)
        if run_dir_state(out) != "has_run":
            raise FeddmrError(f"cannot resume: {out} holds no run")
        cfg = load_run_config(out)
    else:
        cfg = _train_config(args)
        out = Path(args.out or f"runs/{cfg.data.dataset}-{cfg.train.model}-"
                               f"{time.strftime('%Y%m%d-%H%M%S')}")
        if run_dir_state(out) == "has_run":
            if not args.overwrite:
                raise FeddmrError(f"output folder {out} holds another run; pass --resume "
                                  f"{out} to continue it, --overwrite to replace it, or "
                                  "choose another --out")
            _clear_run(out)
    enable_compilation_cache()
    try:
        summary = train(cfg, out, progress=not args.quiet, resume=bool(args.resume))
    except Interrupted as e:
        print(f"feddmr: {e}", file=sys.stderr)
        return 130
    short = {k: summary[k] for k in ("best_round", "val", "test", "round_seconds",
                                     "compile_seconds", "total_seconds")}
    print(json.dumps(short, indent=2))
    print(f"wrote {out / 'summary.json'} and {out / 'metrics.jsonl'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
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
                                       "the embedded synthetic dataset.")
    train.add_argument("--config", help="TOML config file ([data], [model], [train])")
    train.add_argument("--out", help="output folder (default: runs/<dataset>-<model>-<time>)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the run in the output folder (its metrics, summary, "
                            "checkpoints)")
    train.add_argument("--resume", metavar="DIR",
                       help="continue the run in DIR from its newest valid checkpoint, "
                            "with its saved config")
    train.add_argument("--quiet", action="store_true", help="no progress line")
    train.add_argument("--debug", action="store_true", help="show tracebacks")
    for flag, (section, key, typ, help_) in _TRAIN_FLAGS.items():
        if typ is bool:
            train.add_argument(flag, dest=f"{section}__{key}", action="store_true",
                               default=None, help=help_)
        else:
            train.add_argument(flag, dest=f"{section}__{key}", type=typ, default=None,
                               metavar=key.upper(), help=help_)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "data" and getattr(args, "data_command", None) == "stats":
        from feddmr_jax.data.stats import run_stats_command
        return run_stats_command(args)
    if args.command == "train":
        return _run_train(args)
    raise _UsageError("choose a command: 'feddmr data stats' or 'feddmr train' (see --help)")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
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
