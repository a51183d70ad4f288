"""Suite-wide fixtures: the one way to run the CLI, and a guard that no test downloads a
corpus or writes to the user's cache.

A test that needs Tiny Shakespeare asks for the `tinyshakespeare` fixture: the copy a
user's `--data tinyshakespeare` would find without the network ($CHARLSTM_DATA_DIR,
else the verified cache, as they were when the suite started). Without one it skips
and says how to get it (`make data`). Every test then runs with its own empty cache
and a download URL on a closed local port, so one that reaches for the corpus some
other way gets a fast, clear download error instead of a silent 1 MB fetch.
"""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from charlstm import fast
from charlstm.cli import main
from charlstm.datasets import locate

# Looked up once, before any test points XDG_CACHE_HOME at a temporary directory.
TINYSHAKESPEARE, LOOKED = locate("tinyshakespeare")


# Why an oracle or fast-path test skips where its extra is missing (pip install -e . alone).
NEEDS_TORCH = "needs PyTorch: pip install 'charlstm[torch]' (or '.[test]')"
NEEDS_ONNX = "needs onnx and onnxruntime: pip install 'charlstm[onnx]' (or '.[test]')"


@pytest.fixture
def torch_oracle():
    """tests/torch_oracle.py (autograd through torch.nn's twin of a model), or a skip
    saying what to install: the core proofs in the same module still run without torch."""
    pytest.importorskip("torch", reason=NEEDS_TORCH)
    return importlib.import_module("torch_oracle")


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


class Ran(NamedTuple):
    rc: int
    out: str
    err: str


class CLI:
    """`charlstm ARGS` as a user types it, in this process (arguments str()-ed): its exit
    status (argparse's SystemExit included) and what it printed. `subprocess` where a
    real process is needed (the exit path, pipes, signals)."""

    def __init__(self, capsys):
        self.capsys = capsys

    def __call__(self, *args) -> Ran:
        self.capsys.readouterr()
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:  # argparse's usage errors exit from inside main
            rc = e.code
        return Ran(rc, *self.capsys.readouterr())

    def ok(self, *args) -> str:
        """stdout of a command that must succeed."""
        rc, out, err = self(*args)
        assert rc == 0, err
        return out

    def error(self, *args, code: int = 2) -> str:
        """The one line of a command that must fail with `code` and no traceback."""
        rc, out, err = self(*args)
        assert rc == code, (rc, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("charlstm: error: "), err
        assert "Traceback" not in out + err
        return lines[0]

    @staticmethod
    def subprocess(*args, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "charlstm", *map(str, args)],
                              capture_output=True, text=True, **kwargs)


@pytest.fixture
def charlstm_cli(capsys) -> CLI:
    return CLI(capsys)


@pytest.fixture
def fast_settings():
    """fast_settings(**changes): the fast wing's settings changed until the test ends."""
    with contextlib.ExitStack() as stack:
        yield lambda **changes: stack.enter_context(fast.use(**changes))
