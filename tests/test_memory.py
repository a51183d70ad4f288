"""Memory as the kernel sees it: the smallest of MemAvailable, the cgroup limit (v2 and
v1) and RLIMIT_AS; estimates that count the corpus and the sampler's buffers; and a
MemoryError that still happens is one line naming what to lower, exit 1. The kernel's
files are fakes under tmp_path (resources reads them from module-level paths)."""

from __future__ import annotations

import resource

import pytest
import test_faults
from test_faults import one_line, run_cli
from test_train_cli import TINY

from charlstm import resources
from charlstm.commands import sample as sample_command
from charlstm.config import ModelConfig

corpus, trained = test_faults.corpus, test_faults.trained  # the fixtures, shared
GB = 10**9


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    """A fake /proc and /sys/fs/cgroup: 8 GB available, no limits, VmSize 1 GiB."""
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(f"MemTotal: 99 kB\nMemAvailable: {8 * GB // 1024} kB\n")
    (proc / "cgroup").write_text("0::/job\n")
    (proc / "status").write_text(f"Name: python\nVmSize: {2**30 // 1024} kB\n")
    root = tmp_path / "cgroup"
    (root / "job").mkdir(parents=True)
    (root / "memory").mkdir()
    for name, value in (("MEMINFO", "meminfo"), ("SELF_CGROUP", "cgroup"),
                        ("SELF_STATUS", "status")):
        monkeypatch.setattr(resources, f"PROC_{name}", str(proc / value))
    monkeypatch.setattr(resources, "CGROUP_ROOT", str(root))
    monkeypatch.setattr(resources.resource, "getrlimit",
                        lambda which: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    return root


def test_memavailable_alone(kernel):
    assert resources.available_memory() == (8 * GB // 1024 * 1024, "memory available")


def test_a_cgroup_v2_limit_of_this_process_lowers_it(kernel):
    (kernel / "job" / "memory.max").write_text(f"{3 * GB}\n")
    (kernel / "job" / "memory.current").write_text(f"{GB}\n")
    (kernel / "memory.max").write_text("max\n")  # the root: no limit
    assert resources.available_memory() == (2 * GB, "room under the container's memory limit")


def test_a_cgroup_v1_limit_lowers_it_and_no_limit_is_ignored(kernel):
    (kernel / "memory" / "memory.limit_in_bytes").write_text(f"{5 * GB}\n")
    (kernel / "memory" / "memory.usage_in_bytes").write_text(f"{GB}\n")
    assert resources.available_memory()[0] == 4 * GB
    (kernel / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert resources.available_memory()[1] == "memory available"


def test_rlimit_as_lowers_it(kernel, monkeypatch):
    """`ulimit -v 3145728` (kB): 3 GiB of address space, 1 GiB of it already used."""
    monkeypatch.setattr(resources.resource, "getrlimit", lambda which: (3 * 2**30, 3 * 2**30))
    assert resources.available_memory() == (
        2 * 2**30, "room under the address-space limit (ulimit -v)")


def have(monkeypatch, n: int) -> None:
    monkeypatch.setattr(resources, "available_memory", lambda: (n, "memory available"))


def test_the_training_estimate_counts_the_corpus(monkeypatch):
    config = ModelConfig(vocab_size=50, hidden_size=8)
    model = resources.training_bytes(config, "adam", 2, 8)
    have(monkeypatch, model + 1000)
    resources.check_fits(config, "adam", 2, 8, corpus_chars=10)  # fits
    with pytest.raises(resources.UserError, match="and the text.*or a shorter text"):
        resources.check_fits(config, "adam", 2, 8, corpus_chars=1000)


def test_a_text_too_big_to_read_is_refused_before_reading(tmp_path, corpus, capsys,
                                                          monkeypatch):
    have(monkeypatch, 1000)  # the corpus is 2 KB: 24 bytes per byte do not fit
    rc, _, err = run_cli(capsys, "train", "--data", corpus, "--out", tmp_path / "r", *TINY)
    line = one_line(err)
    assert rc == 2 and f"the text {corpus} (2.1 KB) needs about" in line
    assert "to read and encode for training" in line and "use a shorter text" in line
    assert "charlstm prepare TEXT --out DIR" in line
    assert not (tmp_path / "r").exists()


def test_several_texts_are_counted_together(tmp_path, corpus, capsys, monkeypatch):
    size = corpus.stat().st_size
    have(monkeypatch, int(resources.LOAD_BYTES_PER_BYTE * size * 1.5))  # one fits, not two
    rc, _, err = run_cli(capsys, "train", "--data", corpus, corpus, "--out", tmp_path / "r",
                         *TINY)
    assert rc == 2 and "the text of 2 files (" in one_line(err)
    assert not (tmp_path / "r").exists()


def test_sampling_too_many_streams_is_refused_up_front(trained, capsys, monkeypatch):
    """As `--num-samples 100000000` on a real machine, at a size that is harmless should
    the estimate ever stop refusing it: 2,000 streams against a 1 MB machine."""
    have(monkeypatch, 10**6)
    rc, _, err = run_cli(capsys, "sample", trained, "--num-samples", 2000, "--seed", 1)
    line = one_line(err)
    assert rc == 2 and "drawing 2,000 samples of 500 characters side by side" in line
    assert "more than the 1.0 MB" in line and "lower --num-samples or --length" in line
    assert resources.sampling_bytes(ModelConfig(vocab_size=65, hidden_size=512), 10**8,
                                    500, 1) > 10**12  # the case: over a terabyte


def test_a_memory_error_that_still_happens_is_one_line(trained, capsys, monkeypatch):
    def exhausted(*args, **kwargs):
        raise MemoryError("Unable to allocate 74.5 GiB for an array with shape "
                          "(100000000, 100) and data type float64")
    monkeypatch.setattr(sample_command, "sample_texts", exhausted)
    rc, out, err = run_cli(capsys, "sample", trained, "--num-samples", 3, "--seed", 1)
    line = one_line(err)
    assert rc == 1 and "out of memory (Unable to allocate 74.5 GiB" in line
    assert "charlstm sample; lower --num-samples or --length" in line and out == ""
