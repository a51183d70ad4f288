"""ONNX export, built with the onnx package's helpers, and an onnxruntime step function.

Shape legend: T time, B batch, V vocab, H hidden, L layers, G = GATES*H gate rows
(4H LSTM, 3H GRU, H RNN).

The graph (float32, opset 17):

    inputs   ids (T, B) int64, h0 (L, B, H) float32, c0 (L, B, H) float32 (LSTM only)
    outputs  logits (T, B, V) float32, h (L, B, H), c (L, B, H) (LSTM only): the new state

    ids --OneHot--> (T, B, V) --LSTM/GRU/RNN layer 0--> Squeeze --> ... layer L-1
        --MatMul(decoder.weight^T)--Add(decoder.bias)--> logits

One standard ONNX recurrent operator per layer. Their weights are torch's,
re-stacked: W (1, G, D), R (1, G, H), B (1, 2*G) = [b_ih; b_hh], with
the gate blocks reordered, since ONNX orders them differently:
    LSTM  torch i, f, g, o  ->  ONNX i, o, f, c
    GRU   torch r, z, n     ->  ONNX z, r, h   (linear_before_reset=1 is torch's GRU:
                                               r scales W_hn h + b_hn, bias included)
    RNN   one block, tanh.
The config and vocabulary ride along in the model's metadata_props.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .._version import __version__
from ..cells import get_cell
from ..checkpoint import Checkpoint
from ..config import ModelConfig
from ..errors import UserError
from ..fsutil import atomic_write_bytes

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError:
    raise UserError("ONNX export needs the onnx package; install it with: "
                    "pip install 'charlstm[onnx]'", exit_code=1) from None

OPSET = 17  # LSTM/GRU/RNN-14, OneHot-11, Squeeze-13: widely supported by runtimes
IR_VERSION = 8  # the IR version that goes with opset 17
# Position in torch's stacked weights of each ONNX gate block, in ONNX order.
GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,)}
ONNX_OPS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


def state_names(cell: str) -> tuple[str, ...]:
    """Output names of the new state, in charlstm's order; inputs add a "0"."""
    return get_cell(cell).STATE_NAMES


def reorder_gates(w: np.ndarray, cell: str) -> np.ndarray:
    """torch's gate blocks (first axis, G rows) -> ONNX's order for this cell."""
    blocks = np.split(w, len(GATE_ORDER[cell]), axis=0)
    return np.concatenate([blocks[j] for j in GATE_ORDER[cell]], axis=0)


def _layer_initializers(params: dict, config: ModelConfig, k: int) -> list:
    """W (1, G, D), R (1, G, H), B (1, 2*G) of layer k, float32, ONNX gate order."""
    p, cell = f"{config.cell}.", config.cell

    def arr(name):
        return reorder_gates(np.asarray(params[f"{p}{name}_l{k}"], np.float32), cell)

    W, R = arr("weight_ih")[None], arr("weight_hh")[None]
    B = np.concatenate([arr("bias_ih"), arr("bias_hh")])[None]
    return [numpy_helper.from_array(a, f"l{k}.{n}") for n, a in (("W", W), ("R", R), ("B", B))]


def build_model(ckpt: Checkpoint) -> onnx.ModelProto:
    """The ONNX graph of ckpt's model (see the module docstring); passes onnx.checker."""
    config, params = ckpt.config, ckpt.params
    cell, V, H, L = config.cell, config.vocab_size, config.hidden_size, config.num_layers
    if cell not in ONNX_OPS:  # a cell with no standard ONNX operator mapped to it
        raise UserError(f"ONNX export has no operator for the {cell} cell (it maps "
                        f"{', '.join(ONNX_OPS)}); export it with --format torch instead",
                        exit_code=1)
    states = state_names(cell)
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    # Character ids -> one-hot rows. The ONNX recurrent ops multiply their input by W
    # themselves, so they need X (T, B, V); a gather of W_ih's columns (our own
    # convention) cannot be fed to them without a second, identity W. OneHot builds X
    # inside the runtime from the ids, with no V x V constant in the file (a Gather
    # from an identity matrix would store V^2 floats: 100 MB for a 5,000-character
    # vocabulary), and the op then does one (T*B, V) x (V, G) GEMM for the window.
    nodes.append(helper.make_node(
        "OneHot", ["ids", const("onehot.depth", np.array(V, np.int64)),
                   const("onehot.values", np.array([0.0, 1.0], np.float32))], ["x0"], axis=-1))
    const("axis0", np.array([0], np.int64))
    const("axis1", np.array([1], np.int64))
    x = "x0"
    for k in range(L):
        inits += _layer_initializers(params, config, k)
        # layer k's slice (1, B, H) of each (L, B, H) state input
        bounds = [const(f"l{k}.start", np.array([k], np.int64)),
                  const(f"l{k}.end", np.array([k + 1], np.int64)), "axis0"]
        layer_state = [f"l{k}.{s}0" for s in states]
        nodes += [helper.make_node("Slice", [f"{s}0", *bounds], [f"l{k}.{s}0"])
                  for s in states]
        attrs = {"hidden_size": H}
        if cell == "gru":
            attrs["linear_before_reset"] = 1
        if cell == "rnn":
            attrs["activations"] = ["Tanh"]
        nodes.append(helper.make_node(
            ONNX_OPS[cell], [x, f"l{k}.W", f"l{k}.R", f"l{k}.B", "", *layer_state],
            [f"l{k}.y", *(f"l{k}.{s}" for s in states)], name=f"{cell}_l{k}", **attrs))
        # Y is (T, num_directions=1, B, H)
        x = f"x{k + 1}"
        nodes.append(helper.make_node("Squeeze", [f"l{k}.y", "axis1"], [x]))
    for s in states:  # new state: the layers' (1, B, H) finals stacked into (L, B, H)
        nodes.append(helper.make_node("Concat", [f"l{k}.{s}" for k in range(L)], [s], axis=0))
    W_dec_T = np.ascontiguousarray(np.asarray(params["decoder.weight"], np.float32).T)
    nodes.append(helper.make_node("MatMul", [x, const("decoder.weight_T", W_dec_T)], ["proj"]))
    nodes.append(helper.make_node(
        "Add", ["proj", const("decoder.bias", np.asarray(params["decoder.bias"], np.float32))],
        ["logits"]))

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [helper.make_tensor_value_info("ids", i64, ["T", "B"])] + [
        helper.make_tensor_value_info(f"{s}0", f32, [L, "B", H]) for s in states]
    outputs = [helper.make_tensor_value_info("logits", f32, ["T", "B", V])] + [
        helper.make_tensor_value_info(s, f32, [L, "B", H]) for s in states]
    graph = helper.make_graph(nodes, f"charlstm_{cell}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="charlstm",
                              producer_version=__version__,
                              doc_string=f"charlstm {cell.upper()} language model: ids (T, B) "
                              f"and state {', '.join(s + '0' for s in states)} (L, B, H) -> "
                              f"logits (T, B, V) and new state {', '.join(states)}")
    helper.set_model_props(model, {"charlstm.config": json.dumps(config.to_dict()),
                                   "charlstm.vocab": json.dumps(ckpt.vocab, ensure_ascii=False)})
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(path, ckpt: Checkpoint) -> None:
    """Write ckpt's model as an ONNX file, atomically."""
    atomic_write_bytes(Path(path), build_model(ckpt).SerializeToString())


def ort_session(ckpt: Checkpoint):
    """An onnxruntime InferenceSession on ckpt's exported model, built in memory."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("the onnxruntime backend needs onnxruntime; install it with: "
                        "pip install 'charlstm[onnx]'", exit_code=1) from None
    options = ort.SessionOptions()
    # Sampling runs one tiny step at a time: idle worker threads should sleep, not spin.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(build_model(ckpt).SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def ort_step_fn(ckpt: Checkpoint):
    """charlstm.model.step's twin, run by onnxruntime on the exported graph.

    Returns step_fn(ids, state) -> (logits, new_state), with
        ids: (B,) int character ids.  state: tuple of (L, B, H) arrays in charlstm's
        order ((h, c) for LSTM, (h,) otherwise), or None for zeros.
        logits: (B, V) float32.  new_state: tuple of (L, B, H) float32.
    """
    session = ort_session(ckpt)
    config = ckpt.config
    states = state_names(config.cell)

    def step_fn(ids, state=None):
        ids = np.asarray(ids, dtype=np.int64).reshape(1, -1)
        if state is None:
            shape = (config.num_layers, ids.shape[1], config.hidden_size)
            state = tuple(np.zeros(shape, np.float32) for _ in states)
        feeds = {"ids": ids}
        feeds.update({f"{s}0": np.asarray(a, np.float32) for s, a in zip(states, state)})
        logits, *new_state = session.run(None, feeds)
        return logits[0], tuple(new_state)

    return step_fn
