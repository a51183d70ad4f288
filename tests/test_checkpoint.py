"""Checkpoints round-trip exactly, load into torch, and fail with one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import NEEDS_TORCH
from safetensors.numpy import save_file

from charlstm import CharLSTM, ModelConfig
from charlstm.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from charlstm.model import forward


def _ckpt():
    config = ModelConfig(vocab_size=4, hidden_size=3, num_layers=2)
    model = CharLSTM(config, seed=0)
    arrays = {"optim.exp_avg.decoder.bias": np.ones(4, np.float32)}
    return Checkpoint(config, ["a", "b", "é", "\n"], model.params, arrays, {"step": 7})


def test_round_trip_is_exact(tmp_path):
    ck = _ckpt()
    save_checkpoint(tmp_path / "c.safetensors", ck)
    back = load_checkpoint(tmp_path / "c.safetensors")
    assert back.config == ck.config and back.vocab == ck.vocab and back.meta == ck.meta
    for k in ck.params:
        assert back.params[k].dtype == ck.params[k].dtype
        np.testing.assert_array_equal(back.params[k], ck.params[k])
    np.testing.assert_array_equal(back.arrays["optim.exp_avg.decoder.bias"], np.ones(4))
    assert not list(tmp_path.glob(".*tmp"))  # no temp file left behind


def test_params_load_into_torch_lstm_and_compute_the_same(tmp_path):
    """A checkpoint file is a torch state dict as it stands: nn.LSTM + nn.Linear load its
    tensors by name (strict) and compute charlstm's logits and final state."""
    torch = pytest.importorskip("torch", reason=NEEDS_TORCH)
    from safetensors.torch import load_file  # needs torch
    ck = _ckpt()
    save_checkpoint(tmp_path / "c.safetensors", ck)
    sd = load_file(tmp_path / "c.safetensors")
    lstm, decoder = torch.nn.LSTM(4, 3, 2), torch.nn.Linear(3, 4)
    for module, prefix in ((lstm, "lstm."), (decoder, "decoder.")):
        module.load_state_dict({k.removeprefix(prefix): v for k, v in sd.items()
                                if k.startswith(prefix)}, strict=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(5, 2))
    state = tuple(rng.standard_normal((2, 2, 3)).astype(np.float32) for _ in range(2))
    logits, (h, c), _ = forward(ck.params, ck.config, x, state)
    with torch.no_grad():
        onehot = torch.nn.functional.one_hot(torch.from_numpy(x), 4).float()
        out, (t_h, t_c) = lstm(onehot, tuple(map(torch.from_numpy, state)))
        t_logits = decoder(out)
    for ours, theirs in ((logits, t_logits), (h, t_h), (c, t_c)):
        np.testing.assert_allclose(theirs.numpy(), ours, rtol=1e-5, atol=1e-5)


def test_truncated_and_garbage_files_give_one_line_errors(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _ckpt())
    data = path.read_bytes()
    for bad in [data[: len(data) // 2], b"garbage", b""]:
        path.write_bytes(bad)
        with pytest.raises(CheckpointError, match="c.safetensors") as e:
            load_checkpoint(path)
        assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_wrong_shape_nan_and_foreign_files_are_refused(tmp_path):
    ck = _ckpt()
    ck.params["decoder.bias"] = np.full(4, np.nan, np.float32)
    save_checkpoint(tmp_path / "nan.safetensors", ck)
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(tmp_path / "nan.safetensors")
    ck = _ckpt()
    ck.params["decoder.bias"] = np.zeros(5, np.float32)
    save_checkpoint(tmp_path / "shape.safetensors", ck)
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(tmp_path / "shape.safetensors")
    save_file({"x": np.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not a charlstm checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _ckpt())
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, _ckpt())
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp"))


def _rewrite(path, edit_metadata):
    """Re-save path's tensors with edited metadata, as another writer would."""
    from safetensors.numpy import load_file
    from safetensors.numpy import save as st_save

    from charlstm.checkpoint import _read_metadata
    data = path.read_bytes()
    metadata = _read_metadata(data)
    edit_metadata(metadata)
    path.write_bytes(st_save(load_file(str(path)), metadata=metadata))


def test_a_flipped_bit_anywhere_is_reported_as_corruption(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _ckpt())
    good = path.read_bytes()
    start = 8 + int.from_bytes(good[:8], "little")  # first byte of tensor data
    for offset, bit in [(start + 3, 0x40), (len(good) - 1, 0x01)]:  # an exponent, a mantissa
        bad = bytearray(good)
        bad[offset] ^= bit
        path.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError, match="c.safetensors is corrupt: its contents no "
                           "longer match the checksum") as e:
            load_checkpoint(path)
        assert "\n" not in str(e.value)
    path.write_bytes(good)
    _rewrite(path, lambda m: m.update(meta='{"step": 8}'))  # valid JSON, not what was saved
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_checkpoint(path)


def test_checkpoints_from_before_the_checksum_still_load(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _ckpt())
    _rewrite(path, lambda m: m.pop("sha256"))
    assert load_checkpoint(path).meta == {"step": 7}


def test_missing_metadata_entry_is_named_readably(tmp_path):
    path = tmp_path / "c.safetensors"
    save_checkpoint(path, _ckpt())
    _rewrite(path, lambda m: (m.pop("sha256"), m.pop("config")))
    with pytest.raises(CheckpointError, match="has invalid metadata: no 'config' entry$"):
        load_checkpoint(path)
