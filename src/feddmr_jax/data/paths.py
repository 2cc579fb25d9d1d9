"""Where dataset files are looked for, and where downloads are cached.

Resolution order for the data folder: an explicit ``data_dir`` argument
(``--data-dir``), else ``$FEDDMR_DATA_DIR``, else the cache folder
(``$FEDDMR_CACHE_DIR``, default ``~/.cache/feddmr_jax``). Inside a folder a
dataset's files are found in ``<dir>/<name>/``, in ``<dir>/`` itself, or in the
folder its official archive extracts to (e.g. ``<dir>/ml-100k/``). Downloads
go into the cache, and only when no data folder was given (an explicit folder
lacking a file is an error listing the paths looked at).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from feddmr_jax.errors import DataError

DATA_DIR_ENV = "FEDDMR_DATA_DIR"
CACHE_DIR_ENV = "FEDDMR_CACHE_DIR"
OFFLINE_ENV = "FEDDMR_OFFLINE"
HOW_TO_PASS = f"pass a local folder with --data-dir DIR or {DATA_DIR_ENV}=DIR"


def cache_dir() -> Path:
    """Returns the download cache folder (``$FEDDMR_CACHE_DIR`` or ``~/.cache/feddmr_jax``)."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "feddmr_jax"


def downloads_allowed() -> bool:
    """Returns False when ``$FEDDMR_OFFLINE`` is set to a true value (1, true, yes)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("1", "true", "yes")


def data_dir_origin(data_dir: str | os.PathLike | None = None) -> str | None:
    """Where the data folder comes from: ``"--data-dir"`` (the argument),
    ``"FEDDMR_DATA_DIR"``, or None (the cache)."""
    if data_dir is not None:
        return "--data-dir"
    return DATA_DIR_ENV if os.environ.get(DATA_DIR_ENV) else None


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """Resolves the folder to search for dataset files.

    Args:
      data_dir: explicit folder (``--data-dir``), or None.

    Returns:
      ``(folder, explicit)``: explicit is True when the folder came from the
      argument or ``$FEDDMR_DATA_DIR`` (then it must exist), False for the cache.

    Raises:
      DataError: an explicit folder does not exist or is not a folder.
    """
    origin = data_dir_origin(data_dir)
    if origin is None:
        return cache_dir(), False
    folder = Path(data_dir if data_dir is not None else os.environ[DATA_DIR_ENV]).expanduser()
    if not folder.exists():
        raise DataError(f"data folder {folder} (from {origin}) does not exist")
    if not folder.is_dir():
        raise DataError(f"data folder {folder} (from {origin}) is not a folder")
    return folder, True


def candidate_paths(roots: Sequence[Path], subdirs: Sequence[str], filename: str) -> list[Path]:
    """Lists where ``filename`` may lie: ``root/sub/filename`` for every root and sub.

    Args:
      roots: folders to search, in order.
      subdirs: sub-folder names to try in each root (``""`` = the root itself).

    Returns:
      Candidate paths in search order, without repeats.
    """
    out: list[Path] = []
    for root in roots:
        for sub in subdirs:
            p = (root / sub / filename) if sub else (root / filename)
            if p not in out:
                out.append(p)
    return out


def first_existing(paths: Sequence[Path]) -> Path | None:
    """Returns the first path that is an existing file, or None."""
    for p in paths:
        if p.is_file():
            return p
    return None
