import sys, ctypes, dataclasses, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import bench_common
from bench_common import proc_status_mb as mb, reset_peak_rss as reset
import jax
from feddmr_jax.config import DataConfig, RunConfig, TrainConfig
from feddmr_jax.train import build_experiment
import bench_scale
n = int(sys.argv[1])
cfg = RunConfig(data=DataConfig(dataset="synthetic", synthetic_users=n, synthetic_items=50000, synthetic_interactions=20), train=TrainConfig(checkpoint_every=0, shape_classes=int(sys.argv[2]) if len(sys.argv) > 2 else None))
cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, attention=False))
exp = build_experiment(cfg)
state = exp.algorithm.init(exp.keys["init"]); jax.block_until_ready(state)
print("classes", sorted(set(exp.planner.width.tolist())), "chunks", exp.planner.clients_per_chunk)
print("after init", mb("VmRSS"))
print("after init", mb("VmRSS"), flush=True); reset()
for r in (1, 2):
    t = time.perf_counter()
    state, timing = bench_common.timed_round(exp, state, r)
    print(f"round {r}: {time.perf_counter()-t:.1f}s rss {mb('VmRSS')} peak {mb('VmHWM')}", flush=True)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    print(f"  after trim rss {mb('VmRSS')}", flush=True); reset()
import gc
gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
live = jax.live_arrays()
print("live arrays", len(live), "MB", sum(a.nbytes for a in live) / 2**20, "rss", mb("VmRSS"))
big = sorted(live, key=lambda a: -a.nbytes)[:5]
print([(a.shape, a.dtype.name, a.nbytes // 2**20) for a in big])
