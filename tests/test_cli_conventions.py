"""The conventions a user brings from other tools: `python -m charlstm`, rerunning a
run that never reached a checkpoint, extending a finished run, hints that work."""

from __future__ import annotations

import io
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_train_cli import TEXT, TINY

from charlstm import __version__
from charlstm.checkpoint import load_checkpoint
from charlstm.cli import main
from charlstm.progress import Progress


@pytest.fixture
def corpus(tmp_path) -> Path:
    (tmp_path / "corpus.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path / "corpus.txt"


def test_python_dash_m_charlstm_is_the_charlstm_command(tmp_path, charlstm_cli):
    done = charlstm_cli.subprocess("--version", timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"charlstm {__version__}"
    done = charlstm_cli.subprocess("info", tmp_path / "nope", timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("charlstm: error: no such checkpoint or run directory")


def stopped_before_first_checkpoint(charlstm_cli, corpus, run) -> list:
    """A run dir as `charlstm train ... | head -3` leaves it: the first log records and
    config.toml, no checkpoint. Returns the command that made it."""
    cmd = ["train", "--data", corpus, "--out", run, "--max-steps", 4, *TINY]
    assert charlstm_cli(*cmd)[0] == 0
    for name in ("last.safetensors", "best.safetensors"):
        (run / name).unlink()
    return cmd


def test_a_run_that_stopped_before_its_first_checkpoint_can_simply_be_rerun(
        tmp_path, corpus, charlstm_cli):
    run = tmp_path / "r"
    cmd = stopped_before_first_checkpoint(charlstm_cli, corpus, run)
    (run / "notes.md").write_text("mine")
    rc, out, err = charlstm_cli(*cmd)
    assert rc == 0, err
    assert "stopped before its first checkpoint; starting it again" in out
    assert load_checkpoint(run / "last.safetensors").meta["step"] == 4
    assert (run / "notes.md").read_text() == "mine"
    # once it holds a checkpoint, it is a run: refused as before
    rc, _, err = charlstm_cli(*cmd)
    assert rc == 2 and "already holds a run" in err


def test_resuming_it_says_what_to_do_and_the_hint_works(tmp_path, corpus, charlstm_cli):
    run = tmp_path / "r"
    stopped_before_first_checkpoint(charlstm_cli, corpus, run)
    rc, _, err = charlstm_cli("train", "--resume", run)
    assert rc == 2 and "stopped before its first checkpoint" in err
    hint = err.strip().split("start it again with: ")[1]
    assert hint == f"charlstm train --config {shlex.quote(str(run / 'config.toml'))}"
    rc, out, err = charlstm_cli(*shlex.split(hint)[1:])
    assert rc == 0, err
    assert load_checkpoint(run / "last.safetensors").meta["step"] == 4


def test_force_removes_the_old_runs_plot(tmp_path, corpus, charlstm_cli):
    run = tmp_path / "r"
    cmd = ["train", "--data", corpus, "--out", run, "--max-steps", 2, *TINY]
    assert charlstm_cli(*cmd)[0] == 0
    assert charlstm_cli("plot", run)[0] == 0 and (run / "loss.png").exists()
    assert charlstm_cli(*cmd, "--force")[0] == 0
    assert not (run / "loss.png").exists()  # it showed the old run's curves


def test_a_run_finished_on_its_time_budget_trains_on_to_a_raised_max_steps(
        tmp_path, corpus, charlstm_cli):
    run = tmp_path / "r"
    rc, out, _ = charlstm_cli("train", "--data", corpus, "--out", run,
                              "--time-budget", 1e-6, *TINY)
    assert rc == 0 and "reached --time-budget" in out
    step = load_checkpoint(run / "last.safetensors").meta["step"]
    # no new limit: still finished, and the message says what to give
    rc, out, _ = charlstm_cli("train", "--resume", run)
    assert rc == 0 and "already finished" in out and "pass a new limit" in out
    assert "finished (reached --time-budget 1e-06 min, at step" in out
    rc, out, err = charlstm_cli("train", "--resume", run, "--max-steps", step + 5)
    assert rc == 0, err
    assert f"done at step {step + 5}: reached --max-steps {step + 5}" in out
    rc, out, _ = charlstm_cli("train", "--resume", run, "--max-steps", step + 5)
    assert f"has already reached --max-steps {step + 5}" in out
    assert f"pass --max-steps {step + 6} or more" in out


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stdout_tty, stderr_tty, plain_lines", [
    (False, True, True),  # `charlstm train ... > train.log` typed at a terminal
    (False, False, True),  # nohup, CI, a pipe
    (True, True, False),  # a terminal: the bar alone
    (True, False, True),  # `2> err.log`: no bar, so the lines
])
def test_progress_lines_go_wherever_stdout_is_a_file_or_pipe(monkeypatch, stdout_tty,
                                                            stderr_tty, plain_lines):
    out = Terminal() if stdout_tty else io.StringIO()
    err = Terminal() if stderr_tty else io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    progress = Progress(total=40, initial=0)
    rec = {"step": 20, "epoch": 0.5, "train_loss": 2.0, "train_bpc": 2.885, "val_loss": None,
           "val_bpc": None, "lr": 1e-3, "grad_norm": 0.4, "chars_per_s": 5000.0,
           "elapsed_s": 4.0}
    for _ in range(20):
        progress.update()
    progress.record(rec)
    progress.record({**rec, "step": 40, "val_loss": 2.1, "val_bpc": 3.03})
    progress.close()
    lines = out.getvalue().splitlines()
    if plain_lines:
        assert lines[0].startswith("step 20/40 | epoch 0.50 | loss 2.0000 nats")
        assert lines[1].startswith("step 40/40") and "| val 2.1000" in lines[1]
        assert len(lines) == 2
    else:
        assert lines == ["step 40: val loss 2.1000 nats (3.030 bpc), train 2.0000"]
    assert ("20/40 [" in err.getvalue()) == stderr_tty  # the bar, on a terminal only


def test_files_that_are_not_checkpoints_say_what_reads_them(tmp_path, charlstm_cli):
    from safetensors.numpy import save_file
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch\x1a\x032.1" + bytes(200))
    rc, _, err = charlstm_cli("sample", onnx)
    assert rc == 2 and err.count("\n") == 1
    assert "is not a charlstm checkpoint; it is an ONNX graph" in err
    exported = tmp_path / "exported.safetensors"
    save_file({"lstm.weight_ih_l0": np.zeros((8, 3), np.float32)}, str(exported))
    rc, _, err = charlstm_cli("sample", exported)
    assert rc == 2 and f"charlstm import {exported} OUT.safetensors --vocab VOCAB.json" in err
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    rc, _, err = charlstm_cli("info", notes)
    assert rc == 2 and "is not a charlstm checkpoint; a checkpoint is the .safetensors" in err


@pytest.mark.parametrize("argv, message", [
    (["train", "--seq-len", "abc"], "--seq-len: expected an integer, got 'abc' "
                                    "(see charlstm train --help)"),
    (["train", "--cell", "transformer"], "--cell: invalid choice: 'transformer'"),
    (["sample", "x", "--top-k", "0"], "--top-k: must be >= 1, got 0 (see charlstm sample --help)"),
    (["eval", "x", "--split", "tset"], "--split: invalid choice: 'tset'"),
    (["gradcheck", "--cell", "lstmm"], "--cell: invalid choice: 'lstmm' (choose from 'gru', "
                                       "'lstm', 'rnn')"),
    (["info", "x", "--threads", "2"], "unrecognized arguments: --threads 2"),
    (["train", "--max-steps", "0"], "--max-steps must be a positive integer, got 0"),
    (["gradcheck", "--dropout", "1"], "--dropout: must be in [0, 1), got 1"),
    (["gradcheck", "--seed", "-1"], "--seed: must be >= 0, got -1"),
    (["gradflow", "--seed", "-1"], "--seed: must be >= 0, got -1"),
])
def test_every_usage_error_is_one_line_naming_the_flag_as_typed(charlstm_cli, argv, message):
    assert message in charlstm_cli.error(*argv)


def test_config_file_errors_name_the_key_and_the_file(tmp_path, charlstm_cli):
    (tmp_path / "c.toml").write_text("max_steps = 0\n")
    rc, _, err = charlstm_cli("train", "--config", tmp_path / "c.toml")
    assert rc == 2 and f"max_steps must be a positive integer, got 0 (in {tmp_path / 'c.toml'})" \
        in err


def test_threads_only_on_the_commands_that_compute():
    from charlstm.cli import THREADED, build_parser
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, parser in commands.items():
        assert ("--threads" in parser.format_help()) == (name in THREADED), name
    assert set(THREADED) == {"train", "eval", "sample", "gradcheck", "gradflow", "visualize"}


def test_dropout_with_one_layer_warns(tmp_path, corpus, charlstm_cli):
    rc, _, err = charlstm_cli("train", "--data", corpus, "--out", tmp_path / "r",
                              "--max-steps", 1, *TINY, "--dropout", 0.2)
    assert rc == 0 and "warning: --dropout 0.2 does nothing with one layer" in err
    rc, _, err = charlstm_cli("train", "--data", corpus, "--out", tmp_path / "r2",
                              "--max-steps", 1, *TINY, "--dropout", 0.2, "--num-layers", 2)
    assert rc == 0 and "warning" not in err


def test_the_library_and_the_cli_default_to_the_same_model():
    from dataclasses import fields

    from charlstm.config import ModelConfig, TrainConfig
    model, train = ModelConfig(vocab_size=65), TrainConfig()
    for f in fields(ModelConfig):
        if f.name != "vocab_size":
            assert getattr(model, f.name) == getattr(train, f.name), f.name
    assert train.model_config(65) == model and (model.hidden_size, model.num_layers) == (384, 1)


def test_bash_completion_completes_commands_flags_and_choices(charlstm_cli):
    rc, script, _ = charlstm_cli("completion", "bash")
    assert rc == 0 and "complete -o filenames -F _charlstm charlstm" in script
    if shutil.which("bash") is None:
        pytest.skip("no bash to run the script in")
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0

    def complete(*words):
        line = " ".join(shlex.quote(w) for w in words)
        probe = (f"{script}\nCOMP_WORDS=(charlstm {line}); COMP_CWORD={len(words)}; "
                 "_charlstm; echo \"${COMPREPLY[@]}\"")
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True,
                              timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()
    assert complete("tr") == ["train"]
    assert complete("train", "--init") == ["--init-from"]
    assert complete("--debug", "sample", "--top") == ["--top-k", "--top-p"]
    assert complete("train", "--cell", "") == ["gru", "lstm", "rnn"]
    assert "--threads" not in complete("info", "--")


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_completion_scripts_parse_and_complete(charlstm_cli, capsys, shell):
    rc, script, _ = charlstm_cli("completion", shell)
    assert rc == 0 and "charlstm" in script
    if shutil.which(shell) is None:
        pytest.skip(f"no {shell} to check the script with")
    done = subprocess.run([shell, "-n"], input=script, text=True, capture_output=True)
    assert done.returncode == 0, done.stderr

    def complete(*words: str) -> list[str]:
        if shell == "fish":  # fish completes a command line itself
            line = shlex.quote(" ".join(("charlstm",) + words))
            probe = f"{script}\ncomplete -C {line}"
        else:  # zsh outside completion: stand-ins for compadd and _files, then the function
            typed = " ".join(map(shlex.quote, words))
            probe = ("compadd() { shift; print -rl -- \"$@\"; }; _files() { print FILES; }; "
                     f"compdef() {{}}\n{script}\nwords=(charlstm {typed}); "
                     f"CURRENT={len(words) + 1}; _charlstm")
        done = subprocess.run([shell, "-c", probe], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        # fish: "word<TAB>description", prefix-filtered; zsh: every candidate
        found = [line.split("\t")[0] for line in done.stdout.splitlines()]
        return [w for w in found if w.startswith(words[-1])]
    assert complete("tr") == ["train"]
    assert complete("train", "--init") == ["--init-from"]
    assert complete("--debug", "sample", "--top") == ["--top-k", "--top-p"]
    assert sorted(complete("train", "--cell", "")) == ["gru", "lstm", "rnn"]
    assert complete("info", "--thr") == []


def test_charlstm_alone_lists_the_commands_everyday_ones_first(charlstm_cli, capsys):
    rc, out, err = charlstm_cli()
    assert rc == 1 and err == ""  # like git: the list, but nothing was done
    listed = [line.split()[0] for line in out.split("COMMAND\n", 1)[1].split("\noptions")[0]
              .splitlines() if line.startswith("    ") and not line.startswith("     ")]
    assert listed == ["train", "sample", "eval", "info", "plot", "visualize", "export",
                      "import", "fetch", "prepare", "gradcheck", "gradflow", "completion", "help"]
    rc, listing, _ = charlstm_cli("help")
    assert rc == 0 and listing == out


@pytest.mark.parametrize("command", ["train", "eval", "help"])
def test_help_command_is_the_commands_own_help(capsys, command):
    shown = []
    for argv in (["help", command], [command, "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        shown.append(capsys.readouterr().out)
    assert shown[0] == shown[1] and shown[0].startswith(f"usage: charlstm {command}")


@pytest.mark.parametrize("argv, hint", [
    (["train", "--hiden-size", "8"], "unrecognized arguments: --hiden-size 8; did you mean "
                                     "--hidden-size? (see charlstm train --help)"),
    (["sample", "r", "--temprature=0"], "; did you mean --temperature? (see charlstm sample"),
    (["--verison"], "unrecognized arguments: --verison; did you mean --version?"),
    (["trian"], "invalid choice: 'trian' (choose from"),
    (["trian"], "; did you mean train? (see charlstm --help)"),
    (["help", "evl"], "; did you mean eval?"),
    (["info", "x", "--zzzz"], "unrecognized arguments: --zzzz (see charlstm info --help)"),
])
def test_unknown_flags_and_commands_suggest_the_close_one(capsys, argv, hint):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and hint in err, err


def test_unknown_config_keys_suggest_the_close_one(charlstm_cli, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("hiden_size = 8\nmax_step = 3\n")
    rc, _, err = charlstm_cli("train", "--config", config)
    assert rc == 2 and err.count("\n") == 1
    assert ("unknown train config keys: hiden_size (did you mean hidden_size?), max_step "
            f"(did you mean max_steps?) (in {config})") in err
    config.write_text("hidden_size = 8\nzzz = 3\n")  # nothing close: every key is listed
    rc, _, err = charlstm_cli("train", "--config", config)
    assert rc == 2 and "unknown train config keys: zzz (known: ar, batch_size," in err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    (root / "corpus.txt").write_text(TEXT, encoding="utf-8")
    assert main(["train", "--data", str(root / "corpus.txt"), "--out", str(root / "r"),
                 "--max-steps", "2", *TINY]) == 0
    return root


def test_the_seed_is_printed_only_when_the_sample_depends_on_it(charlstm_cli, tiny_run, capsys):
    run = tiny_run / "r"
    for greedy in (["--temperature", 0], ["--top-k", 1]):
        rc, out, err = charlstm_cli("sample", run, "--length", 20, *greedy)
        assert rc == 0 and err == "" and len(out) > 20
    rc, _, err = charlstm_cli("sample", run, "--length", 20)
    assert rc == 0 and err.startswith("charlstm: seed ") and "pass --seed" in err


def test_nits_in_train_and_eval_messages(charlstm_cli, tiny_run, tmp_path, capsys):
    corpus = tiny_run / "corpus.txt"
    rc, out, _ = charlstm_cli("train", "--data", corpus, "--out", tmp_path / "a",
                          "--max-steps", 2, *TINY, "--num-layers", 2, "--locked-dropout", 0.3)
    assert rc == 0 and "  stop   2 steps; Ctrl-C saves and stops" in out  # one limit
    assert "LSTM 2 x 8, locked dropout 0.3, " in out  # no "dropout 0" beside it
    val_chars = int(out.split(" val chars")[0].rsplit("/ ", 1)[1].replace(",", ""))
    rc, out, _ = charlstm_cli("train", "--data", corpus, "--out", tmp_path / "b",
                          "--max-steps", 2, "--epochs", 3, *TINY)
    assert rc == 0 and "2 steps or 3 epochs, whichever comes first;" in out
    assert "LSTM 1 x 8, no dropout, " in out
    # eval counts the val split's characters as train does, and the N - 1 it scores
    rc, out, _ = charlstm_cli("eval", tmp_path / "a")
    assert rc == 0 and f"{val_chars:,} characters, {val_chars - 1:,} characters scored" in out
    # --unknown skip says how many it left out
    other = tmp_path / "other.txt"
    kept = "the lazy dog and the fox\n"
    other.write_text(kept.replace("dog", "dog\u00e9\u00e9").replace("fox", "fox\u00e9"))
    rc, out, err = charlstm_cli("eval", tmp_path / "a", "--data", other, "--unknown", "skip")
    assert rc == 0 and err == ("charlstm: skipped 3 characters of the text not in the model's "
                               "vocabulary (--unknown skip)\n")
    assert f"{len(kept)} characters, {len(kept) - 1} characters scored" in out
    # the article as the name is read: an LSTM, a GRU
    from charlstm.config import a_cell
    assert [a_cell(c) for c in ("lstm", "gru", "rnn")] == ["an LSTM", "a GRU", "an RNN"]
