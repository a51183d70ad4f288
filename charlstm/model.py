"""The character-level language model: ids -> L recurrent layers -> logits.

Shape legend: T time, B batch, V vocab, H hidden, L layers, G = GATES*H gate rows.

    x (T, B) ids --gather--> layer 0 --dropout--> layer 1 ... layer L-1
        --(locked dropout)--> decoder (H -> V) --> logits (T, B, V) --> softmax cross-entropy

In training, the output masks (make_dropout_masks) multiply each layer's output, and
the weight masks (make_weight_masks: DropConnect on W_hh, character dropout on
W_ih_l0) are applied to the weights once per window, around forward and backward
(drop_weights / drop_weights_backward), so every stream and step sees one set.

The model is a pair of pure functions, forward(params, ...) -> (logits,
state, cache) and backward(dlogits, dstate, cache) -> (grads, dstate0), joined
by softmax cross-entropy (plus, in training, AWD-LSTM's AR and TAR penalties on the
top layer's output, see penalties) in loss_and_grads (what training, gradient checks and
benchmarks call), plus step() for sampling one character at a time; the
CharLSTM class (network.py) only holds the params dict, the config and an RNG. The
cell is reached only through the interface in cells/__init__.py, in the implementation
fast.implementation picks (the fast twin where there is one, else the reference).
Parameter names and shapes are PyTorch's, so `params` loads into
torch.nn.LSTM(V, H, L) + torch.nn.Linear(H, V) unchanged.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import fast, layers
from .cells import get_cell
from .cells.activations import times_T, times_x_T
from .config import ModelConfig
from .penalties import Penalty, activation_penalty


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    V, H, L = config.vocab_size, config.hidden_size, config.num_layers
    G = get_cell(config.cell).GATES * H
    shapes = {}
    for k in range(L):
        p = f"{config.cell}."
        shapes[p + f"weight_ih_l{k}"] = (G, V if k == 0 else H)
        shapes[p + f"weight_hh_l{k}"] = (G, H)
        shapes[p + f"bias_ih_l{k}"] = (G,)
        shapes[p + f"bias_hh_l{k}"] = (G,)
    shapes["decoder.weight"] = (V, H)
    shapes["decoder.bias"] = (V,)
    return shapes


def init_params(config: ModelConfig, rng: np.random.Generator, dtype=np.float32) -> dict:
    """PyTorch's default init, U(-1/sqrt(H), 1/sqrt(H)) for every tensor (the
    decoder's bound uses its fan-in, which is also H), plus the forget bias."""
    bound = 1.0 / np.sqrt(config.hidden_size)
    params = {name: rng.uniform(-bound, bound, size=shape).astype(dtype)
              for name, shape in param_shapes(config).items()}
    cell = get_cell(config.cell)
    for k in range(config.num_layers):
        cell.init_bias(params[f"{config.cell}.bias_ih_l{k}"], config.forget_bias)
    return params


def zero_state(config: ModelConfig, batch_size: int, dtype=np.float32) -> tuple:
    """Initial state: one (L, B, H) array per state name of the cell."""
    n = len(get_cell(config.cell).STATE_NAMES)
    shape = (config.num_layers, batch_size, config.hidden_size)
    return tuple(np.zeros(shape, dtype=dtype) for _ in range(n))


def make_dropout_masks(config: ModelConfig, T: int, B: int, rng, dtype) -> list | None:
    """Inverted-dropout masks on the layers' outputs for one window, bottom layer first:
    L-1 or L masks, each (T, B, H) or (1, B, H); None for no dropout.

    `dropout` (torch.nn.LSTM's): a fresh (T, B, H) mask per step on every layer but the
    top one. `locked_dropout` (AWD-LSTM's variational dropout): one (1, B, H) mask per
    stream, shared by every step of the window, on every layer including the top one.
    Where both act, the mask is their product. Drawn in that order from rng, and
    nothing is drawn for a rate of 0, so runs without locked dropout draw as before.
    """
    L, H = config.num_layers, config.hidden_size
    masks = []
    if config.dropout > 0.0:
        masks = [layers.dropout_mask((T, B, H), config.dropout, rng, dtype)
                 for _ in range(L - 1)]
    if config.locked_dropout > 0.0:
        locked = [layers.dropout_mask((1, B, H), config.locked_dropout, rng, dtype)
                  for _ in range(L)]
        masks = [m * lock for m, lock in zip(masks, locked)] + locked[len(masks):]
    return masks or None


def make_weight_masks(config: ModelConfig, rng, dtype) -> dict | None:
    """Inverted-dropout masks on weights for one window: param name -> mask that
    broadcasts to the weight (see drop_weights); None when both rates are 0.

    `weight_dropout` (AWD-LSTM's DropConnect): a (G, H) mask on every layer's
    weight_hh, layer 0 first. `input_dropout` (AWD-LSTM's embedding dropout, for
    one-hot input): a (1, V) mask on weight_ih_l0's columns, so a dropped character
    type reaches the recurrence only through b_ih for the whole window. Drawn after
    make_dropout_masks' masks, in that order, from the same rng.
    """
    p = config.cell + "."
    masks = {}
    if config.weight_dropout > 0.0:
        G = get_cell(config.cell).GATES * config.hidden_size
        for k in range(config.num_layers):
            masks[f"{p}weight_hh_l{k}"] = layers.dropout_mask(
                (G, config.hidden_size), config.weight_dropout, rng, dtype)
    if config.input_dropout > 0.0:
        masks[f"{p}weight_ih_l0"] = layers.dropout_mask(
            (1, config.vocab_size), config.input_dropout, rng, dtype)
    return masks or None


def drop_weights(params: dict, weight_masks: dict | None) -> dict:
    """The weights a window runs on: W * M for every masked weight, the others as they
    are (a new dict; params is not modified). weight_masks: see make_weight_masks."""
    if not weight_masks:
        return params
    return {name: value * weight_masks[name] if name in weight_masks else value
            for name, value in params.items()}


def drop_weights_backward(grads: dict, weight_masks: dict | None) -> dict:
    """Gradients w.r.t. the stored weights from those w.r.t. the masked ones, in place:
    forward W_eff = W * M, so dW = dW_eff * M (a dropped weight gets no gradient)."""
    for name, mask in (weight_masks or {}).items():
        grads[name] *= mask
    return grads


def layer_mask(masks: list | None, k: int):
    """Layer k's output mask from a list of L-1 or L masks (bottom first), or None."""
    return masks[k] if masks is not None and k < len(masks) else None


class ModelCache(NamedTuple):
    config: ModelConfig
    params: dict  # the weights used (read-only)
    inputs: list  # per layer: its input, (T, B) ids for layer 0 else (T, B, H)
    cell_caches: list  # per layer: the cell's own cache
    masks: list | None  # L-1 or L output masks, bottom first: (T, B, H) or (1, B, H)
    top: np.ndarray  # (T, B, H) output of the last layer before its mask (AR and TAR's h)
    decoded: np.ndarray  # (T, B, H) what the decoder read: top * its mask, or top itself
    cell: Any  # the cell module that ran the forward: the only reader of cell_caches


def forward(params: dict, config: ModelConfig, x: np.ndarray, state=None, masks=None,
            need_cache: bool = True):
    """Logits for every position of a window.

    Args:
        params: name -> ndarray (see param_shapes).
        x: (T, B) int character ids.
        state: tuple of (L, B, H) arrays (h, c for LSTM), or None for zeros.
        masks: L-1 or L output masks, bottom layer first, each (T, B, H) or (1, B, H)
            (see make_dropout_masks); None for no dropout.
        need_cache: False for evaluation: the cell's infer() keeps no per-step
            cache (less memory, less work) and the cache returned is None.
    Returns:
        logits (T, B, V), final state (tuple of (L, B, H)), ModelCache (or None).
    """
    T, B = x.shape
    dtype = params["decoder.weight"].dtype
    cell = fast.implementation(config.cell)
    if state is None:
        state = zero_state(config, B, dtype)
    run = cell.forward if need_cache else cell.infer
    # a cell may take layer 0's ids itself, gathering straight into its own layout
    run_ids = getattr(cell, "forward_ids" if need_cache else "infer_ids", None)
    p = config.cell + "."
    inputs, caches = [], []
    final_state = tuple(np.empty((config.num_layers, B, config.hidden_size), dtype=dtype)
                        for _ in state)
    h = x
    for k in range(config.num_layers):
        inputs.append(h)
        W_ih, b_ih = params[f"{p}weight_ih_l{k}"], params[f"{p}bias_ih_l{k}"]
        W_hh, b_hh = params[f"{p}weight_hh_l{k}"], params[f"{p}bias_hh_l{k}"]
        state0 = tuple(s[k] for s in state)
        if run_ids is not None and layers.is_ids(h):  # xw = one_hot(h) W_ih^T + b_ih
            h, stateT, *cache = run_ids(h, W_ih, b_ih, state0, W_hh, b_hh)
        else:
            xw = layers.input_projection_forward(h, W_ih, b_ih)
            h, stateT, *cache = run(xw, state0, W_hh, b_hh)
        top = h  # the last layer's, before its mask, is what AR and TAR read
        if (mask := layer_mask(masks, k)) is not None:
            h = h * mask  # (1, B, H) locked masks broadcast over time
        caches += cache
        for whole, part in zip(final_state, stateT):
            whole[k] = part
    logits = layers.linear_forward(h, params["decoder.weight"], params["decoder.bias"])
    if not need_cache:
        return logits, final_state, None
    return logits, final_state, ModelCache(config, params, inputs, caches, masks, top, h, cell)


def backward(dlogits: np.ndarray, dstate, cache: ModelCache, dtop=None):
    """Gradients of a scalar loss, given dL/dlogits and dL/d(final state).

    Args:
        dlogits: (T, B, V).
        dstate: tuple of (L, B, H) gradients w.r.t. the final state, or None for zeros
            (the last window of a sequence).
        dtop: (T, B, H) gradient of other loss terms (AR, TAR) w.r.t. the top layer's
            output before its mask, cache.top, or None.
    Returns:
        grads (same keys and shapes as params), dstate0 (tuple of (L, B, H)):
        the gradient w.r.t. the initial state, to carry into the previous window.
    """
    config, params, inputs, caches, masks, top, decoded, cell = cache
    p = config.cell + "."
    grads = {}
    # forward: logits = decoded W_dec^T + b_dec
    dh, grads["decoder.weight"], grads["decoder.bias"] = layers.linear_backward(
        dlogits, decoded, params["decoder.weight"])
    if dstate is None:
        dstate = zero_state(config, dlogits.shape[1], dlogits.dtype)
    dstate0 = [None] * config.num_layers
    for k in reversed(range(config.num_layers)):
        # forward: h = h * mask
        if (mask := layer_mask(masks, k)) is not None:
            dh = dh * mask
        if dtop is not None and k == config.num_layers - 1:
            dh += dtop  # forward: penalty(top), top = the last layer's h before its mask
        # forward: h, stateT = cell.forward(xw, state0, W_hh, b_hh)
        dxw, dstate0[k], grads[f"{p}weight_hh_l{k}"], grads[f"{p}bias_hh_l{k}"] = cell.backward(
            dh, tuple(d[k] for d in dstate), caches[k])
        # forward: xw = input_projection(h_below, W_ih, b_ih)
        dh, grads[f"{p}weight_ih_l{k}"], grads[f"{p}bias_ih_l{k}"] = (
            layers.input_projection_backward(dxw, inputs[k], params[f"{p}weight_ih_l{k}"]))
    dstate0 = tuple(np.stack([d[j] for d in dstate0]) for j in range(len(dstate0[0])))
    return {name: grads[name] for name in params}, dstate0


class WindowGrads(NamedTuple):
    loss: float  # mean cross-entropy, nats/char, over the T*B targets
    grads: dict  # of loss + penalty; same keys and shapes as params
    state: tuple  # final state, (L, B, H) each: the next window's initial state
    dstate0: tuple  # d(loss + penalty)/d(initial state), (L, B, H) each
    penalty: float = 0.0  # AR + TAR (see penalties), optimised but not part of `loss`


def loss_and_grads(params: dict, config: ModelConfig, x: np.ndarray, y: np.ndarray,
                   state=None, masks=None, dstate=None, count=None,
                   penalty: Penalty | None = None, weight_masks=None) -> WindowGrads:
    """Loss and gradients of one window: forward -> softmax cross-entropy (+ AR and
    TAR on the top layer's output) -> backward.

    Args:
        x, y: (T, B) int ids; y[t] is the character that follows x[t].
        state: initial state, tuple of (L, B, H), or None for zeros.
        masks: output dropout masks (see make_dropout_masks), or None.
        dstate: dL/d(final state) from a later window or an extra loss term, tuple
            of (L, B, H), or None for zeros (truncated BPTT).
        count: the number of targets the mean is over (default T*B); a slice of a
            batch's streams passes the whole batch's (see engine).
        penalty: AR and TAR weights (see penalties), or None for none. Their value
            is returned apart from the loss; the gradients are of loss + penalty.
        weight_masks: name -> mask on that weight (see make_weight_masks), or None.
    Returns:
        WindowGrads(loss, grads w.r.t. the unmasked params, final state, dstate0,
        penalty value).
    """
    used = drop_weights(params, weight_masks)
    logits, final_state, cache = forward(used, config, x, state, masks)
    loss, dlogits = layers.softmax_cross_entropy(logits, y, count)
    value, dtop, dh0 = 0.0, None, None
    if penalty:
        # TAR's h[-1]: the top layer's h before the window (state[0] is h in every cell)
        h0 = np.zeros_like(cache.top[0]) if state is None else state[0][-1]
        value, dtop, dh0 = activation_penalty(cache.top, h0, penalty, count)
    grads, dstate0 = backward(dlogits, dstate, cache, dtop)
    drop_weights_backward(grads, weight_masks)
    if dh0 is not None:  # forward: d[0] = top[0] - h0, h0 = state[0][L-1]
        dstate0[0][-1] += dh0
    return WindowGrads(loss, grads, final_state, dstate0, value)


def step(params: dict, config: ModelConfig, ids: np.ndarray, state=None):
    """Inference for one character per stream (sampling).

    Args:
        ids: (B,) int ids.  state: tuple of (L, B, H), or None for zeros.
    Returns:
        logits (B, V) and the new state (new arrays; `state` is not modified).
    No window machinery (no (T, B, .) arrays, no cache): per layer one gather or
    GEMV/GEMM for the input projection, then the cell's own step.
    """
    ids = np.asarray(ids)
    B = ids.shape[0]
    dtype = params["decoder.weight"].dtype
    if state is None:
        state = zero_state(config, B, dtype)
    cell, p = fast.implementation(config.cell), config.cell + "."
    new_state = tuple(np.empty((config.num_layers, B, config.hidden_size), dtype=dtype)
                      for _ in state)
    x = ids
    for k in range(config.num_layers):
        W_ih = params[f"{p}weight_ih_l{k}"]
        # xw = x W_ih^T + b_ih, computed as its transpose (G, B) and handed over as a
        # (B, G) view: a column gather for ids, W_ih x^T for the layer below
        xwT = W_ih[:, x] if k == 0 else times_x_T(W_ih, x)
        xwT += params[f"{p}bias_ih_l{k}"][:, None]
        cell.step(xwT.T, tuple(s[k] for s in state), params[f"{p}weight_hh_l{k}"],
                  params[f"{p}bias_hh_l{k}"], tuple(s[k] for s in new_state))
        x = new_state[0][k]
    logits = times_T(x, params["decoder.weight"])
    logits += params["decoder.bias"]
    return logits, new_state
