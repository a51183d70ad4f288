"""Every shell and Python snippet in README.md and docs/*.md runs, so none can drift.

A page's fenced ```sh / ```bash / ```console / ```python blocks run in order in one
temporary directory, as a reader follows it top to bottom. The directory starts with a
tiny trained run in `runs/demo` (where `make demo` leaves one) and small texts (`my_corpus.txt`,
`my_letters.txt`, `other.txt`); a ```toml block whose first line is `# NAME` is written
to NAME. `charlstm` and `python` are this interpreter. A block that cannot run here (a
download, `pip install`, `make`, hours of training, a benchmark) is marked by the line
`<!-- not run: REASON -->` right before its fence; an unmarked block that fails fails the
test. Blocks naming `tinyshakespeare` run only where the suite finds the corpus without
the network (conftest.py); Python blocks importing an uninstalled extra are skipped. A
Python block after the line `<!-- continues the block above -->` runs with the page's
previous Python block before it, in one process.
Long commands are shrunk by the few rules in SHRINK, applied to each logical line.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TINYSHAKESPEARE

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_LANGS = {"sh", "bash", "console", "python"}
NOT_RUN = re.compile(r"<!--\s*not run:\s*(\S.*?)\s*-->")
CONTINUES = re.compile(r"<!--\s*continues the block above\s*-->")
BLOCK_TIMEOUT_S = 120

# (pattern, replacement) on each logical shell line, in this order: a snippet's limit
# becomes 6 steps (a resumed run goes on from 3), every new run stops at 3 steps unless
# the line sets a limit, and every new model has 16 units (flags written later in the
# line, e.g. --hidden-size in the cells' loop, still win: argparse keeps the last).
SHRINK = [
    (re.compile(r"--(?:max-steps|time-budget) \S+"), "--max-steps 6"),
    (re.compile(r"\bcharlstm train (?!.*--(?:resume|init-from)\b)"),
     "charlstm train --hidden-size 16 --max-steps 3 "),
    (re.compile(r"\bcharlstm train (?=.*--init-from\b)"), "charlstm train --max-steps 3 "),
]
# what a snippet uses -> the optional module it needs (an extra: torch, onnx)
NEEDS = [(re.compile(r"\.pt\b|^\s*(?:import|from) [^\n]*\b(?:torch|safetensors\.torch)\b|"
                     r"interop\.torch", re.M), "torch"),
         (re.compile(r"\.onnx\b|onnxruntime"), "onnxruntime")]


@dataclass
class Snippet:
    page: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    not_run: str | None  # the marker's reason
    continues: bool  # a Python block run after the page's previous Python block


def snippets(page: Path) -> list[Snippet]:
    """The fenced blocks of one page, with the not-run marker on the line before each."""
    out, lines, i = [], page.read_text(encoding="utf-8").splitlines(), 0
    while i < len(lines):
        fence = re.match(r"\s*```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1)
        i += 1
        while i < len(lines) and not re.match(r"\s*```\s*$", lines[i]):
            i += 1
        before = lines[start - 1] if start else ""
        marker = NOT_RUN.search(before)
        out.append(Snippet(page.name, start + 1, lang, "\n".join(lines[start + 1:i]) + "\n",
                           marker.group(1) if marker else None,
                           bool(CONTINUES.search(before))))
        i += 1
    return out


def shrink(code: str) -> str:
    """Logical lines (backslash continuations joined), each with SHRINK applied."""
    code = re.sub(r"\\\n\s*", "", code)
    for pattern, replacement in SHRINK:
        code = pattern.sub(replacement, code)
    return code


def console_commands(code: str) -> str:
    """A ```console block's `$ ` lines; the rest is output."""
    return "".join(line[2:] + "\n" for line in code.splitlines() if line.startswith("$ "))


@pytest.fixture(scope="session")
def seed_dir(tmp_path_factory) -> Path:
    """A directory with a 2-step, 16-unit run in runs/demo (what `make demo` leaves), and texts."""
    seed = tmp_path_factory.mktemp("docs-seed")
    verse = ["ROMEO: But soft, what light through yonder window breaks?",
             "JULIET: O Romeo, Romeo! wherefore art thou Romeo?",
             "ROMEO: (Aside) Shall I hear more, or shall I speak at this?",
             "JULIET: 'Tis but thy name that is my enemy; [Thou art thyself.]"]
    text = "\n".join(verse[(i * 7) % 4] + f" {i}" for i in range(700)) + "\n"
    (seed / "my_corpus.txt").write_text(text, encoding="utf-8")
    (seed / "my_letters.txt").write_text(text[:12_000], encoding="utf-8")
    (seed / "other.txt").write_text(text[-6_000:], encoding="utf-8")
    subprocess.run([sys.executable, "-m", "charlstm", "train", "--data", "my_corpus.txt",
                    "--out", "runs/demo", "--hidden-size", "16", "--max-steps", "2"],
                   cwd=seed, env=snippet_env(seed), check=True, capture_output=True)
    return seed


def snippet_env(work: Path) -> dict:
    """PATH with `charlstm` and `python` shims, a private cache, no network, NumPy backend."""
    bin_dir = work.parent / (work.name + "-bin")
    bin_dir.mkdir(exist_ok=True)
    for name, args in (("charlstm", '-m charlstm "$@"'), ("python", '"$@"')):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" {args}\n')
        shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               XDG_CACHE_HOME=str(work / ".cache"), PYTHONPATH=str(ROOT),
               CHARLSTM_TINYSHAKESPEARE_URL="http://127.0.0.1:9/no-network-in-tests",
               CHARLSTM_BACKEND="numpy", MPLBACKEND="Agg", COLUMNS="100")
    env.pop("CHARLSTM_DATA_DIR", None)
    if TINYSHAKESPEARE is not None:
        env["CHARLSTM_DATA_DIR"] = str(TINYSHAKESPEARE.parent)
    return env


def skip_reason(snippet: Snippet) -> str | None:
    """Why this environment cannot run an unmarked snippet, or None."""
    if "tinyshakespeare" in snippet.code and TINYSHAKESPEARE is None:
        return "Tiny Shakespeare is not available offline (set CHARLSTM_DATA_DIR)"
    for uses, module in NEEDS:
        if uses.search(snippet.code) and importlib.util.find_spec(module) is None:
            return f"needs {module}, not installed"
    return None


def run_snippet(snippet: Snippet, work: Path, env: dict, before: str
                ) -> subprocess.CompletedProcess:
    """One block in `work`; `before` is the Python a continuing block runs first."""
    if snippet.lang == "python":
        argv = [sys.executable, "-c", before + snippet.code]
    else:
        code = console_commands(snippet.code) if snippet.lang == "console" else snippet.code
        argv = ["bash", "-c", "set -eo pipefail\n" + shrink(code)]
    return subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)


def run_page(page: Path, seed_dir: Path, work: Path) -> tuple[list[str], list[str]]:
    """Run a page's blocks in order in `work` (a copy of seed_dir): (failures, skipped)."""
    shutil.copytree(seed_dir, work)
    env = snippet_env(work)
    failures, skipped, python = [], [], ""
    for snippet in snippets(page):
        if snippet.lang == "toml":
            name = re.match(r"#\s*(\S+\.toml)\s*$", snippet.code.splitlines()[0])
            if name:
                (work / name.group(1)).write_text(snippet.code, encoding="utf-8")
            continue
        if snippet.lang not in RUN_LANGS or snippet.not_run:
            continue
        reason = skip_reason(snippet)
        if reason:
            skipped.append(f"{page.name}:{snippet.line}: {reason}")
            continue
        before = python if snippet.continues else ""
        result = run_snippet(snippet, work, env, before)
        if snippet.lang == "python":
            python = before + snippet.code
        if result.returncode != 0 and skipped:  # it may need what a skipped block made
            skipped.append(f"{page.name}:{snippet.line}: follows a skipped block")
        elif result.returncode != 0:
            failures.append(f"{page.name}:{snippet.line} ({snippet.lang}) exited "
                            f"{result.returncode}:\n{snippet.code}--- stderr:\n"
                            f"{result.stderr[-2000:]}")
    return failures, skipped


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_snippet_on_the_page_runs(page, seed_dir, tmp_path):
    failures, skipped = run_page(page, seed_dir, tmp_path / "work")
    assert not failures, "\n\n".join(failures)
    if skipped:
        pytest.skip("; ".join(skipped))


def test_a_failing_snippet_is_reported_unless_marked(seed_dir, tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```sh\ncharlstm eval runs/demo --data missing.txt\n```\n\n"
                    "<!-- not run: shows a mistake -->\n```sh\ncharlstm eval runs/nowhere\n```\n\n"
                    "```python\nx = 1\n```\n\n<!-- continues the block above -->\n"
                    "```python\nassert x == 2, 'ran after the block above'\n```\n\n"
                    "```console\n$ test -f runs/demo/best.safetensors\nnot a command\n```\n",
                    encoding="utf-8")
    failures, skipped = run_page(page, seed_dir, tmp_path / "work")
    assert [f.split(" ", 1)[0] for f in failures] == ["page.md:1", "page.md:15"]
    assert "missing.txt" in failures[0] and "ran after the block above" in failures[1]
    assert not skipped


def test_snippets_are_collected_and_marked_ones_say_why():
    found = [s for page in PAGES for s in snippets(page)]
    runnable = [s for s in found if s.lang in RUN_LANGS]
    marked = [s for s in runnable if s.not_run]
    unlabelled = [f"{s.page}:{s.line}" for s in found if not s.lang]
    assert len(runnable) >= 20, f"only {len(runnable)} runnable snippets found"
    assert len(marked) <= len(runnable) // 3, (
        f"{len(marked)} of {len(runnable)} snippets are marked not run: "
        + ", ".join(f"{s.page}:{s.line} ({s.not_run})" for s in marked))
    for s in found:
        if s.not_run and s.lang not in RUN_LANGS:
            pytest.fail(f"{s.page}:{s.line}: a not-run marker on a ```{s.lang} block")
    # output and file listings are shown in ```text, so a forgotten language is visible
    assert not unlabelled, "fenced blocks without a language: " + ", ".join(unlabelled)


def test_shrink_rules():
    assert shrink("charlstm train --preset large --data x.txt \\\n  --time-budget 120\n") == (
        "charlstm train --hidden-size 16 --max-steps 3 --preset large --data x.txt "
        "--max-steps 6\n")
    assert shrink("charlstm train --resume runs/mine --max-steps 10000\n") == (
        "charlstm train --resume runs/mine --max-steps 6\n")
    assert shrink("charlstm train --init-from runs/big --data a.txt --epochs 5\n") == (
        "charlstm train --max-steps 3 --init-from runs/big --data a.txt --epochs 5\n")
