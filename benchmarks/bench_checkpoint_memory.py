"""What saving a checkpoint adds to the resident memory, per orbax setting.

Usage::

    python benchmarks/bench_checkpoint_memory.py [--gib 4] [--out DIR] [--save]

One float32 array of ``--gib`` GiB (default: about FedRAP's private store on Lastfm-2K,
1,883 clients x 17,632 items x 32) saved once per setting, each in a fresh subprocess
(peaks do not carry over), its resident memory sampled every 0.1 s:

* ``orbax_default``: ``StandardSave`` with orbax's defaults (OCDBT, one chunk per leaf);
* ``ocdbt_chunked``: OCDBT, 64 MB chunks;
* ``feddmr``: ``feddmr_jax.checkpoint.Checkpointer.save`` (what a run does).

Printed per setting: the resident GB before the save, the peak during it, the peak minus
before (what the save adds, also as a multiple of the array) and the seconds. ``--save``
writes the lines to ``benchmarks/results/checkpoint_memory_<date>.txt``.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SETTINGS = ("orbax_default", "ocdbt_chunked", "feddmr")
CHUNK_BYTES = 1 << 26


def resident_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def measure(setting: str, gib: float, folder: Path) -> str:
    """Saves one array with ``setting`` under ``folder``; returns the result line."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    from feddmr_jax.checkpoint import Checkpointer

    clients = int(gib * 2**30 / 4 / (17632 * 32))
    state = {"store": np.random.default_rng(0).standard_normal((clients, 17632, 32),
                                                               dtype=np.float32)}
    peak, done = [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident_gb())
            time.sleep(0.1)

    before = resident_gb()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    if setting == "feddmr":
        with Checkpointer(folder) as ckpt:
            ckpt.save(1, state, {})
    else:
        manager = ocp.CheckpointManager(folder)
        save_args = (jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=CHUNK_BYTES), state)
                     if setting == "ocdbt_chunked" else None)
        manager.save(1, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state, save_args=save_args)))
        manager.wait_until_finished()
        manager.close()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    size = state["store"].nbytes / 2**30
    added = peak[0] - before
    return (f"{setting:14s} array {size:.2f} GiB  resident before {before:.1f} GB  peak "
            f"{peak[0]:.1f} GB  added {added:.1f} GB ({added / size:.2f}x)  {seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gib", type=float, default=3.96)
    p.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--save", action="store_true")
    p.add_argument("--one", choices=SETTINGS, help=argparse.SUPPRESS)   # the subprocess
    args = p.parse_args(argv)
    scratch = Path(args.out or tempfile.mkdtemp(prefix="ckpt_memory_"))
    if args.one:
        print(measure(args.one, args.gib, scratch / args.one))
        return 0
    lines = []
    for setting in SETTINGS:
        out = subprocess.run([sys.executable, __file__, "--one", setting, "--gib", str(args.gib),
                              "--out", str(scratch)], capture_output=True, text=True, check=True)
        lines.append(out.stdout.strip().splitlines()[-1])
        print(lines[-1], flush=True)
        shutil.rmtree(scratch / setting, ignore_errors=True)
    if args.save:
        path = (Path(__file__).resolve().parent / "results" /
                f"checkpoint_memory_{datetime.date.today()}.txt")
        path.write_text("\n".join(lines) + "\n")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
