"""Import and export with the core install alone: an imported model keeps its vocabulary
in its own order (the order is part of its weights) and samples, evaluates and fine-tunes
as the same model in sorted order does; without torch or onnx, safetensors still travel
and the formats that need them say what to install."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from charlstm import CharLSTM, ModelConfig
from charlstm.checkpoint import Checkpoint, save_checkpoint
from charlstm.interop.state_dict import save_state_dict, write_vocab

TEXT = "the lazy dog sleeps: the quick fox runs on and on.\n" * 20


def permuted(ckpt: Checkpoint, order: list[int]) -> Checkpoint:
    """The same model with vocabulary ids renumbered: new id i is old id order[i]."""
    p = dict(ckpt.params)
    name = f"{ckpt.config.cell}.weight_ih_l0"
    p[name] = p[name][:, order]
    p["decoder.weight"] = p["decoder.weight"][order]
    p["decoder.bias"] = p["decoder.bias"][order]
    return Checkpoint(ckpt.config, [ckpt.vocab[i] for i in order], p, meta=ckpt.meta)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_unsorted_imported_vocabulary_samples_evaluates_and_fine_tunes(
        tmp_path, charlstm_cli, cell):
    vocab = sorted(set(TEXT))[::-1]  # file order, not code-point order
    config = ModelConfig(vocab_size=len(vocab), hidden_size=8, num_layers=2, cell=cell)
    ckpt = Checkpoint(config, vocab, CharLSTM(config, seed=1).params, meta={})
    save_state_dict(tmp_path / "m.safetensors", ckpt)
    write_vocab(tmp_path / "m.vocab.json", vocab)
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    imported = tmp_path / "imported.safetensors"
    charlstm_cli.ok("import", tmp_path / "m.safetensors", "--vocab", tmp_path / "m.vocab.json",
                    imported)
    # the same model renumbered into sorted order scores the text identically
    order = sorted(range(len(vocab)), key=lambda i: vocab[i])
    save_checkpoint(tmp_path / "sorted.safetensors", permuted(ckpt, order))
    losses = [json.loads(charlstm_cli.ok("eval", path, "--data", tmp_path / "t.txt",
                                         "--json"))["loss"]
              for path in (imported, tmp_path / "sorted.safetensors")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    # greedy: a seeded draw depends on the order of the probabilities, the argmax does not
    texts = [charlstm_cli.ok("sample", path, "--prime", "the ", "--length", 40, "--temperature", 0)
             for path in (imported, tmp_path / "sorted.safetensors")]
    assert texts[0] == texts[1] and set(texts[0]) <= set(vocab)
    run = tmp_path / "tuned"
    charlstm_cli.ok("train", "--init-from", imported, "--data", tmp_path / "t.txt", "--out", run,
                    "--max-steps", 2, "--seq-len", 8, "--batch-size", 2)
    tuned = json.loads(charlstm_cli.ok("eval", run, "--data", tmp_path / "t.txt",
                                       "--json"))["loss"]
    assert np.isfinite(tuned)


def small_checkpoint(tmp_path, cell="gru"):
    config = ModelConfig(vocab_size=5, hidden_size=4, num_layers=2, cell=cell)
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, Checkpoint(config, list("ab\né "), CharLSTM(config, seed=0).params))
    return path


def without(module: str, *argvs) -> subprocess.CompletedProcess:
    """charlstm commands run in a Python where `module` cannot be imported; the exit
    status is the last command's, and each earlier one must succeed."""
    code = (f"import sys; sys.modules[{module!r}] = None\nfrom charlstm import cli\n"
            + "".join(f"assert cli.main({list(map(str, a))!r}) == 0\n" for a in argvs[:-1])
            + f"sys.exit(cli.main({list(map(str, argvs[-1]))!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_safetensors_export_and_import_work_without_torch(tmp_path):
    """torch is an optional extra: the core path must not import it; .pt says what to install."""
    ckpt = small_checkpoint(tmp_path)
    proc = without("torch", ["export", ckpt, tmp_path / "m.safetensors"],
                   ["import", tmp_path / "m.safetensors", "--vocab", tmp_path / "m.vocab.json",
                    tmp_path / "back.safetensors"],
                   ["export", ckpt, tmp_path / "m.pt"])
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "charlstm: error: PyTorch is not installed; install it with: "
        "pip install 'charlstm[torch]'")
    assert (tmp_path / "back.safetensors").exists() and not (tmp_path / "m.pt").exists()


def test_onnx_export_without_onnx_says_what_to_install(tmp_path):
    proc = without("onnx", ["export", small_checkpoint(tmp_path), tmp_path / "m.onnx"])
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ("charlstm: error: ONNX export needs the onnx package; install it "
                           "with: pip install 'charlstm[onnx]'\n")
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.vocab.json").exists()
