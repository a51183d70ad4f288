"""`charlstm sample --backend onnxruntime` writes the same text as the NumPy backend."""

from __future__ import annotations

import pytest
from conftest import NEEDS_ONNX

from charlstm import CharLSTM, ModelConfig
from charlstm.checkpoint import Checkpoint, save_checkpoint

pytest.importorskip("onnx", reason=NEEDS_ONNX)
pytest.importorskip("onnxruntime", reason=NEEDS_ONNX)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_onnxruntime_backend_samples_the_numpy_text(tmp_path, charlstm_cli, cell):
    vocab = list("\n !',.:;?abcdefghijklmnopqrstuvwxyzé")
    config = ModelConfig(vocab_size=len(vocab), hidden_size=32, num_layers=2, cell=cell)
    params = CharLSTM(config, seed=4).params
    # sharpen the random model's distributions so the text is not uniform noise
    params["decoder.weight"] *= 6
    save_checkpoint(tmp_path / "c.safetensors", Checkpoint(config, vocab, params))
    # (flags, whether the text must be varied: greedy text from a random model may not be)
    for flags, varied in ((["--seed", 7, "--length", 300], True),
                          (["--seed", 2, "--length", 200, "--prime", "to be, ",
                            "--temperature", 0.7, "--top-k", 10, "--num-samples", 2], True),
                          (["--seed", 0, "--length", 100, "--temperature", 0], False)):
        texts = [charlstm_cli.ok("sample", tmp_path / "c.safetensors", "--backend", backend, *flags)
                 for backend in ("numpy", "onnxruntime")]
        assert texts[0] == texts[1]
        assert len(set(texts[0])) > 5 or not varied
