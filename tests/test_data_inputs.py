"""What char-rnn and nanoGPT users bring: --data as a directory, several files or stdin
(charlstm.sources), a held-out test split that eval scores, samples during training and
kept checkpoints (charlstm.keepsakes)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from test_train_cli import TEXT, TINY

from charlstm.checkpoint import load_checkpoint
from charlstm.config import TrainConfig, dump_toml, load_toml
from charlstm.data import make_corpus, split, split3
from charlstm.errors import UserError
from charlstm.keepsakes import truncate_samples
from charlstm.runs import KEPT, kept_name
from charlstm.sources import directory_files, join, read_source

LINES = TEXT.splitlines(keepends=True)
PARTS = ["".join(LINES[:13]), "".join(LINES[13:27]), "".join(LINES[27:])]


@pytest.fixture
def parts(tmp_path):
    paths = []
    for i, text in enumerate(PARTS):
        paths.append(tmp_path / f"part{i}.txt")
        paths[-1].write_text(text, encoding="utf-8")
    return paths


def test_several_files_are_joined_in_the_given_order_with_a_newline_between(tmp_path, parts):
    assert read_source([str(p) for p in parts]).text == TEXT  # each part ends in "\n"...
    (tmp_path / "a.txt").write_text("no newline")
    (tmp_path / "b.txt").write_text("next\n")
    src = read_source([str(tmp_path / "b.txt"), str(tmp_path / "a.txt")])
    assert src.text == "next\nno newline"  # ...one is added only where it is missing
    assert join(["x", "y"]) == "x\ny" and join(["x\n", "y"]) == "x\ny"
    assert read_source(str(parts[0])).sha256 != read_source(
        [str(parts[1]), str(parts[0])]).sha256


def test_a_directory_is_its_input_txt_else_its_files_by_name(tmp_path, parts):
    assert directory_files(tmp_path) == parts
    (tmp_path / ".hidden").write_text("not read")
    (tmp_path / "sub").mkdir()  # directories inside are not read
    src = read_source(str(tmp_path))
    assert src.text == TEXT and "3 files: part0.txt, part1.txt, part2.txt" in src.shown
    (tmp_path / "input.txt").write_text("char-rnn's file\n")
    assert read_source(str(tmp_path)).text == "char-rnn's file\n"
    with pytest.raises(UserError, match="a directory with no text file in it"):
        read_source(str(tmp_path / "sub"))


def test_every_form_of_data_trains_and_a_change_to_it_refuses_resume(
        tmp_path, parts, charlstm_cli):
    run = tmp_path / "run"
    charlstm_cli.ok("train", "--data", *parts, "--out", run, "--max-steps", 2, *TINY)
    config = TrainConfig.from_dict(load_toml(run / "config.toml"))
    assert config.data == tuple(str(p) for p in parts)  # kept as a TOML list
    assert load_checkpoint(run / "last.safetensors").meta["data_sha256"] == \
        read_source(config.data).sha256
    parts[1].write_text(PARTS[1].replace("fox", "cat"))
    line = charlstm_cli.error("train", "--resume", run, "--max-steps", 4)
    assert "is not the text this run was trained on" in line
    d = tmp_path / "dir"
    d.mkdir()
    (d / "input.txt").write_text(TEXT)
    charlstm_cli.ok("train", "--data", d, "--out", tmp_path / "r2", "--max-steps", 2, *TINY)
    (d / "input.txt").write_text(TEXT + "more\n")
    assert "is not the text" in charlstm_cli.error("train", "--resume", tmp_path / "r2",
                                                   "--max-steps", 4)


def test_stdin_is_read_once_and_kept_in_the_run_so_it_resumes(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "charlstm", "train", "--data", "-", "--out", str(run),
            "--max-steps", "2", *map(str, TINY)]
    done = subprocess.run(args, input=TEXT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "standard input" in done.stdout
    assert (run / "stdin.txt").read_text() == TEXT
    config = TrainConfig.from_dict(load_toml(run / "config.toml"))
    assert config.data == str((run / "stdin.txt").resolve())
    more = subprocess.run([sys.executable, "-m", "charlstm", "train", "--resume", str(run),
                           "--max-steps", "4"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    assert more.returncode == 0 and "done at step 4" in more.stdout, more.stderr
    # the same text piped again resumes too, and the run still records its copy
    more = subprocess.run([sys.executable, "-m", "charlstm", "train", "--resume", str(run),
                           "--max-steps", "5", "--data", "-"], input=TEXT,
                          capture_output=True, text=True)
    assert more.returncode == 0 and "done at step 5" in more.stdout, more.stderr
    assert TrainConfig.from_dict(load_toml(run / "config.toml")).data == config.data
    # a new run over it replaces the copy with --force, as any run file
    done = subprocess.run([*args, "--force"], input=TEXT + "x\n", capture_output=True,
                          text=True)
    assert done.returncode == 0 and (run / "stdin.txt").read_text() == TEXT + "x\n"


def test_stdin_must_be_piped_and_not_empty(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stdin", Tty())
    with pytest.raises(UserError, match="standard input is a terminal"):
        read_source("-")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(UserError, match="standard input is empty"):
        read_source("-")


def test_the_test_split_is_the_end_after_validation_and_leaves_val_alone():
    ids = list(range(1000))
    train, val, test = split3(ids, 0.1, 0.0)
    assert (train, val) == split(ids, 0.1) and test == []
    train, val, test = split3(ids, 0.1, 0.05)
    assert (len(train), len(val), len(test)) == (850, 100, 50)
    assert train + val + test == ids
    corpus = make_corpus(TEXT, 0.1, test_frac=0.1)
    assert len(corpus.train) + len(corpus.val) + len(corpus.test) == len(TEXT)
    with pytest.raises(ValueError, match="val_frac \\+ test_frac must be below 1"):
        TrainConfig(val_frac=0.5, test_frac=0.5)


def test_eval_split_test_scores_the_held_out_end(tmp_path, charlstm_cli):
    (tmp_path / "c.txt").write_text(TEXT)
    run = tmp_path / "run"
    out = charlstm_cli.ok("train", "--data", tmp_path / "c.txt", "--out", run,
                          "--max-steps", 2, "--test-frac", 0.1, *TINY)
    n_test = len(TEXT) - len(TEXT) * 9 // 10  # int(N * 0.1) at the end, here 219
    assert f"/ {n_test:,} test chars" in out
    result = json.loads(charlstm_cli.ok("eval", run, "--split", "test", "--json"))
    assert result["split_characters"] == n_test and result["test_frac"] == 0.1
    val = json.loads(charlstm_cli.ok("eval", run, "--json"))
    assert val["split_characters"] == int(len(TEXT) * 0.9) - int(len(TEXT) * 0.8)
    assert val["loss"] == pytest.approx(load_checkpoint(run / "last.safetensors")
                                        .meta["val_loss"], abs=1e-5)
    charlstm_cli.ok("train", "--data", tmp_path / "c.txt", "--out", tmp_path / "plain",
                    "--max-steps", 2, *TINY)
    assert "trained without a test split" in charlstm_cli.error(
        "eval", tmp_path / "plain", "--split", "test")


def test_sample_every_prints_keeps_and_resumes_without_duplicates(tmp_path, charlstm_cli):
    (tmp_path / "c.txt").write_text(TEXT)
    run = tmp_path / "run"
    out = charlstm_cli.ok("train", "--data", tmp_path / "c.txt", "--out", run,
                          "--max-steps", 4, "--sample-every", 2, *TINY)
    assert "step 2 sample (temperature 0.8):" in out and "step 4 sample" in out
    text = (run / "samples.txt").read_text()
    assert [line for line in text.splitlines() if line.startswith("===")] == [
        "=== step 2 ===", "=== step 4 ==="]
    sample_4 = text.split("=== step 4 ===\n")[1].rstrip("\n")
    assert len(sample_4) == 200 and sample_4 in out
    # samples drawn after the checkpoint a run resumes from are dropped, then redrawn
    truncate_samples(run / "samples.txt", 2)
    assert "step 4" not in (run / "samples.txt").read_text()
    (run / "samples.txt").write_text(text)
    charlstm_cli.ok("train", "--resume", run, "--max-steps", 6)
    heads = [line for line in (run / "samples.txt").read_text().splitlines()
             if line.startswith("===")]
    assert heads == ["=== step 2 ===", "=== step 4 ===", "=== step 6 ==="]


def test_keep_holds_the_last_n_evaluated_checkpoints_and_force_clears_them(
        tmp_path, charlstm_cli):
    (tmp_path / "c.txt").write_text(TEXT)
    run = tmp_path / "run"
    args = ["train", "--data", tmp_path / "c.txt", "--out", run, *TINY, "--eval-every", 2]
    charlstm_cli.ok(*args, "--max-steps", 8, "--keep", 2)
    kept = sorted(p.name for p in run.iterdir() if KEPT.fullmatch(p.name))
    assert [name[:11] for name in kept] == ["step-000006", "step-000008"]
    ck = load_checkpoint(run / kept[-1])
    assert kept[-1] == kept_name(8, ck.meta["val_loss"]) and ck.meta["step"] == 8
    (run / "step-000001-val9.9999.safetensors.txt").write_text("the user's")  # not ours
    charlstm_cli.ok(*args, "--max-steps", 2, "--force")
    names = {p.name for p in run.iterdir()}
    assert not any(KEPT.fullmatch(n) for n in names)
    assert "step-000001-val9.9999.safetensors.txt" in names


def test_new_settings_round_trip_through_config_toml(tmp_path):
    config = TrainConfig(data=("a.txt", "b.txt"), test_frac=0.05, sample_every=100, keep=3,
                         init_from="run", extend_vocab=True)
    path_text = dump_toml(config)
    assert 'data = ["a.txt", "b.txt"]' in path_text and "extend_vocab = true" in path_text
    (tmp_path / "c.toml").write_text(path_text)
    assert TrainConfig.from_dict(load_toml(tmp_path / "c.toml")) == config
    assert TrainConfig(data=["one.txt"]).data == "one.txt"
    with pytest.raises(ValueError, match="needs init_from"):
        TrainConfig(unknown="skip")
    with pytest.raises(ValueError, match="choose one"):
        TrainConfig(unknown="skip", extend_vocab=True, init_from="run")
