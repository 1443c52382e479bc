"""A rich progress bar for training: one bar per stage, the last epoch's numbers beside it.

Shown on stderr, so a command's stdout stays clean for results. Disabled, it
does nothing (tests, library use with ``progress=False``). When stderr is not a
terminal (a log, CI, ``| tee``) a live bar would print nothing until the end, so
each epoch is one plain line instead (``train    epoch 3/5  loss ...``).

>>> with TrainingProgress(enabled=False) as bar:
...     bar.start_stage("train", 2)
...     bar.update({"stage": "train", "epoch": 1, "loss": 0.5, "train_accuracy": 0.9, "confidence": 0.8})
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def describe_epoch(row: dict[str, Any]) -> str:
    """``loss 0.123  acc 95.0%  p_y 0.91  test 93.3%`` for one history row."""
    text = f"loss {row['loss']:.3f}  acc {row['train_accuracy']:.1%}  p_y {row['confidence']:.2f}"
    if "test_accuracy" in row:
        text += f"  test {row['test_accuracy']:.1%}"
    return text


class TrainingProgress:
    """Context manager around :class:`rich.progress.Progress` (see the module docstring)."""

    def __init__(self, *, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: Any = None
        self._console = console
        self._lines: Console | None = None  # not a terminal: one line per epoch
        self._stage, self._epochs, self._done = "", 0, 0

    def __enter__(self) -> TrainingProgress:
        if self.enabled:
            console = self._console or Console(stderr=True)
            if not console.is_terminal:
                self._lines = console
                return self
            self._progress = Progress(
                TextColumn("[bold]{task.description:<8}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=console,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def start_stage(self, name: str, epochs: int, done: int = 0) -> None:
        """A new bar for stage ``name`` of ``epochs`` epochs, ``done`` of them already (resumed)."""
        self._stage, self._epochs, self._done = name, epochs, done
        if self._progress is not None:
            self._task = self._progress.add_task(name, total=epochs, completed=done, metrics="")

    def update(self, row: dict[str, Any]) -> None:
        if self._lines is not None:
            self._done += 1
            self._lines.print(f"{self._stage:<8} epoch {self._done}/{self._epochs}  {describe_epoch(row)}", highlight=False, soft_wrap=True)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=1, metrics=describe_epoch(row))


__all__ = ["TrainingProgress", "describe_epoch"]
