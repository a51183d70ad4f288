"""Data parallel across ranks (distributed.py, cluster.py), proven without MPI.

Proofs: N ranks x B/N streams give the loss, gradients, penalty and final state of one
process x B (float64 to 1e-12, float32 to rounding), with uneven slices, dropout,
DropConnect and AR/TAR, the ranks' parts computed as separate calls and added as the
exchange adds them; two in-process ranks (threads exchanging through a barrier) train
the same run as one process, bit-identically run to run, resume exactly, and write
files only from rank 0; the launcher checks. tests/test_mpi.py runs the same under
mpiexec.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from test_train import _final_arrays, _log_without_timings, tiny_config

from charlstm import ModelConfig, cluster, distributed, engine, loop, model, session
from charlstm.checkpoint import checkpoint_bytes, load_checkpoint, parse_checkpoint
from charlstm.errors import UserError
from charlstm.gradcheck import random_problem
from charlstm.penalties import Penalty

TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


class ThreadComm:
    """One of `size` ranks that are threads of this process, exchanging through a barrier:
    the Communicator protocol as MPI gives it, for tests."""

    def __init__(self, group: dict, rank: int):
        self.group, self.rank, self.size = group, rank, group["size"]

    @staticmethod
    def group(size: int) -> list[ThreadComm]:
        shared = {"size": size, "slots": [None] * size,
                  "barrier": threading.Barrier(size, timeout=120)}
        return [ThreadComm(shared, r) for r in range(size)]

    def _exchange(self, value) -> list:
        self.group["slots"][self.rank] = value
        self.group["barrier"].wait()
        values = list(self.group["slots"])
        self.group["barrier"].wait()  # nobody overwrites a slot before all have read
        return values

    def allgather(self, buffer):
        return np.stack(self._exchange(np.array(buffer)))

    def agree(self, flag, seconds):
        values = self._exchange((bool(flag), seconds))
        return any(f for f, _ in values), max(s for _, s in values)

    def share(self, data):
        return self._exchange(data)[0] or b""

    def abort(self, code):
        self.group["barrier"].abort()
        raise SystemExit(code)


def run_ranks(*jobs):
    """Run job(rank) for each job on its own thread; their results, rank order."""
    results, errors = [None] * len(jobs), []

    def body(r):
        try:
            results[r] = jobs[r]()
        except BaseException as e:  # noqa: BLE001 - reported to the test below
            errors.append(e)
    threads = [threading.Thread(target=body, args=(r,), name=f"rank{r}")
               for r in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def _problem(cell, dtype, B):
    config = ModelConfig(vocab_size=11, hidden_size=6, num_layers=2, dropout=0.3, cell=cell,
                         weight_dropout=0.2, input_dropout=0.1)
    params, x, y, state, masks = random_problem(config, 5, B, 0, dropout_mask=True)
    cast = lambda a: a.astype(dtype)  # noqa: E731
    weight_masks = model.make_weight_masks(config, np.random.default_rng(3), dtype)
    return (config, {k: cast(v) for k, v in params.items()}, x, y,
            tuple(map(cast, state)), [cast(m) for m in masks], weight_masks)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("size", [2, 3])
def test_ranks_parts_sum_to_one_process(cell, dtype, size):
    """Each rank's part computed as its own call, then added as the exchange adds them
    (B = 7: uneven slices): loss, penalty, every gradient and the joined final state
    are one process's."""
    config, params, x, y, state, masks, weight_masks = _problem(cell, dtype, B=7)
    penalty = Penalty(0.5, 0.7)
    whole = engine.loss_and_grads(params, config, x, y, state, masks, penalty=penalty,
                                  weight_masks=weight_masks, threads=1)
    parts = [distributed.rank_part(r, size, params, config, x, y, state, masks, penalty,
                                   weight_masks) for r in range(size)]
    assert len({p.buffer.size for p in parts}) == 1 and parts[0].buffer.dtype == dtype
    loss, grads, final, value = distributed.combine(np.stack([p.buffer for p in parts]),
                                                    parts[0], 7)
    tol = TOL[dtype]
    assert loss == pytest.approx(whole.loss, rel=tol["rtol"])
    assert value == pytest.approx(whole.penalty, rel=tol["rtol"])
    assert set(grads) == set(params)
    for name in params:
        np.testing.assert_allclose(grads[name], whole.grads[name], err_msg=name, **tol)
    assert len(final) == len(whole.state)
    for a, b in zip(final, whole.state):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, **tol)


def test_one_rank_is_exactly_the_engine():
    config, params, x, y, state, masks, weight_masks = _problem("lstm", np.float64, B=4)
    whole = engine.loss_and_grads(params, config, x, y, state, masks,
                                  weight_masks=weight_masks)
    loss, grads, final, _ = distributed.loss_and_grads(distributed.LOCAL, params, config, x,
                                                       y, state, masks,
                                                       weight_masks=weight_masks)
    assert loss == whole.loss
    assert all(grads[k].tobytes() == whole.grads[k].tobytes() for k in grads)


def test_thread_ranks_exchange_as_the_sequential_parts():
    """The same arithmetic through a real exchange: every rank gets the same bits."""
    config, params, x, y, state, masks, weight_masks = _problem("lstm", np.float32, B=5)
    comms = ThreadComm.group(2)
    results = run_ranks(*[lambda c=c: distributed.loss_and_grads(
        c, params, config, x, y, state, masks, weight_masks=weight_masks) for c in comms])
    (loss0, grads0, final0, _), (loss1, grads1, final1, _) = results
    assert loss0 == loss1
    assert all(grads0[k].tobytes() == grads1[k].tobytes() for k in grads0)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(final0, final1))


def test_rank_streams_follow_the_engine_and_refuse_too_few():
    assert distributed.rank_streams(7, 2) == [slice(0, 4), slice(4, 7)]
    assert distributed.rank_streams(3, 3) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    with pytest.raises(UserError, match="--batch-size 2 gives fewer streams than the 3"):
        distributed.rank_streams(2, 3)


def _train_ranks(config, size=2, resume=None, overrides=None):
    """Train config across `size` thread ranks (rank 0 leads, as the CLI does); rank 0's
    Outcome."""
    comms = ThreadComm.group(size)

    def begin(on_start):
        if resume:
            return session.resume_training(resume, overrides, on_start=on_start)
        return session.start_training(config, on_start=on_start)
    jobs = [lambda: cluster.lead(comms[0], begin)]
    jobs += [lambda c=c: cluster.follow(c) for c in comms[1:]]
    return run_ranks(*jobs)


def test_two_ranks_train_the_run_one_process_trains(tmp_path, monkeypatch):
    """2 thread ranks x B/2 (B = 3, dropout): the loss curve and the weights of one
    process x B to float32 rounding; a second 2-rank run gives the same bits; only
    rank 0 wrote checkpoints."""
    one = session.start_training(tiny_config(tmp_path, "one", batch_size=3))
    writers = []
    real_save = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", lambda path, ckpt: (
        writers.append(threading.current_thread().name), real_save(path, ckpt)))
    two = _train_ranks(tiny_config(tmp_path, "two", batch_size=3))
    assert writers and set(writers) == {"rank0"}
    _train_ranks(tiny_config(tmp_path, "again", batch_size=3))
    assert [o.step for o in two] == [one.step] * 2
    assert two[0].val_loss == pytest.approx(one.val_loss, rel=1e-5)
    log1, log2 = _log_without_timings(tmp_path / "one"), _log_without_timings(tmp_path / "two")
    assert [r["step"] for r in log1] == [r["step"] for r in log2]
    for r1, r2 in zip(log1, log2):
        for key in ("train_loss", "val_loss", "grad_norm"):
            assert (r1[key] is None) == (r2[key] is None)
            if r1[key] is not None:
                assert r2[key] == pytest.approx(r1[key], rel=1e-4), (r1["step"], key)
    a1, _ = _final_arrays(tmp_path / "one")
    a2, meta2 = _final_arrays(tmp_path / "two")
    a3, _ = _final_arrays(tmp_path / "again")
    for k in a1:
        np.testing.assert_allclose(a2[k], a1[k], rtol=1e-3, atol=1e-4, err_msg=k)
        assert a2[k].tobytes() == a3[k].tobytes(), k
    assert meta2["step"] == 16 and _log_without_timings(tmp_path / "again") == log2
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir())


def test_two_ranks_resume_exactly(tmp_path):
    """7 steps, then a resume to 16, both on 2 ranks, end bit-identical to 16 straight."""
    kw = dict(batch_size=3, lr_schedule="constant", checkpoint_every=100)
    _train_ranks(tiny_config(tmp_path, "straight", **kw))
    _train_ranks(tiny_config(tmp_path, "resumed", max_steps=7, **kw))
    ends = _train_ranks(None, resume=tmp_path / "resumed", overrides={"max_steps": 16})
    assert [o.step for o in ends] == [16, 16]
    a, meta_a = _final_arrays(tmp_path / "straight")
    b, meta_b = _final_arrays(tmp_path / "resumed")
    assert set(a) == set(b)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    assert meta_a["rng"] == meta_b["rng"] and meta_a["cursor"] == meta_b["cursor"]


def test_ranks_agree_on_one_validation_figure(tmp_path, monkeypatch):
    """Machines whose maths differ in the last bit still take the same best-checkpoint
    decisions: every rank keeps the same validation loss."""
    real = loop.evaluate

    def skewed(*args, **kwargs):
        loss = real(*args, **kwargs)
        return loss + (1e-6 if threading.current_thread().name == "rank1" else 0.0)
    monkeypatch.setattr(loop, "evaluate", skewed)
    ends = _train_ranks(tiny_config(tmp_path, "r", batch_size=3))
    assert ends[0].val_loss == ends[1].val_loss and ends[0].best_val == ends[1].best_val


def test_a_finished_run_or_an_error_on_rank_0_lets_the_others_go(tmp_path):
    """Rank 0 ends before the hand-over: the followers learn there is nothing to train."""
    config = tiny_config(tmp_path, "r", batch_size=3, max_steps=2)
    _train_ranks(config)
    done = _train_ranks(None, resume=tmp_path / "r")  # already finished
    assert done[0].reason == "reached --max-steps 2" and done[1] is None
    comms = ThreadComm.group(2)

    def fails(on_start):
        raise UserError("no such file")
    with pytest.raises(UserError, match="no such file"):
        run_ranks(lambda: cluster.lead(comms[0], fails), lambda: cluster.follow(comms[1]))


def test_a_failing_rank_stops_every_rank_with_one_line(tmp_path, capsys, monkeypatch):
    """A follower that cannot read the text names itself in one line and aborts all."""
    config = tiny_config(tmp_path, "r", batch_size=3)
    real = session.load_data

    def other_text(config, vocab=None):
        corpus, _, path = real(config, vocab)
        return corpus, "0" * 64, path
    monkeypatch.setattr(cluster, "load_data", other_text)
    with pytest.raises((SystemExit, threading.BrokenBarrierError)):
        _train_ranks(config, 2)
    err = capsys.readouterr().err.strip().splitlines()
    line = [e for e in err if "rank 1 of 2" in e]
    assert len(line) == 1, err
    assert "is not the text rank 0 trains on" in line[0]
    assert "stopping every rank" in line[0]


def test_checkpoint_bytes_round_trip(tmp_path):
    session.start_training(tiny_config(tmp_path, "r", max_steps=2))
    ckpt = load_checkpoint(tmp_path / "r" / "last.safetensors")
    again = parse_checkpoint(checkpoint_bytes(ckpt), "sent")
    assert again.meta == ckpt.meta and again.vocab == ckpt.vocab
    assert all(again.params[k].tobytes() == ckpt.params[k].tobytes() for k in ckpt.params)


def test_mpiexec_without_the_flag_is_refused(monkeypatch):
    """Every process would otherwise train a run of its own."""
    assert distributed.communicator(None) is distributed.LOCAL
    monkeypatch.setenv("PMI_SIZE", "2")
    assert distributed.launched_ranks() == 2
    with pytest.raises(UserError, match="as 2 processes: add --distributed mpi") as e:
        distributed.communicator("none")
    assert e.value.exit_code == 2
    assert distributed.launched_ranks({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert distributed.launched_ranks({}) == 1


def test_without_mpi4py_the_flag_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    with pytest.raises(UserError, match=r"pip install 'charlstm\[mpi\]'") as e:
        distributed.communicator("mpi")
    assert e.value.exit_code == 2
