"""The optimizers match torch.optim step for step; clipping matches clip_grad_norm_."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import NEEDS_TORCH

from charlstm import fast, optim, pool
from charlstm.optim import clip_grad_norm, ema_update, global_norm, make_optimizer

torch = pytest.importorskip("torch", reason=NEEDS_TORCH)

# the fused numba passes run (numba installed, not switched off by CHARLSTM_BACKEND)
FUSED = fast.current().fused_optimizer and fast.compiled("kernels") is not None
TORCH = {
    "adam": lambda ps, lr: torch.optim.Adam(ps, lr=lr, eps=1e-8),
    "rmsprop": lambda ps, lr: torch.optim.RMSprop(ps, lr=lr, alpha=0.95, eps=1e-8),
    "sgd": lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9),
    "adagrad": lambda ps, lr: torch.optim.Adagrad(ps, lr=lr, eps=1e-10),
}


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", sorted(TORCH))
def test_optimizers_match_torch_optim_step_for_step(fast_settings, name, fused):
    fast_settings(fused_optimizer=fused)  # numba's passes and NumPy's
    rng = np.random.default_rng(0)
    params = {"w": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,))}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = make_optimizer(name, params, lr=0.01, momentum=0.9)
    topt = TORCH[name](list(tparams.values()), 0.01)
    for _ in range(5):
        grads = {k: rng.normal(size=v.shape) for k, v in params.items()}
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k].copy())
        opt.step(params, grads)
        topt.step()
        for k in params:
            # torch's RMSprop adds eps outside the sqrt too; all four share our formulas
            np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-12,
                                       atol=1e-12, err_msg=f"{name} {k}")


@pytest.mark.parametrize("fused", [False, True])
def test_clip_matches_torch_and_returns_pre_clip_norm(fast_settings, fused):
    fast_settings(fused_optimizer=fused)
    rng = np.random.default_rng(1)
    grads = {"a": rng.normal(size=(5, 5)), "b": rng.normal(size=(5,))}
    tensors = [torch.zeros(v.shape, dtype=torch.float64, requires_grad=True)
               for v in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.tensor(g.copy())
    expected = torch.nn.utils.clip_grad_norm_(tensors, 1.0).item()
    norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(expected, rel=1e-12)
    for t, g in zip(tensors, grads.values()):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12)
    assert global_norm(grads) == pytest.approx(1.0, rel=1e-5)
    assert clip_grad_norm(grads, 0) == pytest.approx(global_norm(grads))  # 0 disables


def test_weight_decay_skips_biases_and_state_round_trips():
    params = {"w": np.ones((2, 2)), "b": np.ones(2)}
    opt = make_optimizer("adam", params, lr=0.1, weight_decay=0.5)
    zero = {k: np.zeros_like(v) for k, v in params.items()}
    opt.step(params, zero)
    np.testing.assert_allclose(params["w"], 0.95)
    np.testing.assert_allclose(params["b"], 1.0)
    other = make_optimizer("adam", params, lr=0.1)
    other.load_state_arrays(opt.state_arrays(), opt.t)
    assert other.t == 1
    with pytest.raises(ValueError):
        make_optimizer("sgd", params, lr=0.1).load_state_arrays(opt.state_arrays(), 1)


@pytest.mark.skipif(not FUSED, reason="numba is not installed (or CHARLSTM_BACKEND=numpy)")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_passes_give_numpys_bits_for_any_thread_count(monkeypatch, fast_settings,
                                                             dtype):
    """The numba passes (Adam with weight decay, weight averaging, the gradient norm
    and clipping), in chunks shared among 1, 2 or 3 workers, give the NumPy code's
    results: the updates bit for bit, the norm (summed in other groups) and so the
    clipped gradients to rounding, and the same bits whatever the thread count."""
    monkeypatch.setattr(pool, "CHUNK_ELEMENTS", 7)  # many chunks, a ragged last one
    rng = np.random.default_rng(5)
    start = {"w": rng.normal(size=(6, 5)), "v": rng.normal(size=(3, 1, 4)),
             "b": rng.normal(size=(9,)), "one": rng.normal(size=(1,))}
    start = {k: v.astype(dtype) for k, v in start.items()}
    grads = [{k: (rng.normal(size=v.shape) * 10).astype(dtype) for k, v in start.items()}
             for _ in range(3)]
    runs = {}
    for fused, threads in ((False, 1), (True, 1), (True, 2), (True, 3)):
        fast_settings(fused_optimizer=fused)
        with pool.num_threads(threads):
            params = {k: v.copy() for k, v in start.items()}
            average = {k: v.copy() for k, v in start.items()}
            opt = make_optimizer("adam", params, lr=0.01, weight_decay=0.1)
            norms, clipped = [], []
            for g in grads:
                clipped.append({k: v.copy() for k, v in g.items()})
                norms.append(clip_grad_norm(clipped[-1], 5.0))
                opt.step(params, g)  # unclipped: the update's own bits are compared
                ema_update(average, params, 0.9, opt.t)
        runs[fused, threads] = (params, average, opt.state_arrays(), norms, clipped)
    numpy_run = runs[False, 1]
    for key, (params, average, slots, norms, clipped) in runs.items():
        for got, want in ((params, numpy_run[0]), (average, numpy_run[1]),
                          (slots, numpy_run[2])):
            for name in want:
                np.testing.assert_array_equal(got[name], want[name], err_msg=f"{key} {name}")
        assert min(norms) > 5.0  # every step clipped
        rtol = 1e-13 if dtype == np.float64 else 1e-6
        np.testing.assert_allclose(norms, numpy_run[3], rtol=rtol)
        for got, want in zip(clipped, numpy_run[4]):
            for name in want:
                np.testing.assert_allclose(got[name], want[name], rtol=rtol)
    for key in ((True, 2), (True, 3)):  # fused: bit-identical across thread counts
        assert runs[key][3] == runs[True, 1][3]
        for got, want in zip(runs[key][4], runs[True, 1][4]):
            assert all(got[k].tobytes() == want[k].tobytes() for k in want)


def test_mixed_dtypes_and_strided_arrays_take_the_numpy_path(fast_settings):
    """float64 gradients for float32 weights, or a non-contiguous array, keep NumPy's
    own casting and loops (optim._fused says no), with the same result either way."""
    w32, g64 = np.ones((3, 4), np.float32), np.full((3, 4), 0.5)
    assert not optim._fused([w32, g64])
    assert not optim._fused([np.ones((4, 4))[:, ::2]])
    assert optim._fused([w32, w32]) == FUSED
    results = []
    for fused in (False, FUSED):
        fast_settings(fused_optimizer=fused)
        params = {"w": w32.copy()}
        make_optimizer("adam", params, lr=0.1).step(params, {"w": g64})
        results.append(params["w"])
    np.testing.assert_array_equal(results[0], results[1])
