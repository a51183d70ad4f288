"""`--cell gru` and `--cell rnn` through the whole tool: train, resume, sample, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from charlstm.checkpoint import load_checkpoint
from charlstm.cli import main
from charlstm.interop.torch import CharRNN

TEXT = "".join(f"verse {i}: so shaken as we are, so wan with care.\n" for i in range(40))
TINY = ["--hidden-size", "8", "--num-layers", "2", "--dropout", "0.1", "--seq-len", "8",
        "--batch-size", "2", "--log-every", "2", "--eval-every", "3"]


def run(capsys, *args) -> str:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_cell_trains_resumes_samples_evaluates_and_exports(cell, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    common = ["--data", corpus, "--cell", cell, *TINY]
    run(capsys, "train", *common, "--out", tmp_path / "straight", "--max-steps", 8)
    run(capsys, "train", *common, "--out", tmp_path / "resumed", "--max-steps", 4)
    run(capsys, "train", "--resume", tmp_path / "resumed", "--max-steps", 8)

    a = load_checkpoint(tmp_path / "straight/last.safetensors")
    b = load_checkpoint(tmp_path / "resumed/last.safetensors")
    assert a.meta["step"] == b.meta["step"] == 8
    assert {k.split(".")[0] for k in a.params} == {cell, "decoder"}
    assert set(a.params) == set(b.params)
    for k in a.params:  # straight == stopped + resumed, bit for bit
        assert a.params[k].tobytes() == b.params[k].tobytes(), k
    for k in a.arrays:
        assert a.arrays[k].tobytes() == b.arrays[k].tobytes(), k

    first = run(capsys, "sample", tmp_path / "straight", "--length", 30, "--seed", 3,
                "--prime", "so ")
    again = run(capsys, "sample", tmp_path / "straight", "--length", 30, "--seed", 3,
                "--prime", "so ")
    assert first == again and len(first.strip()) >= 30

    out = tmp_path / "model.safetensors"
    run(capsys, "export", tmp_path / "straight/last.safetensors", out)
    sd = load_file(str(out))
    module = CharRNN(a.params["decoder.weight"].shape[0], 8, 2, cell)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    for k, v in a.params.items():
        np.testing.assert_array_equal(sd[k], v)
