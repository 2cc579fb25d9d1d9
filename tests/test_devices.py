"""The client axis sharded over devices gives the single-device result.

8 CPU devices are forced with ``XLA_FLAGS`` in a subprocess (the flag must be
set before JAX starts, and this test process already started it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from feddmr_jax.federated.devices import client_mesh, mesh_size, replicate, shard_clients
from feddmr_jax.federated.rounds import build_planner
from feddmr_jax.train import build_experiment
from feddmr_jax.data import positives_csr, train_csr

from engine_helpers import tiny_config
from run_helpers import subprocess_env
from float_compare import (ADAM_ULPS, METRIC_ULPS, assert_diff_within, assert_trees_close,
                           bound)

TESTS = Path(__file__).parent


def _run_script(name: str, *args: str, xla_flags: tuple[str, ...] = (), timeout: int = 600):
    env = subprocess_env(*xla_flags)
    proc = subprocess.run([sys.executable, str(TESTS / "scripts" / name), *args],
                          capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_eight_cpu_devices_match_one():
    out = _run_script("sharded_round.py", str(TESTS),
                      xla_flags=("--xla_force_host_platform_device_count=8",))
    assert out["devices"] == 8
    assert out["chunk_devices"] == 8 and out["chunk_clients"] % 8 == 0
    assert out["store_devices"] == 8            # replicated state on the mesh
    assert out["shared_norm"] > 0
    # The rounds moved the params far beyond the bound below (one Adam step is lr).
    assert out["moved"] > 100 * bound(ulps=ADAM_ULPS, scale=out["adam_reach"])
    # Same computation, different summation order of the all-reduce (and of per-device
    # programs): 2 rounds of Adam, which moves an element by lr x a gradient's relative
    # rounding difference per step (float_compare.ADAM_ULPS).
    for name in ("shared_diff", "private_diff"):
        assert_diff_within(out[name], ulps=ADAM_ULPS, scale=out["adam_reach"], what=name)
    # Losses: forward passes (~100 accumulated roundings per logit: 2**8 ulps of the loss).
    assert_diff_within(out["loss_diff"], ulps=2**8, scale=out["loss_scale"], what="loss")
    # Metric means: the same ranks give a few ulps of 1 (float_compare.METRIC_ULPS); one
    # rank flip would move a mean by >= 1/(24*10*11) ~ 4e-4 (mrr).
    assert_diff_within(out["val_diff"], ulps=METRIC_ULPS, scale=1.0, what="val metrics")


def test_one_device_has_no_mesh():
    assert client_mesh(jax.devices()[:1]) is None
    assert mesh_size(None) == 1
    tree = {"a": np.ones(3)}
    assert replicate(tree, None) is tree and shard_clients(tree, None) is tree


def test_planner_pads_chunks_to_a_multiple_of_the_devices():
    exp = build_experiment(tiny_config())
    train, exclude = train_csr(exp.split), positives_csr(exp.split)
    for devices in (1, 3, 8):
        planner = build_planner(train, exclude, history_len=4, num_negatives=4,
                                batch_size=16, chunk_size=4, seed=0, devices=devices)
        sizes = set(planner.clients_per_chunk.values())
        assert all(c % devices == 0 for c in sizes), (devices, sizes)
        assert all(c <= -(-4 // devices) * devices for c in sizes)
    with pytest.raises(ValueError, match="devices"):
        build_planner(train, exclude, history_len=4, num_negatives=4, batch_size=16,
                      chunk_size=4, seed=0, devices=0)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_one_process_aggregate(tmp_path):
    """jax.distributed over 127.0.0.1: 2 processes x 1 CPU device each."""
    script = str(TESTS / "scripts" / "distributed_round.py")
    port = str(_free_port())
    env = subprocess_env()                      # 1 device per process
    two, one = tmp_path / "two.npz", tmp_path / "one.npz"
    runs = [(two, str(pid), "2") for pid in (0, 1)] + [(one, "0", "1")]  # all at once
    procs = [subprocess.Popen([sys.executable, script, str(TESTS), str(out), pid, n, port],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for out, pid, n in runs]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    a, b = np.load(two), np.load(one)
    assert int(a["processes"]) == 2 and int(a["devices"]) == 2
    assert int(b["processes"]) == 1
    assert int(a["accepted"]) == int(b["accepted"]) > 0
    # One round of Adam; the all-reduce sums in another order (float_compare.ADAM_ULPS).
    reach = float(b["adam_reach"])
    assert float(b["moved"]) > 100 * bound(ulps=ADAM_ULPS, scale=reach)   # the round moved them
    params = [k for k in a.files if k.startswith(".")]
    assert params and set(params) == {k for k in b.files if k.startswith(".")}
    assert_trees_close({k: a[k] for k in params}, {k: b[k] for k in params}, ulps=ADAM_ULPS,
                       scale=reach, what="shared params")
    # The loss: forward passes, ~100 accumulated roundings per logit (2**8 ulps).
    assert_trees_close(a["train_loss"], b["train_loss"], ulps=2**8, what="train loss")
    # Evaluation of the replicated state works across processes too. HR is a mean of
    # 0/1 values (exact in any order); auc: float_compare.METRIC_ULPS, where one rank
    # flip moves it by >= 1/(24 * 10) ~ 4e-3.
    assert float(a["val_hr"]) == float(b["val_hr"])
    assert_trees_close(a["val_auc"], b["val_auc"], ulps=METRIC_ULPS, scale=1.0, what="val auc")
