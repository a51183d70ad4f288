"""charlstm touches only what it owns: run directories it made (the .charlstm-run marker,
or a checkpoint/config of its own in a run made before the marker) and regular files.
A user's directory, a device, a FIFO, a symbolic link's target are never written, with
--force or without; each refusal is one line. A FIFO and a symlink take the same code
path a device node would (lstat, not a regular file), without needing root.
"""

from __future__ import annotations

import os
import signal

import pytest
import test_faults
from test_faults import one_line, run_cli, training_process
from test_train_cli import TINY

from charlstm import fsutil
from charlstm.checkpoint import load_checkpoint
from charlstm.runs import MARKER

corpus, trained = test_faults.corpus, test_faults.trained  # the fixtures, shared


def snapshot(directory) -> dict:
    return {p.name: (p.read_bytes() if p.is_file() else None) for p in directory.iterdir()}


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_train_never_writes_into_a_directory_that_is_not_a_run(tmp_path, corpus, capsys,
                                                                force):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.toml").write_text("x\n")  # the user's own, not train settings
    (proj / "loss.png").write_text("y\n")
    (proj / "log.jsonl").write_text("z\n")
    (proj / ".d.tmp").write_text("z\n")
    before = snapshot(proj)
    rc, _, err = run_cli(capsys, "train", "--data", corpus, "--out", proj, "--max-steps", 3,
                         *TINY, *force)
    line = one_line(err)
    assert rc == 2 and "is a directory that is not a charlstm run" in line
    assert snapshot(proj) == before  # no .lock, no marker, nothing replaced or removed


def test_an_empty_directory_becomes_a_run_marked_first(tmp_path, corpus, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    assert run_cli(capsys, "train", "--data", corpus, "--out", out, "--max-steps", 2,
                   *TINY)[0] == 0
    assert '"format_version": 1' in (out / MARKER).read_text()


def test_a_run_made_before_the_marker_is_still_a_run(trained, corpus, capsys):
    (trained / MARKER).unlink()  # as every run written before the marker existed
    base = ["train", "--data", corpus, "--out", trained, "--max-steps", 2, *TINY]
    rc, _, err = run_cli(capsys, *base)
    assert rc == 2 and "already holds a run" in one_line(err)
    assert run_cli(capsys, *base, "--force")[0] == 0
    assert (trained / MARKER).is_file()
    (trained / MARKER).unlink()
    assert run_cli(capsys, "train", "--resume", trained, "--max-steps", 4)[0] == 0
    assert (trained / MARKER).is_file()  # marked on resume


def test_an_unmarked_start_before_the_first_checkpoint_is_recognised(trained, corpus, capsys):
    """A run made before the marker that stopped before its first checkpoint: its
    config.toml (train settings, with data and out) says it is ours."""
    for name in (MARKER, "last.safetensors", "best.safetensors"):
        (trained / name).unlink()
    rc, out, err = run_cli(capsys, "train", "--data", corpus, "--out", trained,
                           "--max-steps", 2, *TINY)
    assert rc == 0, err
    assert "stopped before its first checkpoint; starting it again" in out


def test_force_never_replaces_a_run_file_that_is_a_link(trained, corpus, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (trained / "loss.png").symlink_to(victim)
    rc, _, err = run_cli(capsys, "train", "--data", corpus, "--out", trained, "--max-steps", 2,
                         *TINY, "--force")
    assert rc == 2 and "is a symbolic link, not a regular file" in one_line(err)
    assert victim.read_text() == "precious" and (trained / "loss.png").is_symlink()


def make_special(path, kind: str, victim) -> None:
    """At path, a FIFO or a symlink to victim: not regular files, as /dev/null is not."""
    if kind == "a FIFO":
        os.mkfifo(path)
    else:
        path.symlink_to(victim)


KINDS = ("a FIFO", "a symbolic link")


@pytest.mark.parametrize("kind", KINDS)
def test_force_never_replaces_a_fifo_or_a_link(trained, tmp_path, capsys, kind):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    page = ["visualize", trained, "--split", "train", "--chars", 50, "--force"]
    commands = {
        "p.html": [*page, "--out", tmp_path / "p.html"],
        "s.json": [*page, "--out", tmp_path / "ok.html", "--json", tmp_path / "s.json"],
        "m.safetensors": ["export", trained, tmp_path / "m.safetensors", "--force"],
        "w.safetensors": ["export", trained, tmp_path / "w.safetensors", "--weights-only",
                          "--force"],
        "v.json": ["export", trained, tmp_path / "x.safetensors", "--vocab-out",
                   tmp_path / "v.json", "--force"],
        "l.png": ["plot", trained, "--out", tmp_path / "l.png"],
    }
    for name, argv in commands.items():
        make_special(tmp_path / name, kind, victim)
        rc, _, err = run_cli(capsys, *argv)
        assert rc == 2 and f"is {kind}, not a regular file" in one_line(err), argv
        assert not (tmp_path / name).is_file() or (tmp_path / name).is_symlink()
    assert victim.read_text() == "precious"


def test_import_never_replaces_a_link(trained, tmp_path, capsys):
    sd, vocab = tmp_path / "sd.safetensors", tmp_path / "v.json"
    assert run_cli(capsys, "export", trained, sd, "--vocab-out", vocab)[0] == 0
    victim = tmp_path / "victim.safetensors"
    victim.write_text("precious")
    (tmp_path / "out.safetensors").symlink_to(victim)
    rc, _, err = run_cli(capsys, "import", sd, tmp_path / "out.safetensors", "--vocab", vocab,
                         "--force")
    assert rc == 2 and "a symbolic link" in one_line(err)
    assert victim.read_text() == "precious"


@pytest.mark.parametrize("kind", KINDS)
def test_atomic_write_refuses_what_is_not_a_regular_file(tmp_path, kind):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    make_special(tmp_path / "out", kind, victim)
    with pytest.raises(fsutil.UserError, match=f"is {kind}, not a regular file"):
        fsutil.atomic_write_bytes(tmp_path / "out", b"x")
    with pytest.raises(fsutil.UserError, match="is a directory"):
        fsutil.atomic_write_bytes(tmp_path, b"x")
    assert victim.read_text() == "precious"


def test_a_255_byte_output_name_works(trained, tmp_path, capsys):
    name = "m" * (255 - len(".safetensors")) + ".safetensors"
    out = tmp_path / name
    assert run_cli(capsys, "export", trained, out, "--weights-only")[0] == 0
    assert load_checkpoint(out).config.hidden_size == 8
    assert run_cli(capsys, "export", trained, out, "--weights-only", "--force")[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    assert fsutil.temp_prefix(name).startswith(".") and len(fsutil.temp_prefix(name)) < 40


def test_visualize_refuses_one_file_for_page_and_json(trained, tmp_path, capsys):
    page = tmp_path / "x"
    rc, _, err = run_cli(capsys, "visualize", trained, "--split", "train", "--out", page,
                         "--json", page)
    assert rc == 2 and "--out and --json both name" in one_line(err)
    assert not page.exists()


def test_nohup_keeps_sighup_ignored(tmp_path, corpus):
    """nohup (or a launcher) sets SIGHUP to SIG_IGN: it must stay ignored, so a closed
    terminal does not stop the run; SIGTERM still saves and stops."""
    run, log = tmp_path / "r", tmp_path / "r" / "log.jsonl"
    code = ("import signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
            "from charlstm import cli; sys.exit(cli.main(sys.argv[1:]))")
    proc = training_process(run, corpus, ("-c", code))
    size = log.stat().st_size
    proc.send_signal(signal.SIGHUP)
    while log.stat().st_size == size:  # it trains on: a later step is logged
        assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "stopped by SIGTERM" in out and "SIGHUP" not in out


def test_resume_refuses_a_run_file_that_is_a_link_before_training(trained, tmp_path, capsys):
    victim = tmp_path / "victim.jsonl"
    victim.write_text("precious\n")
    (trained / "log.jsonl").unlink()
    (trained / "log.jsonl").symlink_to(victim)
    rc, out, err = run_cli(capsys, "train", "--resume", trained, "--max-steps", 8)
    assert rc == 2 and "log.jsonl is a symbolic link" in one_line(err) and out == ""
    assert victim.read_text() == "precious\n"
    assert load_checkpoint(trained / "last.safetensors").meta["step"] == 4


def test_plot_never_replaces_a_png_beside_a_log_outside_a_run(trained, tmp_path, capsys):
    elsewhere = tmp_path / "notes"
    elsewhere.mkdir()
    (elsewhere / "log.jsonl").write_bytes((trained / "log.jsonl").read_bytes())
    (elsewhere / "loss.png").write_text("my own figure")
    rc, _, err = run_cli(capsys, "plot", elsewhere / "log.jsonl")
    assert rc == 2 and "is not a charlstm run directory" in one_line(err)
    assert (elsewhere / "loss.png").read_text() == "my own figure"
    assert run_cli(capsys, "plot", trained)[0] == 0  # a run's own plot is replaced


def test_a_runs_config_copied_into_a_directory_does_not_make_it_a_run(trained, tmp_path,
                                                                     corpus, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "config.toml").write_bytes((trained / "config.toml").read_bytes())
    before = snapshot(proj)
    rc, _, err = run_cli(capsys, "train", "--config", proj / "config.toml", "--out", proj,
                         "--data", corpus, "--max-steps", 2)
    assert rc == 2 and "is a directory that is not a charlstm run" in one_line(err)
    assert snapshot(proj) == before
