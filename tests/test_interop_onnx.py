"""charlstm -> ONNX: one standard LSTM/GRU/RNN op per layer, weights recoverable exactly,
and onnxruntime computing what charlstm computes, to float32 precision."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import NEEDS_ONNX

from charlstm import CharLSTM, ModelConfig
from charlstm.checkpoint import Checkpoint, save_checkpoint
from charlstm.model import forward

onnx = pytest.importorskip("onnx", reason=NEEDS_ONNX)
ort = pytest.importorskip("onnxruntime", reason=NEEDS_ONNX)

from charlstm.interop.onnx import build_model, ort_step_fn  # noqa: E402  (needs onnx)

CELLS = ["lstm", "gru", "rnn"]
N_STATES = {"lstm": 2, "gru": 1, "rnn": 1}
# Where each torch gate block sits in ONNX's stacking, spelt out gate by gate.
ONNX_POSITION = {"lstm": {"i": 0, "f": 2, "g": 3, "o": 1},  # ONNX i, o, f, c
                 "gru": {"r": 1, "z": 0, "n": 2},  # ONNX z, r, h
                 "rnn": {"h": 0}}
TORCH_GATES = {"lstm": "ifgo", "gru": "rzn", "rnn": "h"}


def make_ckpt(cell, L, V=13, H=7, seed=0, dtype=np.float64):
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, cell=cell)
    vocab = [chr(0x61 + i) for i in range(V - 1)] + ["\n"]
    return Checkpoint(config, vocab, CharLSTM(config, seed=seed, dtype=dtype).params)


def random_inputs(config, T, B, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, config.vocab_size, size=(T, B))
    shape = (config.num_layers, B, config.hidden_size)
    return x, tuple(rng.standard_normal(shape) * 0.7 for _ in range(N_STATES[config.cell]))


def to_torch_order(w, cell):
    """ONNX-stacked gate blocks (first axis) back to torch's order."""
    blocks = np.split(w, len(TORCH_GATES[cell]), axis=0)
    return np.concatenate([blocks[ONNX_POSITION[cell][g]] for g in TORCH_GATES[cell]])


def params_from_onnx(model, config):
    """Invert the export: charlstm parameters read back out of the graph's initializers."""
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    p, cell, out = config.cell + ".", config.cell, {}
    for k in range(config.num_layers):
        W, R, Bias = init[f"l{k}.W"][0], init[f"l{k}.R"][0], init[f"l{k}.B"][0]
        out[f"{p}weight_ih_l{k}"] = to_torch_order(W, cell)
        out[f"{p}weight_hh_l{k}"] = to_torch_order(R, cell)
        b_ih, b_hh = np.split(Bias, 2)
        out[f"{p}bias_ih_l{k}"] = to_torch_order(b_ih, cell)
        out[f"{p}bias_hh_l{k}"] = to_torch_order(b_hh, cell)
    out["decoder.weight"] = init["decoder.weight_T"].T
    out["decoder.bias"] = init["decoder.bias"]
    return out


def run_ort(session, x, state):
    names = ["h0", "c0"][:len(state)]
    feeds = {"ids": x.astype(np.int64), **{n: s.astype(np.float32) for n, s in zip(names, state)}}
    logits, *final = session.run(None, feeds)
    return logits, final


@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_onnx_graph_matches_charlstm(cell, L):
    ckpt = make_ckpt(cell, L, seed=L)
    model = build_model(ckpt)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count({"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[cell]) == L
    assert {"LSTM", "GRU", "RNN"} & set(ops) == {cell.upper()}
    if cell == "gru":  # torch's GRU: reset gate after the recurrent bias
        gru_attrs = [{a.name: a for a in n.attribute} for n in model.graph.node
                     if n.op_type == "GRU"]
        assert all(a["linear_before_reset"].i == 1 for a in gru_attrs)

    # parameters: exactly the float32 values of the checkpoint's
    back = params_from_onnx(model, ckpt.config)
    assert set(back) == set(ckpt.params)
    for k, v in ckpt.params.items():
        np.testing.assert_array_equal(back[k], v.astype(np.float32), err_msg=k)

    # numbers: one session, several window/batch sizes (T and B are dynamic)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for T, B, seed in [(9, 4, 0), (1, 1, 1), (3, 2, 2)]:
        x, state = random_inputs(ckpt.config, T, B, seed)
        logits, final, _ = forward(ckpt.params, ckpt.config, x, state)
        o_logits, o_final = run_ort(session, x, state)
        assert o_logits.shape == (T, B, ckpt.config.vocab_size)
        assert o_logits.dtype == np.float32
        np.testing.assert_allclose(o_logits, logits, rtol=1e-5, atol=1e-5)
        assert len(o_final) == len(final)
        for a, b in zip(o_final, final, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_ort_step_fn_stepwise_equals_whole_window(cell):
    """Bigger, float32 weights; the ORT step function carried for T steps == one window."""
    ckpt = make_ckpt(cell, 2, V=40, H=48, seed=5, dtype=np.float32)
    x, state = random_inputs(ckpt.config, T=12, B=3, seed=9)
    state = tuple(s.astype(np.float32) for s in state)
    logits, final, _ = forward(ckpt.params, ckpt.config, x, state)
    step_fn = ort_step_fn(ckpt)
    s = state
    for t in range(x.shape[0]):
        step_logits, s = step_fn(x[t], s)
        assert step_logits.shape == (3, 40)
        np.testing.assert_allclose(step_logits, logits[t], rtol=1e-4, atol=1e-5)
    for a, b in zip(s, final, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    zero_logits, _ = step_fn(np.array([2]), None)  # None means a zero state
    ref, _, _ = forward(ckpt.params, ckpt.config, np.array([[2]]))
    np.testing.assert_allclose(zero_logits, ref[0], rtol=1e-4, atol=1e-5)


def test_cli_export_onnx_file_runs_in_onnxruntime(tmp_path, charlstm_cli):
    ckpt = make_ckpt("lstm", 2, dtype=np.float32)
    save_checkpoint(tmp_path / "c.safetensors", ckpt)
    assert "m.vocab.json" in charlstm_cli.ok("export", tmp_path / "c.safetensors", "--format",
                                             "onnx", tmp_path / "m.onnx")
    assert json.loads((tmp_path / "m.vocab.json").read_text("utf-8")) == ckpt.vocab
    model = onnx.load(tmp_path / "m.onnx")
    onnx.checker.check_model(model, full_check=True)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["charlstm.vocab"]) == ckpt.vocab
    assert ModelConfig.from_dict(json.loads(props["charlstm.config"])) == ckpt.config
    assert [i.name for i in model.graph.input] == ["ids", "h0", "c0"]
    assert [o.name for o in model.graph.output] == ["logits", "h", "c"]
    session = ort.InferenceSession(tmp_path / "m.onnx", providers=["CPUExecutionProvider"])
    x, state = random_inputs(ckpt.config, T=5, B=2, seed=3)
    logits, _, _ = forward(ckpt.params, ckpt.config, x, state)
    np.testing.assert_allclose(run_ort(session, x, state)[0], logits, rtol=1e-5, atol=1e-5)


def test_a_cell_without_an_onnx_operator_is_a_one_line_error(tmp_path, monkeypatch, charlstm_cli):
    """A new cell registered without its ONNX mapping: export says so, writes nothing."""
    from charlstm.interop import onnx as onnx_export
    save_checkpoint(tmp_path / "c.safetensors", make_ckpt("rnn", 1))
    monkeypatch.delitem(onnx_export.ONNX_OPS, "rnn")
    assert "no operator for the rnn cell" in charlstm_cli.error(
        "export", tmp_path / "c.safetensors", tmp_path / "m.onnx", code=1)
    assert not (tmp_path / "m.onnx").exists()
