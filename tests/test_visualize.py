"""`charlstm visualize`: the page, its JSON twin, bad input, and the page in a real browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from charlstm import activity, cli
from charlstm.checkpoint import load_checkpoint, save_checkpoint
from charlstm.text import Vocab

TEXT = ('ROMEO:\nShe said "hi (and more)" to me,\nand [so] on.\n\n'
        'JULIET:\nWhat "light" through (yonder) breaks?\n\n') * 12
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """cell -> a run directory of a tiny model trained for a few steps on TEXT."""
    root = tmp_path_factory.mktemp("runs")
    data = root / "corpus.txt"
    data.write_text(TEXT)
    out = {}
    for cell in ("lstm", "gru", "rnn"):
        out[cell] = root / cell
        rc = cli.main(["train", "--data", str(data), "--out", str(out[cell]), "--cell", cell,
                       "--hidden-size", "12", "--num-layers", "2", "--seq-len", "16",
                       "--batch-size", "4", "--max-steps", "30", "--eval-every", "0",
                       "--log-every", "10", "--val-frac", "0.5"])
        assert rc == 0
    return out


def embedded(page: str) -> dict:
    blob = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
    return json.loads(blob.group(1))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_page_and_json_carry_the_library_statistics(runs, tmp_path, charlstm_cli, cell):
    page, stats_path = tmp_path / "page.html", tmp_path / "stats.json"
    rc, out, err = charlstm_cli("visualize", runs[cell], "--chars", 300, "--out", page,
                                "--json", stats_path)
    assert rc == 0, err
    assert "in_quotes" in out and "best cell" in out
    html = page.read_text("utf-8")
    # self-contained: nothing fetched from anywhere
    assert not re.search(r"https?://", html)
    assert not re.search(r"<(link|img|iframe)\b|\bsrc\s*=", html)
    data, stats = embedded(html), json.loads(stats_path.read_text())
    assert data["stats"] == stats
    # the JSON says what charlstm.activity says on the same 300 characters of val split
    ckpt = load_checkpoint(runs[cell] / "last.safetensors")
    vocab = Vocab(ckpt.vocab)
    ids = vocab.encode(TEXT)[len(TEXT) // 2:][:300]
    text = vocab.decode(ids)
    assert data["text"] == text and stats["chars"] == 300
    acts = activity.record(ckpt.params, ckpt.config, ids)
    ranked = activity.rank_cells(acts.signals, activity.text_features(text), top=10)
    for feature, cells in ranked.items():
        got = stats["interesting_cells"][feature]
        assert [(c["layer"], c["signal"], c["unit"]) for c in got[:3]] == \
               [(c.layer, c.signal, c.unit) for c in cells[:3]]
        assert [c["r"] for c in got] == pytest.approx([c.r for c in cells], abs=1e-4)
    gates = [(g["layer"], g["gate"]) for g in stats["saturation"]["gates"]]
    assert gates == {"lstm": [(k, g) for k in (0, 1) for g in "ifo"],
                     "gru": [(k, g) for k in (0, 1) for g in "rz"], "rnn": []}[cell]
    # embedded activations: every signal, 8 bits, within half a step of the truth
    assert [[s["name"] for s in layer] for layer in data["layers"]] == \
           [[s.name for s in layer] for layer in acts.signals]
    s = data["layers"][1][0]
    codes = np.frombuffer(base64.b64decode(s["codes"]), np.uint8).reshape(12, 300).T
    back = activity.dequantise(codes, np.array(s["lo"]), np.array(s["hi"]))
    truth = acts.signals[1][0].values
    assert np.all(np.abs(back - truth) <= (truth.max(0) - truth.min(0)) / 510 + 2e-5)


def test_signals_option_embeds_only_those(runs, tmp_path, charlstm_cli):
    full, small = tmp_path / "full.html", tmp_path / "small.html"
    assert charlstm_cli("visualize", runs["lstm"], "--out", full)[0] == 0
    assert charlstm_cli("visualize", runs["lstm"], "--out", small, "--signals", "h,c")[0] == 0
    data = embedded(small.read_text("utf-8"))
    assert [[s["name"] for s in layer] for layer in data["layers"]] == [["h", "c"]] * 2
    assert data["stats"] == embedded(full.read_text("utf-8"))["stats"]
    assert small.stat().st_size < 0.5 * full.stat().st_size


def strongest(stats: dict, signals: str) -> tuple:
    """(|r|, layer, signal, unit) of the ranked cell with the largest |r| among signals."""
    return max((abs(c["r"]), c["layer"], c["signal"], c["unit"])
               for cells in stats["interesting_cells"].values() for c in cells
               if c["signal"] in signals)


@pytest.mark.parametrize("signals", [None, "h"])
def test_page_opens_on_the_strongest_cell_and_names_no_absolute_path(runs, tmp_path,
                                                                     charlstm_cli, signals):
    page, other = tmp_path / "page.html", tmp_path / "other.txt"
    other.write_text(TEXT[:400])
    assert runs["lstm"].is_absolute() and other.is_absolute()
    extra = [] if signals is None else ["--signals", signals]
    for source in ([], ["--text", other]):  # the training text's split, or a file
        rc, _, err = charlstm_cli("visualize", runs["lstm"], "--out", page, "--force",
                              *source, *extra)
        assert rc == 0, err
        html = page.read_text("utf-8")
        data = embedded(html)
        start = data["start"]
        best = strongest(data["stats"], signals or "hcifgo")
        assert (abs(start["r"]), start["layer"], start["signal"], start["unit"]) == best
        # not merely the first feature's best cell, which the page used to open on
        assert any(abs(cells[0]["r"]) < best[0]
                   for cells in data["stats"]["interesting_cells"].values() if cells)
        for folder in (tmp_path, runs["lstm"], Path(tempfile.gettempdir())):
            assert str(folder) not in html
        assert data["stats"]["checkpoint"] == "lstm/best.safetensors"
        assert data["stats"]["text"] == ("other.txt" if source else "corpus.txt (val split)")


def test_text_file_is_visualized_and_bad_input_is_one_line(runs, tmp_path, charlstm_cli):
    page = tmp_path / "page.html"
    other = tmp_path / "other.txt"
    other.write_text("What light?\n" * 5)
    assert charlstm_cli("visualize", runs["lstm"], "--text", other, "--out", page)[0] == 0
    assert embedded(page.read_text("utf-8"))["text"] == "What light?\n" * 5
    before = page.read_bytes()
    bad = [
        (["--text", other], "already exists; pass --force"),
        (["--text", tmp_path / "missing.txt", "--force"], "no such file"),
        (["--signals", "h,q", "--force"], "--signals: q; an LSTM has h, c, i, f, g, o"),
    ]
    for args, message in bad:
        rc, _, err = charlstm_cli("visualize", runs["lstm"], "--out", page, *args)
        assert rc != 0 and "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("charlstm: error:")
        assert message in err
    assert page.read_bytes() == before  # nothing overwritten by a failed run
    other.write_text("Zebra!\n")  # Z and b are not in the model's vocabulary
    rc, _, err = charlstm_cli("visualize", runs["lstm"], "--text", other,
                              "--out", tmp_path / "z.html")
    assert rc == 2 and "--unknown skip" in err
    rc, _, err = charlstm_cli("visualize", runs["lstm"], "--out", tmp_path / "no" / "p.html")
    assert rc == 2 and "no such directory" in err


def test_training_text_gone_or_unknown_points_at_text(runs, tmp_path, charlstm_cli):
    ckpt = load_checkpoint(runs["lstm"] / "last.safetensors")
    moved = tmp_path / "moved.safetensors"
    ckpt.meta["train_config"]["data"] = str(tmp_path / "gone.txt")
    save_checkpoint(moved, ckpt)
    rc, _, err = charlstm_cli("visualize", moved, "--out", tmp_path / "p.html")
    assert rc != 0 and "training text cannot be found" in err and "pass --text FILE" in err
    del ckpt.meta["train_config"]
    save_checkpoint(moved, ckpt)
    rc, _, err = charlstm_cli("visualize", moved, "--out", tmp_path / "p.html")
    assert rc == 2 and "does not say what it was trained on; pass --text FILE" in err
    assert not (tmp_path / "p.html").exists()


# --------------------------------------------------------------------- in a real browser
def launch_chromium(playwright, profile):
    """Headless Debian chromium: flags for running as root in a container, offline."""
    return playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True,
        viewport={"width": 1300, "height": 900},
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update",
              "--disable-sync"])


def test_page_in_headless_chromium(runs, tmp_path, charlstm_cli):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no browser: {CHROMIUM} is missing (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="Python Playwright is not installed (pip install "
        "playwright, or the 'test' extra)")
    page_path = tmp_path / "page.html"
    assert charlstm_cli("visualize", runs["lstm"], "--out", page_path)[0] == 0
    problems = []
    with sync_api.sync_playwright() as pw, tempfile.TemporaryDirectory() as profile:
        browser = launch_chromium(pw, profile)
        try:
            page = browser.new_page()
            page.on("console", lambda m: m.type in ("error", "warning") and problems.append(
                f"console {m.type}: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("request", lambda r: not r.url.startswith(("file:", "data:")) and
                    problems.append(f"request: {r.url}"))
            page.goto(page_path.as_uri())
            page.wait_for_function("document.querySelectorAll('#text span').length > 0")
            n_chars = len(embedded(page_path.read_text("utf-8"))["text"])
            assert page.locator("#text span").count() == n_chars

            def colours():
                return page.eval_on_selector_all(
                    "#text span", "els => els.map(e => e.style.backgroundColor)")

            first = colours()
            assert all(first) and len(set(first)) > 5  # coloured, and not all alike
            # it opens on the strongest cell; the arrow keys step through units
            start = embedded(page_path.read_text("utf-8"))["start"]
            assert page.input_value("#unit") == str(start["unit"])
            assert page.input_value("#signal") == start["signal"]
            step = 1 if start["unit"] < 11 else -1
            page.keyboard.press("ArrowRight" if step == 1 else "ArrowLeft")
            assert page.input_value("#unit") == str(start["unit"] + step)
            assert colours() != first
            page.keyboard.press("ArrowLeft" if step == 1 else "ArrowRight")
            assert page.input_value("#unit") == str(start["unit"]) and colours() == first
            # pick a different cell with the controls: layer 1, signal c, unit 5
            page.select_option("#layer", "1")
            page.select_option("#signal", "c")
            page.fill("#unit", "5")
            page.press("#unit", "Enter")
            second = colours()
            assert sum(a != b for a, b in zip(first, second)) > n_chars // 2
            # one click on an interesting cell selects it
            button = page.locator("button.cell").first
            button.click()
            assert "selected" in button.get_attribute("class")
            assert colours() != second
            # hovering a character shows the next-character predictions
            page.hover("#text span >> nth=10")
            assert page.locator("#tip").is_visible()
            assert "next-character guesses" in page.inner_text("#tip")
            assert page.locator("#tip tr").count() == 5
            # the tip names the selected unit, and follows a change of it (by a key here)
            layer, signal, unit = (page.input_value(f"#{k}") for k in ("layer", "signal", "unit"))
            assert page.inner_text("#tipcell") == f"layer {layer} {signal}[{unit}]"
            key, step = ("ArrowRight", 1) if int(unit) < 11 else ("ArrowLeft", -1)
            page.keyboard.press(key)
            assert page.inner_text("#tipcell") == f"layer {layer} {signal}[{int(unit) + step}]"
            # a saturation dot selects its gate unit
            page.locator("svg circle").first.dispatch_event("click")
            assert page.input_value("#signal") in "ifo"
            shot = tmp_path / "visualize.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            keep = Path(tempfile.gettempdir()) / "charlstm-visualize-test.png"
            shutil.copy(shot, keep)  # for a human to look at after the run
        finally:
            browser.close()
    assert problems == []
