"""Downloads from a real local HTTP server: verify, extract, never half-written."""

from __future__ import annotations

import hashlib
import http.server
import threading
import zipfile

import pytest

from feddmr_jax.cli import main
from feddmr_jax.data import fetch as fetch_lib  # the module
from feddmr_jax.data import load_dataset
from feddmr_jax.data.fetch import Remote, fetch_dataset
from feddmr_jax.errors import DataError

UDATA = "".join(f"{u}\t{i}\t{(u + i) % 5 + 1}\t{1000 + 7 * u + i}\n"
                for u in range(1, 5) for i in range(1, 6))  # 4 users x 5 items


class _Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1; counts GET requests."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.lie_length: set[str] = set()  # names served with a too-large Content-Length
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                outer.requests += 1
                body = outer.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                extra = 100 if self.path.lstrip("/") in outer.lie_length else 0
                self.send_header("Content-Length", str(len(body) + extra))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _zip_bytes(tmp_path, members: dict[str, str]) -> bytes:
    path = tmp_path / "build.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path.read_bytes()


@pytest.fixture
def fake(server, tmp_path):
    """A fake ml-100k archive on the server and a remote table pointing at it."""
    data = _zip_bytes(tmp_path, {"ml-100k/u.data": UDATA, "ml-100k/README": "fake"})
    server.files["ml-100k.zip"] = data
    remote = Remote(url=server.url("ml-100k.zip"), md5=hashlib.md5(data).hexdigest(),
                    folder="ml-100k", files=("u.data",), expected=(20, 4, 5))
    return {"ml-100k": remote}


def _leftovers(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_good_checksum_downloads_once(fake, server, tmp_path):
    cache = tmp_path / "cache"
    folder = fetch_dataset("ml-100k", cache, remotes=fake)
    assert folder == cache / "ml-100k"
    assert (folder / "u.data").read_text() == UDATA and (folder / "README").exists()
    assert _leftovers(cache) == ["ml-100k"] and server.requests == 1
    assert fetch_dataset("ml-100k", cache, remotes=fake) == folder
    assert server.requests == 1


@pytest.fixture
def online_cache(tmp_path, monkeypatch):
    """A cache dir under tmp_path with downloads allowed; returns it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("FEDDMR_CACHE_DIR", str(cache))
    monkeypatch.delenv("FEDDMR_OFFLINE", raising=False)
    monkeypatch.delenv("FEDDMR_DATA_DIR", raising=False)
    (tmp_path / "empty").mkdir()
    return cache


def test_load_dataset_fetches_into_cache(fake, server, tmp_path, online_cache):
    with pytest.raises(DataError, match="downloads are disabled"):
        load_dataset("ml-100k", download=False, remotes=fake)
    assert server.requests == 0
    inter = load_dataset("ml-100k", remotes=fake)
    assert (inter.num_users, inter.num_items, len(inter.table)) == (4, 5, 20)
    load_dataset("ml-100k", remotes=fake)
    assert server.requests == 1 and _leftovers(online_cache) == ["ml-100k"]


@pytest.mark.parametrize("how", ["argument", "env", "cli"])
def test_a_data_dir_is_never_downloaded_into(how, fake, server, tmp_path, online_cache,
                                             monkeypatch, capsys):
    """With --data-dir (or FEDDMR_DATA_DIR) a missing file is a one-line error listing
    the paths looked at; nothing is downloaded (issue 26: it tried the network)."""
    def no_download(*args, **kwargs):
        pytest.fail("a download was attempted although a data folder was given")

    monkeypatch.setattr(fetch_lib, "fetch_dataset", no_download)
    monkeypatch.setattr(fetch_lib, "_download", no_download)
    monkeypatch.setitem(fetch_lib.REMOTES, "ml-100k", fake["ml-100k"])
    empty = tmp_path / "empty"
    if how == "cli":
        assert main(["data", "stats", "--dataset", "ml-100k", "--data-dir", str(empty)]) == 2
        message = capsys.readouterr().err.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message
        message = message.removeprefix("feddmr: error: ")
    else:
        if how == "env":
            monkeypatch.setenv("FEDDMR_DATA_DIR", str(empty))
        with pytest.raises(DataError) as info:
            load_dataset("ml-100k", empty if how == "argument" else None)
        message = str(info.value)
    origin = "FEDDMR_DATA_DIR" if how == "env" else "--data-dir"
    assert message.startswith(f"ml-100k: u.data not found (looked in {empty}/ml-100k/u.data, "
                              f"{empty}/u.data, ")
    assert "expected layout: DIR/ml-100k/u.data" in message
    assert (f"nothing is downloaded when a data folder is given ({empty}, from {origin})"
            in message and "\n" not in message)
    assert server.requests == 0 and _leftovers(online_cache) == []


def test_content_check_failure_leaves_nothing(fake, tmp_path, online_cache):
    wrong = {"ml-100k": Remote(**{**fake["ml-100k"].__dict__, "expected": (20, 4, 6)})}
    with pytest.raises(DataError, match=r"content check failed .*expected 20 rows, 4 users, "
                                        r"6 items; found 20, 4, 5"):
        load_dataset("ml-100k", remotes=wrong)
    assert _leftovers(online_cache) == []


def test_bad_checksum_leaves_nothing(fake, tmp_path):
    cache = tmp_path / "cache"
    bad = {"ml-100k": Remote(**{**fake["ml-100k"].__dict__, "md5": "0" * 32})}
    with pytest.raises(DataError, match=r"could not fetch ml-100k from http://127\.0\.0\.1:\d+/"
                                        r"ml-100k\.zip: checksum mismatch .*--data-dir DIR or "
                                        r"FEDDMR_DATA_DIR=DIR"):
        fetch_dataset("ml-100k", cache, remotes=bad)
    assert _leftovers(cache) == []


def test_truncated_archive_leaves_nothing(server, tmp_path):
    data = _zip_bytes(tmp_path, {"user_artists.dat": "userID\tartistID\tweight\n2\t5\t1\n"})
    server.files["t.zip"] = data[: len(data) // 2]
    remote = {"lastfm-2k": Remote(url=server.url("t.zip"), md5=None, folder="",
                                  files=("user_artists.dat",))}
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"t\.zip: archive is truncated or corrupt"):
        fetch_dataset("lastfm-2k", cache, remotes=remote)
    assert _leftovers(cache) == []


def test_truncated_transfer_leaves_nothing(fake, server, tmp_path):
    server.lie_length.add("ml-100k.zip")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="could not fetch ml-100k from .*(truncated|failed)"):
        fetch_dataset("ml-100k", cache, remotes=fake)
    assert _leftovers(cache) == []


def test_http_404_and_offline(server, tmp_path):
    missing = {"x": Remote(url=server.url("absent.zip"), md5=None, folder="", files=("a",))}
    with pytest.raises(DataError, match=r"absent\.zip: HTTP error 404"):
        fetch_dataset("x", tmp_path / "c", remotes=missing)
    closed = {"x": Remote(url="http://127.0.0.1:9/x.zip", md5=None, folder="", files=("a",))}
    with pytest.raises(DataError, match=r"x\.zip: network unreachable or offline"):
        fetch_dataset("x", tmp_path / "c", remotes=closed, timeout=5)
    assert _leftovers(tmp_path / "c") == []


@pytest.mark.parametrize("kind", ["checksum", "truncated"])
def test_cli_download_failures_are_one_line(fake, server, tmp_path, online_cache, monkeypatch,
                                            capsys, kind):
    remote = fake["ml-100k"]
    if kind == "checksum":
        remote = Remote(**{**remote.__dict__, "md5": "f" * 32})
    else:
        server.files["ml-100k.zip"] = server.files["ml-100k.zip"][:40]
        remote = Remote(**{**remote.__dict__, "md5": None})
    monkeypatch.setitem(fetch_lib.REMOTES, "ml-100k", remote)
    code = main(["data", "stats", "--dataset", "ml-100k"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert ("checksum mismatch" if kind == "checksum" else "truncated or corrupt") in err
    assert _leftovers(online_cache) == []
