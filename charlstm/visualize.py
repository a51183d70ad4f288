"""The `charlstm visualize` page and report: charlstm.activity's numbers, packed.

Shape legend: N characters, L layers, H hidden units, V vocab, K top predictions.

report() gathers the statistics as plain JSON values (the --json output); page()
embeds them, the text and every activation (8-bit codes, base64) in the HTML
template visualize.html next to this file, which draws everything with vanilla
JavaScript: one self-contained file, no network.
"""

from __future__ import annotations

import base64
import json
import math
from importlib import resources

import numpy as np

from . import activity
from .config import ModelConfig

TOP_PREDICTIONS = 5
BITS = 8


def _round(values, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in values]


def report(acts: activity.Activations, text: str, ids: np.ndarray, config: ModelConfig,
           top: int = 10) -> dict:
    """The statistics of a run over text (N characters, ids (N,)) as JSON values:
    interesting cells per feature, gate saturation per layer, loss on the text."""
    features = activity.text_features(text)
    ranked = activity.rank_cells(acts.signals, features, top)
    saturation = []
    for k, layer in enumerate(acts.signals):
        for s in layer:
            if s.kind == "gate":
                left, right = activity.saturation(s.values)
                saturation.append({"layer": k, "gate": s.name, "left": _round(left),
                                   "right": _round(right)})
    # each position predicts the next character; the last one has no target
    scored = acts.probs[np.arange(len(ids) - 1), ids[1:]]
    loss = float(-np.log(np.maximum(scored, 1e-30)).mean()) if len(ids) > 1 else math.nan
    return {
        "model": config.to_dict(),
        "chars": len(text),
        "loss_nats_per_char": round(loss, 4),
        "signals": [{"name": s.name, "kind": s.kind} for s in acts.signals[0]],
        "features": activity.FEATURES,
        "interesting_cells": {name: [c._asdict() | {"r": round(c.r, 4)} for c in cells]
                              for name, cells in ranked.items()},
        "saturation": {"low": activity.SATURATION_LOW, "high": activity.SATURATION_HIGH,
                       "gates": saturation},
    }


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def page_data(acts: activity.Activations, text: str, ids: np.ndarray, vocab: list[str],
              stats: dict, title: str, signals: list[str] | None = None) -> dict:
    """Everything the page shows, opening on strongest_cell(). Activations are
    quantised per unit to 8 bits and stored unit-major, (H, N) per layer and signal,
    so one unit is one slice; only the signals named in `signals` (default all) are
    embedded, at N*L*H bytes each (4/3 that in base64): they are most of the page."""
    layers = []
    for layer in acts.signals:
        packed = []
        for s in layer:
            if signals is not None and s.name not in signals:
                continue
            codes, lo, hi = activity.quantise(s.values, BITS)
            packed.append({"name": s.name, "kind": s.kind, "lo": _round(lo, 5),
                           "hi": _round(hi, 5), "codes": _b64(codes.T)})
        layers.append(packed)
    embedded = [{s["name"] for s in layer} for layer in layers]
    top_ids, top_p = activity.top_predictions(acts.probs, TOP_PREDICTIONS)
    following = np.append(ids[1:], ids[-1])  # the last character has no successor
    actual = acts.probs[np.arange(len(ids)), following]
    return {
        "title": title,
        "text": text,
        "vocab": vocab,
        "bits": BITS,
        "layers": layers,
        "top_ids": _b64(top_ids.astype(np.uint16)),
        "top_p": _b64(np.rint(top_p * 1000).astype(np.uint16)),  # per mille
        "next_p": _b64(np.rint(actual * 1000).astype(np.uint16)),
        "stats": stats,
        "start": strongest_cell(stats["interesting_cells"], embedded),
    }


def strongest_cell(ranked: dict, embedded: list[set[str]]) -> dict | None:
    """The cell the page opens on: of the ranked cells (report()'s interesting_cells)
    whose signal is on the page (embedded: per layer, the signal names), the one with
    the largest |r|, the first on a tie; None when no feature ranked any. A feature's
    best alone can be its weakest match, far below another feature's."""
    cells = [c for found in ranked.values() for c in found if c["signal"] in embedded[c["layer"]]]
    if not cells:
        return None
    best = max(cells, key=lambda c: abs(c["r"]))  # max keeps the first of equals
    return {k: best[k] for k in ("layer", "signal", "unit", "r")}


def page(data: dict) -> str:
    """The self-contained HTML page for page_data()."""
    template = resources.files("charlstm").joinpath("visualize.html").read_text("utf-8")
    # "</" could close the <script> element holding the data; JSON allows "<\/".
    blob = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    return template.replace("/*DATA*/null", blob, 1)
