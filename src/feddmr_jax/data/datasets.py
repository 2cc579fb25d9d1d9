"""Dataset registry and the public entry point :func:`load_dataset`.

Each named dataset is a loader function ``(data_dir, *, path, **options) ->
Interactions``. Public datasets with an official archive (``ml-100k``,
``ml-1m``, ``lastfm-2k``) are looked for in the resolved data folder and the
cache (see :mod:`paths`), and downloaded once into the cache when absent
(see :mod:`fetch`) -- but never when a data folder was given (``data_dir``,
``--data-dir``, ``FEDDMR_DATA_DIR``: a missing file is then an error listing
the paths looked at), nor with ``download=False`` or ``FEDDMR_OFFLINE=1``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from pathlib import Path
from typing import Callable, Mapping

from feddmr_jax.data import fetch as fetch_lib
from feddmr_jax.data import formats, paths
from feddmr_jax.data.synthetic import generate_synthetic
from feddmr_jax.data.types import Interactions
from feddmr_jax.errors import DataError

PathLike = str | os.PathLike


@dataclasses.dataclass(frozen=True)
class _FileSpec:
    """Where a named dataset's ratings file lies and how to parse it."""

    filename: str
    subdirs: tuple[str, ...]   # tried inside each root, "" = the root itself
    parse: Callable[..., Interactions]


_FILES = {
    "ml-100k": _FileSpec("u.data", ("ml-100k", ""), formats.parse_ml_100k),
    "ml-1m": _FileSpec("ratings.dat", ("ml-1m", ""), formats.parse_ml_1m),
    "lastfm-2k": _FileSpec("user_artists.dat", ("lastfm-2k", "hetrec2011-lastfm-2k", ""),
                           formats.parse_lastfm_2k),
    "amazon-video": _FileSpec("ratings.dat", ("amazon-video", ""), formats.parse_amazon_video),
}


def _check_content(name: str, inter: Interactions, expected: tuple[int, int, int]) -> None:
    """Raises DataError when (rows, users, items) differ from the published figures."""
    got = (len(inter.table) + inter.duplicates_removed, inter.num_users, inter.num_items)
    if got != tuple(expected):
        raise DataError(f"{name}: expected {expected[0]} rows, {expected[1]} users, "
                        f"{expected[2]} items; found {got[0]}, {got[1]}, {got[2]}")


def _locate(name: str, data_dir: PathLike | None, path: PathLike | None, download: bool,
            remotes: Mapping[str, fetch_lib.Remote] | None) -> Path:
    """Finds (or downloads) the ratings file of a named dataset."""
    spec = _FILES[name]
    if path is not None:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        if not p.exists():
            raise DataError(f"{p}: file or folder not found (given as the {name} path)")
        found = paths.first_existing(paths.candidate_paths([p], spec.subdirs, spec.filename))
        if found is None:
            raise DataError(f"{p}: no {spec.filename} for {name} in this folder "
                            f"or its {'/, '.join(s for s in spec.subdirs if s)}/ sub-folder")
        return found
    root, explicit = paths.resolve_data_dir(data_dir)
    roots = [root] + ([paths.cache_dir()] if paths.cache_dir() != root else [])
    looked = paths.candidate_paths(roots, spec.subdirs, spec.filename)
    found = paths.first_existing(looked)
    if found is not None:
        return found
    table = fetch_lib.REMOTES if remotes is None else remotes
    layout = f"DIR/{spec.subdirs[0] or name}/{spec.filename}"
    where = ", ".join(str(p) for p in looked) + f"; expected layout: {layout}"
    if name not in table:
        raise DataError(f"{name}: {spec.filename} not found (looked in {where}); "
                        f"pass the file with --data-path FILE or {paths.HOW_TO_PASS}")
    if explicit:
        origin = paths.data_dir_origin(data_dir)
        drop = f"unset {origin}" if origin == paths.DATA_DIR_ENV else f"drop {origin}"
        raise DataError(f"{name}: {spec.filename} not found (looked in {where}); nothing is "
                        f"downloaded when a data folder is given ({root}, from {origin}): put "
                        f"the file there, or {drop} to download it into the cache "
                        f"{paths.cache_dir()}")
    if not (download and paths.downloads_allowed()):
        raise DataError(f"{name}: {spec.filename} not found (looked in {where}) and downloads "
                        f"are disabled; {paths.HOW_TO_PASS}")
    remote = table[name]

    def verify(folder: Path) -> None:
        if remote.expected is not None:
            _check_content(name, spec.parse(folder / spec.filename), remote.expected)

    try:
        folder = fetch_lib.fetch_dataset(name, paths.cache_dir(), remotes=table, verify=verify)
    except DataError as e:
        raise DataError(f"{name}: {spec.filename} not found (looked in {where}); "
                        f"downloading it failed: {e}") from None
    return folder / spec.filename


def load_ml_100k(data_dir: PathLike | None = None, *, path: PathLike | None = None,
                 download: bool = True,
                 remotes: Mapping[str, fetch_lib.Remote] | None = None) -> Interactions:
    """Loads MovieLens 100K (``u.data``).

    Args:
      data_dir: folder to search (default ``$FEDDMR_DATA_DIR``, else the cache).
      path: the ``u.data`` file, or a folder holding it (overrides data_dir).
      download: fetch the official archive into the cache when not found.
      remotes: archive table override (tests).

    Returns:
      943 users, 1,682 items, 100,000 ratings for the official file.
    """
    return formats.parse_ml_100k(_locate("ml-100k", data_dir, path, download, remotes))


def load_ml_1m(data_dir: PathLike | None = None, *, path: PathLike | None = None,
               download: bool = True,
               remotes: Mapping[str, fetch_lib.Remote] | None = None) -> Interactions:
    """Loads MovieLens 1M (``ratings.dat``, ``::``-separated); arguments as :func:`load_ml_100k`.

    Returns:
      6,040 users, 3,706 items, 1,000,209 ratings for the official file.
    """
    return formats.parse_ml_1m(_locate("ml-1m", data_dir, path, download, remotes))


def load_lastfm_2k(data_dir: PathLike | None = None, *, path: PathLike | None = None,
                   download: bool = True,
                   remotes: Mapping[str, fetch_lib.Remote] | None = None) -> Interactions:
    """Loads HetRec 2011 Last.fm 2K (``user_artists.dat``); arguments as :func:`load_ml_100k`.

    No timestamps: the split holds out seeded random interactions
    (see :func:`formats.parse_lastfm_2k`).

    Returns:
      1,892 users, 17,632 artists, 92,834 pairs for the official file.
    """
    return formats.parse_lastfm_2k(_locate("lastfm-2k", data_dir, path, download, remotes))


def load_amazon_video(data_dir: PathLike | None = None, *, path: PathLike | None = None,
                      kcore: int | None = None) -> Interactions:
    """Loads Amazon Instant Video ratings (CSV ``user,item,rating,unix_ts``, no header).

    Args:
      data_dir: folder holding ``amazon-video/ratings.dat`` (or ``ratings.dat``).
      path: the ratings file, or a folder holding it (overrides data_dir).
      kcore: optional k-core filter.

    Returns:
      8,072 users, 11,830 items, 63,836 ratings for the 5-core file (kcore=None).
    """
    return formats.parse_amazon_video(_locate("amazon-video", data_dir, path, False, {}),
                                      kcore=kcore)


def load_csv(data_dir: PathLike | None = None, *, path: PathLike | None = None,
             **options) -> Interactions:
    """Loads a generic ``user,item[,rating][,timestamp]`` file; see :func:`formats.parse_csv`.

    Args:
      data_dir: unused (the file is given by ``path``).
      path: the file (required).
      **options: sep, header, user_col, item_col, rating_col, timestamp_col, kcore.

    Returns:
      The interactions.
    """
    if path is None:
        raise DataError("dataset 'csv' needs a file: pass path=FILE (CLI: --data-path FILE)")
    return formats.parse_csv(Path(path).expanduser(), **options)


def load_synthetic(data_dir: PathLike | None = None, *, path: PathLike | None = None,
                   **options) -> Interactions:
    """Generates the seeded synthetic dataset; see :func:`synthetic.generate_synthetic`.

    Args:
      data_dir, path: unused.
      **options: num_users, num_items, mean_interactions, seed, and the model knobs.

    Returns:
      The interactions.
    """
    return generate_synthetic(**options)


LOADERS: dict[str, Callable[..., Interactions]] = {
    "ml-100k": load_ml_100k,
    "ml-1m": load_ml_1m,
    "lastfm-2k": load_lastfm_2k,
    "amazon-video": load_amazon_video,
    "csv": load_csv,
    "synthetic": load_synthetic,
}

_OPTION_TARGETS = {"csv": formats.parse_csv, "synthetic": generate_synthetic}


def _check_options(name: str, options: dict) -> None:
    """Raises DataError for an option the dataset's loader does not accept."""
    target = _OPTION_TARGETS.get(name, LOADERS[name])
    params = inspect.signature(target).parameters
    accepted = [p for p in params if p not in ("data_dir", "path", "name")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DataError(f"dataset '{name}' has no option {', '.join(unknown)} "
                        f"(accepted: {', '.join(accepted) or 'none'})")


def load_dataset(name: str, data_dir: PathLike | None = None, *, path: PathLike | None = None,
                 **options) -> Interactions:
    """Loads a dataset by name into one tidy :class:`Interactions` table.

    Args:
      name: one of :data:`LOADERS` (``ml-100k``, ``ml-1m``, ``lastfm-2k``,
        ``amazon-video``, ``csv``, ``synthetic``).
      data_dir: folder to search; default ``$FEDDMR_DATA_DIR``, else the cache dir.
      path: a file (or folder) to read instead (required for ``csv``).
      **options: loader-specific options (e.g. ``kcore``, ``sep``, ``num_users``,
        ``download``).

    Returns:
      The interactions: contiguous int32 ids, duplicates removed.

    Raises:
      DataError: unknown name or option, missing or malformed files, failed download.
    """
    if name not in LOADERS:
        raise DataError(f"unknown dataset '{name}'; known datasets: {', '.join(sorted(LOADERS))}")
    _check_options(name, options)
    return LOADERS[name](data_dir, path=path, **options)
