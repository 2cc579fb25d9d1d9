"""Where the test suite's time goes: a pytest plugin that adds up JAX's compile events per test.

    PYTHONPATH=benchmarks python -m pytest -q -n 0 -p suite_compile_profile [tests ...]

Writes ``$SUITE_PROFILE_OUT`` (default ``suite_compile_profile.txt``): the totals of JAX's
monitoring events (``/jax/core/compile/backend_compile_duration`` is XLA compiling,
``/jax/compilation_cache/*`` the persistent cache), then per test file and per test the
call's wall seconds, the XLA compile seconds and the tracing/lowering seconds within it.
Counts only the pytest process (``-n 0``; subprocesses the tests start are not seen).
"""

from __future__ import annotations

import collections
import os
import time

import jax.monitoring
import pytest

_seconds: dict[str, float] = collections.defaultdict(float)
_counts: collections.Counter = collections.Counter()
_tests: dict[str, tuple[float, float, float]] = {}


def _on_duration(event: str, duration: float, **_) -> None:
    _seconds[event] += duration
    _counts[event] += 1


def _on_event(event: str, **_) -> None:
    _counts[event] += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)
jax.monitoring.register_event_listener(_on_event)


def _compile_and_trace(since: dict[str, float]) -> tuple[float, float]:
    delta = {k: v - since.get(k, 0.0) for k, v in _seconds.items()}
    compile_s = sum(v for k, v in delta.items() if k.endswith("backend_compile_duration"))
    trace_s = sum(v for k, v in delta.items()
                  if k.endswith("jaxpr_trace_duration") or k.endswith("to_mlir_module_duration"))
    return compile_s, trace_s


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    before, start = dict(_seconds), time.perf_counter()
    yield
    _tests[item.nodeid] = (time.perf_counter() - start, *_compile_and_trace(before))


def pytest_sessionfinish(session):
    lines = [f"{k}: {_seconds[k]:.1f} s, n={_counts[k]}" for k in sorted(_seconds)]
    lines += [f"{k}: n={n}" for k, n in sorted(_counts.items()) if k not in _seconds]
    files: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0, 0])
    for nodeid, (wall, comp, trace) in _tests.items():
        f = files[nodeid.split("::")[0]]
        f[0] += wall
        f[1] += comp
        f[2] += trace
        f[3] += 1
    total = [sum(v[i] for v in _tests.values()) for i in range(3)]
    lines += ["", f"tests {len(_tests)}: call {total[0]:.0f} s, XLA compile {total[1]:.0f} s, "
              f"trace/lower {total[2]:.0f} s", "", "per file: call s, compile s, trace s, tests"]
    lines += [f"{w:8.1f} {c:8.1f} {t:7.1f} {n:4d}  {f}"
              for f, (w, c, t, n) in sorted(files.items(), key=lambda kv: -kv[1][0])]
    lines += ["", "per test: call s, compile s, trace s"]
    lines += [f"{w:8.2f} {c:8.2f} {t:7.2f}  {nodeid}"
              for nodeid, (w, c, t) in sorted(_tests.items(), key=lambda kv: -kv[1][0])]
    path = os.environ.get("SUITE_PROFILE_OUT", "suite_compile_profile.txt")
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")
