"""The Python API (`charlstm.load` and LanguageModel) on a tiny trained run: the same text
as `charlstm sample`, the same loss as `charlstm eval`, save/load round trips, and the
README's snippet run as a fresh script."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import charlstm
from charlstm import cli
from charlstm.checkpoint import load_checkpoint
from charlstm.errors import UserError
from charlstm.presets import load_preset
from charlstm.sample import encode_prime, until_stop

TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks?\n"
        "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n") * 12
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run trained by the CLI, in <tmp>/runs/demo (where the README looks)."""
    root = tmp_path_factory.mktemp("api")
    (root / "corpus.txt").write_text(TEXT)
    run = root / "runs" / "demo"
    rc = cli.main(["train", "--data", str(root / "corpus.txt"), "--out", str(run),
                   "--hidden-size", "16", "--num-layers", "2", "--seq-len", "8",
                   "--batch-size", "4", "--max-steps", "6", "--eval-every", "3",
                   "--log-every", "3"])
    assert rc == 0
    return run


@pytest.mark.parametrize("kwargs, flags", [
    ({"prime": "ROMEO:", "length": 60, "seed": 3}, ["--prime", "ROMEO:", "--length", 60,
                                                    "--seed", 3]),
    ({"length": 40, "temperature": 0.7, "top_k": 5, "seed": 0},
     ["--length", 40, "--temperature", 0.7, "--top-k", 5, "--seed", 0]),
    ({"prime": "O R", "length": 30, "top_p": 0.9, "seed": 11},
     ["--prime", "O R", "--length", 30, "--top-p", 0.9, "--seed", 11]),
    ({"prime": "JULIET", "length": 25, "temperature": 0.0},
     ["--prime", "JULIET", "--length", 25, "--temperature", 0, "--seed", 5]),
])
def test_generate_gives_the_text_charlstm_sample_prints(run_dir, charlstm_cli, kwargs, flags):
    model = charlstm.load(run_dir)
    text = model.generate(**kwargs)
    out = charlstm_cli.ok("sample", run_dir, *flags)
    # the CLI ends its output with a newline when the text does not
    assert out == (text if text.endswith("\n") else text + "\n")
    assert text.startswith(kwargs.get("prime", ""))
    assert len(text) == len(kwargs.get("prime", "")) + kwargs["length"]
    assert "".join(model.stream(**kwargs)) == text


def test_generate_many_gives_the_samples_charlstm_sample_prints(
        run_dir, charlstm_cli, monkeypatch):
    """On 2 workers (the CLI's --threads, the library's set_num_threads; slices of 2
    and 1 streams): text k is the CLI's sample k+1; text 0 is generate's."""
    monkeypatch.setattr(charlstm.engine, "COMPILED_SLICE_STREAMS", 1)
    model = charlstm.load(run_dir)
    charlstm.set_num_threads(2)
    try:
        texts = model.generate_many(3, "ROMEO:", length=40, temperature=0.9, top_k=8, seed=6)
    finally:
        charlstm.set_num_threads(None)
    out = charlstm_cli.ok("sample", run_dir, "--prime", "ROMEO:", "--length", 40,
                          "--temperature", 0.9, "--top-k", 8, "--seed", 6, "--num-samples", 3,
                          "--threads", 2)
    _, *bodies = re.split(r"\n?=== sample \d/3 ===\n", out)
    assert [t if t.endswith("\n") else t + "\n" for t in texts] == bodies
    assert texts[0] == model.generate("ROMEO:", length=40, temperature=0.9, top_k=8, seed=6)
    assert len(set(texts)) == 3 and all(t.startswith("ROMEO:") for t in texts)
    with pytest.raises(ValueError, match="positive integer"):
        model.generate_many(0)
    with pytest.raises(ValueError, match="vocabulary"):
        model.generate_many(2, "Zed")


def test_load_holds_vocabulary_configs_and_the_run_s_checkpoint(run_dir):
    model = charlstm.load(run_dir)
    ckpt = load_checkpoint(run_dir / "best.safetensors")
    assert isinstance(model, charlstm.LanguageModel) and isinstance(model, charlstm.CharLSTM)
    assert model.vocab.chars == sorted(set(TEXT)) == ckpt.vocab
    assert model.config == ckpt.config and model.config.hidden_size == 16
    assert model.train_config.seq_len == 8 and model.meta["step"] == ckpt.meta["step"]
    for name, value in ckpt.params.items():
        np.testing.assert_array_equal(model.params[name], value)
    last = charlstm.load(run_dir / "last.safetensors")
    assert last.meta["step"] == 6
    assert model.decode(model.encode("Romeo")) == "Romeo"
    assert model.encode("ROMEO").shape == (5,) and model.encode("ROMEO").dtype == np.int64
    assert model.decode(model.encode("thou art").reshape(2, 4)) == "thou art"
    with pytest.raises(ValueError, match="'Z' 'é'"):
        model.encode("Zé")
    with pytest.raises(ValueError, match="'Z'"):
        model.generate("Zed", length=5, seed=0)
    with pytest.raises(UserError, match="no such checkpoint or run directory"):
        charlstm.load(run_dir / "nope")


def test_seed_none_draws_a_fresh_sample(run_dir):
    model = charlstm.load(run_dir)
    texts = {model.generate(length=40) for _ in range(4)}
    assert len(texts) > 1 and all(len(t) == 40 for t in texts)


def test_evaluate_is_charlstm_eval_on_the_whole_text(run_dir, charlstm_cli, tmp_path):
    model = charlstm.load(run_dir)
    other = tmp_path / "other.txt"
    other.write_text(TEXT[:500])
    out = charlstm_cli.ok("eval", run_dir, "--data", other, "--split", "all")
    cli_loss = float(re.search(r"^loss +([\d.]+) nats/char", out, re.M)[1])
    loss = model.evaluate(TEXT[:500])
    assert loss == pytest.approx(cli_loss, abs=1e-4)
    # the state is carried from window to window: the window length changes nothing
    assert model.evaluate(TEXT[:500], seq_len=500) == pytest.approx(loss, rel=1e-5)
    one_stream = model.evaluate(TEXT[:500], batch_size=1)
    assert one_stream == pytest.approx(model.evaluate(TEXT[:500], batch_size=1, seq_len=7),
                                       rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 characters"):
        model.evaluate("R")


def test_save_writes_a_small_checkpoint_every_command_reads(run_dir, charlstm_cli, tmp_path):
    model = charlstm.load(run_dir)
    path = tmp_path / "shared.safetensors"
    model.save(path)
    again = charlstm.load(path)
    assert again.vocab.chars == model.vocab.chars and again.config == model.config
    for name in model.params:
        np.testing.assert_array_equal(again.params[name], model.params[name])
    assert again.meta["best_val_loss"] == model.meta["best_val_loss"]
    assert again.train_config == model.train_config
    # no optimizer moments or carried state: smaller than the run's own checkpoint
    assert load_checkpoint(path).arrays == {}
    assert path.stat().st_size < (run_dir / "best.safetensors").stat().st_size
    assert again.generate("ROMEO:", 50, seed=2) == model.generate("ROMEO:", 50, seed=2)
    assert charlstm_cli.ok("sample", path, "--prime", "ROMEO:", "--length", 50,
                           "--seed", 2) == model.generate("ROMEO:", 50, seed=2) + "\n"
    assert "parameters" in charlstm_cli.ok("info", path)


def test_encode_prime_takes_the_vocabulary_a_checkpoint_holds(run_dir):
    ckpt = load_checkpoint(run_dir / "last.safetensors")
    ids, echo = encode_prime(ckpt.vocab, "ROMEO:")
    assert echo == "ROMEO:" and [ckpt.vocab[i] for i in ids] == list("ROMEO:")


def readme_library_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python library\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_readme_shows_the_library_api_in_three_lines():
    snippet = readme_library_snippet()
    code = [line for line in snippet.splitlines() if line.strip()]
    assert len(code) == 3 and "charlstm.load(" in snippet and ".generate(" in snippet


def test_the_readme_snippet_works_as_a_fresh_script(run_dir):
    # a new process, in the directory holding runs/demo, running only the README's lines
    done = subprocess.run([sys.executable, "-c", readme_library_snippet()],
                          cwd=run_dir.parent.parent, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ROMEO:") and len(done.stdout) > 100


def test_every_public_function_of_the_api_has_a_docstring():
    api = [charlstm.load, charlstm.train, charlstm.LanguageModel]
    api += [getattr(charlstm.LanguageModel, name) for name in
            ("generate", "stream", "generate_many", "save", "evaluate", "encode", "decode",
             "checkpoint", "next_char_probs", "surprisal")]
    for obj in api:
        assert obj.__doc__ and len(obj.__doc__.strip()) > 20, obj


def test_eval_scores_all_of_another_text_and_the_val_split_of_its_own(
        run_dir, charlstm_cli, tmp_path):
    import json
    other = tmp_path / "other.txt"
    other.write_text(TEXT[:300])
    result = json.loads(charlstm_cli.ok("eval", run_dir, "--data", other, "--json"))
    assert result["split"] == "all" and result["characters"] == 299
    assert result["loss"] == pytest.approx(charlstm.load(run_dir).evaluate(TEXT[:300]),
                                           rel=1e-6)
    assert result["bits_per_char"] == pytest.approx(result["loss"] / np.log(2))
    # the text it was trained on (found by its checksum, wherever it lies): its val split
    own = tmp_path / "copy.txt"
    own.write_text(TEXT)
    result = json.loads(charlstm_cli.ok("eval", run_dir, "--data", own, "--json"))
    assert result["split"] == "val" and result["val_frac"] == 0.1
    assert result == {**json.loads(charlstm_cli.ok("eval", run_dir, "--json")),
                      "data": str(own), "seconds": result["seconds"]}


def test_export_weights_only_is_the_small_checkpoint_to_share(run_dir, tmp_path, charlstm_cli):
    out = tmp_path / "share.safetensors"
    text = charlstm_cli.ok("export", run_dir, out, "--weights-only")
    assert f"wrote {out} (charlstm checkpoint, weights only" in text
    assert load_checkpoint(out).arrays == {}
    assert out.stat().st_size < (run_dir / "best.safetensors").stat().st_size
    assert charlstm.load(out).generate("ROMEO:", 40, seed=4) == \
        charlstm.load(run_dir).generate("ROMEO:", 40, seed=4)
    assert "already exists; pass --force" in charlstm_cli.error("export", run_dir, out,
                                                                "--weights-only")
    assert "name OUT x.safetensors" in charlstm_cli.error("export", run_dir, tmp_path / "x.pt",
                                                          "--weights-only")


def test_prime_file_is_the_prime(run_dir, tmp_path, charlstm_cli):
    prime = "ROMEO:\nBut soft, what light"
    (tmp_path / "prime.txt").write_text(prime)
    args = ["sample", run_dir, "--length", 30, "--seed", 6]
    from_file = charlstm_cli.ok(*args, "--prime-file", tmp_path / "prime.txt")
    assert from_file == charlstm_cli.ok(*args, "--prime", prime)
    assert from_file.startswith(prime)
    assert "give the prime once" in charlstm_cli.error(
        "sample", run_dir, "--prime", "R", "--prime-file", tmp_path / "prime.txt")
    assert "no such file" in charlstm_cli.error("sample", run_dir, "--prime-file",
                                                tmp_path / "none.txt")


@pytest.mark.parametrize("call, name", [
    (lambda m: m.generate("A", length=-5), "length must be an integer >= 0, got -5"),
    (lambda m: m.stream("A", length=2.5), "length must be an integer >= 0, got 2.5"),
    (lambda m: m.generate_many(2, "A", -1), "length must be an integer >= 0, got -1"),
    (lambda m: m.generate_many(0, "A", 5), "num_samples must be a positive integer"),
    (lambda m: m.evaluate("ABBA ABBA", seq_len=-1), "seq_len must be a positive integer"),
    (lambda m: m.evaluate("ABBA ABBA", batch_size=0), "batch_size must be a positive integer"),
    (lambda m: m.decode([-1]), r"ids must be integers in \[0, "),
    (lambda m: m.decode([10**6]), r"ids must be integers in \[0, "),
    (lambda m: m.decode([0.5]), r"ids must be integers in \[0, "),
])
def test_library_arguments_are_checked_like_flags(call, name):
    """Misuse is a ValueError naming the argument, not a plausible wrong answer (the
    prime for length -5, the last character for id -1, None for seq_len -1)."""
    config = charlstm.ModelConfig(vocab_size=3, hidden_size=4)
    model = charlstm.LanguageModel(config, ["A", "B", " "], charlstm.CharLSTM(config).params)
    with pytest.raises(ValueError, match=name):
        call(model)


# ---------------------------------------------------------------- charlstm.train

TINY_RUN = {"hidden_size": 16, "num_layers": 2, "seq_len": 8, "batch_size": 4,
            "max_steps": 6, "eval_every": 3, "log_every": 3}


def test_train_from_python_is_charlstm_train(run_dir, tmp_path, capsys):
    """The same settings give the CLI's run bit for bit, in the run directory asked for,
    silently; the model returned is the run's best checkpoint, loaded."""
    capsys.readouterr()
    model = charlstm.train(data=str(run_dir.parent.parent / "corpus.txt"),
                           out=str(tmp_path / "lib"), **TINY_RUN)
    assert capsys.readouterr() == ("", "")
    assert isinstance(model, charlstm.LanguageModel)
    assert model.path == tmp_path / "lib" / "best.safetensors"
    cli_model = charlstm.load(run_dir)
    for name, value in cli_model.params.items():
        np.testing.assert_array_equal(model.params[name], value)
    assert model.meta["step"] == cli_model.meta["step"]
    assert model.train_config == replace(cli_model.train_config, out=str(tmp_path / "lib"))
    assert {p.name for p in (tmp_path / "lib").iterdir()} >= {
        "config.toml", "log.jsonl", "last.safetensors", "best.safetensors"}


def test_train_with_progress_prints_what_the_cli_prints(run_dir, tmp_path, capsys,
                                                        charlstm_cli):
    data = str(run_dir.parent.parent / "corpus.txt")
    charlstm.train(data=data, out=str(tmp_path / "lib"), progress=True, **TINY_RUN)
    printed = capsys.readouterr().out
    flags = [x for k, v in TINY_RUN.items() for x in ("--" + k.replace("_", "-"), v)]
    cli_out = charlstm_cli.ok("train", "--data", data, "--out", tmp_path / "cli", *flags)

    def same(text):  # timings and the run directory differ, the rest is the same text
        text = "".join(line for line in text.splitlines(True)  # 6 steps < the warmup: said
                       if not line.startswith("charlstm: warning: this run makes 6 steps"))
        text = text.replace(str(tmp_path / "lib"), "RUN").replace(str(tmp_path / "cli"), "RUN")
        return re.sub(r"[\d.]+ ?(s|ms|min|steps/s|k?chars/s)\b", "T", text)

    assert same(printed).startswith("charlstm: training into")
    assert "charlstm: done at step 6: reached --max-steps 6" in printed
    assert same(printed).splitlines()[:5] == same(cli_out).splitlines()[:5]
    assert same(printed).splitlines()[-3:] == same(cli_out).splitlines()[-3:]


def test_train_takes_a_preset_and_resumes(run_dir, tmp_path):
    data = str(run_dir.parent.parent / "corpus.txt")
    out = tmp_path / "small"
    model = charlstm.train(preset="small", data=data, out=str(out), hidden_size=16,
                           num_layers=1, seq_len=8, batch_size=4, max_steps=2)
    preset = load_preset("small")
    given = {"hidden_size", "num_layers", "seq_len", "batch_size", "max_steps"}
    for key, value in preset.items():
        if key not in given:
            assert getattr(model.train_config, key) == value, key
    assert model.meta["step"] == 2
    model = charlstm.train(resume=str(out), max_steps=4)
    assert model.meta["step"] == 4 and model.train_config.ema_decay == preset["ema_decay"]
    with pytest.raises(ValueError, match="drop preset="):
        charlstm.train(resume=str(out), preset="small", max_steps=5)
    with pytest.raises(ValueError, match="drop out="):
        charlstm.train(resume=str(out), out=str(tmp_path / "x"), max_steps=5)


def test_an_interrupted_train_raises_keyboard_interrupt_saying_how_to_resume(
        tmp_path, monkeypatch):
    """Ctrl-C (SIGINT) saves the run and ends train() as Ctrl-C ends Python code."""
    trainer = sys.modules["charlstm.loop"]  # the trainer module
    real_step = trainer.train_step

    def step_then_signal(run, batches, lr):
        result = real_step(run, batches, lr)
        if run.step == 2:
            signal.raise_signal(signal.SIGINT)  # caught by the trainer: it saves and stops
        return result

    monkeypatch.setattr(trainer, "train_step", step_then_signal)
    (tmp_path / "t.txt").write_text(TEXT)
    with pytest.raises(KeyboardInterrupt, match=r"continue with charlstm.train\(resume="):
        charlstm.train(data=str(tmp_path / "t.txt"), out=str(tmp_path / "run"), **TINY_RUN)
    monkeypatch.undo()
    model = charlstm.train(resume=str(tmp_path / "run"))
    assert model.meta["step"] == TINY_RUN["max_steps"]


@pytest.mark.parametrize("settings, message", [
    ({"hiden_size": 8}, "hiden_size \\(did you mean hidden_size\\?\\)"),
    ({"lr": -1.0}, "lr"),
    ({"cell": "transformer"}, "transformer"),
])
def test_train_refuses_a_bad_setting_before_writing_anything(tmp_path, settings, message):
    (tmp_path / "t.txt").write_text(TEXT)
    with pytest.raises(ValueError, match=message):
        charlstm.train(data=str(tmp_path / "t.txt"), out=str(tmp_path / "run"),
                       max_steps=1, **settings)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- unknown, probabilities

def test_unknown_skip_leaves_out_what_the_cli_s_unknown_skip_does(run_dir, charlstm_cli,
                                                                  tmp_path):
    model = charlstm.load(run_dir)
    args = {"length": 30, "seed": 4}
    text = model.generate("ZROMEO:é", unknown="skip", **args)
    assert text == model.generate("ROMEO:", **args)
    assert charlstm_cli.ok("sample", run_dir, "--prime", "ZROMEO:é", "--unknown", "skip",
                           "--length", 30, "--seed", 4) == text + "\n"
    assert model.stream("Zé", length=3, seed=1, unknown="skip") is not None
    assert model.generate_many(2, "ZROMEO:", unknown="skip", **args)[0] == text
    assert list(model.encode("Zé Romeo", unknown="skip")) == list(model.encode(" Romeo"))
    dirty = TEXT[:300].replace("a", "aZ")
    assert model.evaluate(dirty, unknown="skip") == model.evaluate(TEXT[:300])
    (tmp_path / "dirty.txt").write_text(dirty)
    out = charlstm_cli.ok("eval", run_dir, "--data", tmp_path / "dirty.txt", "--unknown",
                          "skip")
    assert float(re.search(r"^loss +([\d.]+) nats/char", out, re.M)[1]) == pytest.approx(
        model.evaluate(dirty, unknown="skip"), abs=1e-4)
    assert model.surprisal(dirty, unknown="skip") == model.surprisal(TEXT[:300])
    with pytest.raises(ValueError, match='pass unknown="skip"'):
        model.evaluate(dirty)
    with pytest.raises(ValueError, match='unknown must be "error" or "skip"'):
        model.generate("R", length=2, unknown="ignore")


def test_surprisal_is_the_loss_evaluate_reports_character_by_character(run_dir):
    model = charlstm.load(run_dir)
    text = TEXT[:400]
    scored = model.surprisal(text)
    assert [c for c, _ in scored] == list(text[1:])
    bits = np.array([b for _, b in scored])
    assert np.all(bits > 0)
    assert bits.mean() * np.log(2) == pytest.approx(model.evaluate(text, batch_size=1),
                                                    rel=1e-5)
    assert [b for _, b in model.surprisal(text, seq_len=7)] == pytest.approx(bits, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 characters"):
        model.surprisal("R")


def test_next_char_probs_is_the_distribution_generate_draws_from(run_dir):
    model = charlstm.load(run_dir)
    probs = model.next_char_probs("ROMEO")
    assert list(probs) == model.vocab.chars
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-12)
    # the surprisal of ':' after "ROMEO" is -log2 of its probability
    (_, bits), = model.surprisal("ROMEO:")[-1:]
    assert -np.log2(probs[":"]) == pytest.approx(bits, rel=1e-5)
    best = max(probs, key=probs.get)
    assert model.next_char_probs("ROMEO", temperature=0)[best] == 1.0
    assert model.generate("ROMEO", length=1, temperature=0) == "ROMEO" + best
    top2 = model.next_char_probs("ROMEO", top_k=2)
    assert sum(p > 0 for p in top2.values()) == 2
    # "" is the start of a line, as for generate
    assert model.next_char_probs("") == pytest.approx(model.next_char_probs("\n"))
    with pytest.raises(ValueError, match="temperature"):
        model.next_char_probs("R", temperature=-1)


# ---------------------------------------------------------------- stop strings

def test_generate_stops_before_the_stop_string(run_dir):
    model = charlstm.load(run_dir)
    args = {"prime": "ROMEO:", "length": 300, "temperature": 1.0, "seed": 9}
    full = model.generate(**args)
    drawn = full[len("ROMEO:"):]
    stop = drawn[40:43]
    expected = "ROMEO:" + drawn[:drawn.find(stop)]
    assert model.generate(**args, stop=stop) == expected
    assert model.generate(**args, stop=[stop, "\x00never"]) == expected
    pieces = list(model.stream(**args, stop=stop))
    assert "".join(pieces) == expected and all(len(p) == 1 for p in pieces[1:])
    assert model.generate_many(2, **args, stop=stop)[0] == expected
    assert model.generate(**args, stop="\x00never") == full
    assert model.generate(**args, stop="ROMEO") != "ROMEO:"  # the prime is not searched
    for bad in ("", [""], [3]):
        with pytest.raises(ValueError, match="stop must be"):
            model.generate("R", length=3, stop=bad)


@pytest.mark.parametrize("chars, stops, expected", [
    ("abcabd", ("abd",), "abc"),
    ("aaab", ("aab",), "a"),
    ("xyz", ("z", "yz"), "x"),
    ("xyzw", ("q",), "xyzw"),
    ("ab", ("abc",), "ab"),  # a held tail that never completes is given back
])
def test_until_stop_cuts_at_the_first_stop_string(chars, stops, expected):
    assert "".join(until_stop(iter(chars), stops)) == expected


def test_until_stop_draws_no_further_than_the_stop():
    drawn = []

    def chars():
        for c in "ab--cd":
            drawn.append(c)
            yield c

    assert "".join(until_stop(chars(), ("--",))) == "ab"
    assert drawn == list("ab--")


# ---------------------------------------------------------------- reprs and attributes

def test_reprs_say_what_a_model_is_and_num_params_is_an_attribute(run_dir):
    model = charlstm.load(run_dir)
    n = sum(int(v.size) for v in model.params.values())
    assert model.num_params == n
    text = repr(model)
    assert text.startswith("LanguageModel(LSTM 2x16, vocab ")
    assert f"{n:,} parameters, float32, step " in text
    assert "best.safetensors" in text and "val_loss" in text
    fresh = charlstm.CharLSTM(charlstm.ModelConfig(vocab_size=5, hidden_size=4))
    assert repr(fresh) == (f"CharLSTM({fresh.config!r}, dtype=float32, "
                           f"num_params={fresh.num_params:,})")
