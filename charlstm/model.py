"""The character-level language model: ids -> L recurrent layers -> logits.

Shape legend: T time, B batch, V vocab, H hidden, L layers, G = gates*H.

    x (T, B) ids --gather--> layer 0 --dropout--> layer 1 ... layer L-1
        --> decoder (H -> V) --> logits (T, B, V) --> softmax cross-entropy

The model is a pair of pure functions, forward(params, ...) -> (logits,
state, cache) and backward(dlogits, dstate, cache) -> (grads, dstate0), joined
by softmax cross-entropy (plus, in training, AWD-LSTM's AR and TAR penalties on the
top layer's output, see penalties) in loss_and_grads (what training, gradient checks and
benchmarks call), plus step() for sampling one character at a time; the
CharLSTM class only holds the params dict, the config and an RNG. The cell is
reached only through the interface in cells/__init__.py.
Parameter names and shapes are PyTorch's, so `params` loads into
torch.nn.LSTM(V, H, L) + torch.nn.Linear(H, V) unchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import layers
from .cells import get_cell
from .cells.activations import times_T
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
    """One (T, B, H) inverted-dropout mask per layer output except the top one."""
    if config.dropout == 0.0 or config.num_layers == 1:
        return None
    shape = (T, B, config.hidden_size)
    return [layers.dropout_mask(shape, config.dropout, rng, dtype)
            for _ in range(config.num_layers - 1)]


class ModelCache(NamedTuple):
    config: ModelConfig
    params: dict  # the weights used (read-only)
    inputs: list  # per layer: its input, (T, B) ids for layer 0 else (T, B, H)
    cell_caches: list  # per layer: the cell's own cache
    masks: list | None  # per non-top layer: (T, B, H) dropout mask, or None
    top: np.ndarray  # (T, B, H) output of the last layer (no dropout), fed to the decoder


def forward(params: dict, config: ModelConfig, x: np.ndarray, state=None, masks=None,
            need_cache: bool = True):
    """Logits for every position of a window.

    Args:
        params: name -> ndarray (see param_shapes).
        x: (T, B) int character ids.
        state: tuple of (L, B, H) arrays (h, c for LSTM), or None for zeros.
        masks: list of L-1 dropout masks (T, B, H), or None for no dropout.
        need_cache: False for evaluation: the cell's infer() keeps no per-step
            cache (less memory, less work) and the cache returned is None.
    Returns:
        logits (T, B, V), final state (tuple of (L, B, H)), ModelCache (or None).
    """
    T, B = x.shape
    dtype = params["decoder.weight"].dtype
    cell = get_cell(config.cell)
    if state is None:
        state = zero_state(config, B, dtype)
    run = cell.forward if need_cache else cell.infer
    p = config.cell + "."
    inputs, caches = [], []
    final_state = tuple(np.empty((config.num_layers, B, config.hidden_size), dtype=dtype)
                        for _ in state)
    h = x
    for k in range(config.num_layers):
        inputs.append(h)
        xw = layers.input_projection_forward(h, params[f"{p}weight_ih_l{k}"],
                                             params[f"{p}bias_ih_l{k}"])
        state0 = tuple(s[k] for s in state)
        # xw is ours alone, so the cell may use its memory (e.g. for the gates)
        h, stateT, *cache = run(xw, state0, params[f"{p}weight_hh_l{k}"],
                                params[f"{p}bias_hh_l{k}"], overwrite_xw=True)
        if masks is not None and k < config.num_layers - 1:
            h = h * masks[k]
        caches += cache
        for whole, part in zip(final_state, stateT):
            whole[k] = part
    logits = layers.linear_forward(h, params["decoder.weight"], params["decoder.bias"])
    if not need_cache:
        return logits, final_state, None
    return logits, final_state, ModelCache(config, params, inputs, caches, masks, h)


def backward(dlogits: np.ndarray, dstate, cache: ModelCache, dtop=None):
    """Gradients of a scalar loss, given dL/dlogits and dL/d(final state).

    Args:
        dlogits: (T, B, V).
        dstate: tuple of (L, B, H) gradients w.r.t. the final state, or None for zeros
            (the last window of a sequence).
        dtop: (T, B, H) gradient of other loss terms (AR, TAR) w.r.t. the top layer's
            output cache.top, or None.
    Returns:
        grads (same keys and shapes as params), dstate0 (tuple of (L, B, H)):
        the gradient w.r.t. the initial state, to carry into the previous window.
    """
    config, params, inputs, caches, masks, top = cache
    cell = get_cell(config.cell)
    p = config.cell + "."
    grads = {}
    # forward: logits = top W_dec^T + b_dec
    dh, grads["decoder.weight"], grads["decoder.bias"] = layers.linear_backward(
        dlogits, top, params["decoder.weight"])
    if dtop is not None:  # forward: penalty(top), beside logits(top)
        dh += dtop
    if dstate is None:
        dstate = zero_state(config, dlogits.shape[1], dlogits.dtype)
    dstate0 = [None] * config.num_layers
    for k in reversed(range(config.num_layers)):
        # forward: h = h * masks[k]
        if masks is not None and k < config.num_layers - 1:
            dh = dh * masks[k]
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
                   penalty: Penalty | None = None) -> WindowGrads:
    """Loss and gradients of one window: forward -> softmax cross-entropy (+ AR and
    TAR on the top layer's output) -> backward.

    Args:
        x, y: (T, B) int ids; y[t] is the character that follows x[t].
        state: initial state, tuple of (L, B, H), or None for zeros.
        masks: L-1 dropout masks (T, B, H) (see make_dropout_masks), or None.
        dstate: dL/d(final state) from a later window or an extra loss term, tuple
            of (L, B, H), or None for zeros (truncated BPTT).
        count: the number of targets the mean is over (default T*B); a slice of a
            batch's streams passes the whole batch's (see engine).
        penalty: AR and TAR weights (see penalties), or None for none. Their value
            is returned apart from the loss; the gradients are of loss + penalty.
    Returns:
        WindowGrads(loss, grads, final state, dstate0, penalty value).
    """
    logits, final_state, cache = forward(params, config, x, state, masks)
    loss, dlogits = layers.softmax_cross_entropy(logits, y, count)
    value, dtop, dh0 = 0.0, None, None
    if penalty:
        # TAR's h[-1]: the top layer's h before the window (state[0] is h in every cell)
        h0 = np.zeros_like(cache.top[0]) if state is None else state[0][-1]
        value, dtop, dh0 = activation_penalty(cache.top, h0, penalty, count)
    grads, dstate0 = backward(dlogits, dstate, cache, dtop)
    if dh0 is not None:  # forward: d[0] = top[0] - h0, h0 = state[0][L-1]
        dstate0[0][-1] += dh0
    return WindowGrads(loss, grads, final_state, dstate0, value)


class CharLSTM:
    """A character-level recurrent language model with hand-written backprop.

    >>> model = CharLSTM(ModelConfig(vocab_size=65, hidden_size=128), seed=0)
    >>> logits, state = model.forward(x)                  # x: (T, B) int ids
    >>> loss, grads, state = model.loss_and_grads(x, y)   # grads: same keys as params
    """

    def __init__(self, config: ModelConfig, seed: int = 0, dtype=np.float32, params=None):
        self.config = config
        self.dtype = np.dtype(dtype)
        # One generator for init and (by default) dropout masks: reproducible from seed.
        self.rng = np.random.default_rng(seed)
        if params is None:
            params = init_params(config, self.rng, self.dtype)
        else:
            shapes = param_shapes(config)
            if set(params) != set(shapes):
                raise ValueError("params keys do not match the config")
            params = {n: np.asarray(params[n], dtype=self.dtype) for n in shapes}
        self.params = params

    def num_params(self) -> int:
        return sum(int(v.size) for v in self.params.values())

    def forward(self, x, state=None):
        """Evaluation-mode forward (no dropout). x: (T, B) ids -> logits (T, B, V), state.
        The streams run in parallel on charlstm.set_num_threads() workers (see engine)."""
        from . import engine  # engine builds on this module's forward/backward
        return engine.forward(self.params, self.config, self._check_ids(x), state)

    def loss_and_grads(self, x, y, state=None, train=True, rng=None):
        """Mean cross-entropy (nats/char) over the window and its gradients.

        Args:
            x, y: (T, B) int ids; y[t] is the character that follows x[t].
            state: initial state from the previous window, or None for zeros.
            train: apply dropout (if configured) with masks drawn from `rng`
                (default: the model's own generator).
        Returns:
            loss (float), grads (dict like params), final state (detached).
        The streams run in parallel on charlstm.set_num_threads() workers (see engine).
        """
        from . import engine  # engine builds on this module's forward/backward
        x, y = self._check_ids(x), self._check_ids(y)
        if x.shape != y.shape:
            raise ValueError(f"x and y shapes differ: {x.shape} vs {y.shape}")
        T, B = x.shape
        masks = None
        if train:
            masks = make_dropout_masks(self.config, T, B, rng or self.rng, self.dtype)
        loss, grads, state, _, _ = engine.loss_and_grads(self.params, self.config, x, y,
                                                         state, masks)
        return loss, grads, state

    def _check_ids(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or not layers.is_ids(x):
            raise ValueError("expected a (T, B) integer array of character ids, "
                             f"got {x.dtype} {x.shape}")
        if x.size and (x.min() < 0 or x.max() >= self.config.vocab_size):
            raise ValueError(f"character ids must lie in [0, {self.config.vocab_size})")
        return x


def step(params: dict, config: ModelConfig, ids: np.ndarray, state=None):
    """Inference for one character per stream (sampling).

    Args:
        ids: (B,) int ids.  state: tuple of (L, B, H), or None for zeros.
    Returns:
        logits (B, V) and the new state (new arrays; `state` is not modified).
    No window machinery (no (T, B, .) arrays, no cache): per layer one gather or
    GEMV for the input projection, then the cell's own step.
    """
    ids = np.asarray(ids)
    B = ids.shape[0]
    dtype = params["decoder.weight"].dtype
    if state is None:
        state = zero_state(config, B, dtype)
    cell, p = get_cell(config.cell), config.cell + "."
    new_state = tuple(np.empty((config.num_layers, B, config.hidden_size), dtype=dtype)
                      for _ in state)
    x = ids
    for k in range(config.num_layers):
        W_ih = params[f"{p}weight_ih_l{k}"]
        # xw = x W_ih^T + b_ih: a column gather for ids, a GEMV/GEMM for the layer below
        xw = W_ih.T[x] if k == 0 else times_T(x, W_ih)
        xw += params[f"{p}bias_ih_l{k}"]
        cell.step(xw, tuple(s[k] for s in state), params[f"{p}weight_hh_l{k}"],
                  params[f"{p}bias_hh_l{k}"], tuple(s[k] for s in new_state))
        x = new_state[0][k]
    logits = times_T(x, params["decoder.weight"])
    logits += params["decoder.bias"]
    return logits, new_state
