"""Rounds (and bytes) to a validation target, and whether a curve is still rising: the
study's ``study_rounds.csv``, its ``--extend`` rule and the results page's rounds table.

Everything here reads ``study_curves.csv`` rows of the confirmation stage (validation
HR@10 per round and seed, with the round's ``upload_bytes`` where metrics.jsonl had them)
and each method's chosen point (``study_chosen.json``). Curves are averaged over seeds round
by round (the rounds every seed has).

* target: the best baseline's best mean validation HR@10 (the highest point of the mean
  curves of :data:`study_knobs.BASELINES` at their chosen points);
* a method's round to target: the first round whose mean validation HR@10 reaches it
  (empty when it never does); its best round: the round of its highest mean (the first
  such round); megabytes uploaded to reach the target: the bytes every client uploaded up
  to and including that round, mean over seeds, in 10^6 bytes;
* still rising: the highest mean over the last ``window`` rounds is above the highest mean
  before them (a curve no longer than the window: its last round above every earlier one).
"""

from __future__ import annotations

import statistics
from typing import Iterable, Mapping

Curve = list[tuple[int, float]]          # (round, value), in round order
RISING_WINDOW = 10


def _num(value) -> float | None:
    return None if value in ("", None) else float(value)


def chosen_curves(curve_rows: Iterable[dict], chosen: Mapping[str, str]
                  ) -> dict[str, dict[str, list[dict]]]:
    """``{method: {seed: [row, ...]}}``: the confirmation rows (``stage`` confirm...) of each
    method's chosen point (``chosen``: method -> point id), in round order."""
    out: dict[str, dict[str, list[dict]]] = {}
    for r in curve_rows:
        if (str(r["stage"]).startswith("confirm") and r["method"] in chosen
                and r["point_id"] == chosen[r["method"]] and _num(r["val_hr@10"]) is not None):
            out.setdefault(r["method"], {}).setdefault(str(r["seed"]), []).append(r)
    for seeds in out.values():
        for rows in seeds.values():
            rows.sort(key=lambda r: int(r["round"]))
    return out


def mean_curve(seeds: Mapping[str, list[dict]], column: str = "val_hr@10") -> Curve:
    """Mean over seeds of ``column`` per round (the rounds every seed has)."""
    by_seed = [{int(r["round"]): float(r[column]) for r in rows} for rows in seeds.values()]
    if not by_seed:
        return []
    rounds = sorted(set.intersection(*(set(s) for s in by_seed)))
    return [(r, statistics.mean(s[r] for s in by_seed)) for r in rounds]


def best_point(curve: Curve) -> tuple[int, float] | None:
    """``(round, value)`` of the highest value (the first such round); None if empty."""
    if not curve:
        return None
    best = max(v for _, v in curve)
    return next((r, v) for r, v in curve if v == best)


def first_reaching(curve: Curve, target: float) -> int | None:
    """The first round whose value is >= ``target`` (None: never)."""
    return next((r for r, v in curve if v >= target), None)


def still_rising(curve: Curve, window: int = RISING_WINDOW) -> bool:
    """Whether the highest value of the last ``window`` rounds beats every earlier one."""
    if len(curve) <= window:
        return len(curve) > 1 and curve[-1][1] > max(v for _, v in curve[:-1])
    before = max(v for _, v in curve[:-window])
    return max(v for _, v in curve[-window:]) > before


def upload_mb_to(seeds: Mapping[str, list[dict]], round_: int) -> float | None:
    """Megabytes (10^6 bytes) every client uploaded up to and including ``round_``, mean
    over seeds; None when a seed's curve has no ``upload_bytes``."""
    totals = []
    for rows in seeds.values():
        values = [_num(r.get("upload_bytes")) for r in rows if int(r["round"]) <= round_]
        if not values or any(v is None for v in values):
            return None
        totals.append(sum(values))
    return statistics.mean(totals) / 1e6 if totals else None


def target_of(curves: Mapping[str, Curve], baselines: Iterable[str]
              ) -> tuple[str, float] | None:
    """``(baseline, value)``: the best baseline's best mean validation value, or None."""
    best = [(m, best_point(curves[m])[1]) for m in baselines if curves.get(m)]
    return max(best, key=lambda mv: mv[1]) if best else None


def rounds_rows(dataset: str, curve_rows: Iterable[dict], chosen: Mapping[str, str],
                baselines: Iterable[str]) -> list[dict]:
    """One ``study_rounds.csv`` row per method with a confirmed chosen point."""
    grouped = chosen_curves(curve_rows, chosen)
    curves = {m: mean_curve(seeds) for m, seeds in grouped.items()}
    target = target_of(curves, baselines)
    rows = []
    for method, seeds in grouped.items():
        curve = curves[method]
        best = best_point(curve)
        reach = first_reaching(curve, target[1]) if target else None
        mb = upload_mb_to(seeds, reach) if reach is not None else None
        rows.append({"dataset": dataset, "method": method, "point_id": chosen[method],
                     "seeds": len(seeds), "rounds": curve[-1][0] if curve else "",
                     "best_round": best[0] if best else "",
                     "best_val_hr@10": best[1] if best else "",
                     "target_method": target[0] if target else "",
                     "target_val_hr@10": target[1] if target else "",
                     "round_to_target": "" if reach is None else reach,
                     "upload_mb_to_target": "" if mb is None else mb,
                     "rising_last_10": still_rising(curve)})
    return rows


def rising_methods(curve_rows: Iterable[dict], chosen: Mapping[str, str],
                   window: int = RISING_WINDOW) -> list[str]:
    """The methods whose mean validation curve (chosen point) is still rising."""
    grouped = chosen_curves(curve_rows, chosen)
    return [m for m, seeds in grouped.items() if still_rising(mean_curve(seeds), window)]
