"""Figures of a training run's log (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # before pyplot: render to files on any machine, no display
import matplotlib.pyplot as plt  # noqa: E402

from .layers import LN2  # noqa: E402


def _series(records: list[dict], x_key: str, y_key: str, scale: float = 1.0):
    """(xs, ys) of the records that have a finite number under both keys."""
    pairs = [(r[x_key] * scale, r[y_key]) for r in records
             if isinstance(r.get(x_key), (int, float)) and isinstance(r.get(y_key), (int, float))
             and math.isfinite(r[y_key])]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _time_unit(seconds: float) -> tuple[str, float]:
    if seconds >= 2 * 3600:
        return "hours", 1 / 3600
    if seconds >= 120:
        return "minutes", 1 / 60
    return "seconds", 1.0


def loss_figure(records: list[dict], title: str):
    """Train and val loss (nats/char, with bits/char on the right axis) against
    step (left panel) and elapsed training time (right panel)."""
    end = max((r.get("elapsed_s") or 0.0 for r in records), default=0.0)
    unit, scale = _time_unit(end)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True, layout="constrained")
    for ax, (x_key, x_scale, x_label) in zip(
            axes, [("step", 1.0, "step"), ("elapsed_s", scale, f"training time ({unit})")]):
        xs, ys = _series(records, x_key, "train_loss", x_scale)
        ax.plot(xs, ys, color="tab:blue", lw=1.2, label="train")
        xs, ys = _series(records, x_key, "val_loss", x_scale)
        ax.plot(xs, ys, color="tab:orange", lw=1.5, marker="o", ms=3.5, label="val")
        if ys:
            i = min(range(len(ys)), key=ys.__getitem__)
            ax.plot([xs[i]], [ys[i]], marker="*", ms=14, color="tab:red", ls="none",
                    label=f"best val {ys[i]:.4f} ({ys[i] / LN2:.3f} bpc)")
        ax.set_xlabel(x_label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right")
    axes[0].set_ylabel("loss (nats/char)")
    right = axes[1].secondary_yaxis("right", functions=(lambda n: n / LN2, lambda b: b * LN2))
    right.set_ylabel("bits/char")
    fig.suptitle(title)
    return fig


def png_bytes(fig, dpi: int = 120) -> bytes:
    """The figure as PNG bytes (written by the caller atomically), figure closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
