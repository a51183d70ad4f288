"""`charlstm prepare TEXT... --out DIR`: encode texts once into a memory-mapped corpus
that `charlstm train --data DIR` trains from without reading it into memory."""

from __future__ import annotations

import os
import shlex
import time

from tqdm import tqdm

from ..config import ENCODING_ERRORS
from ..datasets import resolve_data
from ..prepare import IDS, META, passes, prepare


def register(sub) -> None:
    p = sub.add_parser(
        "prepare", help="encode big texts once, for training without holding them in memory",
        description="Read the texts (in order, as one corpus) in chunks, in bounded memory "
        f"whatever their size, and write DIR/{IDS} (one id per character: 1 byte when the "
        "vocabulary has at most 256 characters, else 2 or 4) and DIR/" + META + " (the "
        "vocabulary, counts, where each file starts, checksums). `charlstm train --data DIR` "
        "then reads training windows from the file as it goes; a run trained on the text "
        "itself resumes from DIR and back, as the checksum is the text's.")
    p.add_argument("texts", nargs="+", metavar="TEXT",
                   help="UTF-8 text files (or tinyshakespeare)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="the corpus directory to create (it must not exist)")
    p.add_argument("--bytes", action="store_true",
                   help="byte-level: the ids are the raw bytes (vocabulary of 256, no "
                   "decoding), as for enwik8")
    p.add_argument("--encoding-errors", choices=ENCODING_ERRORS, default="strict",
                   help="invalid UTF-8: strict = error, replace = U+FFFD (not with --bytes)")
    p.set_defaults(run=run)


def run(args) -> int:
    paths = [resolve_data(t) for t in args.texts]
    size = sum(os.path.getsize(p) for p in paths)
    start = time.perf_counter()
    with tqdm(total=size * passes(args.bytes), unit="B", unit_scale=True, disable=None,
              leave=False, desc="prepare") as bar:
        prep = prepare(paths, args.out, byte_level=args.bytes,
                       encoding_errors=args.encoding_errors, progress=bar.update)
    seconds = time.perf_counter() - start
    what = "bytes" if args.bytes else "characters"
    print(f"charlstm: prepared {args.out}: {len(prep.ids):,} {what}, vocabulary "
          f"{len(prep.vocab)}, {prep.ids.dtype.name} ids, from {len(paths)} file(s) of "
          f"{size / 1e6:,.1f} MB in {seconds:.1f}s ({size / 1e6 / max(seconds, 1e-9):,.1f} "
          f"MB/s)\n  train with: charlstm train --data {shlex.quote(args.out)}")
    return 0
