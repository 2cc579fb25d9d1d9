"""Download an official dataset archive once into the cache, verified, atomically.

The steps never leave a half-written file where a loader would read it:
download into a hidden temporary folder in the cache folder, verify the
archive's checksum, extract it there, verify the extracted content, then rename
the dataset folder into place (``<cache>/<name>/``). Any failure removes the
temporary folder and raises :class:`DataError` naming the URL and how
to pass a local copy instead.

The table of archives (:data:`REMOTES`) is a plain dict argument everywhere, so
tests can point a dataset name at a local HTTP server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Mapping

from feddmr_jax.data import paths
from feddmr_jax.errors import DataError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Remote:
    """Where a dataset's official archive lives and how to check it.

    Attributes:
      url: archive URL (a ``.zip``).
      md5: expected MD5 hex digest of the archive, or None when none is published
        (then only the extracted content is checked).
      folder: folder inside the archive holding the files (``""`` = archive root).
      files: file names that must be present in that folder.
      expected: ``(rows, users, items)`` of the extracted ratings file, checked
        after extraction, or None.
    """

    url: str
    md5: str | None
    folder: str
    files: tuple[str, ...]
    expected: tuple[int, int, int] | None = None


REMOTES: dict[str, Remote] = {
    "ml-100k": Remote(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        md5="0e33842e24a9c977be4e0107933c0723",
        folder="ml-100k", files=("u.data",), expected=(100000, 943, 1682)),
    "ml-1m": Remote(
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        md5="c4d9eecfca2ab87c1945afe126590906",
        folder="ml-1m", files=("ratings.dat",), expected=(1000209, 6040, 3706)),
    "lastfm-2k": Remote(
        url="https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip",
        md5=None, folder="", files=("user_artists.dat",), expected=(92834, 1892, 17632)),
}


def _fail(name: str, remote: Remote, reason: str) -> DataError:
    return DataError(f"could not fetch {name} from {remote.url}: {reason}; "
                     f"download and unzip it yourself and {paths.HOW_TO_PASS}")


def _download(name: str, remote: Remote, dest: Path, timeout: float) -> str:
    """Streams the archive into ``dest`` and returns its MD5 hex digest."""
    md5 = hashlib.md5()
    try:
        with urllib.request.urlopen(remote.url, timeout=timeout) as resp, open(dest, "wb") as f:
            expected_len = resp.headers.get("Content-Length")
            got = 0
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                md5.update(chunk)
                got += len(chunk)
        if expected_len is not None and got != int(expected_len):
            raise _fail(name, remote, f"download truncated ({got} of {expected_len} bytes)")
    except urllib.error.HTTPError as e:
        raise _fail(name, remote, f"HTTP error {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _fail(name, remote, f"network unreachable or offline ({e.reason})") from None
    except (OSError, ValueError) as e:  # IncompleteRead, timeouts, disk errors
        raise _fail(name, remote, f"download failed ({type(e).__name__}: {e})") from None
    return md5.hexdigest()


def _extract(name: str, remote: Remote, archive: Path, dest: Path) -> Path:
    """Extracts ``archive`` into ``dest`` and returns the folder holding the files."""
    try:
        with zipfile.ZipFile(archive) as zf:
            bad = zf.testzip()
            if bad is not None:
                raise _fail(name, remote, f"archive is corrupt (bad CRC in {bad})")
            zf.extractall(dest)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise _fail(name, remote, f"archive is truncated or corrupt ({e})") from None
    folder = dest / remote.folder if remote.folder else dest
    missing = [f for f in remote.files if not (folder / f).is_file()]
    if missing:
        where = f"{remote.folder}/" if remote.folder else "the archive root"
        raise _fail(name, remote, f"archive lacks {', '.join(missing)} in {where}")
    return folder


def fetch_dataset(name: str, cache: str | os.PathLike | None = None, *,
          remotes: Mapping[str, Remote] | None = None,
          verify: Callable[[Path], None] | None = None,
          timeout: float = 60.0) -> Path:
    """Downloads and extracts a dataset into ``<cache>/<name>/`` unless present.

    Args:
      name: dataset name, a key of ``remotes``.
      cache: cache folder; default :func:`paths.cache_dir`.
      remotes: archive table; default :data:`REMOTES`.
      verify: called with the extracted folder before it is moved into place;
        raises :class:`DataError` when the content is wrong.
      timeout: socket timeout in seconds.

    Returns:
      The folder holding the dataset's files.

    Raises:
      DataError: unknown name, offline, HTTP error, checksum mismatch, truncated
        or corrupt archive, or failed content check (nothing is left behind).
    """
    table = REMOTES if remotes is None else remotes
    if name not in table:
        raise DataError(f"no download known for dataset '{name}'; {paths.HOW_TO_PASS}")
    remote = table[name]
    root = Path(cache) if cache is not None else paths.cache_dir()
    final = root / name
    if all((final / f).is_file() for f in remote.files):
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}-tmp-"))
        archive = workdir / "archive.zip.part"
    except OSError as e:
        raise DataError(f"cannot write to the cache folder {root} ({e.strerror or e}); "
                        f"set FEDDMR_CACHE_DIR to a writable folder or {paths.HOW_TO_PASS}") from None
    try:
        logger.info("downloading %s from %s", name, remote.url)
        digest = _download(name, remote, archive, timeout)
        if remote.md5 is not None and digest != remote.md5.lower():
            raise _fail(name, remote, f"checksum mismatch (MD5 {digest}, expected {remote.md5})")
        folder = _extract(name, remote, archive, workdir / "x")
        if verify is not None:
            try:
                verify(folder)
            except DataError as e:
                raise _fail(name, remote, f"content check failed ({e})") from None
        try:
            if final.exists():  # an earlier, incomplete folder: replace it
                shutil.rmtree(final)
            os.replace(folder, final)
        except OSError as e:
            if not all((final / f).is_file() for f in remote.files):  # not a parallel winner
                raise DataError(f"cannot move {name} into {final} ({e.strerror or e})") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    logger.info("%s is ready in %s", name, final)
    return final
