"""Rounds and bytes to reach a validation target (``summary.json``'s ``rounds_to_target``).

Communication efficiency next to accuracy: for the selection metric
(``train.select_metric``), the run's best validation round and the first
evaluated rounds whose validation value reached 95% and 99% of the run's best,
each with the bytes uploaded and downloaded by all clients up to and including
that round (federated/communication.py). Only evaluated rounds count
(``train.eval_every``); every metric the evaluation reports grows with quality
and is >= 0, so "reached" is ``value >= fraction * best``.
"""

from __future__ import annotations

from typing import Any, Sequence

TARGET_FRACTIONS = (0.95, 0.99)


def curve_point(round_index: int, value: float, upload_bytes: int,
                download_bytes: int) -> list:
    """One evaluated round, as stored in the loop state (JSON: a list).

    Args:
      round_index: the round.
      value: its validation value of the selection metric.
      upload_bytes, download_bytes: totals of the run up to and including it.
    """
    return [int(round_index), float(value), int(upload_bytes), int(download_bytes)]


def rounds_to_target(curve: Sequence[Sequence[Any]], best_round: int | None, metric: str,
                     fractions: Sequence[float] = TARGET_FRACTIONS) -> dict[str, Any] | None:
    """The best round and the first rounds to reach each fraction of its value.

    Args:
      curve: :func:`curve_point` of every evaluated round, in round order.
      best_round: the selected round (ties go to the later round, as in
        ``train.is_new_best``); None: nothing evaluated.
      metric: the selection metric's name (recorded).
      fractions: target fractions of the best value.

    Returns:
      ``{"metric", "best": point, "95%": point, "99%": point}`` with each point
      ``{"round", "value", "upload_bytes", "download_bytes"}`` (targets also
      ``"target"``, the value to reach), or None when no round was evaluated.
    """
    if best_round is None or not curve:
        return None
    points = {int(p[0]): p for p in curve}
    best = points.get(best_round) or max(curve, key=lambda p: p[1])

    def point(p: Sequence[Any]) -> dict[str, Any]:
        return {"round": int(p[0]), "value": float(p[1]), "upload_bytes": int(p[2]),
                "download_bytes": int(p[3])}

    out: dict[str, Any] = {"metric": metric, "best": point(best)}
    for fraction in fractions:
        target = fraction * float(best[1])
        first = next(p for p in curve if float(p[1]) >= target)   # the best itself qualifies
        out[f"{round(fraction * 100):g}%"] = {**point(first), "target": target}
    return out
