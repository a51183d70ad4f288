"""`--data tinyshakespeare`: local copy, cache, and a verified download from a local server.

Every test points HOME, XDG_CACHE_HOME and CHARLSTM_DATA_DIR at tmp_path and the
download URL at 127.0.0.1, so nothing touches the real network or the real cache.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import pytest

from charlstm import datasets
from charlstm.errors import UserError

DS = datasets.DATASETS["tinyshakespeare"]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Isolated environment: no data dir, an empty cache under tmp_path."""
    monkeypatch.delenv("CHARLSTM_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(DS.url_env, "http://127.0.0.1:9/unused")  # never the real URL
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                  "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # 127.0.0.1 must be reached directly
    return tmp_path


@pytest.fixture
def serve(monkeypatch):
    """serve(body, status=200) -> URL of a one-file HTTP server on 127.0.0.1."""
    servers = []

    def start(body: bytes, status: int = 200) -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                         daemon=True).start()
        servers.append(server)
        url = f"http://127.0.0.1:{server.server_address[1]}/input.txt"
        monkeypatch.setenv(DS.url_env, url)
        return url

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def fake_dataset(monkeypatch, body: bytes) -> None:
    """Make the registry expect `body` (for tests that do not use the real corpus)."""
    fake = DS._replace(sha256=hashlib.sha256(body).hexdigest(), size=len(body))
    monkeypatch.setitem(datasets.DATASETS, "tinyshakespeare", fake)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once the socket is closed


def test_registered_checksum_is_that_of_the_canonical_copy(tinyshakespeare):
    data = tinyshakespeare.read_bytes()
    assert len(data) == DS.size
    assert hashlib.sha256(data).hexdigest() == DS.sha256


def test_a_path_passes_through_and_a_missing_one_is_a_usage_error(env):
    f = env / "corpus.txt"
    f.write_text("hello")
    assert datasets.resolve_data(str(f)) == f
    with pytest.raises(UserError, match="no such file: .*nope.txt.*tinyshakespeare") as e:
        datasets.resolve_data(str(env / "nope.txt"))
    assert e.value.exit_code == 2
    with pytest.raises(UserError, match="not a regular file"):
        datasets.resolve_data(str(env))


def test_data_dir_wins_without_network(env, monkeypatch):
    (env / "data").mkdir()
    (env / "data" / DS.filename).write_text("any text the user put there")
    monkeypatch.setenv("CHARLSTM_DATA_DIR", str(env / "data"))
    assert datasets.resolve_data("tinyshakespeare") == env / "data" / DS.filename
    assert not (env / "cache").exists()


def test_download_verifies_caches_atomically_then_reuses_cache(env, serve, monkeypatch,
                                                              tinyshakespeare):
    # A CHARLSTM_DATA_DIR without the file falls through to the download.
    monkeypatch.setenv("CHARLSTM_DATA_DIR", str(env / "empty"))
    body = tinyshakespeare.read_bytes()
    serve(body)
    path = datasets.resolve_data("tinyshakespeare")
    assert path == env / "cache" / "charlstm" / "tinyshakespeare.txt"
    assert path.read_bytes() == body
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left
    # Second call: served from the cache, the (now dead) server is not asked.
    monkeypatch.setenv(DS.url_env, f"http://127.0.0.1:{closed_port()}/input.txt")
    assert datasets.resolve_data("tinyshakespeare") == path


def test_home_cache_used_when_xdg_unset(env, serve, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    body = b"to be or not to be\n"
    fake_dataset(monkeypatch, body)
    serve(body)
    path = datasets.resolve_data("tinyshakespeare")
    assert path == env / "home" / ".cache" / "charlstm" / "tinyshakespeare.txt"
    assert path.read_bytes() == body


def test_corrupted_download_is_rejected_and_nothing_cached(env, serve, monkeypatch):
    body = bytearray(b"to be or not to be\n" * 100)
    fake_dataset(monkeypatch, bytes(body))
    body[1000] ^= 1
    serve(bytes(body))
    with pytest.raises(UserError, match="failed its checksum.*nothing was cached.*--data FILE"):
        datasets.resolve_data("tinyshakespeare")
    cache = env / "cache" / "charlstm"
    assert not cache.exists() or not any(cache.iterdir())


def test_corrupted_cache_is_downloaded_again(env, serve, monkeypatch):
    body = b"the real text\n"
    fake_dataset(monkeypatch, body)
    cached = env / "cache" / "charlstm" / "tinyshakespeare.txt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"the real te")  # truncated earlier by something else
    serve(body)
    assert datasets.resolve_data("tinyshakespeare") == cached
    assert cached.read_bytes() == body


def test_server_down_gives_one_line_error_naming_the_fix(env, monkeypatch):
    monkeypatch.setenv("CHARLSTM_DATA_DIR", str(env / "empty"))
    monkeypatch.setenv(DS.url_env, f"http://127.0.0.1:{closed_port()}/input.txt")
    with pytest.raises(UserError) as e:
        datasets.resolve_data("tinyshakespeare")
    message = str(e.value)
    assert "\n" not in message and e.value.exit_code == 1
    assert "cannot download" in message and "--data FILE" in message
    assert str(env / "empty" / "tinyshakespeare.txt") in message  # says where it looked
    assert not (env / "cache" / "charlstm" / "tinyshakespeare.txt").exists()


def test_http_error_status_is_reported(env, serve):
    serve(b"not found", status=404)
    with pytest.raises(UserError, match="HTTP 404.*--data FILE"):
        datasets.resolve_data("tinyshakespeare")


def test_fetch_command_caches_the_verified_file_and_prints_its_path(
        env, serve, monkeypatch, charlstm_cli):
    body = b"the real text\n"
    fake_dataset(monkeypatch, body)
    serve(body)
    out = charlstm_cli.ok("fetch", "tinyshakespeare")
    cached = env / "cache" / "charlstm" / "tinyshakespeare.txt"
    assert out == f"{cached}\n" and cached.read_bytes() == body
    monkeypatch.setenv(DS.url_env, f"http://127.0.0.1:{closed_port()}/input.txt")
    charlstm_cli.ok("fetch", "tinyshakespeare")  # offline now: the cache serves
    assert datasets.locate("tinyshakespeare") == (cached, [])
