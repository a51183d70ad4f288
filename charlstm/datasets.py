"""Named datasets: `--data tinyshakespeare` finds, or fetches and verifies, the corpus.

`resolve_data(spec)` turns what the user passed to `--data` into a path:

    an existing file                  -> that file
    a dataset name ("tinyshakespeare"):
      1. $CHARLSTM_DATA_DIR/<file>    if the variable is set and the file is there
      2. <cache>/charlstm/<file>      if present and its sha256 is right
      3. download <url>               verify sha256, write to the cache atomically
    anything else                     -> "no such file" (a usage error)

<cache> is $XDG_CACHE_HOME, or ~/.cache when that is unset. A CHARLSTM_DATA_DIR
that lacks the file is not an error: it falls through to the cache and the
download, and a failed download then names every place that was looked in.
The file in CHARLSTM_DATA_DIR is trusted as it is (the user put it there); a
cached copy is checked against the checksum on every use (about 2 ms), and a bad
one is downloaded again. The URL can be overridden (a mirror, or a test server)
with the environment variable the dataset names (CHARLSTM_TINYSHAKESPEARE_URL).
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

from .errors import UserError
from .fsutil import atomic_write_bytes

DOWNLOAD_TIMEOUT_S = 30.0  # per socket operation; a dead network fails in this time


class Dataset(NamedTuple):
    filename: str  # name in CHARLSTM_DATA_DIR and in the cache
    url: str  # default download location
    url_env: str  # environment variable that overrides url
    sha256: str  # of the exact bytes; a download that differs is rejected
    size: int  # bytes, for the progress message and a sanity cap on the download


DATASETS = {
    "tinyshakespeare": Dataset(
        filename="tinyshakespeare.txt",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
            "tinyshakespeare/input.txt",
        url_env="CHARLSTM_TINYSHAKESPEARE_URL",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        size=1_115_394,
    ),
}


class DownloadError(UserError):
    """The network or the server failed: not a usage mistake, so exit 1."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=1)


def cache_dir() -> Path:
    """Where downloads are kept: $XDG_CACHE_HOME/charlstm or ~/.cache/charlstm."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "charlstm"


def resolve_data(spec: str) -> Path:
    """The text file that `--data spec` means (see the module docstring)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if spec not in DATASETS:
        if path.exists():
            raise UserError(f"{path} is not a regular file")
        names = ", ".join(DATASETS)
        raise UserError(f"no such file: {spec} (a path to a UTF-8 text file, or one of: {names})")
    ds = DATASETS[spec]
    found, looked = locate(spec)
    if found is not None:
        return found
    cached = cache_dir() / ds.filename
    url = os.environ.get(ds.url_env) or ds.url
    data = download(url, ds, looked)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cached, data)
    except OSError as e:
        raise DownloadError(f"downloaded {spec} but cannot write the cache {cached}: "
                            f"{e.strerror or e}; set XDG_CACHE_HOME to a writable "
                            "directory, or pass --data FILE") from None
    print(f"charlstm: saved {spec} to {cached}", file=sys.stderr)
    return cached


def locate(name: str) -> tuple[Path | None, list[str]]:
    """(the local copy of dataset `name`, or None; the places looked in): steps 1 and 2
    of resolve_data, never the network."""
    ds = DATASETS[name]
    looked = []
    data_dir = os.environ.get("CHARLSTM_DATA_DIR")
    if data_dir:
        candidate = Path(data_dir).expanduser() / ds.filename
        if candidate.is_file():
            return candidate, looked
        looked.append(str(candidate))
    cached = cache_dir() / ds.filename
    if cached.is_file() and _sha256_file(cached) == ds.sha256:
        return cached, looked
    looked.append(str(cached))
    return None, looked


def download(url: str, ds: Dataset, looked: list[str]) -> bytes:
    """The bytes at url, verified against ds.sha256; any failure is one DownloadError."""
    source = "it" if url == ds.url else ds.url
    hint = (f"not found in {' or '.join(looked)}; download {source} yourself and pass "
            "--data FILE, or set CHARLSTM_DATA_DIR to its directory")
    print(f"charlstm: downloading {url} ({ds.size / 1e6:.1f} MB)", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            # Read one byte past the expected size: enough to reject a wrong file
            # without reading an endless one into memory.
            data = response.read(ds.size + 1)
    except urllib.error.HTTPError as e:
        raise DownloadError(f"cannot download {url}: HTTP {e.code} {e.reason}; {hint}") from None
    except urllib.error.URLError as e:
        raise DownloadError(f"cannot download {url}: {_reason(e.reason)}; {hint}") from None
    except (OSError, ValueError) as e:  # timeouts, resets mid-read, malformed URLs
        raise DownloadError(f"cannot download {url}: {_reason(e)}; {hint}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != ds.sha256:
        raise DownloadError(f"download from {url} failed its checksum (sha256 {digest[:16]}..., "
                            f"expected {ds.sha256[:16]}..., {len(data)} bytes); nothing was "
                            f"cached. {hint[0].upper()}{hint[1:]}")
    return data


def _reason(e) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


def _sha256_file(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""
