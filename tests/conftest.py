"""Suite-wide guard: no test downloads a corpus or writes to the user's cache.

Tests that want Tiny Shakespeare set CHARLSTM_DATA_DIR (to ../shared/data); one that
forgets gets a fast, clear download error from a closed local port instead of a
silent 1 MB fetch, and any cache write lands in its own temporary directory.
"""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_network_no_user_cache(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
    monkeypatch.setenv("CHARLSTM_TINYSHAKESPEARE_URL", "http://127.0.0.1:9/no-network-in-tests")
