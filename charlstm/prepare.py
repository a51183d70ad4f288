"""Prepared corpora: texts encoded once into a memory-mapped id file, for corpora
larger than memory.

Shape legend: N characters (ids) of the corpus, V vocabulary.

`prepare(texts, out)` reads the texts twice in chunks of CHUNK bytes, decoding UTF-8
incrementally (a character cut by a chunk boundary is completed by the next chunk):
the first pass counts every code point (so the vocabulary is the sorted set, as
Vocab.from_text builds it from the whole text), the second maps each chunk's code points
to ids through a lookup table and appends them to `ids.bin`. Memory is a few chunks,
whatever N. With byte_level, ids are the raw bytes (V = 256, characters U+0000..U+00FF
stand for the bytes) and one pass suffices.

The directory holds `ids.bin` (N ids, uint8 when V <= 256, else uint16 or uint32) and
`charlstm-corpus.json` (written last, so a directory without it is no prepared corpus):
the vocabulary, the dtype, N, the files and where each starts, and two checksums:
`text_sha256`, of the decoded text re-encoded as UTF-8, which is the checksum a run
trained on the text itself records, so a run may resume from either; and `ids_sha256`.
`open_prepared` maps the ids without reading them: windows are read from the map.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .data import Corpus, split_corpus
from .datasets import cache_dir
from .errors import UserError, os_error_message
from .text import Vocab, list_chars

META = "charlstm-corpus.json"
IDS = "ids.bin"
FORMAT = 1
CHUNK = 16 << 20  # bytes read at a time: memory is a few of these, whatever the corpus


class Prepared(NamedTuple):
    """A prepared corpus, opened: ids is a read-only np.memmap (N,)."""

    path: Path
    vocab: Vocab
    ids: np.ndarray
    meta: dict

    @property
    def text_sha256(self) -> str:
        return self.meta["text_sha256"]


def is_prepared(path) -> bool:
    """A directory holding a prepared corpus's JSON (the rule --data DIR follows: with it,
    the prepared ids; without it, the directory is something else)."""
    return Path(path).is_dir() and (Path(path) / META).is_file()


def id_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype that holds ids 0..vocab_size - 1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise ValueError(f"vocabulary of {vocab_size} characters")


def _chunks(paths, chunk: int, progress=None):
    """(path, bytes) of each file, chunk bytes at a time; progress(n) after each read."""
    for path in paths:
        try:
            with open(path, "rb") as f:
                while data := f.read(chunk):
                    if progress is not None:
                        progress(len(data))
                    yield path, data
        except FileNotFoundError:
            raise UserError(f"no such file: {path}") from None
        except IsADirectoryError:
            raise UserError(f"{path} is a directory, not a text file") from None
        except OSError as e:
            raise UserError(f"cannot read {os_error_message(e, path)}", exit_code=1) from None


def _decoded(paths, chunk: int, errors: str, progress=None):
    """(path, code points (n,) uint32 of the next piece of text, its UTF-8 bytes) over
    every file, decoded incrementally. A file ends with a complete character or an error
    naming its byte offset, as read_text's."""
    for path in paths:
        decoder = codecs.getincrementaldecoder("utf-8")(errors)
        offset = 0
        for _, data in _chunks([path], chunk, progress):
            pending = len(decoder.getstate()[0])  # bytes of a character the last chunk cut
            try:
                text = decoder.decode(data)
            except UnicodeDecodeError as e:  # e.object: the pending bytes, then data
                raise UserError(f"{path} is not valid UTF-8: byte offset "
                                f"{offset - pending + e.start} (0x{e.object[e.start]:02x}); "
                                "pass --encoding-errors replace to substitute U+FFFD") from None
            offset += len(data)
            yield path, text
        try:
            tail = decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UserError(f"{path} is not valid UTF-8: it ends inside a character; pass "
                            "--encoding-errors replace to substitute U+FFFD") from None
        yield path, tail


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def passes(byte_level: bool) -> int:
    """How many times prepare reads the texts (for a progress bar's total)."""
    return 1 if byte_level else 2


def prepare(paths, out, byte_level: bool = False, encoding_errors: str = "strict",
            chunk: int = CHUNK, progress=None) -> Prepared:
    """Encode the texts (in order, as one corpus) into a new directory out; see the
    module docstring. out must not exist yet (charlstm writes only in what it made).
    progress(n): told of every n bytes read, passes(byte_level) times the texts' size
    in all."""
    paths = [Path(p) for p in paths]
    out = Path(out)
    if not paths:
        raise UserError("prepare needs at least one text file")
    for path in paths:
        if not path.is_file():
            raise UserError(f"no such file: {path}" if not path.exists()
                            else f"{path} is not a regular file")
    if out.exists() or out.is_symlink():
        raise UserError(f"--out {out} already exists; give a new directory (charlstm "
                        "creates it), or remove the old one first")
    try:
        out.mkdir(parents=True)
    except OSError as e:
        raise UserError(f"cannot create {os_error_message(e, out)}", exit_code=1) from None
    try:
        meta = (_prepare_bytes if byte_level else _prepare_text)(paths, out, chunk,
                                                                 encoding_errors, progress)
        (out / META).write_text(json.dumps(meta, indent=1, ensure_ascii=True) + "\n",
                                encoding="utf-8")
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # ours: made above, nothing else in it
        raise
    return open_prepared(out)


def _prepare_text(paths, out: Path, chunk: int, errors: str, progress) -> dict:
    counts = np.zeros(0, dtype=np.int64)  # (highest code point seen + 1,) occurrences
    for _, text in _decoded(paths, chunk, errors, progress):
        seen = np.bincount(_codes(text))
        if len(seen) > len(counts):
            counts = np.concatenate([counts, np.zeros(len(seen) - len(counts), np.int64)])
        counts[:len(seen)] += seen
    present = np.flatnonzero(counts)
    if not len(present):
        raise UserError(f"{paths[0]} is empty" if len(paths) == 1 else "the texts are empty")
    vocab = [chr(c) for c in present]
    dtype = id_dtype(len(vocab))
    table = np.zeros(len(counts), dtype=dtype)  # code point -> id
    table[present] = np.arange(len(present), dtype=dtype)
    text_sha, ids_sha = hashlib.sha256(), hashlib.sha256()
    starts, n = {}, 0
    with open(out / IDS, "wb") as f:
        for path, text in _decoded(paths, chunk, errors, progress):
            starts.setdefault(str(path), n)
            ids = table[_codes(text)]
            text_sha.update(text.encode("utf-8"))
            ids_sha.update(ids.tobytes())
            f.write(ids.tobytes())
            n += len(ids)
    return _meta(paths, starts, vocab, dtype, n, text_sha, ids_sha, False,
                 counts[present].tolist())


def _prepare_bytes(paths, out: Path, chunk: int, _errors: str, progress) -> dict:
    sha = hashlib.sha256()
    counts = np.zeros(256, dtype=np.int64)
    starts, n = {}, 0
    with open(out / IDS, "wb") as f:
        for path, data in _chunks(paths, chunk, progress):
            starts.setdefault(str(path), n)
            counts += np.bincount(np.frombuffer(data, dtype=np.uint8), minlength=256)
            sha.update(data)
            f.write(data)
            n += len(data)
    if not n:
        raise UserError(f"{paths[0]} is empty" if len(paths) == 1 else "the texts are empty")
    # the ids are the bytes, so both checksums are the bytes'
    return _meta(paths, starts, [chr(b) for b in range(256)], np.dtype(np.uint8), n, sha,
                 sha, True, counts.tolist())


def _meta(paths, starts, vocab, dtype, n, text_sha, ids_sha, byte_level, counts) -> dict:
    return {
        "format": FORMAT,
        "ids": IDS,
        "dtype": np.dtype(dtype).name,
        "characters": n,
        "byte_level": byte_level,
        "vocab": vocab,
        "counts": counts,  # occurrences of each vocabulary entry
        "files": [{"path": os.path.abspath(p), "start": starts.get(str(p), n)}
                  for p in paths],
        "text_sha256": text_sha.hexdigest(),
        "ids_sha256": ids_sha.hexdigest(),
    }


def open_prepared(path) -> Prepared:
    """The prepared corpus in directory path, its ids mapped read-only (nothing is read
    until a window asks for it). A damaged directory is a one-line UserError."""
    path = Path(path)
    where = path / META
    try:
        meta = json.loads(where.read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, not {FORMAT}")
        vocab = Vocab(list(meta["vocab"]))
        dtype = np.dtype(meta["dtype"])
        n = int(meta["characters"])
        if dtype != id_dtype(len(vocab)) and not meta.get("byte_level"):
            raise ValueError(f"dtype {dtype} for {len(vocab)} characters")
        ids_path = path / IDS
        size = ids_path.stat().st_size
        if size != n * dtype.itemsize:
            raise ValueError(f"{IDS} holds {size:,} bytes, not {n:,} {dtype} ids; it was "
                             "changed or cut short after prepare")
        ids = np.memmap(ids_path, dtype=dtype, mode="r", shape=(n,))
    except FileNotFoundError as e:
        raise UserError(f"{path} is not a complete prepared corpus: "
                        f"{os_error_message(e)}; prepare it again") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{where}: not a usable prepared corpus ({e}); prepare it "
                        "again") from None
    return Prepared(path, vocab, ids, meta)


def prepared_corpus(prep: Prepared, val_frac: float, vocab: Vocab | None = None) -> Corpus:
    """The prepared ids split as a text's are (data.split), both parts views of the map.

    vocab: a model's vocabulary (fine-tuning, resuming); the prepared ids are its ids
    only if the vocabularies are the same list, so any other is refused in one line.
    """
    if vocab is not None and vocab.chars != prep.vocab.chars:
        missing = [c for c in prep.vocab.chars if c not in vocab.index]
        why = (f"it has characters the model's vocabulary lacks: {list_chars(missing)}"
               if missing else "its vocabulary is in another order than the model's")
        raise UserError(f"{prep.path} cannot feed this model: {why}; train a new model "
                        "on it, or give the text file itself as --data")
    return split_corpus(prep.vocab, prep.ids, val_frac, str(prep.path))


# A --data text at least this big is prepared on first use (see cached_corpus): reading
# it whole would take about 22 bytes a character.
AUTO_BYTES = 256 << 20


def is_big_text(spec: str) -> bool:
    """A regular file of at least AUTO_BYTES: one that `train --data` prepares."""
    path = Path(spec).expanduser()
    return path.is_file() and path.stat().st_size >= AUTO_BYTES


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, read in chunks. For valid UTF-8 read strictly it is the
    text's checksum too (text_sha256), so a run can be checked before anything is made."""
    digest = hashlib.sha256()
    for _, data in _chunks([Path(path)], CHUNK):
        digest.update(data)
    return digest.hexdigest()


def cached_corpus(path, digest: str, encoding_errors: str, cache: Path,
                  say=None) -> Prepared:
    """The prepared corpus of a big text whose bytes have sha256 digest, kept in
    cache/prepared/<digest>-<encoding_errors> and made there on first use (into a
    temporary directory renamed when complete, so a crash or a second process leaves no
    half corpus). say(text): told before a corpus is made."""
    where = cache / "prepared" / f"{digest}-{encoding_errors}"
    if is_prepared(where):
        return open_prepared(where)
    if say is not None:
        say(f"charlstm: preparing {path} once into {where} (later runs on this text read "
            "it from there; charlstm prepare does this explicitly)")
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {os_error_message(e, where.parent)}",
                        exit_code=1) from None
    tmp = where.parent / f".{where.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)  # this process's own leftover, if any
    prepare([path], tmp, encoding_errors=encoding_errors)
    try:
        os.rename(tmp, where)
    except OSError:  # another process finished first: use its corpus
        shutil.rmtree(tmp, ignore_errors=True)
    return open_prepared(where)


def find_corpus(spec: str, encoding_errors: str, say=None, check=None) -> Prepared | None:
    """The prepared corpus spec stands for: a `charlstm prepare` directory, or a text big
    enough to be prepared on first use into the user cache (cached_corpus); else None.
    check(digest): given a big text's file checksum (hashed once) before anything is
    made, when strict decoding makes it the text's checksum too."""
    if is_prepared(spec):
        return open_prepared(spec)
    if not is_big_text(spec):
        return None
    digest = file_sha256(spec)
    if check is not None and encoding_errors == "strict":
        check(digest)
    return cached_corpus(spec, digest, encoding_errors, cache_dir(), say)
