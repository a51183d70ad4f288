"""Proofs for the fast wing's numba kernels: numba == NumPy ufuncs, compiled loops ==
Python loops, GEMM pieces == one GEMM, the padding rule, the compiled stack inference,
and the wing's hygiene (no import side effects, kernel caches keyed on their callees).
(The fast LSTM == the reference LSTM: test_fast_lstm.py.)"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba", reason="numba (the fast extra) is not installed")

from test_fast_lstm import flat, window  # noqa: E402

from charlstm import CharLSTM, ModelConfig, engine, fast, layers, pool  # noqa: E402
from charlstm.evaluate import evaluate  # noqa: E402
from charlstm.fast import blas, layout, lstm_kernels, stack  # noqa: E402
from charlstm.fast import lstm as fast_lstm  # noqa: E402
from charlstm.fast.lstm_kernels import KERNELS, _tanh32  # noqa: E402
from charlstm.gradcheck import random_problem  # noqa: E402
from charlstm.model import loss_and_grads  # noqa: E402

BACKENDS = ["numpy", "numba"]
TOL = {np.float64: dict(rtol=1e-12, atol=1e-13), np.float32: dict(rtol=2e-5, atol=2e-6)}


def _run_with_backend(backend, *args, **kwargs):
    with fast.use(fast_cells=True, numba=backend == "numba"):
        return loss_and_grads(*args, **kwargs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("V,H,L,T,B", [(7, 5, 1, 4, 3), (11, 16, 2, 9, 2), (5, 33, 3, 6, 4)])
def test_numba_kernels_match_numpy_ufuncs(dtype, V, H, L, T, B):
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, dropout=0.25)
    params, x, y, state, masks = random_problem(config, T, B, seed=V + H + T,
                                                dropout_mask=True)
    params = {k: v.astype(dtype) for k, v in params.items()}
    state = tuple(s.astype(dtype) for s in state)
    masks = [m.astype(dtype) for m in masks] if masks else None
    rng = np.random.default_rng(1)
    dstate = tuple(rng.normal(size=s.shape).astype(dtype) for s in state)
    args = (params, config, x, y, state, masks, dstate)
    ref = _run_with_backend("numpy", *args)
    got = _run_with_backend("numba", *args)
    tol = TOL[dtype]
    assert got.loss == pytest.approx(ref.loss, rel=tol["rtol"])
    for a, b in zip(got.state, ref.state):
        np.testing.assert_allclose(a, b, **tol)
    for name in params:
        assert got.grads[name].dtype == dtype
        np.testing.assert_allclose(got.grads[name], ref.grads[name], err_msg=name, **tol)
    for a, b in zip(got.dstate0, ref.dstate0):
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T,B,H", [(1, 1, 3), (7, 5, 16), (4, 32, 40)])
def test_fused_loops_equal_the_python_loop_of_step_kernels(fast_settings, dtype, T, B, H):
    """lstm_kernels's whole-loop kernels (BLAS called from numba) compute what the Python
    loop of one GEMM and one step kernel per step computes (to rounding: NumPy may pick
    another BLAS routine for the same product, e.g. GEMV for one stream), and leave the
    caller's arrays alone (B = 1 included, where a transpose is still contiguous)."""
    if "forward_loop" not in KERNELS[np.dtype(dtype)]:
        pytest.skip("numba cannot call this NumPy's BLAS: only the step kernels exist")
    xw, W_hh, b_hh, state0, dhs, dstate = window(T, B, H, dtype, seed=T * B + H)
    inputs = [a.copy() for a in (xw, *state0, dhs, *dstate)]
    fast_settings(numba=True)
    runs = {}
    for fused in (False, True):
        fast_settings(fused_loops=fused)
        hs, final, cache = fast_lstm.forward(xw, state0, W_hh, b_hh)
        hs_infer, final_infer = fast_lstm.infer(xw, state0, W_hh, b_hh)
        grads = flat(fast_lstm.backward(dhs, dstate, cache))
        runs[fused] = (hs, *final, hs_infer, *final_infer, *grads)
    for a, b in zip(runs[True], runs[False]):
        np.testing.assert_allclose(a, b, **TOL[dtype])
    for a, b in zip((xw, *state0, dhs, *dstate), inputs):
        np.testing.assert_array_equal(a, b)


def test_float32_tanh_kernel_is_accurate_everywhere():
    x = np.concatenate([np.linspace(-20, 20, 400_001, dtype=np.float32),
                        np.logspace(-30, 1, 20_001, dtype=np.float32)])
    x = np.concatenate([x, -x[-20_001:]])
    out = np.array([_tanh32(v) for v in x[::97]], dtype=np.float32)  # scalar calls
    ref = np.tanh(x[::97].astype(np.float64))
    assert np.max(np.abs(out - ref) / np.abs(ref).clip(1e-30)) < 1e-6
    assert np.isnan(_tanh32(np.float32(np.nan)))
    assert _tanh32(np.float32(np.inf)) == 1.0 and _tanh32(np.float32(-np.inf)) == -1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_is_not_hidden_by_the_kernels(fast_settings, backend):
    """A diverged model must show NaN (the training loop stops on it), not clamp it away."""
    fast_settings(fast_cells=True, numba=backend == "numba")
    model = CharLSTM(ModelConfig(vocab_size=5, hidden_size=4, num_layers=1), seed=0)
    model.params["lstm.weight_hh_l0"][0, 0] = np.nan
    logits, _ = model.forward(np.zeros((3, 2), dtype=np.int64))
    assert np.isnan(logits).any()


def test_one_hot_scatter_kernel_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, size=(5, 3))
    x[0, 0] = 5  # the largest id occurs
    dxw = rng.normal(size=(5, 3, 8))
    W_ih = np.zeros((8, 7))  # id 6 never occurs: its column must stay zero
    with fast.use(numba=True):
        got = layers.input_projection_backward(dxw, x, W_ih)
    with fast.use(numba=False):
        ref = layers.input_projection_backward(dxw, x, W_ih)
    assert got[0] is None and ref[0] is None
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(got[1][:, 6], 0.0)
    np.testing.assert_allclose(got[2], ref[2], rtol=0, atol=0)


def test_one_hot_gather_kernel_matches_numpy_and_checks_ids():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, size=(5, 3))
    W_ih, b_ih = rng.normal(size=(8, 7)), rng.normal(size=8)
    with fast.use(numba=True):
        got = layers.input_projection_forward(x, W_ih, b_ih).copy()
    with fast.use(numba=False):
        ref = layers.input_projection_forward(x, W_ih, b_ih)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(ref, W_ih.T[x] + b_ih)
    # an id past the vocabulary never reads past the table
    with fast.use(numba=True), pytest.raises(IndexError):
        layers.input_projection_forward(np.full((2, 2), 7), W_ih, b_ih)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B, width", [(5, 5), (5, 8), (25, 32), (1, 1)])
def test_layout_copies_equal_numpy_bit_for_bit(dtype, B, width):
    """The compiled copies between the model's (T, B, .) layout and the loop's
    (T, ., n) one (fast.lstm's _prescaled, _rows, _loop_input) give NumPy's numbers
    exactly, padding columns zero, for either dtype and padded or not."""
    rng = np.random.default_rng(3)
    T, H = 3, 20
    xw = rng.standard_normal((T, B, 4 * H)).astype(dtype)
    W_hh = rng.standard_normal((4 * H, H)).astype(dtype)
    b_hh = rng.standard_normal(4 * H).astype(dtype)
    loop = rng.standard_normal((T, 4 * H, width)).astype(dtype)
    got, ref = {}, {}
    for numba_on, into in ((True, got), (False, ref)):
        with fast.use(numba=numba_on):
            into["z"], into["W"] = fast_lstm._prescaled(xw, W_hh, b_hh, width)[:2]
            into["rows"] = fast_lstm._rows(loop, B)
            into["loop"] = fast_lstm._loop_input(xw, width)
    for name in ref:
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    assert not got["z"][:, :, B:].any() and not got["loop"][:, :, B:].any()


def test_numba_kernels_exist_for_both_dtypes():
    """Each dtype has every kernel, each one numba dispatcher compiled for that dtype
    (the whole-loop ones where NumPy's BLAS is bound), and the fast LSTM finds them
    with numba on and not with it off."""
    steps = {"forward_step", "backward_step", "transpose_into", "gather_gates",
             "transpose_steps", "prescale_steps"}
    loops = ({"forward_loop", "infer_loop", "backward_loop", "pack_into"} if lstm_kernels.GEMM
             else set())
    assert set(KERNELS) == {np.dtype(np.float32), np.dtype(np.float64)}
    for dtype, kernels in KERNELS.items():
        assert set(kernels) == steps | loops, dtype
        a = np.arange(6, dtype=dtype).reshape(2, 3)
        out = np.empty((3, 2), dtype)
        kernels["transpose_into"](a, out)  # compiles for this dtype, and is right
        np.testing.assert_array_equal(out, a.T)
        assert np.dtype(dtype).name in {str(sig[0].dtype)
                                        for sig in kernels["transpose_into"].signatures}
        with fast.use(numba=True, fused_loops=True):
            assert set(fast_lstm._numba(dtype)) == steps | loops
            assert fast_lstm.fused_loops(dtype) == bool(loops)
        with fast.use(numba=False):
            assert fast_lstm._numba(dtype) is None and not fast_lstm.fused_loops(dtype)



@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("V,H,L,B", [(7, 5, 1, 3), (11, 16, 2, 5), (5, 33, 3, 4)])
def test_compiled_step_major_evaluation_matches_the_layer_by_layer_forward(
        fast_settings, small_kernel_bound, one_blas_thread, dtype, V, H, L, B):
    """fast.stack's evaluation (each step through the whole stack, its logits reduced
    at once, state carried window to window; its GEMMs block by block on the packed
    weights or in one call) == model.forward's layer-by-layer windows on the NumPy
    backend, over windows with a ragged tail; and it is used only where it applies."""
    fast_settings(fast_cells=True)
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L)
    params = {k: v.astype(dtype) for k, v in
              random_problem(config, 2, 2, seed=V + H)[0].items()}
    ids = np.random.default_rng(H).integers(0, V, size=173)
    compiled = {}
    with fast.use(numba=True):
        assert engine.compiled_inference(params, config) is not None
        for bound in (10**6, 0):  # float32: the packed blocks, then one call
            small_kernel_bound.value = bound
            compiled[bound] = evaluate(params, config, ids, B, 9)
    for changes in (dict(numba=False), dict(fused_loops=False),
                    dict(stack_inference=False), dict(fast_cells=False)):
        with fast.use(**changes):
            assert engine.compiled_inference(params, config) is None
            want = evaluate(params, config, ids, B, 9)
            for got in compiled.values():
                assert got == pytest.approx(want, rel=TOL[dtype]["rtol"])
    gru = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, cell="gru")
    assert engine.compiled_inference(random_problem(gru, 2, 2, seed=0)[0], gru) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B,G,K", [(50, 2048, 512), (70, 2048, 512), (3, 20, 5), (9, 132, 33),
                                   (1, 65, 512), (130, 1024, 256)])
def test_block_gemm_on_packed_weights_is_the_whole_product(small_kernel_bound, one_blas_thread,
                                                           dtype, B, G, K):
    """lstm_kernels.matmul_t: C = A W^T block by block on pack_columns' packing (a narrower
    last block, streams split into even calls: 70 as 35 and 35) == one GEMM on W ==
    the float64 product, to rounding; float64 and a core without the small kernel take
    the one call."""
    import numba

    @numba.njit
    def product(A, W, W_packed, C):
        lstm_kernels.matmul_t(A, W, W_packed, C)

    rng = np.random.default_rng(B + G + K)
    A = rng.standard_normal((B, K)).astype(dtype)
    W = rng.standard_normal((G, K)).astype(dtype)
    want = A.astype(np.float64) @ W.T.astype(np.float64)
    got = {}
    for bound in (10**6, 0):
        small_kernel_bound.value = bound
        C = np.full((B, G), np.nan, dtype)
        product(A, W, lstm_kernels.pack_columns(W), C)
        np.testing.assert_allclose(C, want, rtol=1e-4, atol=1e-3 * np.sqrt(K))
        got[bound] = C
    np.testing.assert_allclose(got[10**6], got[0], rtol=1e-5, atol=1e-4)
    small_kernel_bound.value = 10**6
    rows = lstm_kernels.rows_per_call(B, K, np.dtype(dtype).itemsize)
    if dtype == np.float64:
        assert rows == 0
    else:
        assert rows == {(50, 512): 50, (70, 512): 35, (130, 256): 65}.get((B, K), B)
    small_kernel_bound.value = 0
    assert lstm_kernels.rows_per_call(B, K, 4) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weights_pack_in_contiguous_blocks_of_columns(dtype):
    """pack_columns: block j of W^T's columns, (K, w) C-contiguous, at K * 32 * j;
    pack_into (the training loops' packing, by the BLAS's transposed copy) gives the
    same bits."""
    W = np.arange(3 * 70 * 5, dtype=dtype).reshape(3, 70, 5)
    packed = lstm_kernels.pack_columns(W)
    assert packed.shape == (3, 350) and packed.flags.c_contiguous
    for j, w in ((0, 32), (32, 32), (64, 6)):
        block = packed[:, 5 * j:5 * (j + w)].reshape(3, 5, w)
        np.testing.assert_array_equal(block, W[:, j:j + w, :].transpose(0, 2, 1))
    W = np.random.default_rng(0).standard_normal((2048, 512)).astype(dtype)
    out = np.full(W.size, np.nan, dtype)
    lstm_kernels.pack_into(W, out)
    np.testing.assert_array_equal(out, lstm_kernels.pack_columns(W))


def test_compiled_evaluation_splits_from_its_own_minimum(fast_settings, monkeypatch):
    """The compiled loop runs 8 streams at H = 512 as two workers of 4
    (engine.COMPILED_SLICE_STREAMS; the layer-by-layer windows keep one worker below
    fewest_streams(H) = 16), and the loss is one worker's to float32 rounding."""
    fast_settings(fast_cells=True)
    config = ModelConfig(vocab_size=9, hidden_size=512, num_layers=2)
    params = CharLSTM(config, seed=0).params
    ids = np.random.default_rng(0).integers(0, 9, size=8 * 3 * 4 + 5)
    widths = []
    map_streams = pool.map_streams

    def spy(fn, B, fewest, threads=None):
        widths.append([s.stop - s.start for s in pool.stream_slices(B, fewest, threads)])
        return map_streams(fn, B, fewest, threads)
    monkeypatch.setattr(pool, "map_streams", spy)
    with pool.num_threads(2):
        split = evaluate(params, config, ids, 8, 3)
    assert widths and all(w == [4, 4] for w in widths)
    with pool.num_threads(1):
        assert split == pytest.approx(evaluate(params, config, ids, 8, 3), rel=1e-6)


def test_evaluation_stops_when_asked_and_raises_a_worker_error(fast_settings):
    """abort() answering True part way through (asked by each worker between its
    windows): None, every worker stopped; an error in abort is raised."""
    fast_settings(fast_cells=True)
    config = ModelConfig(vocab_size=9, hidden_size=12, num_layers=1)
    params = random_problem(config, 2, 2, seed=0)[0]
    ids = np.random.default_rng(0).integers(0, 9, size=50 * 7 * 6)
    calls = []
    with pool.num_threads(2):
        assert evaluate(params, config, ids, 50, 7, abort=lambda: calls.append(1) or
                        len(calls) > 3) is None
        assert 4 <= len(calls) < 12  # two workers, six windows each: they stopped early

        def boom():
            raise RuntimeError("boom")
        with pytest.raises(RuntimeError, match="boom"):
            evaluate(params, config, ids, 50, 7, abort=boom)


def test_compiled_evaluation_shows_nan():
    """A diverged model's validation loss must be NaN (training stops on it)."""
    model = CharLSTM(ModelConfig(vocab_size=5, hidden_size=4, num_layers=2), seed=0)
    model.params["lstm.weight_hh_l1"][0, 0] = np.nan
    assert np.isnan(evaluate(model.params, model.config, np.arange(40) % 5, 2, 7))


def test_loop_width_pads_to_the_fewest_kernel_sweeps(fast_settings):
    """layout.loop_width: the smallest width >= B with the fewest sweeps of an OpenBLAS
    kernel with 16-wide (SkylakeX) or 8-wide (Haswell) column blocks, then 8/4, 4, 2, 1;
    only for float32 weights of 1 MiB or more, on a kernel the rule was measured on."""
    W32 = np.zeros((2048, 512), np.float32)
    sizes = (0, 1, 2, 3, 5, 9, 11, 16, 17, 19, 21, 25, 27, 31, 32, 33, 37, 50, 51)
    fast_settings(pad_block=16)
    assert [layout.loop_width(B, W32) for B in sizes] == [
        0, 1, 2, 4, 8, 16, 16, 16, 17, 20, 24, 32, 32, 32, 32, 33, 40, 50, 52]
    fast_settings(pad_block=8)
    assert [layout.loop_width(B, W32) for B in sizes] == [
        0, 1, 2, 4, 8, 9, 12, 16, 17, 20, 24, 25, 28, 32, 32, 33, 40, 50, 52]
    fast_settings(pad_block=0)
    assert layout.loop_width(25, W32) == 25
    fast_settings(pad_block=None)  # from the kernel: float32, >= 1 MiB
    assert layout.loop_width(25, W32.astype(np.float64)) == 25
    assert layout.loop_width(25, np.zeros((512, 128), np.float32)) == 25
    assert layout.loop_width(25, W32) == {16: 32, 8: 25, 0: 25}[blas.kernel_block()]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T,B,H", [(1, 1, 3), (6, 5, 16), (3, 25, 8)])
def test_padded_loop_columns_change_no_result(fast_settings, backend, dtype, T, B, H):
    """The time loop on zero-padded columns (loop_width > B) gives what the unpadded
    loop gives: outputs, final state, every gradient, the cache's (T, B, .) views, the
    cache-free forward; and the padding columns stay exactly zero."""
    xw, W_hh, b_hh, state0, dhs, dstate = window(T, B, H, dtype, seed=T + B + H)
    fast_settings(numba=backend == "numba")
    runs = {}
    for pad in (False, True):
        fast_settings(pad_block=16 if pad else 0)
        lstm = fast_lstm
        hs, final, cache = lstm.forward(xw, state0, W_hh, b_hh)
        assert cache.gates.shape[2] == ({1: 1, 5: 8, 25: 32}[B] if pad else B)
        runs[pad] = (hs, *final, *lstm.infer(xw, state0, W_hh, b_hh)[1],
                     lstm.infer(xw, state0, W_hh, b_hh)[0], lstm.keep_gate(cache),
                     *lstm.activations(cache).values(),
                     *flat(lstm.backward(dhs, dstate, cache)))
        if pad:
            np.testing.assert_array_equal(cache.c[:, :, B:], 0)
    for a, b in zip(runs[True], runs[False]):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transpose_kernels_are_exact_transposes(dtype):
    """lstm_kernels.transpose_into (the BLAS's transposed copy where it is bound) and
    tiled_transpose (its fallback) give a^T exactly: on shapes that are and are not
    multiples of the tiles, empty ones, strided views on either side (the loop's
    first B of n columns), and a broadcast source, which the BLAS cannot read and the
    tiles copy, as they copy into another dtype. Every bit survives, negative zeros and
    infinities and NaNs too."""
    if blas.numpy_blas_info().get("internal_api") == "openblas":
        assert lstm_kernels.OMATCOPY is not None  # the fast copy is not lost unseen
    rng = np.random.default_rng(2)
    kernels = KERNELS[np.dtype(dtype)]
    special = np.array([-0.0, np.inf, -np.inf, np.nan, np.finfo(dtype).tiny / 2], dtype)
    for shape in [(1, 1), (16, 16), (3, 50), (40, 23), (64, 17), (0, 5), (5, 0)]:
        a = rng.normal(size=shape).astype(dtype)
        a.flat[:min(a.size, special.size)] = special[:a.size]
        for transpose in (kernels["transpose_into"], lstm_kernels.tiled_transpose):
            out = np.full(shape[::-1], 7, dtype)
            transpose(a, out)
            np.testing.assert_array_equal(out.view(f"u{out.itemsize}"),
                                          a.T.view(f"u{a.itemsize}"))
    wide, loop = rng.normal(size=(8, 30)).astype(dtype), np.zeros((40, 12), dtype)
    kernels["transpose_into"](wide[:, :25], loop[:25, :8])  # both sides strided
    np.testing.assert_array_equal(loop[:25, :8], wide[:, :25].T)
    assert not loop[25:].any() and not loop[:, 8:].any()  # nothing past the views
    row = rng.normal(size=9).astype(dtype)
    out = np.empty((9, 4), dtype)
    kernels["transpose_into"](np.broadcast_to(row, (4, 9)), out)  # rows stride 0
    np.testing.assert_array_equal(out, np.broadcast_to(row, (4, 9)).T)
    wider = np.empty((30, 8), np.float64)  # another dtype: the tiles, exact widening
    kernels["transpose_into"](wide.astype(np.float32), wider)
    np.testing.assert_array_equal(wider, wide.astype(np.float32).T)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("pad", [0, 16])
def test_layer0_from_ids_is_the_gather_then_forward(monkeypatch, fast_settings, backend,
                                                   dtype, pad):
    """fast.lstm.forward_ids / infer_ids (layer 0's gather straight into the gate buffer)
    give forward() / infer() of the gathered xw bit for bit, padded loop or not; the
    model's whole window (loss, every gradient, state) is unchanged by taking them;
    an id out of range is NumPy's IndexError."""
    fast_settings(fast_cells=True, numba=backend == "numba", pad_block=pad)
    lstm = fast_lstm
    T, B, H, V = 5, 6, 8, 11
    xw, W_hh, b_hh, state0, _, _ = window(T, B, H, dtype, seed=7)
    rng = np.random.default_rng(8)
    W_ih, b_ih = rng.normal(size=(4 * H, V)).astype(dtype), rng.normal(size=4 * H).astype(dtype)
    ids = rng.integers(0, V, size=(T, B))
    gathered = np.add(W_ih.T, b_ih, order="C")[ids]
    ours = lstm.forward_ids(ids, W_ih, b_ih, state0, W_hh, b_hh)
    theirs = lstm.forward(gathered, state0, W_hh, b_hh)
    for a, b in zip((ours[0], *ours[1], *ours[2][:4]), (theirs[0], *theirs[1], *theirs[2][:4])):
        np.testing.assert_array_equal(a, b)
    hs, final = lstm.infer_ids(ids, W_ih, b_ih, state0, W_hh, b_hh)
    hs_, final_ = lstm.infer(gathered, state0, W_hh, b_hh)
    for a, b in zip((hs, *final), (hs_, *final_)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(IndexError):
        lstm.forward_ids(np.full((2, 3), V), W_ih, b_ih, state0, W_hh, b_hh)
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=2)
    params, x, y, state, _ = random_problem(config, T, B, 9)
    params = {k: v.astype(dtype) for k, v in params.items()}
    state = tuple(s.astype(dtype) for s in state)
    direct = loss_and_grads(params, config, x, y, state)
    monkeypatch.delattr(lstm, "forward_ids")
    generic = loss_and_grads(params, config, x, y, state)
    assert direct.loss == generic.loss
    for name in params:
        np.testing.assert_array_equal(direct.grads[name], generic.grads[name], err_msg=name)
    for a, b in zip(direct.state + direct.dstate0, generic.state + generic.dstate0):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def small_kernel_bound():
    """The bound compiled kernels read (blas.binding().SMALL_SGEMM_MNK), restored
    afterwards (tests set it to cut or not)."""
    bound = blas.binding().SMALL_SGEMM_MNK
    before = bound.value
    yield bound
    bound.value = before


def test_step_gemm_pieces_follow_the_small_kernel_bound(small_kernel_bound):
    """lstm_kernels.piece_rows: pieces only for float32, past the bound, a multiple of
    4 rows under the bound (at least 4 at 16, 32 or 64 columns, 12 at other widths),
    on a one-thread BLAS (the small kernel runs on one thread); the bound and the
    threads read at run time."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from charlstm.fast.lstm_kernels import piece_rows
    with threadpool_limits(2, user_api="blas"):
        threads = [lib["num_threads"] for lib in threadpool_info()
                   if lib["user_api"] == "blas" and "numpy" in lib["filepath"]]
        small_kernel_bound.value = 10**6
        if threads == [2]:
            assert piece_rows(2048, 32, 512, 4) == 2048
    with threadpool_limits(1, user_api="blas"):
        _piece_rules(piece_rows, small_kernel_bound)


def _piece_rules(piece_rows, small_kernel_bound):
    small_kernel_bound.value = 10**6
    assert piece_rows(2048, 32, 512, 4) == 60  # 60 * 32 * 512 <= 10^6 < 64 * 32 * 512
    assert piece_rows(2048, 64, 512, 4) == 28
    assert piece_rows(1024, 16, 512, 4) == 120
    assert piece_rows(512, 32, 2048, 4) == 12
    assert piece_rows(2048, 48, 512, 4) == 40  # other widths: pieces of 12 rows or more
    assert piece_rows(2048, 25, 512, 4) == 76
    assert piece_rows(512, 50, 2048, 4) == 512  # 8 rows: one packed call
    assert piece_rows(512, 40, 2048, 4) == 12
    assert piece_rows(2048, 32, 512, 8) == 2048  # float64: one call
    assert piece_rows(60, 32, 512, 4) == 60  # already small
    assert piece_rows(4096, 64, 4096, 4) == 4096  # not even 4 rows fit
    small_kernel_bound.value = 0  # a core without the kernel
    assert piece_rows(2048, 32, 512, 4) == 2048


@pytest.fixture
def one_blas_thread():
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.mark.parametrize("M,K,N", [(2048, 512, 32), (2050, 512, 64), (130, 2048, 16),
                                   (300, 256, 48)])
def test_step_gemm_in_pieces_is_the_whole_product(small_kernel_bound, one_blas_thread,
                                                  M, K, N):
    """matmul_into in pieces (a ragged last one too) == one GEMM == the float64
    product to float32 rounding, on any core (where the small kernel is missing the
    pieces run on the packed one: slower, the same maths)."""
    import numba

    from charlstm.fast.lstm_kernels import matmul_into

    @numba.njit
    def product(A, B, C):
        matmul_into(A, B, C)

    rng = np.random.default_rng(M + K + N)
    A = rng.standard_normal((M, K)).astype(np.float32)
    B = rng.standard_normal((K, N)).astype(np.float32)
    want = A.astype(np.float64) @ B.astype(np.float64)
    got = {}
    for bound in (10**6, 0):
        small_kernel_bound.value = bound
        C = np.empty((M, N), np.float32)
        product(A, B, C)
        np.testing.assert_allclose(C, want, rtol=1e-4, atol=1e-3 * np.sqrt(K))
        got[bound] = C
    np.testing.assert_allclose(got[10**6], got[0], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("B", [32, 25])
def test_time_loops_with_gemm_pieces_match_one_call(fast_settings, small_kernel_bound,
                                                    one_blas_thread, B):
    """A whole window (forward, backward, every gradient) at a size whose step GEMMs
    are cut (H = 256, float32: 32 streams in row pieces; 25 streams, padded to 32,
    block by block on packed weights through the batch-major orientation) agrees with
    the same window run in one call a step, and with the reference LSTM (cells/lstm.py)."""
    fast_settings(fast_cells=True, numba=True, pad_block=16)
    config = ModelConfig(vocab_size=13, hidden_size=256, num_layers=2)
    params, x, y, state, _ = random_problem(config, 4, B, seed=5)
    params = {k: v.astype(np.float32) for k, v in params.items()}
    state = tuple(s.astype(np.float32) for s in state)
    runs = []
    for bound in (10**6, 0):
        small_kernel_bound.value = bound
        runs.append(loss_and_grads(params, config, x, y, state))
    with fast.use(fast_cells=False):
        runs.append(loss_and_grads(params, config, x, y, state))
    for run in runs[1:]:
        assert runs[0].loss == pytest.approx(run.loss, rel=1e-5)
        for name in params:
            np.testing.assert_allclose(runs[0].grads[name], run.grads[name], rtol=2e-4,
                                       atol=2e-6, err_msg=name)


def test_importing_charlstm_imports_no_numba_and_touches_no_file(tmp_path):
    """import charlstm (its config, its model) imports neither numba nor llvmlite and
    writes or deletes nothing under the package: the wing binds on first use."""
    package = Path(fast.__file__).resolve().parent.parent
    before = sorted(p for p in package.rglob("*") if "__pycache__" not in p.parts)
    code = ("import sys, charlstm, charlstm.config, charlstm.model; "
            "print(sorted(m for m in ('numba', 'llvmlite') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path).stdout
    assert out.strip() == "[]"
    assert sorted(p for p in package.rglob("*") if "__pycache__" not in p.parts) == before


def test_kernel_callers_record_the_sources_compiled_into_them():
    """numba keys a cached kernel on its own file: a file whose kernels compile in
    another file's must change when that one does. Each records the SHA-256 of its
    callees' source; after editing a callee, write its new digest into the caller."""
    wing = Path(fast.__file__).resolve().parent
    for caller, constant, callee in [(lstm_kernels, "BLAS_SOURCE_SHA256", "blas.py"),
                                     (stack, "KERNELS_SOURCE_SHA256", "lstm_kernels.py")]:
        digest = hashlib.sha256((wing / callee).read_bytes()).hexdigest()
        assert getattr(caller, constant) == digest, (
            f"{caller.__name__}.{constant} must be {digest} (the SHA-256 of {callee})")
