"""`charlstm train --preset NAME`: the packaged recipes load, and resolve as
defaults <- preset <- --config <- flags."""

from __future__ import annotations

from dataclasses import fields

import pytest

from charlstm.config import TrainConfig, load_toml
from charlstm.presets import NOT_IN_PRESETS, PRESETS, load_preset, preset_path

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(40))
TINY = ["--hidden-size", "8", "--num-layers", "2", "--seq-len", "8", "--batch-size", "2",
        "--log-every", "2", "--eval-every", "0", "--max-steps", "2"]


@pytest.mark.parametrize("name", list(PRESETS))
def test_each_preset_is_a_complete_recipe_for_its_budget(name):
    settings = load_preset(name)
    config = TrainConfig.from_dict(settings)
    assert not set(settings) & set(NOT_IN_PRESETS)  # the corpus and the run dir are the user's
    assert config.time_budget == {"small": 5, "medium": 20, "large": 120}[name]
    assert config.max_steps is None and config.epochs is None  # the schedule follows time
    # every regulariser the recipe uses is spelled out, not left to a default
    for key in ("hidden_size", "num_layers", "batch_size", "seq_len", "lr"):
        assert key in settings, (name, key)
    assert preset_path(name).read_text(encoding="utf-8").startswith("#")  # says what it is


def test_unknown_preset_is_a_value_error():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        load_preset("huge")


def test_preset_then_config_then_flags(tmp_path, charlstm_cli):
    corpus = tmp_path / "c.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    preset = load_preset("medium")
    cfg = tmp_path / "over.toml"
    cfg.write_text("lr = 0.01\n", encoding="utf-8")
    charlstm_cli.ok("train", "--preset", "medium", "--config", cfg, "--data", corpus,
                    "--out", tmp_path / "r", *TINY)
    saved = load_toml(tmp_path / "r/config.toml")
    assert (saved["hidden_size"], saved["lr"], saved["max_steps"]) == (8, 0.01, 2)  # flags, file
    untouched = set(preset) - {"hidden_size", "num_layers", "seq_len", "batch_size",
                               "eval_every", "lr", "log_every"}
    assert untouched and all(saved[k] == preset[k] for k in untouched)
    known = {f.name for f in fields(TrainConfig)}
    assert set(saved) <= known


def test_preset_errors_are_one_line(tmp_path, charlstm_cli):
    assert "invalid choice: 'huge'" in charlstm_cli.error("train", "--preset", "huge")
    assert "drop --config/--preset/--force" in charlstm_cli.error(
        "train", "--resume", tmp_path, "--preset", "small")
