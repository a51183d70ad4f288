"""Training: schedules, evaluation, learning, and exact resume (bitwise) through signals."""

from __future__ import annotations

import importlib
import json
import math
import signal

import numpy as np
import pytest

from charlstm import ModelConfig, layers, run_state, session
from charlstm.checkpoint import load_checkpoint
from charlstm.config import TrainConfig, dump_toml, load_toml
from charlstm.evaluate import evaluate
from charlstm.model import init_params
from charlstm.runs import resolve_paths
from charlstm.schedules import horizon_steps, learning_rate

# charlstm.train is the library's train(); the trainer module is charlstm.train's entry in
# sys.modules (`from charlstm.train import fit` works too)
tr = importlib.import_module("charlstm.loop")

# A 125-character corpus: with B=2, T=8 an epoch is 6 windows, so a 16-step run wraps twice.
TEXT = ("To be, or not to be, that is the question: whether 'tis nobler in the mind "
        "to suffer the slings and arrows of outrageous fortune.\n")[:125]


def tiny_config(tmp_path, name="run", **kw) -> TrainConfig:
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    base = dict(data=str(tmp_path / "corpus.txt"), out=str(tmp_path / name), hidden_size=8,
                num_layers=2, dropout=0.3, seq_len=8, batch_size=2, val_frac=0.2,
                max_steps=16, warmup_steps=3, eval_every=4, log_every=2, checkpoint_every=5)
    base.update(kw)
    return TrainConfig(**base)


def test_learning_rate_follows_warmup_then_its_schedule():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1, lr_schedule="cosine")
    assert [learning_rate(cfg, s, 0.0) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert learning_rate(cfg, 4, 0.0) == 1.0
    assert learning_rate(cfg, 9, 0.5) == pytest.approx(0.55)
    assert learning_rate(cfg, 9, 1.0) == pytest.approx(0.1)
    assert learning_rate(cfg, 9, 7.0) == pytest.approx(0.1)  # never past the end
    step = TrainConfig(lr=1.0, warmup_steps=0, lr_schedule="step", lr_decay=0.5,
                       lr_decay_every=10)
    assert [learning_rate(step, s, 0) for s in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    const = TrainConfig(lr=0.3, warmup_steps=0, lr_schedule="constant")
    assert learning_rate(const, 1000, 1.0) == 0.3
    assert horizon_steps(TrainConfig(max_steps=100, epochs=2.5), 30) == 75
    assert horizon_steps(TrainConfig(max_steps=50, epochs=2.5), 30) == 50
    assert horizon_steps(TrainConfig(time_budget=1.0), 30) is None


def test_evaluation_is_independent_of_chunking():
    """Chunked with carried state == one pass: the val loss of one stream does not depend
    on the window length, and equals the mean NLL computed by hand from one forward."""
    config = ModelConfig(vocab_size=6, hidden_size=5, num_layers=2)
    params = init_params(config, np.random.default_rng(0), np.float64)
    ids = np.random.default_rng(1).integers(0, 6, size=41)
    losses = [evaluate(params, config, ids, 1, T) for T in (1, 3, 7, 40, 100)]
    np.testing.assert_allclose(losses, losses[0], rtol=1e-12)
    from charlstm.layers import softmax_cross_entropy
    from charlstm.model import forward
    logits, _, _ = forward(params, config, ids[:-1, None])
    expected, _ = softmax_cross_entropy(logits, ids[1:, None])
    assert losses[0] == pytest.approx(expected, rel=1e-12)
    # several streams: every target still counted once (the mean stays a mean)
    assert abs(evaluate(params, config, ids, 4, 3) - losses[0]) < 0.2


def test_training_learns_a_repetitive_text(tmp_path, capsys):
    (tmp_path / "abc.txt").write_text("abcd" * 300, encoding="utf-8")
    cfg = TrainConfig(data=str(tmp_path / "abc.txt"), out=str(tmp_path / "run"),
                      hidden_size=16, num_layers=1, seq_len=16, batch_size=4, lr=1e-2,
                      max_steps=80, warmup_steps=5, eval_every=40, log_every=10)
    outcome = session.start_training(cfg, say=print)  # the trainer prints only through say
    assert outcome.val_loss < 0.25 < math.log(4)  # a deterministic text: loss towards 0
    records = [json.loads(line) for line in (tmp_path / "run/log.jsonl").open()]
    assert [r["step"] for r in records] == [10, 20, 30, 40, 50, 60, 70, 80]
    keys = {"step", "epoch", "train_loss", "train_bpc", "val_loss", "val_bpc", "lr",
            "grad_norm", "chars_per_s", "elapsed_s"}
    assert all(set(r) == keys for r in records)
    assert records[0]["train_loss"] > records[-1]["train_loss"]
    assert records[-1]["val_bpc"] == pytest.approx(records[-1]["val_loss"] / math.log(2))
    out = capsys.readouterr().out
    assert "step 10/80" in out and "bpc" in out and "chars/s" in out  # plain lines off a tty
    best = load_checkpoint(tmp_path / "run/best.safetensors")
    assert best.meta["val_loss"] == best.meta["best_val_loss"] == outcome.best_val


def _stop_by_signal_after(monkeypatch, n_steps: int, signum=signal.SIGINT):
    """Make the n-th training step deliver a real signal to this process."""
    calls = {"n": 0}
    real_step = tr.train_step

    def step_then_signal(run, batches, lr):
        result = real_step(run, batches, lr)
        calls["n"] += 1
        if calls["n"] == n_steps:
            signal.raise_signal(signum)
        return result
    monkeypatch.setattr(tr, "train_step", step_then_signal)


def _final_arrays(run_dir):
    ck = load_checkpoint(run_dir / "last.safetensors")
    return {**ck.params, **ck.arrays}, ck.meta


def _log_without_timings(run_dir):
    recs = [json.loads(line) for line in (run_dir / "log.jsonl").open()]
    return [{k: v for k, v in r.items() if k not in ("chars_per_s", "elapsed_s")}
            for r in recs]


# 6: at an epoch wrap; 8 = N/2, its validation pass cut short; 9: mid-log; 16: the last step
@pytest.mark.parametrize("stop_at", [6, 8, 9, 16])
def test_interrupt_and_resume_is_bitwise_identical(tmp_path, monkeypatch, stop_at):
    """N steps straight == stop by signal at k + resume to N: parameters, optimizer
    moments, carried state, RNG and the log are identical, with dropout and 2 wraps."""
    straight = session.start_training(tiny_config(tmp_path, "straight"))
    assert straight.step == 16 and not straight.interrupted

    _stop_by_signal_after(monkeypatch, stop_at)
    first = session.start_training(tiny_config(tmp_path, "resumed"))
    assert first.interrupted and first.step == stop_at
    monkeypatch.undo()
    _, meta = _final_arrays(tmp_path / "resumed")
    assert meta["step"] == stop_at and meta["cursor"]["epoch"] == stop_at // 6
    second = session.resume_training(tmp_path / "resumed")
    assert second.step == 16 and second.val_loss == straight.val_loss

    a, meta_a = _final_arrays(tmp_path / "straight")
    b, meta_b = _final_arrays(tmp_path / "resumed")
    assert set(a) == set(b) and any(k.startswith("optim.exp_avg_sq.") for k in a)
    assert any(k.startswith("train.state.") for k in a)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    for k in ("step", "cursor", "rng", "optimizer_step", "best_val_loss", "best_step"):
        assert meta_a[k] == meta_b[k], k
    assert _log_without_timings(tmp_path / "straight") == _log_without_timings(
        tmp_path / "resumed")
    best_a = load_checkpoint(tmp_path / "straight/best.safetensors").params
    best_b = load_checkpoint(tmp_path / "resumed/best.safetensors").params
    assert all(best_a[k].tobytes() == best_b[k].tobytes() for k in best_a)


def test_resume_extends_a_finished_run_and_refuses_changed_settings(tmp_path, capsys):
    cfg = tiny_config(tmp_path, max_steps=4, lr_schedule="constant", dropout=0.0)
    session.start_training(cfg)
    assert capsys.readouterr().out == ""  # no say: a silent run
    assert session.resume_training(tmp_path / "run", say=print).step == 4
    assert "already finished" in capsys.readouterr().out
    assert session.resume_training(tmp_path / "run", {"max_steps": 7}).step == 7
    assert load_toml(tmp_path / "run/config.toml")["max_steps"] == 7
    with pytest.raises(tr.UserError, match="cannot change --lr, --seq-len when resuming"):
        session.resume_training(tmp_path / "run", {"lr": 0.5, "seq_len": 4, "max_steps": 9})
    (tmp_path / "corpus.txt").write_text(TEXT.upper(), encoding="utf-8")
    with pytest.raises(run_state.TrainingError, match="not the text this run was trained on"):
        session.resume_training(tmp_path / "run", {"max_steps": 9})
    with pytest.raises(tr.UserError, match="no such run directory"):
        session.resume_training(tmp_path / "nope")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, max_steps=20, checkpoint_every=5)
    real = layers.softmax_cross_entropy
    calls = {"n": 0}

    def nan_from_step_8(logits, y, count=None):
        calls["n"] += 1
        loss, d = real(logits, y, count)
        return (float("nan") if calls["n"] >= 8 else loss), d
    monkeypatch.setattr(layers, "softmax_cross_entropy", nan_from_step_8)
    with pytest.raises(run_state.TrainingError) as e:
        session.start_training(cfg)
    msg = str(e.value)
    assert "nan at step 8" in msg and "last.safetensors (step 5) is intact" in msg
    assert load_checkpoint(tmp_path / "run/last.safetensors").meta["step"] == 5


def test_non_finite_gradient_stops(tmp_path, monkeypatch):
    real = tr.model.backward

    def nan_grads(*args):
        grads, d0 = real(*args)
        grads["decoder.bias"][0] = np.inf
        return grads, d0
    monkeypatch.setattr(tr.model, "backward", nan_grads)
    with pytest.raises(run_state.TrainingError,
                       match="gradient norm became inf at step 1.*none yet"):
        session.start_training(tiny_config(tmp_path))


def test_config_toml_round_trips_and_paths_are_resolved(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    cfg = resolve_paths(TrainConfig(data="corpus.txt", epochs=1.5))
    assert cfg.data == str(tmp_path / "corpus.txt")
    assert cfg.out.startswith("runs/corpus-")
    (tmp_path / "c.toml").write_text(dump_toml(cfg), encoding="utf-8")
    assert TrainConfig.from_dict(load_toml(tmp_path / "c.toml")) == cfg
    assert session.with_default_stop(TrainConfig()).time_budget == session.DEFAULT_TIME_BUDGET
    assert session.with_default_stop(TrainConfig(max_steps=3)).time_budget is None
