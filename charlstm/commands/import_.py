"""`charlstm import`: a PyTorch CharRNN state dict in as a charlstm checkpoint."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import save_checkpoint
from ..interop.state_dict import checkpoint_from_state_dict, load_state_dict, read_vocab
from .export import check_writable


def register(sub) -> None:
    p = sub.add_parser(
        "import", help="import a PyTorch state dict as a checkpoint",
        description="Read a state dict of charlstm.interop.torch.CharRNN (.safetensors, or a "
        ".pt file read only with torch.load(weights_only=True)), infer the cell, vocabulary "
        "size, hidden size and layer count from its names and shapes, and write a charlstm "
        "checkpoint.")
    p.add_argument("state_dict", metavar="STATE_DICT", help="a .safetensors or .pt state dict")
    p.add_argument("out", metavar="OUT.safetensors", help="the checkpoint to write")
    i = p.add_argument_group("input")
    i.add_argument("--format", choices=["torch"], default="torch",
                   help="source format (default torch)")
    i.add_argument("--vocab", metavar="VOCAB.json", required=True,
                   help="the vocabulary: a JSON list of characters in id order, as "
                   "`charlstm export` writes")
    o = p.add_argument_group("output")
    o.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    p.set_defaults(run=run)


def run(args) -> int:
    out = Path(args.out)
    check_writable(out, args.force)
    vocab = read_vocab(args.vocab)
    ckpt = checkpoint_from_state_dict(load_state_dict(args.state_dict), vocab,
                                      source=args.state_dict)
    save_checkpoint(out, ckpt)
    c = ckpt.config
    print(f"wrote {out}: {c.cell.upper()} V={c.vocab_size} H={c.hidden_size} "
          f"L={c.num_layers}, {sum(v.size for v in ckpt.params.values()):,} parameters")
    return 0
