"""Fault injection for robustness studies and tests.

Each round, among the sampled clients, a seeded random subset

* ``dropout`` — never reports: it is removed from the round (no update, its
  private params unchanged);
* ``nan`` — uploads an update full of NaN (the server must drop it);
* ``scale`` — uploads its update multiplied by ``factor`` (100: a boosted
  update; -1: a sign flip).

The subsets are disjoint and drawn with ``np.random.default_rng([seed, round,
0xFA17])``, so a resumed run injects exactly the same faults.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from feddmr_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class FaultConfig:
    nan: float = 0.0          # fraction of sampled clients that upload NaN
    scale: float = 0.0        # fraction of sampled clients whose update is scaled
    factor: float = 100.0     # the scale factor of those clients (negative: sign flip)
    dropout: float = 0.0      # fraction of sampled clients that never report

    def validate(self) -> None:
        for name in ("nan", "scale", "dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"fault fraction {name} must be in [0, 1), got {value}")
        if self.nan + self.scale + self.dropout >= 1.0:
            raise ConfigError("fault fractions nan + scale + dropout must sum to less than 1")

    @property
    def active(self) -> bool:
        return self.nan > 0 or self.scale > 0 or self.dropout > 0


@dataclasses.dataclass(frozen=True)
class RoundFaults:
    """Faults of one round, aligned with the (surviving) participants.

    Attributes:
      participants: sorted ids of the clients that report.
      update_scale: ``[P]`` float32 factor applied to each uploaded update.
      update_nan: ``[P]`` bool, True where the upload is replaced by NaN.
      dropped: ids of the clients that did not report.
    """

    participants: np.ndarray
    update_scale: np.ndarray
    update_nan: np.ndarray
    dropped: np.ndarray


def assign_faults(participants: np.ndarray, round_index: int, seed: int,
                  cfg: FaultConfig) -> RoundFaults:
    """Draws this round's faulty clients (see module docstring)."""
    participants = np.asarray(participants, np.int32)
    n = len(participants)
    counts = [int(round(f * n)) for f in (cfg.dropout, cfg.nan, cfg.scale)]
    order = np.random.default_rng([seed, round_index, 0xFA17]).permutation(n)
    bounds = np.cumsum([0] + counts)
    kind = np.zeros(n, np.int8)                    # 0 ok, 1 dropout, 2 nan, 3 scale
    for k in range(3):
        kind[order[bounds[k]:bounds[k + 1]]] = k + 1
    keep = kind != 1
    scale = np.where(kind == 3, cfg.factor, 1.0).astype(np.float32)
    return RoundFaults(participants=participants[keep], update_scale=scale[keep],
                       update_nan=(kind == 2)[keep], dropped=participants[~keep])
