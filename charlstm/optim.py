"""Optimizers and gradient clipping over the params/grads dicts.

params, grads and every optimizer slot are dicts with the same keys, so one
loop over names serves the update, clipping and checkpointing. Updates are in
place with one preallocated scratch array per parameter (no per-step temporaries).

Weight decay is decoupled (as in AdamW): p <- p - lr * weight_decay * p, applied
to weight matrices only, never to biases.
"""

from __future__ import annotations

import math

import numpy as np

from . import fast, pool

# Adam's update, the gradient norm and clipping, and weight averaging run as fused
# numba passes (fast.kernels) over chunks of the flat weights, shared among the
# engine's workers, where fast.settings allow (numba, fused_optimizer): the same bits
# as the NumPy code, which makes one pass per operation on one core.


def _kernels():
    """fast.kernels when the fused passes are on and numba is there, else None."""
    return fast.compiled("kernels") if fast.current().fused_optimizer else None


def _fused(arrays) -> bool:
    """Whether the fused passes apply to these arrays: all of one dtype, float32 or
    float64 (mixed ones keep NumPy's casting rules), and C-contiguous (flat views)."""
    dtypes = {a.dtype for a in arrays}
    return (_kernels() is not None and len(dtypes) == 1
            and dtypes <= {np.dtype(np.float32), np.dtype(np.float64)}
            and all(a.flags.c_contiguous for a in arrays))


def global_norm(grads: dict) -> float:
    """sqrt(sum of squares of every gradient element), accumulated in float64.

    Per chunk in numba (fast.kernels), else einsum; never the BLAS dot: a multi-threaded BLAS
    call here wakes OpenBLAS's helper threads, which then spin on the cores for ~0.1 s
    while the engine's workers run the next window (measured, 1x128 B32 T64 on 2
    threads: a step took twice as long); and a float32 dot accumulates in float32."""
    arrays = list(grads.values())
    if _fused(arrays):
        flats = [g.reshape(-1) for g in arrays]
        parts = pool.map_chunks(lambda k, a, b: _kernels().sum_squares(flats[k][a:b]),
                                [f.size for f in flats])
        return math.sqrt(math.fsum(parts))  # chunk order: the same for any thread count
    total = 0.0
    for g in arrays:
        flat = g.reshape(-1)
        total += float(np.einsum("i,i->", flat, flat, dtype=np.float64))
    return math.sqrt(total)


def clip_grad_norm(grads: dict, max_norm: float) -> float:
    """Scale all grads in place so their global norm is at most max_norm (<= 0: no clip).

    Returns the norm before clipping, as torch.nn.utils.clip_grad_norm_ does. A
    non-finite norm is returned with the grads untouched: the caller must stop.
    """
    norm = global_norm(grads)
    if max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        scale = max_norm / (norm + 1e-6)
        arrays = list(grads.values())
        if _fused(arrays):
            flats = [g.reshape(-1) for g in arrays]
            pool.map_chunks(lambda k, a, b: _kernels().scale_(
                flats[k][a:b], flats[k].dtype.type(scale)), [f.size for f in flats])
            return norm
        for g in arrays:
            g *= g.dtype.type(scale)
    return norm


class Optimizer:
    """Base class: per-parameter slots (state arrays) plus a step counter."""

    slots: tuple[str, ...] = ()

    def __init__(self, params: dict, lr: float, weight_decay: float = 0.0, **hyper):
        self.lr = lr
        self.weight_decay = weight_decay
        self.hyper = hyper
        self.t = 0  # number of updates applied
        self.state = {s: {k: np.zeros_like(p) for k, p in params.items()} for s in self.slots}
        self._scratch = {k: np.empty_like(p) for k, p in params.items()}

    def step(self, params: dict, grads: dict, lr: float | None = None) -> None:
        """Apply one update in place; `lr` overrides the base rate (schedules)."""
        lr = self.lr if lr is None else lr
        self.t += 1
        for name, p in params.items():
            if self.weight_decay and p.ndim > 1:
                p *= p.dtype.type(1.0 - lr * self.weight_decay)
            self._update(name, p, grads[name], lr, self._scratch[name])

    def _update(self, name, p, g, lr, tmp) -> None:
        raise NotImplementedError

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Slots flattened to "<slot>.<param name>" for a checkpoint."""
        return {f"{s}.{k}": v for s in self.slots for k, v in self.state[s].items()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray], t: int) -> None:
        expected = self.state_arrays()
        if set(arrays) != set(expected):
            raise ValueError("optimizer state does not match the optimizer and model")
        for key, value in arrays.items():
            if value.shape != expected[key].shape:
                raise ValueError(f"optimizer state {key} has shape {value.shape}")
            expected[key][...] = value
        self.t = int(t)


class SGD(Optimizer):
    """p <- p - lr * v,  v = momentum * v + g  (plain SGD when momentum = 0)."""

    slots = ("velocity",)

    def _update(self, name, p, g, lr, tmp):
        v = self.state["velocity"][name]
        v *= self.hyper.get("momentum", 0.0)
        v += g
        np.multiply(v, lr, out=tmp)
        p -= tmp


class RMSprop(Optimizer):
    """char-rnn's default: s = a*s + (1-a)*g^2;  p <- p - lr * g / (sqrt(s) + eps)."""

    slots = ("square_avg",)

    def _update(self, name, p, g, lr, tmp):
        alpha, eps = self.hyper.get("alpha", 0.95), self.hyper.get("eps", 1e-8)
        s = self.state["square_avg"][name]
        s *= alpha
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - alpha
        s += tmp
        np.sqrt(s, out=tmp)
        tmp += eps
        np.divide(g, tmp, out=tmp)
        tmp *= lr
        p -= tmp


class Adagrad(Optimizer):
    """s = s + g^2;  p <- p - lr * g / (sqrt(s) + eps)."""

    slots = ("sum_sq",)

    def _update(self, name, p, g, lr, tmp):
        s = self.state["sum_sq"][name]
        np.multiply(g, g, out=tmp)
        s += tmp
        np.sqrt(s, out=tmp)
        tmp += self.hyper.get("eps", 1e-10)
        np.divide(g, tmp, out=tmp)
        tmp *= lr
        p -= tmp


class Adam(Optimizer):
    """m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
    p <- p - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)   (torch.optim.Adam's formula)."""

    slots = ("exp_avg", "exp_avg_sq")

    def _constants(self, lr: float, dtype) -> tuple:
        """(b1, 1-b1, b2, 1-b2, 1/sqrt(1-b2^t), eps, lr/(1-b1^t)) in dtype: every
        operation of the update runs in the weights' own precision."""
        b1, b2 = self.hyper.get("beta1", 0.9), self.hyper.get("beta2", 0.999)
        eps = self.hyper.get("eps", 1e-8)
        bias1, bias2 = 1.0 - b1**self.t, 1.0 - b2**self.t
        return tuple(dtype.type(c) for c in (b1, 1.0 - b1, b2, 1.0 - b2,
                                              1.0 / math.sqrt(bias2), eps, lr / bias1))

    def step(self, params: dict, grads: dict, lr: float | None = None) -> None:
        names = list(params)
        arrays = [a for n in names for a in (params[n], grads[n], self.state["exp_avg"][n],
                                              self.state["exp_avg_sq"][n])]
        if not _fused(arrays):
            return super().step(params, grads, lr)
        lr = self.lr if lr is None else lr
        self.t += 1
        flat = {n: [a.reshape(-1) for a in (params[n], grads[n], self.state["exp_avg"][n],
                                             self.state["exp_avg_sq"][n])] for n in names}

        constants = {p.dtype: self._constants(lr, p.dtype) for p in params.values()}

        def update(k: int, a: int, b: int) -> None:
            name = names[k]
            p, g, m, v = (x[a:b] for x in flat[name])
            decay = 1.0 - lr * self.weight_decay if params[name].ndim > 1 else 1.0
            _kernels().adam_update(p, g, m, v, p.dtype.type(decay), *constants[p.dtype])

        pool.map_chunks(update, [params[n].size for n in names])

    def _update(self, name, p, g, lr, tmp):
        b1, c1, b2, c2, root_bias2, eps, step = self._constants(lr, p.dtype)
        m, v = self.state["exp_avg"][name], self.state["exp_avg_sq"][name]
        m *= b1
        np.multiply(g, c1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= c2
        v += tmp
        np.sqrt(v, out=tmp)
        tmp *= root_bias2
        tmp += eps
        np.divide(m, tmp, out=tmp)
        tmp *= step
        p -= tmp


def ema_update(average: dict, params: dict, decay: float, t: int) -> None:
    """Fold the weights after update t (1, 2, ...) into their moving average, in place.

    The plain exponential moving average e_t = d e_(t-1) + (1-d) p_t from e_0 = 0 is
    biased towards 0 early on; dividing by 1 - d^t, as Adam does for its moments, gives
        a_t = e_t / (1 - d^t) = sum_(s<=t) (1-d) d^(t-s) p_s / (1 - d^t),
    a weighted mean of the iterates p_1..p_t (weights summing to 1). It obeys its own
    recursion,
        a_t = a_(t-1) + w_t (p_t - a_(t-1)),    w_t = (1-d) / (1 - d^t),   w_1 = 1,
    so a_t is the whole state: a checkpoint that stores it resumes it exactly, and its
    start value never matters (a_1 = p_1).
    """
    w = (1.0 - decay) / (1.0 - decay**t)
    names = list(average)
    if _fused([average[n] for n in names] + [params[n] for n in names]):
        flat = {n: (average[n].reshape(-1), params[n].reshape(-1)) for n in names}

        def update(k: int, a: int, b: int) -> None:
            avg, p = flat[names[k]]
            _kernels().average_update(avg[a:b], p[a:b], avg.dtype.type(w))

        pool.map_chunks(update, [average[n].size for n in names])
        return
    for name, a in average.items():
        a += a.dtype.type(w) * (params[name] - a)


# The registry of --optimizer names: the CLI's choices and get_optimizer's check come from it.
OPTIMIZERS: dict[str, type[Optimizer]] = {"adam": Adam, "rmsprop": RMSprop, "sgd": SGD,
                                          "adagrad": Adagrad}


def get_optimizer(name: str) -> type[Optimizer]:
    """The optimizer class registered as `name`; a ValueError naming the choices if none."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}"
                         ) from None


def make_optimizer(name: str, params: dict, lr: float, momentum: float = 0.0,
                   weight_decay: float = 0.0) -> Optimizer:
    """Build an optimizer by its name in OPTIMIZERS (momentum is read by SGD only)."""
    cls = get_optimizer(name)
    return cls(params, lr, weight_decay, momentum=momentum)
