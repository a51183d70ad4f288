"""docs/interop.md's "Move models in and out" snippets run as written, and agree."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import NEEDS_ONNX, NEEDS_TORCH

from charlstm import CharLSTM, ModelConfig
from charlstm.checkpoint import Checkpoint, save_checkpoint
from charlstm.model import forward

pytest.importorskip("torch", reason=NEEDS_TORCH)  # the snippets run in torch and onnxruntime
pytest.importorskip("onnx", reason=NEEDS_ONNX)
pytest.importorskip("onnxruntime", reason=NEEDS_ONNX)

INTEROP = Path(__file__).resolve().parents[1] / "docs" / "interop.md"


def python_blocks():
    text = INTEROP.read_text("utf-8")
    section = text.split("## Move models in and out\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_snippets_load_the_exported_model(tmp_path, monkeypatch, charlstm_cli):
    vocab = sorted(set("ROMEO:\n abcdefghijklmnopqrstuvwxyz"))
    config = ModelConfig(vocab_size=len(vocab), hidden_size=16, num_layers=2)
    ckpt = Checkpoint(config, vocab, CharLSTM(config, seed=3).params)
    save_checkpoint(tmp_path / "c.safetensors", ckpt)
    for out in ("shakespeare.safetensors", "shakespeare.onnx"):
        charlstm_cli.ok("export", tmp_path / "c.safetensors", tmp_path / out)
    monkeypatch.chdir(tmp_path)
    load, use, onnx_session = python_blocks()[:3]
    assert len(load.strip().splitlines()) == 3  # the promised three lines
    torch_ns, ort_ns = {}, {}
    exec(load + use, torch_ns)
    exec(onnx_session, ort_ns)
    expected, _, _ = forward(ckpt.params, config, np.array([[vocab.index(c)] for c in "ROMEO:"]))
    np.testing.assert_allclose(torch_ns["logits"].detach().numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(ort_ns["logits"], expected, atol=1e-5)
