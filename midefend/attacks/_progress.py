"""One rich progress bar helper shared by the attacks and the prior trainer.

On a terminal: a transient rich bar. Not a terminal (a log, CI, ``| tee``): a live bar prints nothing, so a
plain line is written at the start, then at most every :data:`LOG_EVERY_S` seconds, and at the end.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

#: Seconds between two progress lines when stderr is not a terminal.
LOG_EVERY_S = 15.0


@contextlib.contextmanager
def progress_bar(enabled: bool, description: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n=1)``; draws a transient rich bar on stderr when ``enabled``, nothing otherwise."""
    if not enabled:
        yield lambda n=1: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield _log_lines(console, description, total)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def _log_lines(console, description: str, total: int) -> Callable[[int], None]:
    start = last = time.perf_counter()
    state = {"done": 0, "ended": False}
    console.print(f"{description}: 0/{total}", highlight=False, soft_wrap=True)

    def advance(n: int = 1) -> None:
        nonlocal last
        state["done"] += n
        now = time.perf_counter()
        end = state["done"] >= total and not state["ended"]
        if end or (now - last >= LOG_EVERY_S and not state["ended"]):
            last, state["ended"] = now, end
            console.print(f"{description}: {state['done']}/{total} ({now - start:.0f} s)", highlight=False, soft_wrap=True)

    return advance
