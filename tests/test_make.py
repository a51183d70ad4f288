"""`make demo` as a user runs it: DATA= and THREADS= reach the commands, and the Makefile
looks for the corpus only where charlstm itself does (no sibling directories)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

# the user's environment without what would change the demo (an outer make's flags too)
ENV = {k: v for k, v in os.environ.items()
       if k not in {"DATA", "THREADS", "DEMO_RUN", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}


def demo_commands(*assignments: str) -> list[str]:
    """The charlstm command lines `make demo` would run (make -n prints, runs nothing)."""
    done = subprocess.run(["make", "-n", "-B", "demo", "VENV=/nonexistent-venv", *assignments],
                          cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.replace("\\\n", " ").splitlines()
    return [line for line in lines if "/bin/charlstm " in line and "echo" not in line]


def test_demo_defaults_to_tinyshakespeare_on_every_core():
    train, evaluate, sample = demo_commands()
    assert '--data "tinyshakespeare"' in train
    assert all("--threads" not in line for line in (train, evaluate, sample))


def test_demo_takes_data_and_threads():
    commands = demo_commands("DATA=my corpus.txt", "THREADS=3")
    assert '--data "my corpus.txt"' in commands[0]
    assert all(line.rstrip().endswith("--threads 3") for line in commands)


def test_the_makefile_looks_in_no_sibling_directory():
    assert "../" not in (ROOT / "Makefile").read_text()
