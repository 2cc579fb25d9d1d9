"""Read delimited text files into typed columns, with line-exact error messages.

A fast path parses with pandas' C reader; when it fails or finds a gap, a slower
vectorized path (one string split per line, no per-line Python loop) finds the
first bad line and field and raises :class:`DataError` naming the file, the
1-based line number (counting the header and blank lines) and the field. Blank
lines are skipped. Files are decoded as UTF-8, falling back to Latin-1.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from feddmr_jax.errors import DataError

_KINDS = ("int", "float", "str")
_SEP_NAMES = {"\t": "tab", ",": "comma", ";": "semicolon", " ": "space", "|": "pipe"}


@dataclasses.dataclass(frozen=True)
class Field:
    """One column to read.

    Attributes:
      name: field name used in messages and as the result key.
      column: 0-based column index in the file.
      kind: ``"int"`` (integer), ``"float"`` (finite number) or ``"str"``.
    """

    name: str
    column: int
    kind: str


def read_text(path: Path) -> str:
    """Reads a whole text file.

    Args:
      path: the file.

    Returns:
      Its text (UTF-8, or Latin-1 when it is not valid UTF-8).

    Raises:
      DataError: missing, a folder, unreadable, or empty (only whitespace).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def sep_name(sep: str) -> str:
    """Returns a readable name of a separator (``tab``, ``comma``, ``'::'``)."""
    return _SEP_NAMES.get(sep, repr(sep))


def _single_char_sep(text: str, sep: str) -> tuple[str, str]:
    """Replaces a multi-character separator by one character the C parser accepts."""
    if len(sep) == 1:
        return text, sep
    sub = "\t" if "\t" not in text else "\x1f"
    return text.replace(sep, sub), sub


def read_columns(path: Path, text: str, *, sep: str, fields: Sequence[Field],
                 num_columns: int, header: bool = False,
                 quoting: int = csv.QUOTE_NONE) -> dict[str, np.ndarray]:
    """Parses the data lines of ``text`` into one array per field.

    Args:
      path: the file the text came from (for messages only).
      text: the file's text, as returned by :func:`read_text`.
      sep: field separator (may be several characters, e.g. ``"::"``).
      fields: the columns to return.
      num_columns: exact number of fields every data line must have.
      header: whether the first line is a header (then skipped).
      quoting: ``csv`` quoting mode of the fast path.

    Returns:
      ``{field.name: array}``: int64 for ``int``, float64 for ``float``, object
      (str) for ``str``; one entry per non-blank data line, in file order.

    Raises:
      DataError: no data lines, wrong field count, missing or non-numeric value.
    """
    for f in fields:
        if f.kind not in _KINDS or not 0 <= f.column < num_columns:
            raise ValueError(f"bad field spec {f} for {num_columns} columns")
    body, sep1 = _single_char_sep(text, sep)
    try:
        df = pd.read_csv(
            io.StringIO(body), sep=sep1, header=None, skiprows=1 if header else 0,
            dtype={f.column: str for f in fields if f.kind == "str"},
            keep_default_na=False, na_values=[""], engine="c", quoting=quoting,
            skip_blank_lines=True, index_col=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: no data lines" + (" after the header" if header else "")) from None
    except (pd.errors.ParserError, ValueError, OverflowError):
        df = None
    if df is not None and len(df) == 0:
        raise DataError(f"{path}: no data lines" + (" after the header" if header else ""))
    if df is not None and df.shape[1] == num_columns:
        out = _fast_columns(df, fields)
        if out is not None:
            return out
    return _slow_columns(path, body, sep1, sep, fields, num_columns, header)


def _fast_columns(df: pd.DataFrame, fields: Sequence[Field]) -> dict[str, np.ndarray] | None:
    """Returns the typed columns, or None when any of them needs a closer look."""
    out = {}
    for f in fields:
        col = df[f.column]
        if f.kind == "str":
            if col.isna().any():
                return None
            out[f.name] = col.to_numpy(dtype=object)
        elif f.kind == "int":
            if col.dtype.kind not in "iu":
                return None
            out[f.name] = col.to_numpy(dtype=np.int64)
        else:
            if col.dtype.kind not in "iuf":
                return None
            values = col.to_numpy(dtype=np.float64)
            if not np.isfinite(values).all():
                return None
            out[f.name] = values
    return out


def _slow_columns(path: Path, body: str, sep1: str, sep: str, fields: Sequence[Field],
                  num_columns: int, header: bool) -> dict[str, np.ndarray]:
    """Validates line by line (vectorized) and raises on the first bad line."""
    lines = pd.Series(body.split("\n"), dtype=object).str.rstrip("\r")
    lineno = np.arange(1, len(lines) + 1)
    keep = (lines.str.strip() != "").to_numpy(copy=True)
    if header:
        keep[0] = False
    lines, lineno = lines[keep].reset_index(drop=True), lineno[keep]
    if len(lines) == 0:
        raise DataError(f"{path}: no data lines" + (" after the header" if header else ""))
    counts = (lines.str.count(re.escape(sep1)) + 1).to_numpy()
    bad = np.flatnonzero(counts != num_columns)
    if bad.size:
        i = bad[0]
        raise DataError(f"{path}: line {lineno[i]}: expected {num_columns} "
                        f"{sep_name(sep)}-separated fields, found {counts[i]}")
    parts = lines.str.split(sep1, expand=True, regex=False)
    first: tuple[int, int, str] | None = None  # (row, field order, message)
    out: dict[str, np.ndarray] = {}
    for order, f in enumerate(fields):
        raw = parts[f.column].str.strip()
        empty = (raw == "").to_numpy()
        if f.kind == "str":
            out[f.name] = raw.to_numpy(dtype=object)
            wrong = np.zeros_like(empty)
        else:
            num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
            wrong = ~np.isfinite(num) & ~empty
            if f.kind == "int":
                wrong |= np.isfinite(num) & (np.floor(num) != num)
                ints = pd.to_numeric(raw.where(~(wrong | empty), "0"), errors="coerce")
                out[f.name] = ints.to_numpy(dtype=np.int64)
            else:
                out[f.name] = num
        for mask, what in ((empty, "missing value"), (wrong, None)):
            idx = np.flatnonzero(mask)
            if idx.size and (first is None or (idx[0], order) < first[:2]):
                kind = "an integer" if f.kind == "int" else "a number"
                msg = what or f"not {kind}: {raw.iloc[idx[0]]!r}"
                first = (int(idx[0]), order, f"field '{f.name}' (column {f.column + 1}): {msg}")
    if first is not None:
        raise DataError(f"{path}: line {lineno[first[0]]}: {first[2]}")
    return out


def header_names(path: Path, text: str, sep: str) -> list[str]:
    """Returns the stripped field names of the first line of ``text``.

    Args:
      path: the file (for messages).
      text: its text.
      sep: field separator.

    Returns:
      The header's field names.
    """
    first = text.split("\n", 1)[0].rstrip("\r")
    names = [n.strip().strip('"') for n in first.split(sep)]
    if not any(names):
        raise DataError(f"{path}: line 1: expected a header line, found an empty line")
    return names
