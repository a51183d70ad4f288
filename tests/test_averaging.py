"""Weight averaging (--ema-decay): the update, what reads the average, exact resume.

Proofs: the recursive update equals the bias-corrected average written out as a sum
(and the plain EMA divided by 1 - d^t); averaging never changes the training
trajectory (the raw weights are bitwise those of a run without it); validation, the
best checkpoint, eval, sample, export and charlstm.load all read the averaged weights;
stopping and resuming ends bit-identical to a straight run; checkpoints from before
the setting existed still resume.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_train import _final_arrays, _stop_by_signal_after, tiny_config

import charlstm
from charlstm import run_state, session
from charlstm.checkpoint import load_checkpoint, save_checkpoint
from charlstm.config import TrainConfig
from charlstm.evaluate import evaluate
from charlstm.optim import ema_update


def test_ema_update_is_the_bias_corrected_average():
    d, rng = 0.8, np.random.default_rng(0)
    iterates = [rng.normal(size=(3, 2)) for _ in range(6)]
    average = {"w": rng.normal(size=(3, 2))}  # any start: the first update replaces it
    plain = np.zeros((3, 2))
    for t, p in enumerate(iterates, start=1):
        ema_update(average, {"w": p}, d, t)
        plain = d * plain + (1 - d) * p
        written_out = sum((1 - d) * d ** (t - s) * iterates[s - 1] for s in range(1, t + 1))
        np.testing.assert_allclose(average["w"], written_out / (1 - d**t), rtol=1e-13)
        np.testing.assert_allclose(average["w"], plain / (1 - d**t), rtol=1e-13)
        if t == 1:  # the start value is gone (to rounding: a + (p - a))
            np.testing.assert_allclose(average["w"], iterates[0], rtol=0, atol=1e-15)
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
            TrainConfig(ema_decay=bad)


def test_everything_that_reads_a_model_reads_the_average(tmp_path):
    plain = session.start_training(tiny_config(tmp_path, "plain"))
    averaged = session.start_training(tiny_config(tmp_path, "ema", ema_decay=0.7))
    raw_plain, _ = _final_arrays(tmp_path / "plain")
    last = load_checkpoint(tmp_path / "ema/last.safetensors")
    raw = {k[len(run_state.RAW):]: v for k, v in last.arrays.items() if k.startswith(run_state.RAW)}
    # averaging only reads the trajectory: the raw weights are the plain run's, bit for bit
    assert set(raw) == set(last.params)
    assert all(raw[k].tobytes() == raw_plain[k].tobytes() for k in raw)
    assert any(not np.array_equal(raw[k], last.params[k]) for k in raw)
    # validation scored the average (the model tensors), not the raw weights
    cfg = tiny_config(tmp_path, "ema", ema_decay=0.7)
    corpus, _, _ = session.load_data(cfg)

    def val(params):
        return evaluate(params, last.config, corpus.val, cfg.batch_size, cfg.seq_len)
    assert averaged.val_loss == val(last.params) != val(raw)
    assert plain.val_loss == val(raw)
    best = load_checkpoint(tmp_path / "ema/best.safetensors")
    assert best.meta["val_loss"] == val(best.params) == averaged.best_val
    # charlstm.load (so sample and LanguageModel.save) and export read the model tensors
    model = charlstm.load(tmp_path / "ema")
    assert all(np.array_equal(model.params[k], best.params[k]) for k in best.params)
    from charlstm.interop.state_dict import load_state_dict, save_state_dict
    save_state_dict(tmp_path / "export.safetensors", best)
    exported = load_state_dict(tmp_path / "export.safetensors")
    assert all(np.array_equal(exported[k], best.params[k]) for k in best.params)


@pytest.mark.parametrize("stop_at", [5, 8])
def test_resume_with_averaging_and_penalties_is_bitwise_identical(tmp_path, monkeypatch,
                                                                  stop_at):
    """N steps straight == stop at k + resume to N, with --ema-decay, --ar and --tar:
    the average, the raw weights, the optimizer and the carried state all agree."""
    kw = dict(ema_decay=0.9, ar=2.0, tar=1.0)
    straight = session.start_training(tiny_config(tmp_path, "straight", **kw))
    _stop_by_signal_after(monkeypatch, stop_at)
    first = session.start_training(tiny_config(tmp_path, "resumed", **kw))
    assert first.interrupted and first.step == stop_at
    monkeypatch.undo()
    second = session.resume_training(tmp_path / "resumed")
    assert second.step == straight.step == 16 and second.val_loss == straight.val_loss
    a, meta_a = _final_arrays(tmp_path / "straight")
    b, meta_b = _final_arrays(tmp_path / "resumed")
    assert set(a) == set(b) and any(k.startswith(run_state.RAW) for k in a)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert meta_a["log_window"] == meta_b["log_window"]


def test_a_checkpoint_from_before_these_settings_still_resumes(tmp_path):
    session.start_training(tiny_config(tmp_path, "old", max_steps=4))
    path = tmp_path / "old/last.safetensors"
    ckpt = load_checkpoint(path)
    for key in ("ar", "tar", "ema_decay"):
        del ckpt.meta["train_config"][key]
    save_checkpoint(path, ckpt)
    outcome = session.resume_training(tmp_path / "old", {"max_steps": 6})
    assert outcome.step == 6 and not any(
        k.startswith(run_state.RAW) for k in load_checkpoint(path).arrays)


def test_eval_and_sample_commands_use_the_average(tmp_path, charlstm_cli):
    import json

    from charlstm.language_model import LanguageModel
    session.start_training(tiny_config(tmp_path, "ema", ema_decay=0.7))
    run = tmp_path / "ema"
    best = load_checkpoint(run / "best.safetensors")
    assert json.loads(charlstm_cli.ok("eval", run, "--json"))["loss"] == best.meta["val_loss"]
    printed = charlstm_cli.ok("sample", run, "--seed", 3, "--length", 40, "--prime", "To")
    raw = {k: best.arrays[run_state.RAW + k] for k in best.params}
    args = dict(prime="To", length=40, seed=3)
    assert printed.rstrip("\n") == LanguageModel(best.config, best.vocab, best.params
                                                 ).generate(**args).rstrip("\n")
    assert printed.rstrip("\n") != LanguageModel(best.config, best.vocab, raw
                                                 ).generate(**args).rstrip("\n")
