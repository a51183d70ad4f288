"""charlstm <-> PyTorch: exported state dicts run in CharRNN (nn.LSTM/GRU/RNN + nn.Linear)
exactly as charlstm does, come back bit for bit, and bad files get one-line errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import NEEDS_TORCH

import charlstm.cells
from charlstm import CharLSTM, ModelConfig
from charlstm.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from charlstm.interop.state_dict import (
    checkpoint_from_state_dict,
    load_state_dict,
    save_state_dict,
)
from charlstm.model import forward, param_shapes, step

torch = pytest.importorskip("torch", reason=NEEDS_TORCH)

import safetensors.torch  # noqa: E402  (these need torch)

from charlstm.interop.torch import CharRNN, state_from_torch, state_to_torch  # noqa: E402

CELLS = ["lstm", "gru", "rnn"]
N_STATES = {"lstm": 2, "gru": 1, "rnn": 1}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These models are tiny: a second thread only spins (badly, on a loaded 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_ckpt(cell, L, V=11, H=6, dtype=np.float64, seed=0):
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, cell=cell)
    model = CharLSTM(config, seed=seed, dtype=dtype)
    vocab = [chr(ord("a") + i) for i in range(V - 2)] + ["\n", "é"]
    return Checkpoint(config, vocab, model.params, meta={"step": 3})


def random_inputs(config, T, B, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, config.vocab_size, size=(T, B))
    shape = (config.num_layers, B, config.hidden_size)
    return x, tuple(rng.standard_normal(shape) * 0.7 for _ in range(N_STATES[config.cell]))


@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_round_trip_through_torch_is_exact(tmp_path, cell, L, suffix):
    ckpt = make_ckpt(cell, L, seed=L)
    path = tmp_path / f"model{suffix}"
    save_state_dict(path, ckpt)
    # what a user does: load the file with torch's own readers into CharRNN
    sd = (safetensors.torch.load_file(path) if suffix == ".safetensors"
          else torch.load(path, weights_only=True))
    module = CharRNN.from_state_dict(sd)
    assert module.decoder.weight.dtype == torch.float64
    assert isinstance(module.recurrent, {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU,
                                         "rnn": torch.nn.RNN}[cell])

    x, state = random_inputs(ckpt.config, T=7, B=3, seed=L)
    logits, final, _ = forward(ckpt.params, ckpt.config, x, state)
    with torch.no_grad():
        t_logits, t_final = module(torch.from_numpy(x), state_to_torch(state, cell))
    np.testing.assert_allclose(t_logits.numpy(), logits, rtol=0, atol=1e-10)
    for a, b in zip(state_from_torch(t_final, cell), final, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)

    back = checkpoint_from_state_dict(load_state_dict(path), ckpt.vocab, source=str(path))
    assert back.config == ModelConfig(ckpt.config.vocab_size, ckpt.config.hidden_size, L,
                                      cell=cell)
    assert list(back.params) == list(ckpt.params)
    for k, v in ckpt.params.items():
        assert back.params[k].dtype == v.dtype
        np.testing.assert_array_equal(back.params[k], v)


@pytest.mark.parametrize("names", [("h", "c"), ("h",), ("h", "c", "n")])
def test_torch_state_format_follows_the_cells_state_names(monkeypatch, names):
    """A tuple for a cell of several state arrays, the bare tensor for one: what the cell
    declares decides, not whether it is called "lstm" (a new cell keeps working)."""
    monkeypatch.setitem(charlstm.cells.CELLS, "newcell", SimpleNamespace(STATE_NAMES=names))
    state = tuple(np.full((1, 2, 3), float(j)) for j in range(len(names)))
    theirs = state_to_torch(state, "newcell")
    assert isinstance(theirs, tuple if len(names) > 1 else torch.Tensor)
    for a, b in zip(state_from_torch(theirs, "newcell"), state, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", CELLS)
def test_module_keys_are_charlstm_names(cell):
    config = ModelConfig(vocab_size=5, hidden_size=4, num_layers=3, cell=cell)
    sd = CharRNN(5, 4, 3, cell).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == param_shapes(config)


def test_cli_export_import_round_trip(tmp_path, charlstm_cli):
    ckpt = make_ckpt("lstm", 2, dtype=np.float32)
    save_checkpoint(tmp_path / "c.safetensors", ckpt)
    for name in ["m.safetensors", "m.pt"]:
        assert "m.vocab.json" in charlstm_cli.ok("export", tmp_path / "c.safetensors", "--format",
                                                 "torch", tmp_path / name)
        assert json.loads((tmp_path / "m.vocab.json").read_text("utf-8")) == ckpt.vocab
        out = tmp_path / f"back_{name}.safetensors"
        charlstm_cli.ok("import", tmp_path / name, "--format", "torch", "--vocab",
                        tmp_path / "m.vocab.json", out)
        back = load_checkpoint(out)
        assert back.config == ckpt.config and back.vocab == ckpt.vocab
        for k, v in ckpt.params.items():
            np.testing.assert_array_equal(back.params[k], v)


def greedy_torch(module, prime, n):
    ids, state, out = torch.tensor(prime).reshape(-1, 1), None, []
    with torch.no_grad():
        for _ in range(n):
            logits, state = module(ids, state)
            ids = logits[-1].argmax(-1).reshape(1, 1)
            out.append(int(ids))
    return out


def greedy_charlstm(ckpt, prime, n):
    state, out = None, []
    for i in prime:
        logits, state = step(ckpt.params, ckpt.config, np.array([i]), state)
    for _ in range(n):
        out.append(int(np.argmax(logits[0])))
        logits, state = step(ckpt.params, ckpt.config, np.array([out[-1]]), state)
    return out


@pytest.mark.parametrize("cell", CELLS)
def test_model_trained_in_torch_imports_and_samples_the_same(tmp_path, cell, charlstm_cli):
    text = "the cat sat on the mat. the dog sat on the log. " * 4
    vocab = sorted(set(text))
    ids = torch.tensor([vocab.index(c) for c in text])
    torch.manual_seed(0)
    module = CharRNN(len(vocab), 24, 2, cell)
    opt = torch.optim.Adam(module.parameters(), lr=0.02)
    n = (len(ids) - 1) // 8 * 8  # 8 contiguous streams, so few sequential steps
    x, y = ids[:n].reshape(8, -1).T, ids[1:n + 1].reshape(8, -1).T
    for _ in range(40):
        opt.zero_grad()
        logits, _ = module(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(vocab)), y.reshape(-1))
        loss.backward()
        opt.step()
    assert loss.item() < 1.0  # it learnt something, so greedy text is not one repeated char
    safetensors.torch.save_file(module.state_dict(), tmp_path / "torch.safetensors")
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    charlstm_cli.ok("import", tmp_path / "torch.safetensors", "--vocab", tmp_path / "vocab.json",
                    tmp_path / "c.safetensors")
    ckpt = load_checkpoint(tmp_path / "c.safetensors")
    assert ckpt.config.cell == cell and ckpt.params["decoder.weight"].dtype == np.float32
    prime = [vocab.index(c) for c in "the "]
    ours, theirs = greedy_charlstm(ckpt, prime, 60), greedy_torch(module, prime, 60)
    assert "".join(vocab[i] for i in ours) == "".join(vocab[i] for i in theirs)
    assert len(set(ours)) > 3


# ---- bad input: one line, non-zero exit, nothing written ----


def import_error(tmp_path, charlstm_cli, sd_path, vocab=None):
    vocab_path = tmp_path / "vocab.json"
    if vocab is not None:
        vocab_path.write_text(json.dumps(vocab), "utf-8")
    out = tmp_path / "out.safetensors"
    rc, _, err = charlstm_cli("import", sd_path, "--vocab", vocab_path, out)
    assert rc != 0 and not out.exists()
    assert err.startswith("charlstm: error: ") and err.count("\n") == 1, err
    return err


def good_state_dict(cell="lstm", L=2):
    return {k: torch.from_numpy(v) for k, v in make_ckpt(cell, L, dtype=np.float32)
            .params.items()}


def test_import_refuses_wrong_names(tmp_path, charlstm_cli):
    sd = good_state_dict()
    sd["lstm.weight_hh_l9"] = sd.pop("lstm.weight_hh_l1")
    safetensors.torch.save_file(sd, tmp_path / "sd.safetensors")
    err = import_error(tmp_path, charlstm_cli, tmp_path / "sd.safetensors", list("abcdefghijk"))
    assert "missing lstm.weight_hh_l1" in err and "unexpected lstm.weight_hh_l9" in err
    assert "lstm.weight_ih_l{k}" in err  # says what was expected


def test_import_refuses_bidirectional_and_bare_lstm(tmp_path, charlstm_cli):
    sd = good_state_dict()
    sd["lstm.weight_ih_l0_reverse"] = sd["lstm.weight_ih_l0"].clone()
    safetensors.torch.save_file(sd, tmp_path / "bi.safetensors")
    assert "unexpected lstm.weight_ih_l0_reverse" in import_error(
        tmp_path, charlstm_cli, tmp_path / "bi.safetensors", list("abcdefghijk"))
    bare = torch.nn.LSTM(11, 6, 1).state_dict()
    safetensors.torch.save_file(bare, tmp_path / "bare.safetensors")
    assert "bare nn.LSTM" in import_error(tmp_path, charlstm_cli, tmp_path / "bare.safetensors")


def test_import_refuses_wrong_shapes(tmp_path, charlstm_cli):
    sd = good_state_dict("gru")
    sd["gru.weight_hh_l1"] = torch.zeros(18, 5)
    safetensors.torch.save_file(sd, tmp_path / "sd.safetensors")
    err = import_error(tmp_path, charlstm_cli, tmp_path / "sd.safetensors", list("abcdefghijk"))
    assert "gru.weight_hh_l1 has shape (18, 5), expected (18, 6)" in err


def test_import_refuses_vocab_size_mismatch_and_bad_vocab(tmp_path, charlstm_cli):
    safetensors.torch.save_file(good_state_dict(), tmp_path / "sd.safetensors")
    err = import_error(tmp_path, charlstm_cli, tmp_path / "sd.safetensors", list("abc"))
    assert "11 characters" in err and "has 3" in err
    err = import_error(tmp_path, charlstm_cli, tmp_path / "sd.safetensors", ["ab", "c"])
    assert "JSON list of distinct single characters" in err
    (tmp_path / "vocab.json").write_text("[not json", "utf-8")
    assert "not valid JSON" in import_error(tmp_path, charlstm_cli, tmp_path / "sd.safetensors")


def test_import_refuses_nan_and_non_float(tmp_path, charlstm_cli):
    sd = good_state_dict()
    sd["decoder.bias"][3] = float("nan")
    safetensors.torch.save_file(sd, tmp_path / "nan.safetensors")
    assert "NaN" in import_error(tmp_path, charlstm_cli, tmp_path / "nan.safetensors",
                                 list("abcdefghijk"))
    sd = good_state_dict()
    sd["decoder.bias"] = torch.arange(11)
    safetensors.torch.save_file(sd, tmp_path / "int.safetensors")
    assert "dtype int64" in import_error(tmp_path, charlstm_cli, tmp_path / "int.safetensors",
                                         list("abcdefghijk"))


def touch(path):
    """What a malicious pickle would run on load; weights_only must never call it."""
    open(path, "w").close()


class Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return touch, (self.path,)


def test_import_refuses_pickled_objects_without_running_them(tmp_path, charlstm_cli):
    marker = tmp_path / "pwned"
    sd = dict(good_state_dict(), extra=Payload(str(marker)))
    torch.save(sd, tmp_path / "evil.pt")
    err = import_error(tmp_path, charlstm_cli, tmp_path / "evil.pt", list("abcdefghijk"))
    assert "weights_only=True" in err
    assert not marker.exists()
    torch.save(CharRNN(11, 6, 2), tmp_path / "module.pt")  # a whole pickled module
    assert "weights_only=True" in import_error(tmp_path, charlstm_cli, tmp_path / "module.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")  # allowed by torch, not a state dict
    assert "flat state dict" in import_error(tmp_path, charlstm_cli, tmp_path / "list.pt")


def test_import_refuses_unreadable_files(tmp_path, charlstm_cli):
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    assert "not a readable .safetensors" in import_error(
        tmp_path, charlstm_cli, tmp_path / "junk.safetensors", ["a"])
    assert "cannot read" in import_error(tmp_path, charlstm_cli, tmp_path / "nope.safetensors")
    ckpt = make_ckpt("lstm", 1)
    save_checkpoint(tmp_path / "c.safetensors", ckpt)
    assert "already a charlstm checkpoint" in import_error(
        tmp_path, charlstm_cli, tmp_path / "c.safetensors", ckpt.vocab)


def test_export_and_import_never_overwrite_without_force(tmp_path, charlstm_cli):
    save_checkpoint(tmp_path / "c.safetensors", make_ckpt("rnn", 1))
    (tmp_path / "m.safetensors").write_bytes(b"precious")
    ckpt, exported = tmp_path / "c.safetensors", tmp_path / "m.safetensors"
    assert "--force" in charlstm_cli.error("export", ckpt, exported)
    assert exported.read_bytes() == b"precious"
    charlstm_cli.ok("export", ckpt, exported, "--force")
    assert "--format" in charlstm_cli.error("export", ckpt, tmp_path / "m.bin")
    assert "already exists" in charlstm_cli.error("import", exported, "--vocab",
                                                  tmp_path / "m.vocab.json", ckpt)
