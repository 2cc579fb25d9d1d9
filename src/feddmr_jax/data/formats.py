"""Parsers: one function per file format, ``path -> Interactions``.

Each parser reads one ratings file in its publisher's format, validates every
line (see :mod:`feddmr_jax.data.readers`) and returns the tidy table of
:func:`feddmr_jax.data.tidy.build_interactions` (duplicates removed, ids encoded).
Finding the file (data folders, cache, download) is :mod:`datasets`' job.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from feddmr_jax.data.readers import Field, header_names, read_columns, read_text
from feddmr_jax.data.tidy import build_interactions
from feddmr_jax.data.types import Interactions
from feddmr_jax.errors import DataError

_USER_ITEM_RATING_TS = (Field("user", 0, "int"), Field("item", 1, "int"),
                        Field("rating", 2, "float"), Field("timestamp", 3, "int"))
LASTFM_HEADER = ("userID", "artistID", "weight")


def parse_ml_100k(path: Path) -> Interactions:
    """Parses MovieLens 100K ``u.data``: ``user<TAB>item<TAB>rating<TAB>unix_ts``.

    Args:
      path: the ``u.data`` file.

    Returns:
      The interactions (rating = 1..5 stars, timestamp = unix seconds).
    """
    cols = read_columns(path, read_text(path), sep="\t", fields=_USER_ITEM_RATING_TS,
                        num_columns=4)
    return build_interactions("ml-100k", cols["user"], cols["item"], cols["rating"],
                              cols["timestamp"], source=str(path))


def parse_ml_1m(path: Path) -> Interactions:
    """Parses MovieLens 1M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``.

    Args:
      path: the ``ratings.dat`` file.

    Returns:
      The interactions (rating = 1..5 stars, timestamp = unix seconds).
    """
    cols = read_columns(path, read_text(path), sep="::", fields=_USER_ITEM_RATING_TS,
                        num_columns=4)
    return build_interactions("ml-1m", cols["user"], cols["item"], cols["rating"],
                              cols["timestamp"], source=str(path))


def parse_lastfm_2k(path: Path) -> Interactions:
    """Parses HetRec 2011 Last.fm ``user_artists.dat`` (header ``userID artistID weight``).

    The file has no timestamps (it is sorted by user, then artist id): the
    interactions are marked ``has_timestamps=False`` and the split holds out
    seeded random interactions (data/splits.py); the ``timestamp`` column holds
    the row position among the data rows (0 for the first row after the header).
    The rating is the listening count (``weight``).

    Args:
      path: the ``user_artists.dat`` file (tab-separated).

    Returns:
      The interactions.
    """
    text = read_text(path)
    names = tuple(header_names(path, text, "\t"))
    if names != LASTFM_HEADER:
        raise DataError(f"{path}: line 1: expected the header {' '.join(LASTFM_HEADER)!r} "
                        f"(tab-separated), found {' '.join(names)!r}")
    fields = (Field("user", 0, "int"), Field("item", 1, "int"), Field("weight", 2, "float"))
    cols = read_columns(path, text, sep="\t", fields=fields, num_columns=3, header=True)
    return build_interactions("lastfm-2k", cols["user"], cols["item"], cols["weight"],
                              None, source=str(path))


def parse_amazon_video(path: Path, *, kcore: int | None = None) -> Interactions:
    """Parses Amazon ratings: CSV without header, ``user,item,rating,unix_ts``, string ids.

    Args:
      path: the ratings file.
      kcore: keep only users and items with at least ``kcore`` ratings
        (applied iteratively after de-duplication), or None.

    Returns:
      The interactions.
    """
    fields = (Field("user", 0, "str"), Field("item", 1, "str"),
              Field("rating", 2, "float"), Field("timestamp", 3, "int"))
    cols = read_columns(path, read_text(path), sep=",", fields=fields, num_columns=4)
    return build_interactions("amazon-video", cols["user"], cols["item"], cols["rating"],
                              cols["timestamp"], kcore=kcore, source=str(path))


def _column_index(path: Path, spec, names: list[str] | None, num_columns: int,
                  option: str) -> int:
    """Resolves a column given by 0-based index or by header name."""
    if isinstance(spec, str) and not spec.lstrip("-").isdigit():
        if names is None:
            raise DataError(f"{path}: option {option}={spec!r} names a column, "
                            "but header=False; give a 0-based index or set header=True")
        if spec not in names:
            raise DataError(f"{path}: line 1: no column named {spec!r} for {option} "
                            f"(header has {', '.join(names)})")
        return names.index(spec)
    idx = int(spec)
    if not 0 <= idx < num_columns:
        raise DataError(f"{path}: option {option}={spec!r} is out of range "
                        f"(the file has {num_columns} columns)")
    return idx


def parse_csv(path: Path, *, sep: str | None = None, header: bool = False,
              user_col: int | str = 0, item_col: int | str = 1,
              rating_col: int | str | None = "auto", timestamp_col: int | str | None = "auto",
              kcore: int | None = None, name: str = "csv") -> Interactions:
    """Parses a generic delimited file of ``user,item[,rating][,timestamp]``.

    Args:
      path: the file.
      sep: separator; None = tab if the first line contains one, else comma.
      header: whether the first line names the columns.
      user_col, item_col: 0-based index or header name of the id columns
        (ids are read as strings; any values are accepted).
      rating_col: index/name of a numeric rating, None for none (rating 1.0), or
        ``"auto"``: column 2 (or a header column named ``rating``) when present.
      timestamp_col: index/name of an integer timestamp, None for none (then
        the split holds out seeded random interactions), or ``"auto"``:
        column 3 (or a header column named ``timestamp``) when present.
      kcore: optional k-core filter (see :func:`parse_amazon_video`).
      name: dataset name to record.

    Returns:
      The interactions.
    """
    text = read_text(path)
    first = text.lstrip("\r\n").split("\n", 1)[0]
    if sep is None:
        sep = "\t" if "\t" in first else ","
    names = header_names(path, text, sep) if header else None
    num_columns = len(names) if names is not None else len(first.split(sep))
    specs = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": timestamp_col}
    for key, pos in (("rating", 2), ("timestamp", 3)):
        if specs[key] == "auto":
            if names is not None:
                specs[key] = key if key in names else None
            else:
                specs[key] = pos if num_columns > pos else None
    kinds = {"user": "str", "item": "str", "rating": "float", "timestamp": "int"}
    fields = [Field(key, _column_index(path, spec, names, num_columns, f"{key}_col"), kinds[key])
              for key, spec in specs.items() if spec is not None]
    cols = read_columns(path, text, sep=sep, fields=fields, num_columns=num_columns,
                        header=header, quoting=csv.QUOTE_MINIMAL)
    user, item = _maybe_int(cols["user"]), _maybe_int(cols["item"])
    return build_interactions(name, user, item, cols.get("rating"), cols.get("timestamp"),
                              kcore=kcore, source=str(path))


def _maybe_int(values: np.ndarray) -> np.ndarray:
    """Returns the ids as int64 when every one is an integer literal, else unchanged."""
    s = pd.Series(values, dtype=object)
    if s.str.fullmatch(r"-?\d{1,18}").all():
        return s.astype(np.int64).to_numpy()
    return values
