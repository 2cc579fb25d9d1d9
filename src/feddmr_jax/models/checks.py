"""Field checks shared by the model configs (one line per config instead of one per field).

Every message names the field as it appears in a config file (``model.<name>``)
and the value that was refused, e.g. ``model.dim must be positive, got 0``.
"""

from __future__ import annotations

from typing import Any, Iterable

from feddmr_jax.errors import ConfigError


def check_fields(cfg: Any, *, positive: Iterable[str] = (), non_negative: Iterable[str] = (),
                 unit_interval: Iterable[str] = ()) -> None:
    """Validates numeric fields of a model config dataclass.

    Args:
      cfg: the config (fields read by name).
      positive: fields that must be > 0.
      non_negative: fields that must be >= 0.
      unit_interval: fields that must lie in (0, 1].

    Raises:
      ConfigError: naming the first offending field and its value.
    """
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"model.{name} must be positive, got {getattr(cfg, name)}")
    for name in non_negative:
        if getattr(cfg, name) < 0:
            raise ConfigError(f"model.{name} must be >= 0, got {getattr(cfg, name)}")
    for name in unit_interval:
        if not 0.0 < getattr(cfg, name) <= 1.0:
            raise ConfigError(f"model.{name} must be in (0, 1], got {getattr(cfg, name)}")
