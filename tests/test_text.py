"""Text reading and the code-point vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from charlstm.errors import UserError
from charlstm.text import Vocab, read_text


def test_vocab_is_code_points_and_round_trips():
    text = "héllo wörld ✓\n"
    v = Vocab.from_text(text)
    assert len(v) == len(set(text))
    ids = v.encode(text)
    assert ids.dtype == np.int64
    assert v.decode(ids) == text


def test_unknown_characters_listed_or_skipped():
    v = Vocab.from_text("abc")
    with pytest.raises(ValueError, match="'x' 'y'"):
        v.encode("axbyx")
    assert v.decode(v.encode("axbyx", skip_unknown=True)) == "ab"


def test_unreadable_text_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_text(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_bytes(b"abc\xffdef")
    with pytest.raises(UserError, match="byte offset 3"):
        read_text(tmp_path / "bad.txt")
    assert read_text(tmp_path / "bad.txt", "replace") == "abc\ufffddef"
    with pytest.raises(UserError, match="directory"):
        read_text(tmp_path)
