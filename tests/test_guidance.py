"""The trainer's guidance: new-best marks, the best step in the summary, the plateau notice
(once), --patience (stopping, resuming exactly), relative limits on resume (+N), the
refusal of a finished run (its true reason and the number to pass), the time-budget bar
on the run's own clock, and the compile notice."""

from __future__ import annotations

import io
import json
import re

import pytest
from test_train import _final_arrays, _log_without_timings, tiny_config

from charlstm import library, session
from charlstm.checkpoint import load_checkpoint
from charlstm.fast.settings import kernels_cold
from charlstm.guidance import More, resolve_more
from charlstm.progress import Progress, clock_text

# A run that stops improving: its best validation loss at step 4, none better up to step
# 10 (the 3rd pass without a new best, with a pass every 2 steps).
PLATEAU = dict(max_steps=30, eval_every=2, dropout=0.0, lr=3e-2, hidden_size=32,
               num_layers=1)
NOTICE = "no new best validation loss in 3 evaluations (best"


def _flags(settings: dict) -> list[str]:
    return [str(a) for k, v in settings.items() for a in ("--" + k.replace("_", "-"), v)]


def test_lines_mark_a_new_best_and_the_summary_says_when_it_came(tmp_path, charlstm_cli):
    cfg = tiny_config(tmp_path, **PLATEAU)
    out = charlstm_cli.ok("train", "--data", cfg.data, "--out", cfg.out,
                          *_flags({**PLATEAU, "seq_len": 8, "batch_size": 2, "val_frac": 0.2,
                                   "warmup_steps": 3, "log_every": 2, "max_steps": 12}))
    lines = {int(m.group(1)): line for line in out.splitlines()
             if (m := re.match(r"step (\d+)/12 ", line))}
    assert "new best" in lines[2] and "new best" in lines[4]
    assert not any("new best" in lines[s] for s in (6, 8, 10, 12))
    records = [json.loads(x) for x in (tmp_path / "run/log.jsonl").open()]
    best, last = records[1]["val_loss"], records[-1]["val_loss"]
    assert f"best {best:.4f} at step 4 (the last is {last - best:.4f} above it)" in out


def test_the_plateau_notice_is_said_once_and_not_again_after_a_resume(tmp_path, capsys):
    session.start_training(tiny_config(tmp_path, **{**PLATEAU, "max_steps": 12}), say=print)
    out = capsys.readouterr().out
    assert out.count(NOTICE) == 1 and "--preset small" in out and "--patience N" in out
    # said right after step 10's pass, the third without a new best
    assert out.index(NOTICE) > out.index("step 10/12") and "step 12/12" in out[
        out.index(NOTICE):]
    assert load_checkpoint(tmp_path / "run/last.safetensors").meta["plateau_noted"]
    session.resume_training(tmp_path / "run", {"max_steps": 20}, say=print)
    assert NOTICE not in capsys.readouterr().out


def test_patience_stops_and_resumes_bit_identically(tmp_path, capsys):
    straight = session.start_training(tiny_config(tmp_path, "straight", **PLATEAU))
    assert straight.step == 30
    stopped = session.start_training(tiny_config(tmp_path, "stopped", patience=3, **PLATEAU),
                                     say=print)
    assert stopped.reason == "no new best validation loss in 3 evaluations"
    assert stopped.step == 10 and stopped.best_step == 4
    out = capsys.readouterr().out
    assert NOTICE not in out  # --patience is stopping it: the summary says why
    meta = load_checkpoint(tmp_path / "stopped/last.safetensors").meta
    assert meta["evals_since_best"] == 3 and meta["step"] == 10
    # a stop like any other: resuming without a change refuses, with the number to pass
    again = session.resume_training(tmp_path / "stopped", say=print)
    assert again.step == 10 and again.reason == stopped.reason
    assert "pass --patience 4 or more, or --patience 0" in capsys.readouterr().out
    resumed = session.resume_training(tmp_path / "stopped", {"patience": 0})
    assert resumed.step == 30 and resumed.val_loss == straight.val_loss
    a, meta_a = _final_arrays(tmp_path / "straight")
    b, meta_b = _final_arrays(tmp_path / "stopped")
    assert set(a) == set(b)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    for k in ("step", "cursor", "rng", "optimizer_step", "best_val_loss", "best_step",
              "evals_since_best", "plateau_noted"):
        assert meta_a[k] == meta_b[k], k
    assert _log_without_timings(tmp_path / "straight") == _log_without_timings(
        tmp_path / "stopped")


def test_a_larger_patience_trains_on_until_it_runs_out(tmp_path, capsys):
    session.start_training(tiny_config(tmp_path, patience=3, **PLATEAU))
    more = session.resume_training(tmp_path / "run", {"patience": 4}, say=print)
    assert more.reason == "no new best validation loss in 4 evaluations"
    assert (more.step, more.best_step) == (22, 14)  # bests up to 14, then 16 .. 22 none
    # the notice --patience 3 kept back comes on this run's first plateau
    assert capsys.readouterr().out.count("at step 14): the model is likely memorising") == 1


def test_relative_limits_count_from_where_the_run_is():
    overrides = {"max_steps": More(5), "epochs": More(1.0), "time_budget": More(10.0),
                 "eval_every": 3}
    assert resolve_more(overrides, step=12, elapsed_s=90.0, windows_per_epoch=6) == {
        "max_steps": 17, "epochs": 3.0, "time_budget": 11.5, "eval_every": 3}
    assert resolve_more({"time_budget": More(2.0)}, 5, 30.0131, 6) == {"time_budget": 2.5}
    # E more epochs is exactly E's steps more, whatever the float rounding of step / W
    epochs = resolve_more({"epochs": More(1.0)}, 4, 0.0, 6)["epochs"]
    assert -(-epochs * 6 // 1) == 10


def test_resume_with_more_steps_and_epochs(tmp_path, charlstm_cli):
    cfg = tiny_config(tmp_path, max_steps=4)
    flags = _flags({"hidden_size": 8, "seq_len": 8, "batch_size": 2, "val_frac": 0.2,
                    "eval_every": 4, "warmup_steps": 3})
    out = charlstm_cli.ok("train", "--data", cfg.data, "--out", cfg.out, "--max-steps", "+4",
                          *flags)  # a new run is at 0: +4 is 4
    assert "done at step 4: reached --max-steps 4" in out
    out = charlstm_cli.ok("train", "--resume", cfg.out, "--max-steps", "+3")
    assert "resuming" in out and "done at step 7: reached --max-steps 7" in out
    out = charlstm_cli.ok("train", "--resume", cfg.out, "--epochs", "+1")  # 6 steps an epoch
    assert "done at step 13: reached --epochs" in out
    assert ("--max-steps: expected a positive number after +, got '+0'"
            in charlstm_cli.error("train", "--resume", cfg.out, "--max-steps", "+0"))
    charlstm_cli.error("train", "--resume", cfg.out, "--time-budget", "+x")


def test_the_refusal_gives_the_true_reason_and_the_number(tmp_path, charlstm_cli):
    """The issue's case: a run that stopped at --max-steps, resumed with a --time-budget
    it has already spent, was told it "reached --time-budget"."""
    cfg = tiny_config(tmp_path, max_steps=4)
    charlstm_cli.ok("train", "--data", cfg.data, "--out", cfg.out, "--max-steps", 4,
                    *_flags({"hidden_size": 8, "seq_len": 8, "batch_size": 2}))
    elapsed = load_checkpoint(tmp_path / "run/last.safetensors").meta["elapsed_s"]
    out = charlstm_cli.ok("train", "--resume", cfg.out, "--time-budget", "0.0000000010")
    assert "has already reached --time-budget 1e-09: it is at step 4 after" in out
    assert "it had stopped: reached --max-steps 4" in out
    above = -(-elapsed / 60 * 100 // 1) / 100
    assert f"pass --time-budget above {above:.2f} (or --time-budget +MIN" in out
    out = charlstm_cli.ok("train", "--resume", cfg.out)
    assert "is already finished (reached --max-steps 4, at step 4 after" in out
    assert "pass a new limit: --max-steps +N" in out


def test_a_time_budget_bar_shows_the_runs_clock_and_time_left():
    lines = []
    progress = Progress(None, 0, lines.append, budget_s=300.0, elapsed=0.0,
                        bar_file=io.StringIO())
    progress.update(83.0)  # the fake clock: the run's seconds after the step
    assert "0:01:23/0:05:00, 0:03:37 left, step 1" in str(progress.bar)
    assert str(progress.bar).startswith(" 28%")
    progress.close()
    # resumed at step 50 after 200 s: the run's clock, not this session's
    resumed = Progress(None, 50, lines.append, budget_s=300.0, elapsed=200.0,
                       bar_file=io.StringIO())
    assert "0:03:20/0:05:00, 0:01:40 left, step 50" in str(resumed.bar)
    resumed.update(290.0)
    assert "0:04:50/0:05:00, 0:00:10 left, step 51" in str(resumed.bar)
    resumed.close()
    steps = Progress(100, 50, lines.append, elapsed=3725.0, bar_file=io.StringIO())
    steps.update(3726.0)
    assert "51/100 [1:02:06<" in str(steps.bar)
    steps.close()
    assert clock_text(400.0, 300.0) == "0:06:40/0:05:00, 0:00:00 left"


def test_plain_lines_of_a_time_budget_run_say_the_time_left(monkeypatch):
    monkeypatch.setattr("sys.stdout", io.StringIO())
    lines = []
    progress = Progress(None, 0, lines.append, budget_s=60.0)
    progress.record({"step": 20, "epoch": 0.5, "train_loss": 2.0, "train_bpc": 2.885,
                     "val_loss": 2.1, "val_bpc": 3.03, "lr": 1e-3, "grad_norm": 0.4,
                     "chars_per_s": 5000.0, "elapsed_s": 4.0}, best=True)
    assert lines[0].endswith("| 0:00:04/0:01:00, 0:00:56 left")
    assert "| val 2.1000 (3.030 bpc, new best) |" in lines[0]


def test_kernels_cold_reads_numbas_index_files(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    source = tmp_path / "pkg/lstm_kernels.py"
    (source.parent / "__pycache__").mkdir(parents=True)
    (source.parent / "__pycache__/other.f-1.py311.nbi").touch()
    assert kernels_cold(source)
    (source.parent / "__pycache__/lstm_kernels.f-1.py311.nbi").touch()
    assert not kernels_cold(source)
    elsewhere = tmp_path / "cache/deep/dir"
    elsewhere.mkdir(parents=True)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))  # numba looks only there
    assert kernels_cold(source)
    (elsewhere / "lstm_kernels.g-9.py311.nbi").touch()
    assert not kernels_cold(source)


@pytest.mark.parametrize("cold", [True, False])
def test_the_compile_notice_comes_before_the_first_step_when_the_cache_is_cold(
        tmp_path, charlstm_cli, monkeypatch, cold):
    if not (library.fast.current().numba
            and library.fast.settings.available("lstm_kernels")):
        pytest.skip("numba is off or missing here: nothing compiles")
    monkeypatch.setattr(library.fast, "compile_pending", lambda: cold)
    cfg = tiny_config(tmp_path)
    out = charlstm_cli.ok("train", "--data", cfg.data, "--out", cfg.out, "--max-steps", 2,
                          *_flags({"hidden_size": 8, "seq_len": 8, "batch_size": 2}))
    assert ("compiling the fast kernels" in out) == cold
    if cold:
        assert out.index("compiling the fast kernels") < out.index("step 2/2")
