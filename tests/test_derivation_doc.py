"""docs/derivation.md quotes the code: every quoted line must still be in the file it names.

The derivation's tables end in a "code" column; each `span` there must appear, verbatim up to
runs of spaces, in the source file named by the nearest heading above the table. Every
file the docs cite must exist, and every `module.name` the derivation names must be defined,
so the page cannot drift from the code silently.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DERIVATION = ROOT / "docs" / "derivation.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `module.name` in the derivation -> the module it means
MODULES = {"layers": "charlstm.layers", "model": "charlstm.model", "optim": "charlstm.optim",
           "penalties": "charlstm.penalties", "engine": "charlstm.engine",
           "activations": "charlstm.cells.activations", "lstm": "charlstm.cells.lstm",
           "gru": "charlstm.cells.gru", "rnn": "charlstm.cells.rnn"}
SPAN = re.compile(r"`([^`]+)`")
HEADING_FILE = re.compile(r"^#{2,3} .*`(charlstm/[\w/]+\.py)`")
CITED = re.compile(r"(?<![\w/.-])((?:charlstm|tests|benchmarks|docs)/[\w/.-]*\w)")


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def quoted_code() -> list[tuple[str, str, int]]:
    """(file, quoted span, line number) for every span in a table's "code" column."""
    found, source, code_table = [], None, False
    for n, line in enumerate(DERIVATION.read_text("utf-8").splitlines(), 1):
        if m := HEADING_FILE.match(line):
            source = m.group(1)
        if not line.startswith("|"):
            code_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[-1] == "code":
            code_table = True
        elif code_table and not set(cells[-1]) <= set("-: "):
            found += [(source, span, n) for span in SPAN.findall(cells[-1])]
    return found


def test_the_derivation_quotes_code_tables():
    # the check below must have something to check: both cells' backward tables at least
    files = {f for f, _, _ in quoted_code()}
    assert {"charlstm/cells/lstm.py", "charlstm/cells/gru.py"} <= files


@pytest.mark.parametrize("source, span, line", quoted_code())
def test_every_quoted_line_is_in_the_code(source, span, line):
    assert source is not None, f"derivation.md:{line}: a code table under no file heading"
    code = squash((ROOT / source).read_text("utf-8"))
    assert squash(span) in code, f"derivation.md:{line}: `{span}` is not in {source}"


def test_every_named_function_exists():
    names = {s for s in SPAN.findall(DERIVATION.read_text("utf-8"))
             if re.fullmatch(r"[a-z_]+\.[A-Za-z_]\w*", s) and s.split(".")[0] in MODULES}
    assert len(names) > 10
    missing = [n for n in sorted(names)
               if not hasattr(importlib.import_module(MODULES[n.split(".")[0]]),
                              n.split(".")[1])]
    assert not missing, f"derivation.md names what the code does not define: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_cited_file_exists(page):
    cited = set(CITED.findall(page.read_text("utf-8")))
    missing = sorted(c for c in cited if not (ROOT / c).exists() and "*" not in c)
    assert not missing, f"{page.name} cites files that do not exist: {missing}"
