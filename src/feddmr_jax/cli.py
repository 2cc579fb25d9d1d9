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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="feddmr", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", parser_class=_Parser)
    stats = data_sub.add_parser("stats", help="print dataset and split statistics")
    _add_data_source_args(stats)
    stats.add_argument("--split", default="loo", choices=("loo", "ratio"))
    stats.add_argument("--json", action="store_true", help="print one JSON object")
    stats.add_argument("--debug", action="store_true", help="show tracebacks")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "data" and getattr(args, "data_command", None) == "stats":
        from feddmr_jax.data.stats import run_stats_command
        return run_stats_command(args)
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
