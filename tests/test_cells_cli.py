"""`--cell gru` and `--cell rnn` through the whole tool: train, resume, sample, export."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from charlstm.checkpoint import load_checkpoint

TEXT = "".join(f"verse {i}: so shaken as we are, so wan with care.\n" for i in range(40))
TINY = ["--hidden-size", "8", "--num-layers", "2", "--dropout", "0.1", "--seq-len", "8",
        "--batch-size", "2", "--log-every", "2", "--eval-every", "3"]


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_cell_trains_resumes_samples_evaluates_and_exports(cell, tmp_path, charlstm_cli):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    common = ["--data", corpus, "--cell", cell, *TINY]
    charlstm_cli.ok("train", *common, "--out", tmp_path / "straight", "--max-steps", 8)
    charlstm_cli.ok("train", *common, "--out", tmp_path / "resumed", "--max-steps", 4)
    charlstm_cli.ok("train", "--resume", tmp_path / "resumed", "--max-steps", 8)

    a = load_checkpoint(tmp_path / "straight/last.safetensors")
    b = load_checkpoint(tmp_path / "resumed/last.safetensors")
    assert a.meta["step"] == b.meta["step"] == 8
    assert {k.split(".")[0] for k in a.params} == {cell, "decoder"}
    assert set(a.params) == set(b.params)
    for k in a.params:  # straight == stopped + resumed, bit for bit
        assert a.params[k].tobytes() == b.params[k].tobytes(), k
    for k in a.arrays:
        assert a.arrays[k].tobytes() == b.arrays[k].tobytes(), k

    first = charlstm_cli.ok("sample", tmp_path / "straight", "--length", 30, "--seed", 3,
                "--prime", "so ")
    again = charlstm_cli.ok("sample", tmp_path / "straight", "--length", 30, "--seed", 3,
                "--prime", "so ")
    assert first == again and len(first.strip()) >= 30

    out = tmp_path / "model.safetensors"
    charlstm_cli.ok("export", tmp_path / "straight/last.safetensors", out)
    sd = load_file(str(out))  # CharRNN loads these (tests/test_interop_torch.py)
    assert set(sd) == set(a.params)
    for k, v in a.params.items():
        np.testing.assert_array_equal(sd[k], v)
