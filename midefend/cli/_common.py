"""Shared CLI plumbing: the typer app, console, and the one-line error policy.

Every command module registers itself on :data:`app`. Errors that midefend
anticipates (:class:`~midefend.errors.MidefendError`) end as a single line on
stderr and exit code 1; ``midefend --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Any, Callable, TypeVar

import typer
from rich.console import Console

from .. import __version__
from ..errors import MidefendError

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="midefend",
    help="Harden image classifiers against model inversion, and verify the effect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


def _version_callback(value: bool) -> None:
    if value:
        console.print(f"midefend {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    """midefend command-line interface."""
    _state["debug"] = debug


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on one line to stderr and return an Exit(1) to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=1)


def handle_errors(func: F) -> F:
    """Turn anticipated errors into a one-line message and exit code 1 (unless --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (MidefendError, OSError) as exc:
            if _state["debug"]:
                raise
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise fail(f"{message}") from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def is_debug() -> bool:
    return bool(_state["debug"])


__all__ = ["app", "console", "err_console", "fail", "handle_errors", "is_debug", "sys"]
