"""Suite-wide guard: no test downloads a corpus or writes to the user's cache.

A test that needs Tiny Shakespeare asks for the `tinyshakespeare` fixture: the copy a
user's `--data tinyshakespeare` would find without the network ($CHARLSTM_DATA_DIR,
else the verified cache, as they were when the suite started). Without one it skips
and says how to get it (`make data`). Every test then runs with its own empty cache
and a download URL on a closed local port, so one that reaches for the corpus some
other way gets a fast, clear download error instead of a silent 1 MB fetch.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from charlstm import fast
from charlstm.datasets import locate

# Looked up once, before any test points XDG_CACHE_HOME at a temporary directory.
TINYSHAKESPEARE, LOOKED = locate("tinyshakespeare")


@pytest.fixture
def tinyshakespeare() -> Path:
    """Path of the canonical Tiny Shakespeare text; skips the test when there is none."""
    if TINYSHAKESPEARE is None:
        pytest.skip("needs Tiny Shakespeare, not found in " + " or ".join(LOOKED)
                    + ": run `make data` (charlstm fetch tinyshakespeare) or set "
                    "CHARLSTM_DATA_DIR")
    return TINYSHAKESPEARE


@pytest.fixture(autouse=True)
def _no_network_no_user_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    monkeypatch.setenv("CHARLSTM_TINYSHAKESPEARE_URL", "http://127.0.0.1:9/no-network-in-tests")


@pytest.fixture
def fast_settings():
    """fast_settings(**changes): the fast wing's settings changed until the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda **changes: stack.enter_context(fast.use(**changes))
