"""Float comparisons for the tests: exact where two paths run the same program, a
stated rounding budget where they legitimately round differently.

Two float32 computations of the same math that differ only in summation order or
fusion (vmap vs a loop over clients, 8 devices vs 1, XLA options on vs off,
sparse vs dense scatter order, a float64 numpy reference) differ by rounding, and
by how much depends on the CPU (vector width, FMA contraction, matmul kernels):
a tolerance that merely held on one machine is not a bound. Every comparison
here is therefore

    |actual - expected| <= bound = ulps * EPS32 * scale       (max over the tree)

* ``EPS32 = 2**-23``: the spacing of float32 numbers in [1, 2) (one ulp relative
  to the value; each float32 operation rounds to within half of that).
* ``scale``: the largest magnitude the rounding is relative to; by default the
  largest ``|expected|`` of the tree (the values compared), else stated at the
  call, e.g. the largest term of a sum when the result cancels.
* ``ulps``: the budget, stated at each use with its reason: a sum of ``n`` terms
  rounded in another order differs by at most ~``n`` ulps of its largest partial
  sum; SGD carries a gradient's rounding difference into the params linearly
  (``lr`` times it per step), so ``k`` steps add ``k`` such budgets.

Adam is the exception. Its step ``lr * m / (sqrt(v) + eps)`` does not scale with
the gradient, so a *relative* rounding difference ``rho`` in a gradient moves an
element by about ``lr * rho`` per step -- and ``rho`` is large where a gradient
nearly cancels (e.g. attention keys whose gradient sums to 1e-4 of its terms).
Adam-trained results are compared with ``scale = adam_scale(lr, steps)`` (how far
Adam can move an element: ``lr`` per step), so ``ulps`` is then the relative
gradient error allowed, and the bound stays far below one Adam step (``lr``),
the size of a real difference (a wrong gradient, a lost client, other data).

Where the two paths must be bit-identical (resume vs an uninterrupted run, the
same function called twice, padding that only adds skipped steps) use
:func:`assert_trees_equal` instead.

Set ``FLOAT_COMPARE_LOG=/path/file`` to append one JSON line per comparison
(test, what, diff, bound, diff / bound): how close each one sits to its bound.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

EPS32 = 2.0 ** -23
"""float32 machine epsilon: one ulp relative to a value in [1, 2)."""

ADAM_ULPS = 2 ** 13
"""The relative gradient error budget of Adam-trained comparisons (``scale =
adam_scale(lr, steps)``): 2**13 ulps = 2**-10 ~ 1e-3. A gradient summed from ``n`` terms
that cancel to ``1/C`` of their size carries ~``n * C`` ulps of relative rounding;
measured on FedDMR (first-layer attention keys and FFN, whose gradients nearly cancel):
at most ~560 ulps of ``adam_scale`` (XLA options on vs off, also with SSE4.2-only code),
~480 (8 devices vs 1), ~390 (vmap vs loop), so 2**13 leaves >= 14x. The bound is
``lr * steps / 2**10``: for the tests' <= 9 steps, >= 100x below one Adam step (lr)."""


SGD_STEP_ULPS = 2 ** 3
"""The budget per optimizer step of SGD-trained comparisons (``ulps = steps *
SGD_STEP_ULPS``, ``scale`` = the largest param): SGD carries a rounding difference
linearly. Each step rounds the new param (<= 1/2 ulp) and moves it by lr x a gradient
that another summation order rounds a few ulps differently (relative to lr x |g|, within
the params' scale); 2**3 per step. (Measured: at most ~1 ulp over a whole run.)"""

METRIC_ULPS = 8
"""The budget of means over users of ranking metrics (``scale = 1``) from two paths that
rank every candidate alike: per-user values in [0, 1] are 0/1 (hr), correctly rounded
float32 quotients (auc, mrr: the same bits in any program) or a log2 (ndcg: within ~2
ulps in another program), averaged in float64, so the means differ by <= ~2 ulps of 1;
8 (9.5e-7). One rank flip moves a mean by >= 1 / (users x C x (C - 1)) for C candidates
(mrr between ranks C - 1 and C): 8e-6 for 1100 users x 11 candidates, 4e-4 for 24."""


def adam_scale(lr: float, steps: int) -> float:
    """How far ``steps`` Adam steps of learning rate ``lr`` can move an element
    (``lr`` per step): the ``scale`` of a comparison of Adam-trained values."""
    return float(lr) * int(steps)


def bound(*, ulps: float, scale: float) -> float:
    """``ulps * EPS32 * scale``: the largest rounding difference a comparison allows."""
    return float(ulps) * EPS32 * float(scale)


def _leaves(tree) -> list[tuple[str, np.ndarray]]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(jax.tree_util.keystr(path), np.asarray(x, np.float64)) for path, x in flat]


def max_abs(tree) -> float:
    """The largest ``|x|`` over every leaf of ``tree`` (0.0 for an empty tree)."""
    return max((float(np.max(np.abs(x))) for _, x in _leaves(tree) if x.size), default=0.0)


def _worst(actual, expected) -> tuple[float, str]:
    """Max ``|actual - expected|`` (float64) over matching leaves, and the leaf it is at."""
    a, e = _leaves(actual), _leaves(expected)
    assert jax.tree.structure(actual) == jax.tree.structure(expected), (
        f"different trees: {jax.tree.structure(actual)} vs {jax.tree.structure(expected)}")
    worst, where = 0.0, ""
    for (path, x), (_, y) in zip(a, e):
        assert x.shape == y.shape, f"{path}: shape {x.shape} vs {y.shape}"
        if not x.size:
            continue
        if np.any(np.isnan(x) != np.isnan(y)):
            return float("inf"), path + " (NaN in one only)"
        d = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
        if float(np.max(d)) > worst:
            worst, where = float(np.max(d)), path
    return worst, where


def _record(what: str, diff: float, limit: float) -> None:
    path = os.environ.get("FLOAT_COMPARE_LOG")
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    ratio = diff / limit if limit > 0 else (0.0 if diff == 0 else float("inf"))
    with open(path, "a") as fh:
        fh.write(json.dumps({"test": test, "what": what, "diff": diff, "bound": limit,
                             "ratio": ratio}) + "\n")


def assert_diff_within(diff: float, *, ulps: float, scale: float, what: str = "") -> None:
    """Asserts a difference measured elsewhere (e.g. in a subprocess) is within
    ``ulps * EPS32 * scale``."""
    limit = bound(ulps=ulps, scale=scale)
    _record(what, float(diff), limit)
    assert float(diff) <= limit, (
        f"{what}: difference {diff:.3g} > bound {limit:.3g} = {ulps} ulps x EPS32 x "
        f"scale {scale:.3g} (ratio {diff / limit if limit else float('inf'):.3g})")


def assert_trees_close(actual: Any, expected: Any, *, ulps: float, scale: float | None = None,
                       what: str = "") -> None:
    """Asserts two pytrees (or arrays, or scalars) agree to ``ulps * EPS32 * scale``.

    Args:
      actual, expected: trees of the same structure and leaf shapes.
      ulps: the rounding budget in float32 ulps of ``scale`` (state why at the call).
      scale: the magnitude the rounding is relative to; None = ``max_abs(expected)``.
      what: a name for the message (and the log).
    """
    diff, where = _worst(actual, expected)
    scale = max_abs(expected) if scale is None else scale
    assert_diff_within(diff, ulps=ulps, scale=scale,
                       what=f"{what} {where}".strip() if where else what)


def assert_trees_equal(actual: Any, expected: Any, what: str = "") -> None:
    """Asserts two pytrees are bit-identical: same structure, shapes, dtypes and bits
    (NaN payloads and the sign of zero included)."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected), (
        f"{what}: different trees: {jax.tree.structure(actual)} vs "
        f"{jax.tree.structure(expected)}")
    flat = jax.tree_util.tree_flatten_with_path(actual)[0]
    for (path, x), y in zip(flat, jax.tree.leaves(expected)):
        x, y = np.asarray(x), np.asarray(y)
        name = f"{what} {jax.tree_util.keystr(path)}".strip()
        assert x.dtype == y.dtype and x.shape == y.shape, (
            f"{name}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
        if x.tobytes() != y.tobytes():
            d = np.abs(x.astype(np.float64) - y.astype(np.float64))
            raise AssertionError(f"{name}: not bit-identical (max |diff| {np.nanmax(d):.3g}, "
                                 f"{int(np.sum(x != y))} of {x.size} elements differ)")
    _record(what, 0.0, 0.0)
