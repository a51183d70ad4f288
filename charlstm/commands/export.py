"""`charlstm export`: a checkpoint out to PyTorch (state dict) or ONNX, with its vocabulary."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import load_checkpoint
from ..errors import UserError
from ..fsutil import check_output as check_writable
from ..interop.state_dict import save_state_dict, vocab_bytes, write_vocab
from ..language_model import load
from ..runs import resolve_checkpoint

FORMATS = {".onnx": "onnx", ".safetensors": "torch", ".pt": "torch"}


def register(sub) -> None:
    p = sub.add_parser(
        "export", help="export a checkpoint to PyTorch or ONNX",
        description="Write a checkpoint's model as a state dict of charlstm.interop.torch."
        "CharRNN (.safetensors, or torch.save if OUT ends in .pt) or as an ONNX graph, and "
        "its vocabulary as VOCAB.json (a JSON list of characters in id order).")
    p.add_argument("checkpoint", metavar="RUN_DIR|CHECKPOINT",
                   help="a checkpoint, or a run directory (its best, else last, checkpoint)")
    p.add_argument("out", metavar="OUT", help="output file (.safetensors, .pt or .onnx)")
    o = p.add_argument_group("output")
    o.add_argument("--format", choices=["torch", "onnx"],
                   help="torch or onnx (default: from OUT's suffix)")
    o.add_argument("--vocab-out", metavar="VOCAB.json",
                   help="where to write the vocabulary (default: OUT with suffix .vocab.json)")
    o.add_argument("--weights-only", action="store_true",
                   help="instead, write OUT.safetensors as a charlstm checkpoint without the "
                   "optimizer state (the small file to share: every command and "
                   "charlstm.load read it; no VOCAB.json needed)")
    o.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.set_defaults(run=run)


def export_weights(args, out: Path) -> int:
    """--weights-only: the model as a charlstm checkpoint (LanguageModel.save)."""
    if args.format or args.vocab_out:
        raise UserError("--weights-only writes a charlstm checkpoint (vocabulary inside): "
                        "drop --format/--vocab-out")
    if out.suffix != ".safetensors":
        raise UserError(f"--weights-only writes a .safetensors checkpoint; name OUT "
                        f"{out.with_suffix('.safetensors').name}")
    check_writable(out, args.force)
    model = load(args.checkpoint)
    model.save(out)
    print(f"wrote {out} (charlstm checkpoint, weights only: {model.num_params:,} "
          f"parameters, {out.stat().st_size / 1e6:.2f} MB)")
    return 0


def run(args) -> int:
    out = Path(args.out)
    if args.weights_only:
        return export_weights(args, out)
    fmt = args.format or FORMATS.get(out.suffix)
    if fmt is None:
        raise UserError(f"cannot tell the format from {out.name!r}; pass --format torch|onnx "
                        "or name OUT .safetensors, .pt or .onnx")
    vocab_out = Path(args.vocab_out) if args.vocab_out else out.with_suffix(".vocab.json")
    if vocab_out.resolve() == out.resolve():
        raise UserError(f"the vocabulary and the model would both be written to {out}")
    check_writable(out, args.force)
    ckpt = load_checkpoint(resolve_checkpoint(args.checkpoint))
    # Exports of one model in several formats share one vocabulary file: no clash.
    same_vocab = vocab_out.is_file() and vocab_out.read_bytes() == vocab_bytes(ckpt.vocab)
    if not same_vocab:
        check_writable(vocab_out, args.force)
    if fmt == "onnx":
        from ..interop.onnx import export_onnx  # optional extra, imported only when asked

        export_onnx(out, ckpt)
    else:
        save_state_dict(out, ckpt)
    write_vocab(vocab_out, ckpt.vocab)
    c = ckpt.config
    what = "ONNX graph" if fmt == "onnx" else "CharRNN state dict"
    print(f"wrote {out} ({what}: {c.cell.upper()} V={c.vocab_size} H={c.hidden_size} "
          f"L={c.num_layers}) and vocabulary {vocab_out}")
    return 0
