"""Validate before use, everywhere a file or a setting enters: settings float32 cannot
hold, hand-made checkpoint metadata with a recomputed (so valid) checksum, finite but
huge weights, in a checkpoint or an import. Each is one line naming the file and the
field, the documented exit status, and `charlstm.load` raises charlstm.CheckpointError.
"""

from __future__ import annotations

import dataclasses
import os
import stat

import numpy as np
import pytest
import test_faults
from safetensors.numpy import load_file, save_file
from test_faults import one_line, run_cli
from test_train_cli import TINY

import charlstm
from charlstm.checkpoint import MAX_WEIGHT, load_checkpoint, save_checkpoint
from charlstm.config import TrainConfig
from charlstm.errors import UserError
from charlstm.text import read_text

corpus, trained = test_faults.corpus, test_faults.trained  # the fixtures, shared


@pytest.mark.parametrize("flag, value, message", [
    ("--weight-decay", "1e30", "--weight-decay must be below 1 / lr"),
    ("--forget-bias", "1e39", "--forget-bias must be a finite number, got 1e+39"),
    ("--forget-bias", "-101", "--forget-bias must be a number in [-100, 100]"),
    ("--clip", "1e39", "--clip must be a finite number >= 0"),
    ("--lr", "3.5e38", "--lr must be a finite positive number"),
])
def test_settings_float32_cannot_hold_are_refused(tmp_path, corpus, capsys, flag, value,
                                                  message):
    run = tmp_path / "r"
    rc, _, err = run_cli(capsys, "train", "--data", corpus, "--out", run, "--max-steps", 2,
                         *TINY, flag, value)
    assert rc == 2 and message in one_line(err)
    assert not run.exists()  # refused before anything is written


def test_every_float_setting_is_bounded_by_float32():
    floats = [f.name for f in dataclasses.fields(TrainConfig)
              if f.type in ("float", "float | None")]
    assert len(floats) >= 15 and "forget_bias" in floats and "weight_decay" in floats
    for name in floats:
        with pytest.raises(ValueError, match=name):
            TrainConfig(**{name: 1e39})


def forge(path, **changes) -> None:
    """Rewrite a checkpoint with changed fields, through save_checkpoint, so its
    checksum is recomputed and valid: only the validation can catch it."""
    ckpt = load_checkpoint(path)
    meta = changes.pop("meta", None)
    ckpt = dataclasses.replace(ckpt, **changes)
    if meta is not None:
        ckpt.meta = meta(ckpt.meta)
    save_checkpoint(path, ckpt)


def scaled(params, name, value):
    params = dict(params)
    params[name] = np.full_like(params[name], value)
    return params


def cases(ckpt):
    """(what to forge, what the error names)."""
    vocab = list(ckpt.vocab)
    return [
        ({"vocab": ["ab", *vocab[1:]]}, "vocabulary entry 0 ('ab') is not a single character"),
        ({"vocab": [vocab[1], *vocab[1:]]}, f"vocabulary holds {vocab[1]!r} more than once"),
        ({"vocab": [7, *vocab[1:]]}, "vocabulary entry 0 (7) is not a single character"),
        ({"meta": lambda m: [1, 2]}, "meta is not a JSON object"),
        ({"meta": lambda m: {**m, "step": -3}}, "meta step must be an integer >= 0"),
        ({"meta": lambda m: {**m, "cursor": [0, 1]}}, "meta cursor must be"),
        ({"meta": lambda m: {**m, "val_loss": "low"}}, "meta val_loss must be a finite"),
        ({"params": scaled(ckpt.params, "decoder.weight", 1e30)},
         "decoder.weight holds a value of magnitude 1e+30"),
        ({"params": scaled(ckpt.params, "lstm.weight_hh_l0", -2 * MAX_WEIGHT)},
         "lstm.weight_hh_l0 holds a value of magnitude 2e+04"),
    ]


def test_forged_checkpoint_metadata_and_weights_are_one_line_everywhere(trained, capsys):
    path = trained / "last.safetensors"
    original = path.read_bytes()
    for change, message in cases(load_checkpoint(path)):
        path.write_bytes(original)
        forge(path, **change)
        with pytest.raises(charlstm.CheckpointError, match="last.safetensors") as e:
            charlstm.load(path)
        assert message in str(e.value), change
        for argv in (["sample", path, "--length", 5], ["eval", path], ["info", path],
                     ["train", "--resume", trained, "--max-steps", 8],
                     ["export", path, trained / "x.onnx", "--force"]):
            rc, _, err = run_cli(capsys, *argv)
            line = one_line(err)
            assert rc == 1 and str(path) in line and message in line, (argv, line)


def test_a_cursor_past_the_corpus_is_refused_on_resume(trained, capsys):
    path = trained / "last.safetensors"
    forge(path, meta=lambda m: {**m, "cursor": {"epoch": 0, "window": 10**9}})
    rc, _, err = run_cli(capsys, "train", "--resume", trained, "--max-steps", 8)
    line = one_line(err)
    assert rc == 1 and "meta cursor window 1000000000 is past the" in line


def test_weights_at_the_bound_sample_and_evaluate_finitely(trained, capsys):
    """MAX_WEIGHT is safe: the largest allowed weights still give finite logits, a
    sample at a low temperature and a finite (if terrible) loss."""
    path = trained / "last.safetensors"
    ckpt = load_checkpoint(path)
    signs = {k: np.where(np.arange(v.size).reshape(v.shape) % 2, 1, -1).astype(v.dtype)
             for k, v in ckpt.params.items()}
    forge(path, params={k: MAX_WEIGHT * s for k, s in signs.items()})
    model = charlstm.load(path)
    assert len(model.generate("l", length=20, temperature=0.01, seed=1)) == 21
    assert np.isfinite(model.evaluate(test_faults.TEXT[:200]))


def test_import_refuses_huge_finite_weights(trained, tmp_path, capsys):
    sd, vocab = tmp_path / "sd.safetensors", tmp_path / "v.json"
    assert run_cli(capsys, "export", trained, sd, "--vocab-out", vocab)[0] == 0
    tensors = load_file(str(sd))
    tensors["decoder.bias"] = np.full_like(tensors["decoder.bias"], 1e30)
    save_file(tensors, str(sd))
    rc, _, err = run_cli(capsys, "import", sd, tmp_path / "m.safetensors", "--vocab", vocab)
    assert rc == 2 and "decoder.bias holds a value of magnitude 1e+30" in one_line(err)
    assert not (tmp_path / "m.safetensors").exists()


def test_a_missing_file_is_a_checkpoint_error_too(tmp_path):
    with pytest.raises(charlstm.CheckpointError, match="no such checkpoint"):
        charlstm.load(tmp_path / "nothing.safetensors")


def test_a_forged_huge_layer_count_is_refused_before_listing_its_shapes(trained):
    """num_layers 30,000,000 with 6 tensors: refused from the count, not after building
    120 million shapes (gigabytes, minutes)."""
    path = trained / "last.safetensors"
    ckpt = load_checkpoint(path)
    forge(path, config=dataclasses.replace(ckpt.config, num_layers=30_000_000))
    with pytest.raises(charlstm.CheckpointError,
                       match="num_layers 30000000 needs 120000002 parameter tensors"):
        charlstm.load(path)


def test_a_device_is_never_read_as_text_or_checkpoint(trained, tmp_path, monkeypatch):
    """A character device (/dev/zero) would be read forever: refused from its mode (a
    faked stat here; tests never touch /dev)."""
    fake = tmp_path / "zero"
    fake.write_bytes(b"\0" * 10)
    real_stat = os.stat

    def device_stat(path, *args, **kwargs):
        result = real_stat(path, *args, **kwargs)
        if str(path) == str(fake):
            return os.stat_result((stat.S_IFCHR | 0o666, *tuple(result)[1:]))
        return result
    monkeypatch.setattr(os, "stat", device_stat)
    with pytest.raises(UserError, match="is a device, not a text file"):
        read_text(fake)
    with pytest.raises(charlstm.CheckpointError, match="is not a charlstm checkpoint"):
        charlstm.load(fake)
