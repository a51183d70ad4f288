"""Prepared corpora (`charlstm prepare`, `train --data DIR`) and bounded validation
(`--eval-chars`): exact round trips, bounded memory, the same training as from the text."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from test_train import (
    TEXT,
    _final_arrays,
    _log_without_timings,
    _stop_by_signal_after,
    tiny_config,
)

from charlstm import prepare as pr
from charlstm import session
from charlstm.checkpoint import load_checkpoint
from charlstm.config import TrainConfig
from charlstm.data import eval_subset, eval_windows
from charlstm.errors import UserError
from charlstm.evaluate import evaluate


def _decode(prep) -> str:
    return prep.vocab.decode(np.asarray(prep.ids))


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_prepare_round_trips_any_chunking_with_characters_cut_by_chunks(tmp_path, chunk):
    """Multi-byte characters cut by every chunk boundary decode back; the vocabulary is
    the text's sorted set (as training from the text builds it); starts and checksums."""
    a, b = "héllo wörld ✓ 𝄞\n", "ça va? 日本\n"
    (tmp_path / "a.txt").write_text(a, encoding="utf-8")
    (tmp_path / "b.txt").write_text(b, encoding="utf-8")
    prep = pr.prepare([tmp_path / "a.txt", tmp_path / "b.txt"], tmp_path / "c", chunk=chunk)
    assert _decode(prep) == a + b
    assert prep.vocab.chars == sorted(set(a + b)) and prep.ids.dtype == np.uint8
    meta = json.loads((tmp_path / "c" / pr.META).read_text())
    assert [f["start"] for f in meta["files"]] == [0, len(a)]
    assert meta["characters"] == len(a + b)
    assert dict(zip(meta["vocab"], meta["counts"], strict=True))["l"] == (a + b).count("l")
    assert pr.is_prepared(tmp_path / "c") and not pr.is_prepared(tmp_path)


@pytest.mark.parametrize("n_chars, dtype", [(256, np.uint8), (257, np.uint16),
                                            (70000, np.uint32)])
def test_wide_vocabularies_take_wider_ids(tmp_path, n_chars, dtype):
    chars = [chr(c) for c in range(0x20, 0x20 + n_chars + 0x800)
             if not 0xD800 <= c < 0xE000][:n_chars]
    text = "".join(chars[::-1]) + "".join(chars)
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    prep = pr.prepare([tmp_path / "t.txt"], tmp_path / "c", chunk=4096)
    assert prep.ids.dtype == dtype and len(prep.vocab) == n_chars
    assert _decode(prep) == text


def test_byte_level_ids_are_the_raw_bytes(tmp_path):
    data = bytes(range(256)) + "naïve\n".encode() + b"\xff\xfe"  # not UTF-8: bytes anyway
    (tmp_path / "b.bin").write_bytes(data)
    prep = pr.prepare([tmp_path / "b.bin"], tmp_path / "c", byte_level=True, chunk=100)
    assert prep.ids.dtype == np.uint8 and len(prep.vocab) == 256
    assert np.asarray(prep.ids).tobytes() == data
    assert _decode(prep).encode("latin-1") == data


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"abc" + "é".encode() + b"\xff rest")
    with pytest.raises(UserError, match=r"not valid UTF-8: byte offset 5 \(0xff\)"):
        pr.prepare([tmp_path / "bad.txt"], tmp_path / "c", chunk=4)
    assert not (tmp_path / "c").exists()  # the half-written directory is removed
    prep = pr.prepare([tmp_path / "bad.txt"], tmp_path / "c", encoding_errors="replace")
    assert _decode(prep) == "abcé\ufffd rest"
    (tmp_path / "cut.txt").write_bytes("abé".encode()[:-1])
    with pytest.raises(UserError, match="ends inside a character"):
        pr.prepare([tmp_path / "cut.txt"], tmp_path / "d")
    with pytest.raises(UserError, match="already exists"):
        pr.prepare([tmp_path / "bad.txt"], tmp_path / "c")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(UserError, match="is empty"):
        pr.prepare([tmp_path / "empty.txt"], tmp_path / "e")
    with pytest.raises(UserError, match="no such file"):
        pr.prepare([tmp_path / "missing.txt"], tmp_path / "m")


def test_a_changed_or_cut_id_file_is_refused(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    pr.prepare([tmp_path / "t.txt"], tmp_path / "c")
    with open(tmp_path / "c" / pr.IDS, "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="changed or cut short"):
        pr.open_prepared(tmp_path / "c")


def test_memory_stays_bounded_on_a_text_many_chunks_long(tmp_path):
    """Python's allocations peak at a few chunks, not the text: 6 MB of text in 64 KB
    chunks (96 of them) peaks under 40 chunks."""
    line = "Über 50 ½ words, ĉu ne? "
    text = (line * (6_000_000 // len(line) + 1))[:6_000_000]
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    chunk = 64 << 10
    tracemalloc.start()
    try:
        prep = pr.prepare([tmp_path / "t.txt"], tmp_path / "c", chunk=chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * chunk < len(text) // 2
    assert _decode(prep) == text


def _prepared_config(tmp_path, name, **kw) -> TrainConfig:
    cfg = tiny_config(tmp_path, name, **kw)
    if not (tmp_path / "prepared").exists():
        pr.prepare([cfg.data], tmp_path / "prepared", chunk=16)
    return TrainConfig(**{**cfg.to_dict(), "data": str(tmp_path / "prepared")})


def test_training_from_a_prepared_corpus_equals_training_from_its_text(tmp_path):
    """Same weights, optimizer state and log, bit for bit; and the run records the text's
    checksum, so either resumes the other."""
    session.start_training(tiny_config(tmp_path, "text"))
    session.start_training(_prepared_config(tmp_path, "prep"))
    a, meta_a = _final_arrays(tmp_path / "text")
    b, meta_b = _final_arrays(tmp_path / "prep")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a) and set(a) == set(b)
    assert meta_a["data_sha256"] == meta_b["data_sha256"]
    assert _log_without_timings(tmp_path / "text") == _log_without_timings(tmp_path / "prep")
    # a run begun on the text continues on the prepared corpus
    assert session.resume_training(tmp_path / "text", {"max_steps": 20,
                                                       "data": str(tmp_path / "prepared")}
                                   ).step == 20


def test_resume_from_a_prepared_corpus_is_exact(tmp_path, monkeypatch):
    """Stopped by a signal at step 7 (past an epoch wrap) and resumed: the same bits as
    16 steps straight."""
    session.start_training(_prepared_config(tmp_path, "straight"))
    _stop_by_signal_after(monkeypatch, 7)
    assert session.start_training(_prepared_config(tmp_path, "resumed")).step == 7
    monkeypatch.undo()
    assert session.resume_training(tmp_path / "resumed").step == 16
    a, _ = _final_arrays(tmp_path / "straight")
    b, _ = _final_arrays(tmp_path / "resumed")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert _log_without_timings(tmp_path / "straight") == _log_without_timings(
        tmp_path / "resumed")


def test_a_changed_prepared_corpus_is_refused_on_resume(tmp_path, charlstm_cli):
    session.start_training(_prepared_config(tmp_path, "run", max_steps=4))
    other = tmp_path / "other.txt"
    other.write_text(TEXT.upper() + TEXT, encoding="utf-8")
    pr.prepare([other], tmp_path / "other")
    ran = charlstm_cli("train", "--resume", tmp_path / "run", "--max-steps", 6,
                       "--data", tmp_path / "other")
    assert ran.rc == 2 and "is not the text this run was trained on" in ran.err
    assert load_checkpoint(tmp_path / "run" / "last.safetensors").meta["step"] == 4


def test_a_model_with_another_vocabulary_is_refused_in_one_line(tmp_path, charlstm_cli):
    session.start_training(tiny_config(tmp_path, "run", max_steps=2))
    (tmp_path / "x.txt").write_text(TEXT + "Zebra ✓", encoding="utf-8")
    pr.prepare([tmp_path / "x.txt"], tmp_path / "x")
    ran = charlstm_cli("train", "--init-from", tmp_path / "run", "--data", tmp_path / "x",
                       "--max-steps", 1, "--out", tmp_path / "ft")
    assert ran.rc == 2 and "lacks: 'Z'" in ran.err and len(ran.err.splitlines()) == 1


def test_prepare_and_eval_through_the_cli(tmp_path, charlstm_cli):
    (tmp_path / "t.txt").write_text(TEXT * 3, encoding="utf-8")
    ran = charlstm_cli("prepare", tmp_path / "t.txt", "--out", tmp_path / "c")
    assert ran.rc == 0, ran.err
    assert "375 characters, vocabulary" in ran.out
    ran = charlstm_cli("train", "--data", tmp_path / "c", "--hidden-size", 8, "--seq-len", 8,
                       "--batch-size", 2, "--max-steps", 2, "--out", tmp_path / "run")
    assert ran.rc == 0, ran.err
    # eval scores the prepared val split as it scores the text's
    from_dir = json.loads(charlstm_cli("eval", tmp_path / "run", "--json").out)
    from_text = json.loads(charlstm_cli("eval", tmp_path / "run", "--json", "--data",
                                        tmp_path / "t.txt", "--split", "val").out)
    assert from_dir["loss"] == from_text["loss"] and from_dir["split"] == "val"
    assert charlstm_cli("prepare", tmp_path / "t.txt", "--out", tmp_path / "c").rc == 2


def test_eval_windows_read_a_map_as_they_read_an_array(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    prep = pr.prepare([tmp_path / "t.txt"], tmp_path / "c")
    ids = np.asarray(prep.ids).astype(np.int64)
    for (x, y, m), (x2, y2, m2) in zip(eval_windows(ids, 3, 7), eval_windows(prep.ids, 3, 7),
                                       strict=True):
        assert (x == x2).all() and (y == y2).all() and (m == m2).all()
        assert x2.dtype == np.int64


def test_eval_chars_is_a_fixed_prefix_and_the_default_keeps_small_splits_whole(tmp_path):
    val = np.arange(500)
    assert (eval_subset(val, 100) == val[:100]).all()
    assert eval_subset(val, 0) is val
    assert len(eval_subset(val, TrainConfig().eval_chars)) == 500
    assert TrainConfig().eval_chars >= 111_540  # Tiny Shakespeare's whole val split
    with pytest.raises(ValueError, match="eval_chars"):
        TrainConfig(eval_chars=-1)


def test_the_default_eval_chars_keeps_tiny_shakespeares_whole_split(tinyshakespeare):
    corpus, _, _ = session.load_data(TrainConfig(data=str(tinyshakespeare)))
    assert len(corpus.val) == 111_540
    assert len(eval_subset(corpus.val, TrainConfig().eval_chars)) == 111_540


def test_validation_during_training_scores_the_eval_chars_prefix(tmp_path):
    """The logged val loss is evaluate() on the first eval_chars characters of the
    split, the same at every pass."""
    cfg = tiny_config(tmp_path, "run", eval_chars=9, max_steps=4, ema_decay=0.0)
    out = session.start_training(cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "last.safetensors")
    corpus, _, _ = session.load_data(cfg)
    assert out.val_loss == evaluate(ckpt.params, ckpt.config, corpus.val[:9],
                                    cfg.batch_size, cfg.seq_len)
    assert out.val_loss != evaluate(ckpt.params, ckpt.config, corpus.val, cfg.batch_size,
                                    cfg.seq_len)


def test_a_big_text_is_prepared_once_into_the_cache_and_trains_the_same(
        tmp_path, monkeypatch, capsys, charlstm_cli):
    """Above prepare.AUTO_BYTES (lowered here), `--data TEXT` is prepared on first use
    into $XDG_CACHE_HOME/charlstm/prepared/<sha256>-strict, reused after, and trains the
    same bits as the text read whole; eval reads it from there too."""
    session.start_training(tiny_config(tmp_path, "whole"))
    monkeypatch.setattr(pr, "AUTO_BYTES", 100)
    session.start_training(tiny_config(tmp_path, "auto"))
    assert "preparing" in capsys.readouterr().err
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "charlstm" / "prepared"
    (made,) = cache.iterdir()
    assert made.name.endswith("-strict") and pr.is_prepared(made)
    a, _ = _final_arrays(tmp_path / "whole")
    b, _ = _final_arrays(tmp_path / "auto")
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    monkeypatch.setattr(pr, "prepare", None)  # a second use must not prepare again
    session.start_training(tiny_config(tmp_path, "again", max_steps=2))
    assert "preparing" not in capsys.readouterr().err
    ran = charlstm_cli("eval", tmp_path / "whole", "--json")
    assert ran.rc == 0, ran.err
    # an edited big text is refused on resume before anything is prepared from it
    (tmp_path / "corpus.txt").write_text(TEXT[::-1], encoding="utf-8")
    with pytest.raises(UserError, match="is not the text this run was trained on"):
        session.resume_training(tmp_path / "auto", {"max_steps": 20})
    assert len(list(cache.iterdir())) == 1
