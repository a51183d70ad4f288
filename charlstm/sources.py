"""What `--data` names, read into one text: a file, a dataset name, a directory, several
of these, or `-` for standard input.

    --data notes.txt            the file
    --data tinyshakespeare      a dataset (charlstm.datasets: found or downloaded)
    --data corpus/              char-rnn's corpus/input.txt if there is one, else every
                                regular file in it not starting with ".", in name order
    --data a.txt b.txt          the texts joined in the order given
    --data -                    standard input, read once (a run keeps a copy: session.py)

Texts are joined with a newline between two when the first does not end in one, so no
word runs into the next file's first. The run's checksum (data_sha256) is of the joined,
decoded text: an edited, added, removed or reordered file is a different text, and a
resume on it is refused whatever form --data took.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import NamedTuple

from .datasets import resolve_data
from .errors import UserError
from .resources import check_text_fits
from .text import read_text

STDIN = "-"
CHAR_RNN_INPUT = "input.txt"  # char-rnn's data_dir/input.txt


class Source(NamedTuple):
    text: str
    sha256: str  # of the text, UTF-8 encoded
    shown: str  # how messages name it: a path, "DIR (3 files)", "a.txt + b.txt", stdin


def specs(data: str | list[str] | tuple[str, ...]) -> list[str]:
    """The --data value (one spec, or a list of them from --data A B or a TOML list) as
    a list."""
    return [data] if isinstance(data, str) else list(data)


def describe(data: str | list[str] | tuple[str, ...]) -> str:
    """A short name of --data for a title or a run name: the base name of its first
    entry (stdin for -), "+N" for the others."""
    names = ["stdin" if s == STDIN else (Path(s).name or s) for s in specs(data)]
    return names[0] + (f" +{len(names) - 1}" if len(names) > 1 else "")


def directory_files(path: Path) -> list[Path]:
    """The files --data DIR reads: DIR/input.txt alone if it is there (char-rnn's
    layout), else every regular file whose name does not start with ".", by name."""
    if (path / CHAR_RNN_INPUT).is_file():
        return [path / CHAR_RNN_INPUT]
    try:
        files = sorted(p for p in path.iterdir()
                       if not p.name.startswith(".") and p.is_file())
    except OSError as e:
        raise UserError(f"cannot list --data {path}: {e.strerror or e}", exit_code=1) from None
    if not files:
        raise UserError(f"--data {path} is a directory with no text file in it (its "
                        f"{CHAR_RNN_INPUT}, or files not starting with '.')")
    return files


def files_of(spec: str) -> list[Path]:
    """The files one spec (not stdin) names, in the order they are read."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return directory_files(path)
    return [resolve_data(spec)]


def join(texts: list[str]) -> str:
    """texts joined, a newline inserted after any but the last that lacks one."""
    return "".join(t if t.endswith("\n") or i == len(texts) - 1 else t + "\n"
                   for i, t in enumerate(texts))


def read_stdin(encoding_errors: str) -> str:
    """Standard input, all of it, decoded as read_text decodes a file."""
    if sys.stdin is None or sys.stdin.isatty():
        raise UserError("--data -: standard input is a terminal; pipe a text in "
                        "(cat notes.txt | charlstm train --data -)")
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8", errors=encoding_errors)
    except UnicodeDecodeError as e:
        raise UserError(f"standard input is not valid UTF-8: byte offset {e.start}; pass "
                        "--encoding-errors replace to substitute U+FFFD") from None
    if not text:
        raise UserError("--data -: standard input is empty")
    return text


def read_source(data, encoding_errors: str = "strict") -> Source:
    """The text --data names (see the module docstring), its checksum and its name."""
    parts, shown = [], []
    files_each = [[] if spec == STDIN else files_of(spec) for spec in specs(data)]
    check_text_fits(*(path for files in files_each for path in files))
    for spec, files in zip(specs(data), files_each):
        if spec == STDIN:
            parts.append(read_stdin(encoding_errors))
            shown.append("standard input")
            continue
        for path in files:
            parts.append(read_text(path, encoding_errors))
        names = ", ".join(p.name for p in files[:3]) + (", ..." if len(files) > 3 else "")
        shown.append(str(files[0]) if len(files) == 1 and not Path(spec).expanduser().is_dir()
                     else f"{spec} ({len(files)} file{'s' * (len(files) > 1)}: {names})")
    text = join(parts)
    return Source(text, hashlib.sha256(text.encode("utf-8")).hexdigest(), " + ".join(shown))
