"""What a training run shows while it works, and how it is stopped politely.

Progress: a tqdm bar when stderr is a terminal, and one plain line per logged step
on stdout when stdout is not one (a log file, a pipe, CI, nohup), or when there is
no bar. StopSignals: the first Ctrl-C, SIGTERM or SIGHUP (a closed terminal; not
under nohup) asks the loop to finish its step and save; a second one stops at
once. echo: a line to stdout that outlives its reader: when the pipe is closed
(`charlstm train ... | head`) or the terminal is gone, output is dropped and
training goes on (log.jsonl still records every logged step).
"""

from __future__ import annotations

import os
import signal
import sys

# How a validation line marks a pass that set a new best (and so wrote best.safetensors).
NEW_BEST = ", new best"


def format_duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def clock_text(elapsed: float, budget_s: float | None) -> str:
    """The run's clock (summed over resumes): '0:01:23', or with a time budget
    '0:01:23/0:05:00, 0:03:37 left'."""
    if budget_s is None:
        return format_duration(elapsed)
    left = format_duration(max(0.0, budget_s - elapsed))
    return f"{format_duration(elapsed)}/{format_duration(budget_s)}, {left} left"


def silence_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and Python would otherwise fail
    again flushing it at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def echo(text: str) -> None:
    """print(text) to stdout; if nobody reads it any more (EPIPE from a closed pipe, EIO
    from a hung-up terminal), drop this and all later output instead of failing."""
    try:
        print(text, flush=True)
    except OSError:
        silence_stdout()


class Progress:
    """A tqdm bar when stderr is a terminal; one plain line per logged step on stdout
    when stdout is a file or pipe (`train > train.log` from a terminal gets both: the bar
    on screen, the lines in the file) or when there is no bar."""

    def __init__(self, total: int | None, initial: int, say=echo,
                 budget_s: float | None = None, elapsed: float = 0.0, bar_file=None):
        """say(text) prints a line (echo for the CLI); None: a silent run, no bar either.
        total: the run's steps, if a limit fixes them; else a budget_s (--time-budget in
        seconds) makes the bar one of time. elapsed: the run's clock at initial (a resumed
        run's own, not this session's). bar_file: where the bar goes (default: stderr when
        it is a terminal, else no bar)."""
        self.say = say
        self.bar = None
        self.step = initial
        self.budget_s = budget_s
        self.by_time = total is None and budget_s is not None
        if bar_file is None and say is not None and sys.stderr.isatty():
            bar_file = sys.stderr
        if bar_file is not None:
            from tqdm import tqdm
            # tqdm's own clock restarts with each session: the run's clock is the desc
            if self.by_time:
                kind = dict(total=budget_s, initial=min(elapsed, budget_s), unit="s",
                            bar_format="{percentage:3.0f}%|{bar}| {desc}{postfix}")
            else:
                kind = dict(total=total, initial=initial, unit="step", bar_format=(
                    "{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{desc}<{remaining}, "
                    "{rate_fmt}{postfix}]" if total else None))
            self.bar = tqdm(dynamic_ncols=True, file=bar_file, **kind)
            self._describe(initial, elapsed)
        self.total = total
        self.plain = self.bar is None or not sys.stdout.isatty()

    def _describe(self, step: int, elapsed: float) -> None:
        text = (f"{clock_text(elapsed, self.budget_s)}, step {step}" if self.by_time
                else format_duration(elapsed))  # tqdm's own ETA follows it
        self.bar.set_description_str(text, refresh=False)

    def update(self, elapsed: float | None = None) -> None:
        """One step done; elapsed: the run's clock after it (None: not shown)."""
        self.step += 1
        if self.bar is None:
            return
        if elapsed is not None:
            self._describe(self.step, elapsed)
        if self.by_time:
            self.bar.update(min(elapsed or self.bar.n, self.budget_s) - self.bar.n)
        else:
            self.bar.update(1)

    def record(self, rec: dict, best: bool = False) -> None:
        """A log record as a line; best: its validation pass set a new best."""
        if self.say is None:
            return
        if self.bar is not None:
            post = {"loss": f"{rec['train_loss']:.4f}", "bpc": f"{rec['train_bpc']:.3f}",
                    "chars/s": f"{rec['chars_per_s']:,.0f}"}
            self.bar.set_postfix(post, refresh=False)
            if not self.plain and rec["val_loss"] is not None:  # val history on screen
                self.line(f"step {rec['step']}: val loss {rec['val_loss']:.4f} nats "
                          f"({rec['val_bpc']:.3f} bpc{NEW_BEST if best else ''}), train "
                          f"{rec['train_loss']:.4f}")
        if not self.plain:
            return
        of = f"/{self.total}" if self.total else ""
        val = "" if rec["val_loss"] is None else (
            f" | val {rec['val_loss']:.4f} ({rec['val_bpc']:.3f} bpc{NEW_BEST if best else ''})")
        self.line(f"step {rec['step']}{of} | epoch {rec['epoch']:.2f} | loss "
                  f"{rec['train_loss']:.4f} nats ({rec['train_bpc']:.3f} bpc){val} | lr "
                  f"{rec['lr']:.2e} | grad norm {rec['grad_norm']:.2f} | "
                  f"{rec['chars_per_s']:,.0f} chars/s | "
                  f"{clock_text(rec['elapsed_s'], self.budget_s)}")

    def line(self, text: str) -> None:
        if self.say is None:
            return
        if self.bar is not None:
            try:
                self.bar.write(text, file=sys.stdout)
            except OSError:
                silence_stdout()
        else:
            self.say(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class StopSignals:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP (the terminal closed) ask training to stop
    after the current step and save; a second signal stops at once (KeyboardInterrupt;
    the atomic writes still leave every file whole). A SIGHUP that the process was
    started ignoring (nohup, setsid-style launchers) stays ignored: the user asked for
    the run to outlive its terminal."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    KEEP_IGNORED = (signal.SIGHUP,)

    def __init__(self, progress: Progress):
        self.received: int | None = None
        self.progress = progress
        self.previous = {}

    def __enter__(self) -> StopSignals:
        try:
            for s in self.SIGNALS:
                if s in self.KEEP_IGNORED and signal.getsignal(s) == signal.SIG_IGN:
                    continue
                self.previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self.previous.clear()
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum
        self.progress.line(f"charlstm: {signal.Signals(signum).name} received: saving a "
                           "checkpoint after this step (send it again to quit at once)")

    def __call__(self) -> bool:
        return self.received is not None
