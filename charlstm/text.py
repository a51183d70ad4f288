"""Reading text and mapping characters (Unicode code points) to ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import UserError, os_error_message
from .fsutil import is_device


def list_chars(chars: list[str], limit: int = 20) -> str:
    """"'x' 'é' ... and 3 more": characters shown unambiguously, for error messages."""
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return " ".join(repr(c) for c in chars[:limit]) + more


def read_text(path, encoding_errors: str = "strict") -> str:
    """Read a UTF-8 text file, with user-facing one-line errors.

    encoding_errors: "strict" (invalid UTF-8 is an error that names the byte
    offset) or "replace" (invalid bytes become U+FFFD).
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a text file")
    if is_device(path):
        raise UserError(f"{path} is a device, not a text file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"no such file: {path}") from None
    except OSError as e:  # the machine's failure, not the user's mistake: exit 1
        raise UserError(f"cannot read {os_error_message(e, path)}", exit_code=1) from None
    try:
        text = data.decode("utf-8", errors=encoding_errors)
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not valid UTF-8: byte offset {e.start} "
                        f"(0x{data[e.start]:02x}); pass --encoding-errors replace to "
                        "substitute U+FFFD") from None
    if not text:
        raise UserError(f"{path} is empty")
    return text


class Vocab:
    """Distinct characters; id i is chars[i]. Sorted when built from a text; an
    imported model keeps its own order (its weights depend on it)."""

    def __init__(self, chars: list[str]):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("vocabulary must be distinct single characters")
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """Characters of text that are not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(c for c in text if c not in self.index))

    def encode(self, text: str, skip_unknown: bool = False) -> np.ndarray:
        """(N,) int64 ids. Unknown characters raise ValueError unless skipped."""
        if not skip_unknown:
            missing = self.unknown(text)
            if missing:
                raise ValueError("characters not in the vocabulary: "
                                 + " ".join(repr(c) for c in missing))
        return np.array([self.index[c] for c in text if c in self.index], dtype=np.int64)

    def decode(self, ids) -> str:
        """The characters of ids; an id outside [0, V) (or not an integer) is a
        ValueError, not a character counted from the end."""
        ids = np.asarray(ids)
        if ids.size and (ids.dtype.kind not in "iu" or ids.min() < 0
                         or ids.max() >= len(self.chars)):
            raise ValueError(f"ids must be integers in [0, {len(self.chars)}), got "
                             f"{ids.min()!r}..{ids.max()!r} ({ids.dtype})")
        return "".join(self.chars[int(i)] for i in ids)
