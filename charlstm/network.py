"""The model as a stateful object: a params dict, its config and an RNG, above the engine.

Shape legend: T time, B batch, V vocab.

model.py holds the maths as pure functions and engine.py runs them on the worker
threads; CharLSTM is what a library user holds (and what LanguageModel extends): it
owns the weights and draws the dropout masks, and hands every window to the engine.
"""

from __future__ import annotations

import numpy as np

from . import engine, layers, model
from .config import ModelConfig


class CharLSTM:
    """A character-level recurrent language model with hand-written backprop, for
    whichever cell config.cell names (LSTM, GRU or RNN). The name is the package's:
    kept because it is public, and because the LSTM is the model this project is about.

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
            params = model.init_params(config, self.rng, self.dtype)
        else:
            shapes = model.param_shapes(config)
            if set(params) != set(shapes):
                raise ValueError("params keys do not match the config")
            params = {n: np.asarray(params[n], dtype=self.dtype) for n in shapes}
        self.params = params

    @property
    def num_params(self) -> int:
        """The number of weights, every tensor in params (an attribute, like dtype)."""
        return sum(int(v.size) for v in self.params.values())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r}, dtype={self.dtype}, " \
               f"num_params={self.num_params:,})"

    def forward(self, x, state=None):
        """Evaluation-mode forward (no dropout). x: (T, B) ids -> logits (T, B, V), state.
        The streams run in parallel on charlstm.set_num_threads() workers (see engine)."""
        return engine.forward(self.params, self.config, self._check_ids(x), state)

    def loss_and_grads(self, x, y, state=None, train=True, rng=None):
        """Mean cross-entropy (nats/char) over the window and its gradients.

        Args:
            x, y: (T, B) int ids; y[t] is the character that follows x[t].
            state: initial state from the previous window, or None for zeros.
            train: apply every configured dropout (dropout, locked_dropout,
                weight_dropout, input_dropout) with masks drawn from `rng`
                (default: the model's own generator).
        Returns:
            loss (float), grads (dict like params), final state (detached).
        The streams run in parallel on charlstm.set_num_threads() workers (see engine).
        """
        x, y = self._check_ids(x), self._check_ids(y)
        if x.shape != y.shape:
            raise ValueError(f"x and y shapes differ: {x.shape} vs {y.shape}")
        T, B = x.shape
        masks = weight_masks = None
        if train:
            rng = rng or self.rng
            masks = model.make_dropout_masks(self.config, T, B, rng, self.dtype)
            weight_masks = model.make_weight_masks(self.config, rng, self.dtype)
        loss, grads, state, _, _ = engine.loss_and_grads(self.params, self.config, x, y,
                                                         state, masks,
                                                         weight_masks=weight_masks)
        return loss, grads, state

    def _check_ids(self, x) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or not layers.is_ids(x):
            raise ValueError("expected a (T, B) integer array of character ids, "
                             f"got {x.dtype} {x.shape}")
        if x.size and (x.min() < 0 or x.max() >= self.config.vocab_size):
            raise ValueError(f"character ids must lie in [0, {self.config.vocab_size})")
        return x
