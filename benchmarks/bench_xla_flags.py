"""The methods' XLA compiler options side by side: bench_round with and without, interleaved.

Usage::

    python benchmarks/bench_xla_flags.py [--models feddmr,pfedrec] [--repeats 2]
        [--rounds 1] [--data-dir DIR] [--out PATH] [--save]

Each measurement is a fresh ``benchmarks/bench_round.py --skip-loop`` subprocess
(``XLA_FLAGS`` empty); the two settings alternate (A, B, A, B, ...) so that a drift
of the machine's load hits both alike:

* ``xla_default``: ``FEDDMR_COMPILER_OPTIONS=off``: every program with XLA's
  defaults (on CPU, its experimental YNNPACK/XNNPACK fusions included);
* ``method_default``: what a run does: each method's chunk step with its
  ``Method.cpu_compiler_options`` (feddmr_jax/compiler_options.py; FedDMR turns
  the YNN/XNN fusions off, the baselines ask for nothing).

Reported per model and setting: the median seconds per round and compile seconds
over the repeats, and the ratio ``xla_default / method_default`` (above 1: the
method's options are faster). Same data and config as ``bench_round`` (ml-100k,
every client, the config defaults). Use it to re-decide a method's options after
a jaxlib upgrade.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common  # noqa: E402
from bench_common import median, rounded  # noqa: E402

from bench_round import MODEL_CONFIGS  # noqa: E402

from feddmr_jax.compiler_options import OPT_OUT  # noqa: E402
from feddmr_jax.config import RunConfig  # noqa: E402
from feddmr_jax.methods import get_method  # noqa: E402

HERE = Path(__file__).resolve().parent
SETS = {
    "xla_default": {"XLA_FLAGS": "", OPT_OUT: "off"},
    "method_default": {"XLA_FLAGS": "", OPT_OUT: "on"},
}


def method_of(bench_name: str) -> str:
    """The ``train.model`` of one of bench_round's named configs."""
    return MODEL_CONFIGS[bench_name](RunConfig()).train.model


def run_bench_round(env_update: dict[str, str], args, out: Path) -> dict:
    env = {**os.environ, **env_update}
    cmd = [sys.executable, str(HERE / "bench_round.py"), "--models", args.models,
           "--skip-loop", "--rounds", str(args.rounds), "--data-dir", args.data_dir,
           "--out", str(out)]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main() -> None:
    p = bench_common.arg_parser(__doc__)
    p.add_argument("--models", default="feddmr,pfedrec", help="bench_round model names")
    p.add_argument("--repeats", type=int, default=2, help="measurements per flag set")
    p.add_argument("--rounds", type=int, default=1, help="timed rounds per measurement")
    p.add_argument("--data-dir", default=bench_common.default_data_dir())
    p.add_argument("--reuse", action="store_true",
                   help="reuse the measurements of an earlier run (runs/bench/"
                        "bench_xla_flags_part/) instead of measuring again")
    bench_common.add_output_args(p, "bench_xla_flags")
    args = p.parse_args()
    args.out = args.out or bench_common.default_out("bench_xla_flags", args.save)
    scratch = Path(bench_common.default_out("bench_xla_flags_part")).with_suffix("")
    scratch.mkdir(parents=True, exist_ok=True)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODEL_CONFIGS]
    if unknown or not names:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_CONFIGS)}")
    runs: dict[str, list[dict]] = {s: [] for s in SETS}
    for rep in range(args.repeats):
        for s, env in SETS.items():
            part = scratch / f"{s}_{rep}.json"
            if args.reuse and part.exists():
                runs[s].append(json.loads(part.read_text()))
                continue
            print(f"[{s}] repeat {rep + 1}/{args.repeats} ...", file=sys.stderr, flush=True)
            runs[s].append(run_bench_round(env, args, part))
    figures: dict = {"command": "python benchmarks/bench_xla_flags.py " + " ".join(sys.argv[1:]),
                     "device": bench_common.device_info(),
                     "method_options": {m: dict(get_method(method_of(m)).cpu_compiler_options)
                                        for m in names},
                     "load_average_at_end": os.getloadavg()[0], "models": {}}
    rows = []
    for name in names:
        per = {}
        for s in SETS:
            engine = [r["models"][name]["engine"] for r in runs[s]]
            per[s] = {"seconds_per_round": median([e["seconds_per_round"] for e in engine]),
                      "compile_s": median([e["compile_s"] for e in engine]),
                      "all_seconds_per_round": [rounded(e["seconds_per_round"]) for e in engine]}
            rows.append([name, s, per[s]["seconds_per_round"], per[s]["compile_s"]])
        per["ratio"] = (per["xla_default"]["seconds_per_round"]
                        / per["method_default"]["seconds_per_round"])
        figures["models"][name] = per
    bench_common.print_table(["model", "flags", "s/round", "compile s"], rows)
    for name in names:
        print(f"{name}: xla_default / method_default = {figures['models'][name]['ratio']:.2f}x")
    bench_common.emit(bench_common.rounded_tree(figures), args.out)


if __name__ == "__main__":
    main()
