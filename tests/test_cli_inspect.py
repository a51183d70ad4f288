"""`charlstm sample`, `eval`, `info` and `plot` as users run them, on tiny checkpoints
built directly (no training), plus one end-to-end run of `charlstm train`."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

from charlstm import CharLSTM, ModelConfig, layers
from charlstm.checkpoint import Checkpoint, save_checkpoint
from charlstm.model import zero_state
from charlstm.sample import generate, numpy_step_fn, stream_rng
from charlstm.text import Vocab

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind\n" * 3
VOCAB = Vocab.from_text(TEXT)


def make_checkpoint(path, seed=0, dtype=np.float64, meta=None, cell="lstm"):
    model = CharLSTM(ModelConfig(vocab_size=len(VOCAB), hidden_size=8, num_layers=2,
                                 cell=cell), seed=seed, dtype=dtype)
    save_checkpoint(path, Checkpoint(model.config, VOCAB.chars, model.params,
                                     meta=meta or {"step": 7, "best_val_loss": 2.5}))
    return model


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "model.safetensors"
    return path, make_checkpoint(path)


def assert_one_line_error(rc, err, expected_rc, match):
    assert rc == expected_rc
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert lines[-1].startswith(("charlstm: error:", "charlstm sample: error:",
                                 "charlstm eval: error:", "charlstm plot: error:"))
    assert match in lines[-1]


# ----------------------------------------------------------------------------- sample

def test_sample_streams_the_library_text_and_repeats_with_a_seed(ckpt, charlstm_cli):
    path, model = ckpt
    rc, out, _ = charlstm_cli("sample", path, "--prime", "To be", "--length", 40,
                              "--seed", 3, "--top-k", 10, "--temperature", 0.8)
    assert rc == 0
    expected = "".join(c for (c,) in generate(
        numpy_step_fn(model.params, model.config), zero_state(model.config, 1, np.float64),
        VOCAB.chars, VOCAB.encode("To be"), 40, 0.8, 10, 1.0, [stream_rng(3, 0)]))
    assert out == "To be" + expected + "\n"
    assert charlstm_cli("sample", path, "--prime", "To be", "--length", 40, "--seed", 3,
                        "--top-k", 10, "--temperature", 0.8)[1] == out
    assert charlstm_cli("sample", path, "--prime", "To be", "--length", 40, "--seed", 4,
                        "--top-k", 10, "--temperature", 0.8)[1] != out


def test_sample_without_seed_prints_the_seed_that_repeats_it(ckpt, charlstm_cli):
    path, _ = ckpt
    rc, out, err = charlstm_cli("sample", path, "--length", 30)
    assert rc == 0 and len(out) >= 30
    seed = err.split("--seed ")[1].split()[0]
    assert charlstm_cli("sample", path, "--length", 30, "--seed", seed)[1] == out


def test_greedy_samples_agree_and_sample_k_depends_on_seed_and_k_only(ckpt, charlstm_cli):
    path, _ = ckpt
    rc, out, _ = charlstm_cli("sample", path, "--temperature", 0, "--length", 25,
                              "--num-samples", 3, "--seed", 1)
    assert rc == 0
    assert re.findall(r"=== sample (\d/\d) ===", out) == ["1/3", "2/3", "3/3"]
    _, *bodies = re.split(r"\n?=== sample \d/\d ===\n", out)
    assert len(bodies[0]) >= 25 and bodies[0] == bodies[1] == bodies[2]  # greedy: no randomness
    rc, out, _ = charlstm_cli("sample", path, "--length", 25, "--num-samples", 2,
                              "--seed", 1)
    _, *bodies = re.split(r"\n?=== sample \d/\d ===\n", out)
    # Sample k depends on (seed, k) only: sample 1 is what --num-samples 1 prints.
    assert bodies[0] == charlstm_cli("sample", path, "--length", 25, "--seed", 1)[1]
    assert bodies[0] != bodies[1]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_num_samples_are_drawn_side_by_side_on_the_threads(
        tmp_path, charlstm_cli, monkeypatch, cell):
    """--num-samples 5 --threads 2 (slices of 3 and 2 streams): sample k is the text of
    stream_rng(seed, k) drawn alone, for plain, top-k and top-p sampling."""
    from charlstm import engine
    monkeypatch.setattr(engine, "COMPILED_SLICE_STREAMS", 1)
    workers = []
    real = engine.map_streams
    monkeypatch.setattr(engine, "map_streams", lambda fn, B, H, threads, work: (
        workers.append(len(engine.stream_slices(B, H, threads, work)))
        or real(fn, B, H, threads, work)))
    path = tmp_path / "m.safetensors"
    model = make_checkpoint(path, cell=cell)
    for flags, kw in ((["--temperature", 1.2], dict(temperature=1.2)),
                      (["--top-k", 4, "--temperature", 0.8], dict(temperature=0.8, top_k=4)),
                      (["--top-p", 0.7], dict(top_p=0.7))):
        rc, out, _ = charlstm_cli("sample", path, "--prime", "To", "--length", 30,
                                  "--num-samples", 5, "--seed", 9, "--threads", 2, *flags)
        assert rc == 0
        _, *bodies = re.split(r"\n?=== sample \d/5 ===\n", out)
        for k, body in enumerate(bodies):
            alone = "".join(c for (c,) in generate(
                numpy_step_fn(model.params, model.config),
                zero_state(model.config, 1, np.float64), VOCAB.chars, VOCAB.encode("To"), 30,
                rngs=[stream_rng(9, k)], **kw))
            assert body == "To" + alone + ("" if alone.endswith("\n") else "\n"), (flags, k)
        assert len(set(bodies)) == 5
    assert workers == [2, 2, 2]


def test_sample_run_dir_prefers_best_then_last(tmp_path, charlstm_cli):
    run = tmp_path / "run"
    run.mkdir()
    make_checkpoint(run / "last.safetensors", seed=1)
    args = ["sample", run, "--temperature", 0, "--length", 30, "--prime", "T"]
    from_last = charlstm_cli(*args)[1]
    assert from_last == charlstm_cli(*args[:1], run / "last.safetensors", *args[2:])[1]
    make_checkpoint(run / "best.safetensors", seed=2)
    from_best = charlstm_cli(*args)[1]
    assert from_best == charlstm_cli(*args[:1], run / "best.safetensors", *args[2:])[1]
    assert from_best != from_last


def test_unknown_prime_characters_listed_or_skipped(ckpt, charlstm_cli):
    path, _ = ckpt
    rc, _, err = charlstm_cli("sample", path, "--prime", "Tö bé✓", "--seed", 0)
    assert_one_line_error(rc, err, 2, "'ö' 'é' '✓'")
    assert "--unknown skip" in err
    rc, out, err = charlstm_cli("sample", path, "--prime", "Tö bé✓", "--unknown", "skip",
                                "--length", 5, "--seed", 0)
    assert rc == 0 and out.startswith("T b") and "skipped 3" in err


def test_sample_length_zero_echoes_the_prime_only(ckpt, charlstm_cli):
    assert charlstm_cli("sample", ckpt[0], "--prime", "To", "--length", 0,
                        "--seed", 0)[1] == "To\n"


@pytest.mark.parametrize("args, match", [
    (["--temperature", "-0.5"], "--temperature: must be >= 0"),
    (["--top-p", "0"], "--top-p: must be in (0, 1]"),
    (["--top-p", "1.01"], "--top-p: must be in (0, 1]"),
    (["--top-k", "0"], "--top-k: must be >= 1"),
    (["--length", "-1"], "--length: must be >= 0"),
    (["--num-samples", "0"], "--num-samples: must be >= 1"),
    (["--seed", "-1"], "--seed: must be >= 0"),
    (["--backend", "tensorflow"], "invalid choice"),
])
def test_sample_bad_flags_are_usage_errors(ckpt, args, match, charlstm_cli):
    rc, _, err = charlstm_cli("sample", ckpt[0], *args)  # argparse: one error line, exit 2
    assert_one_line_error(rc, err, 2, match)


def test_missing_or_corrupt_checkpoints(tmp_path, charlstm_cli):
    for command in (["sample"], ["info"], ["eval"]):
        rc, _, err = charlstm_cli(*command, tmp_path / "nope.safetensors")
        assert_one_line_error(rc, err, 2, "no such checkpoint or run directory")
        rc, _, err = charlstm_cli(*command, tmp_path)
        assert_one_line_error(rc, err, 2, "holds no checkpoint")
    path = tmp_path / "model.safetensors"
    make_checkpoint(path)
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    rc, _, err = charlstm_cli("sample", path)
    assert_one_line_error(rc, err, 1, "corrupt or truncated")
    rc, _, err = charlstm_cli("info", path)
    assert_one_line_error(rc, err, 1, "corrupt or truncated")


def test_missing_onnx_for_the_onnxruntime_backend_is_a_one_line_error(
        ckpt, charlstm_cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the onnx extra were not installed
    monkeypatch.delitem(sys.modules, "charlstm.interop.onnx", raising=False)
    rc, _, err = charlstm_cli("sample", ckpt[0], "--backend", "onnxruntime")
    assert_one_line_error(rc, err, 1, "the onnxruntime backend needs the onnx package")
    assert "--backend numpy" in err and "export" not in err


def test_sample_survives_a_closed_pipe(ckpt):
    proc = subprocess.run(f"{sys.executable} -m charlstm.cli sample {ckpt[0]} --length 20000 "
                          "--seed 0 | head -c 10", shell=True, capture_output=True, text=True)
    assert len(proc.stdout) == 10 and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- eval

def one_pass_loss(model, ids):
    """Mean cross-entropy of every next character, one forward over the whole text."""
    logits, _ = model.forward(ids[:-1, None])
    logp = layers.log_softmax(logits)[:, 0]
    return float(-logp[np.arange(len(ids) - 1), ids[1:]].mean())


def eval_loss(charlstm_cli, *args):
    rc, out, err = charlstm_cli("eval", *args)
    assert rc == 0, err
    line = next(s for s in out.splitlines() if s.startswith("loss"))
    loss = float(line.split()[1])
    bits = float(out.split("nats/char\n")[1].split()[0])
    assert abs(bits - loss / math.log(2)) < 1e-3
    return loss, out


def test_eval_with_carried_state_equals_one_pass(tmp_path, ckpt, charlstm_cli):
    path, model = ckpt
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    ids = VOCAB.encode(TEXT)
    n_train = int(len(ids) * 0.8)
    for split, part in [("all", ids), ("train", ids[:n_train]), ("val", ids[n_train:])]:
        loss, out = eval_loss(charlstm_cli, path, "--data", data, "--split", split, "--val-frac",
                              0.2, "--batch-size", 1, "--seq-len", 7)
        assert loss == pytest.approx(one_pass_loss(model, part), abs=1e-4)  # printed to 4 dp
        assert f"{len(part) - 1:,} characters scored" in out
        assert f"perplexity  {math.exp(one_pass_loss(model, part)):.4f}" in out
    # Several streams: each starts from a zero state, a slightly different number.
    loss, _ = eval_loss(charlstm_cli, path, "--data", data, "--split", "all", "--batch-size", 4)
    assert abs(loss - one_pass_loss(model, ids)) < 0.1


def test_eval_data_name_resolves_offline(tmp_path, ckpt, charlstm_cli, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("CHARLSTM_TINYSHAKESPEARE_URL", "http://127.0.0.1:9/none")
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("CHARLSTM_DATA_DIR", str(tmp_path))
    (tmp_path / "tinyshakespeare.txt").write_text(TEXT)
    _, out = eval_loss(charlstm_cli, ckpt[0], "--data", "tinyshakespeare", "--split", "all")
    assert str(tmp_path / "tinyshakespeare.txt") in out
    monkeypatch.setenv("CHARLSTM_DATA_DIR", str(tmp_path / "elsewhere"))
    rc, _, err = charlstm_cli("eval", ckpt[0], "--data", "tinyshakespeare")
    assert_one_line_error(rc, err, 1, "cannot download")
    assert "--data FILE" in err


def test_eval_unknown_characters_error_or_skip(tmp_path, ckpt, charlstm_cli):
    path, model = ckpt
    data = tmp_path / "text.txt"
    data.write_text("Tö be, or not to bé" * 5)
    rc, _, err = charlstm_cli("eval", path, "--data", data, "--split", "all")
    assert_one_line_error(rc, err, 2, "'ö' 'é'")
    loss, out = eval_loss(charlstm_cli, path, "--data", data, "--split", "all", "--unknown", "skip",
                          "--batch-size", 1)
    clean = VOCAB.encode("T be, or not to b" * 5)
    assert loss == pytest.approx(one_pass_loss(model, clean), abs=1e-4)


def test_eval_bad_inputs_are_one_line_errors(tmp_path, ckpt, charlstm_cli):
    path, _ = ckpt
    data = tmp_path / "text.txt"
    data.write_text(TEXT)
    rc, _, err = charlstm_cli("eval", path, "--data", tmp_path / "none.txt")
    assert_one_line_error(rc, err, 2, "no such file")
    rc, _, err = charlstm_cli("eval", path, "--data", data, "--val-frac", 0,
                              "--split", "val")
    assert_one_line_error(rc, err, 2, "leaves nothing to evaluate")
    (tmp_path / "bad.txt").write_bytes(b"To be\xff")
    rc, _, err = charlstm_cli("eval", path, "--data", tmp_path / "bad.txt")
    assert_one_line_error(rc, err, 2, "byte offset 5")
    rc, _, err = charlstm_cli("eval", path)  # made here, not trained: no text known
    assert_one_line_error(rc, err, 2, "does not say what it was trained on; pass --data FILE")
    moved = tmp_path / "moved.safetensors"
    make_checkpoint(moved, meta={"train_config": {"data": str(tmp_path / "gone.txt")}})
    rc, _, err = charlstm_cli("eval", moved)
    assert_one_line_error(rc, err, 2, "training text cannot be found (no such file")
    assert "pass --data FILE" in err
    proc = charlstm_cli.subprocess("eval", path, "--data", data, "--val-frac", "1")
    assert_one_line_error(proc.returncode, proc.stderr, 2, "--val-frac: must be in [0, 1)")


# ----------------------------------------------------------------------------- info

def test_info_prints_a_table_and_json(tmp_path, charlstm_cli):
    path = tmp_path / "m.safetensors"
    model = make_checkpoint(path, meta={"step": 1234, "best_val_loss": 1.4697,
                                        "rng": {"dropout": {"state": 5}}}, cell="gru")
    rc, out, _ = charlstm_cli("info", path, "--verbose")
    assert rc == 0
    assert f"{model.num_params:,} (float64)" in out
    assert "GRU, 2 layers x 8 hidden" in out
    assert f"{len(VOCAB)} characters" in out
    assert re.search(r"^step +1234$", out, re.M)
    assert re.search(r"^best_val_loss +1.4697 nats/char \(2.1203 bits/char", out, re.M)
    assert "saved (random streams" in out
    rc, out, _ = charlstm_cli("info", path, "--json")
    info = json.loads(out)
    assert info["parameters"] == model.num_params and info["vocab"] == "".join(VOCAB.chars)
    assert info["config"]["cell"] == "gru" and info["meta"]["step"] == 1234


def test_info_shows_the_log_window_as_a_per_char_mean_and_never_overflows(tmp_path, charlstm_cli):
    # what --log-every 500 leaves between records: sums over 499 steps (here a loss of
    # 2.5 nats/char each); shown as a per-step mean, with a perplexity that cannot overflow
    path = tmp_path / "m.safetensors"
    window = {"loss": 499 * 2.5, "norm": 499 * 0.5, "seconds": 99.8, "steps": 499,
              "chars": 499 * 2048, "lr": 1e-3}
    make_checkpoint(path, meta={"step": 999, "log_window": window, "val_loss": 1000.0,
                                "elapsed_s": 54.72421387199984,
                                "cursor": {"epoch": 0, "window": 7}, "optimizer_step": 999})
    rc, out, err = charlstm_cli("info", path, "-v")
    assert rc == 0, err
    assert re.search(r"^log_window +499 steps since the last log record, mean train loss "
                     r"2.5000 nats/char \(3.6067 bits/char, perplexity 12.182\)$", out, re.M)
    assert re.search(r"^val_loss +1000.0000 nats/char .*perplexity overflows a float", out, re.M)
    assert re.search(r"^elapsed +0:00:54 of training$", out, re.M)
    assert "cursor" not in out and "optimizer_step" not in out and "54.72" not in out
    rc, out, _ = charlstm_cli("info", path, "--json")  # --json keeps everything as saved
    assert json.loads(out)["meta"]["log_window"] == window


def test_info_is_a_ten_line_summary_and_verbose_shows_the_rest(tmp_path, charlstm_cli):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcd efgh ijkl\n" * 60)
    run = tmp_path / "run"
    assert charlstm_cli("train", "--data", corpus, "--out", run, "--hidden-size", 8,
                        "--seq-len", 8, "--batch-size", 4, "--max-steps", 4,
                        "--eval-every", 2, "--ema-decay", 0.9)[0] == 0
    rc, out, _ = charlstm_cli("info", run)
    assert rc == 0
    lines = out.splitlines()
    assert len(lines) == 10
    meta = json.loads(charlstm_cli("info", run, "--json")[1])["meta"]
    best = f"{meta['best_val_loss']:.4f} nats/char"
    for pattern in [rf"^checkpoint +{re.escape(str(run))}/best.safetensors \([\d.]+ MB, "
                    r"charlstm-checkpoint v1, written by charlstm ",
                    r"^model +LSTM, 1 layer x 8 hidden, no dropout",
                    rf"^data +{re.escape(str(corpus))} \(last 0.1 held out",
                    r"^trained +step 4 \(epoch 0\), 0:00:\d\d of training; limit 4 steps$",
                    r"^settings +adam lr 0.004 \(cosine, warmup 50\), B=4 x T=8, clip 5, "
                    r"weight EMA 0.9$",
                    rf"^best val loss +{best} \(.* at step {meta['best_step']}$",
                    r"^\(every setting: charlstm info .* --verbose; all of it as JSON: --json\)$"]:
        assert re.search(pattern, out, re.M), pattern
    assert "train_config" not in out and "rng" not in out
    rc, verbose, _ = charlstm_cli("info", run, "--verbose")
    assert re.search(r"^train_config.ema_decay +0.9$", verbose, re.M)
    assert re.search(r"^data_sha256 +[0-9a-f]{64}$", verbose, re.M)
    assert len(verbose.splitlines()) > 30
    # a checkpoint with no training record (imported, or hand-made): the rows it has
    path = tmp_path / "m.safetensors"
    make_checkpoint(path)  # step 7 and best_val_loss 2.5, no training config
    rc, out, _ = charlstm_cli("info", path)
    assert rc == 0 and [line.split()[0] for line in out.splitlines()] == [
        "checkpoint", "model", "parameters", "vocab", "trained", "best", "(every"]
    assert re.search(r"^trained +step 7$", out, re.M)
    assert "not allowed with argument" in charlstm_cli("info", run, "--json", "-v")[2]


# ----------------------------------------------------------------------------- plot

def write_log(run, records, extra=""):
    run.mkdir(exist_ok=True)
    (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + extra)


def log_records(n=30):
    return [{"step": 10 * i, "train_loss": 4 / (1 + 0.1 * i),
             "val_loss": 4.2 / (1 + 0.1 * i) if i % 5 == 0 else None,
             "elapsed_s": 3.0 * i} for i in range(1, n + 1)]


def test_plot_writes_a_png(tmp_path, charlstm_cli):
    run = tmp_path / "run"
    write_log(run, log_records(), extra='{"step": 31')  # killed mid-write
    rc, out, err = charlstm_cli("plot", run)
    assert rc == 0 and "skipped 1" in err
    png = (run / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    out_path = tmp_path / "curves.png"
    rc, _, _ = charlstm_cli("plot", run, "--out", out_path, "--dpi", 50)
    assert rc == 0 and out_path.read_bytes()[:4] == b"\x89PNG"
    assert len(out_path.read_bytes()) < len(png)


def test_plot_bad_inputs_are_one_line_errors(tmp_path, charlstm_cli):
    rc, _, err = charlstm_cli("plot", tmp_path / "nope")
    assert_one_line_error(rc, err, 2, "no such run directory")
    rc, _, err = charlstm_cli("plot", tmp_path)
    assert_one_line_error(rc, err, 2, "has no training log")
    write_log(tmp_path, [], extra="garbage\n")
    rc, _, err = charlstm_cli("plot", tmp_path)
    assert_one_line_error(rc, err, 1, "no loss records yet")
    write_log(tmp_path, log_records())
    rc, _, err = charlstm_cli("plot", tmp_path, "--out", tmp_path / "x.jpg")
    assert_one_line_error(rc, err, 2, "must name a .png")
    rc, _, err = charlstm_cli("plot", tmp_path, "--out", tmp_path / "no" / "x.png")
    assert_one_line_error(rc, err, 2, "no such directory")


# ----------------------------------------------------------------------------- end to end

def test_train_then_sample_eval_info_plot(tmp_path, charlstm_cli):
    data = tmp_path / "corpus.txt"
    data.write_text(TEXT * 4)
    run = tmp_path / "run"
    rc, _, err = charlstm_cli("train", "--data", data, "--out", run, "--hidden-size", 8,
                              "--num-layers", 1, "--seq-len", 8, "--batch-size", 4,
                              "--max-steps", 6, "--eval-every", 3, "--log-every", 1)
    assert rc == 0, err
    # eval with the run's own settings reproduces the best validation loss it logged
    rc, out, _ = charlstm_cli("info", run, "--json")
    best = json.loads(out)["meta"]["best_val_loss"]
    loss, _ = eval_loss(charlstm_cli, run)
    assert loss == pytest.approx(best, abs=1e-4)
    rc, out, _ = charlstm_cli("sample", run, "--prime", "To", "--length", 20, "--seed", 0)
    assert rc == 0 and out.startswith("To") and len(out) == 23
    assert charlstm_cli("plot", run)[0] == 0
    assert (run / "loss.png").stat().st_size > 10_000
