"""The FedDMR study's choices, on validation only: the rule (:func:`choose`), the ranking of
finalists (:func:`top_k`) and the coordinate-wise search (:func:`sequential_search`).

Choosing only ever sees a table whose test columns were removed (:func:`validation_view`);
:func:`choose` refuses a table with a test column. A diverged row (``status`` diverged) is
never chosen.
"""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Sequence

from feddmr_jax import config as config_lib
from runs_io import is_ok
from study_knobs import Knob, Point, canonical, knob_values, settings


def point_id(point: Point) -> str:
    """A short stable name of a point (``reference`` for the empty one)."""
    digest = hashlib.sha1(json.dumps(point, sort_keys=True).encode()).hexdigest()[:10]
    return f"p{digest}" if point else "reference"


def point_tag(point: Point) -> str:
    """A point as ``key=value,...`` (``reference`` for the empty one)."""
    return ",".join(f"{k}={v}" for k, v in point.items()) or "reference"


def validation_view(rows: list[dict]) -> list[dict]:
    """The rows without any test column: the only table a choice may read."""
    return [{k: v for k, v in r.items() if not k.startswith("test")} for r in rows]


def choose(rows: list[dict], near_tie: float) -> int:
    """Index of the best row: validation HR@10; within ``near_tie`` of it, validation AUC;
    exact ties, the first row. Diverged rows (``status``) are never chosen.

    Raises:
      ValueError: a row holds a test column (pass :func:`validation_view`'s table); every
        row diverged.
    """
    leaked = sorted({k for r in rows for k in r if k.startswith("test")})
    if leaked:
        raise ValueError(f"choose() was given test columns {leaked}; use validation_view()")
    ok = [i for i, r in enumerate(rows) if is_ok(r)]
    if not ok:
        raise ValueError(f"choose(): all {len(rows)} rows diverged")
    best = max(float(rows[i]["val_hr@10"]) for i in ok)
    near = [i for i in ok if float(rows[i]["val_hr@10"]) >= best - near_tie]
    return max(near, key=lambda i: float(rows[i]["val_auc"]))


def top_k(rows: list[dict], k: int, near_tie: float) -> list[int]:
    """Indices of the ``k`` best rows (diverged ones left out), by :func:`choose` repeatedly."""
    left, order = [i for i, r in enumerate(rows) if is_ok(r)], []
    while left and len(order) < k:
        order.append(left.pop(choose([rows[i] for i in left], near_tie)))
    return order


def sequential_search(knobs: tuple[Knob, ...], reference: config_lib.RunConfig,
                      config_of: Callable[[Point], config_lib.RunConfig],
                      run: Callable[..., dict], near_tie: float,
                      max_points: int | None = None,
                      starts: Sequence[Point] = ()) -> list[Point]:
    """Coordinate-wise search; returns every point run, in order.

    Step 0 runs the starting points (the reference values, then ``starts``; duplicates once)
    and keeps the best; then, knob by knob, the current point with the knob set to each of its
    values, keeping the best. With ``max_points`` the search goes on from the first knob again
    (a new pass from the current point) until exactly that many distinct points have run, or
    a whole pass adds none: every method gets the same budget whatever its number of knobs.

    Args:
      knobs: the search order.
      reference: the method's reference config (settings equal to it are dropped).
      config_of: a point's config (to resolve ``scale`` and conditional knobs at the current
        point).
      run: ``run(point, step, knob) -> row`` (a row may hold test columns; only its
        :func:`validation_view` is read; a diverged row is never kept).
      near_tie: validation HR@10 margin within which validation AUC decides.
      max_points: the number of distinct points to run (None: one pass, no bound).
      starts: further starting points (``{"section.key": value}``).
    """
    firsts: list[Point] = [{}]
    for p in (canonical(s, reference) for s in starts):
        if p not in firsts:
            firsts.append(p)
    if max_points is not None:
        firsts = firsts[:max(1, max_points)]
    rows = validation_view([run(p, 0, "start" if p else "reference") for p in firsts])
    seen = list(firsts)
    current = firsts[choose(rows, near_tie)] if any(is_ok(r) for r in rows) else {}
    step = 0
    while True:
        before = len(seen)
        for knob in knobs:
            if max_points is not None and len(seen) >= max_points:
                return seen
            step += 1
            candidates = [current]
            for value in knob_values(knob, config_of(current)):
                p = canonical({**current, **settings(knob, value, config_of(current))},
                              reference)
                if p not in candidates:
                    candidates.append(p)
            if max_points is not None:              # keep the first new points that fit
                room = max(0, max_points - len(seen))
                fresh = [p for p in candidates if p not in seen][:room]
                candidates = [p for p in candidates if p in seen or p in fresh]
            if len(candidates) == 1:                # nothing to compare: no run
                continue
            rows = validation_view([run(p, step, knob.key) for p in candidates])
            seen += [p for p in candidates if p not in seen]
            if any(is_ok(r) for r in rows):         # all diverged: keep the current point
                current = candidates[choose(rows, near_tie)]
        if max_points is None or len(seen) == before or len(seen) >= max_points:
            return seen
