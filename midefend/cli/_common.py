"""Shared CLI plumbing: the typer app, console, and the one-line error policy.

Every command module registers itself on :data:`app`. Errors that midefend
anticipates (:class:`~midefend.errors.MidefendError`) end as a single line on
stderr and exit code 1; ``midefend --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

try:  # typer >= 0.24 vendors click as typer._click; older typer uses click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from .._version import __version__
from ..errors import ConfigError, MidefendError

F = TypeVar("F", bound=Callable[..., Any])

#: The built-in defense names, for help texts: ``--help`` must not import the recipes (and torch) to list them.
#: tests/test_cli_common.py checks this equals ``midefend.training.recipes.list_defenses()``.
BUILTIN_DEFENSES = ("nodef", "midre", "calor", "midre+calor", "nls", "mid", "bido", "tl")
#: The built-in face recognisers (``--eval-model facenet``), likewise (``registered_recognisers()``).
BUILTIN_RECOGNISERS = ("facenet", "dlib")

class _OneLineErrorGroup(TyperGroup):
    """Usage errors as one ``error:`` line and exit code 2.

    The exit-code policy of every command: 2 when the command line is wrong (unknown command or
    option, missing or malformed value, an input path that does not exist -- click checks those
    before the command runs); 1 for anticipated errors while running (a corrupt or mismatched
    file, bad data, a missing output folder); 130 on Ctrl-C. Click's default prints a usage block
    (typer: a boxed panel); a user piping midefend into a script wants one line.
    """

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_exceptions.NoArgsIsHelpError as exc:
            print(exc.ctx.get_help())
            sys.exit(2)
        except click_exceptions.UsageError as exc:
            hint = ""
            if exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            err_console.print(f"[bold red]error:[/] {exc.format_message()}{hint}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except click_exceptions.ClickException as exc:
            err_console.print(f"[bold red]error:[/] {exc.format_message()}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            err_console.print("[yellow]aborted[/]")
            sys.exit(1)
        # Without standalone mode click returns an Exit's code instead of exiting.
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    name="midefend",
    cls=_OneLineErrorGroup,
    help="Harden image classifiers against model inversion, and verify the effect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Not a terminal (a log, CI, `| tee`): rich would wrap tables at 80 columns and cut cells ("stronge…");
# a wide console keeps every value whole. A terminal keeps its own width.
_LOG_WIDTH = 240
console = Console() if sys.stdout.isatty() else Console(width=_LOG_WIDTH)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=_LOG_WIDTH)
_state: dict[str, Any] = {"debug": False, "arch_modules": False}


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
    arch_module: Annotated[
        Optional[list[str]],
        typer.Option("--arch-module", help="Import this module first, so the architectures it registers load (repeatable)."),
    ] = None,
) -> None:
    """midefend command-line interface."""
    _state["debug"] = debug
    _state["arch_modules"] = bool(arch_module)
    if arch_module:
        from ..architectures import import_architecture_modules

        try:
            import_architecture_modules(arch_module)
        except MidefendError as exc:
            if debug:
                raise
            raise fail(str(exc)) from None


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


def check_defense(name: str) -> None:
    """Refuse an unknown defense name before anything heavy is imported (a built-in name needs no import)."""
    if name in BUILTIN_DEFENSES:
        return
    if not _state["arch_modules"]:  # nothing but the built-ins can be registered: the registry's own message
        raise ConfigError(f"unknown defense {name!r}; known defenses: {', '.join(sorted(BUILTIN_DEFENSES))}")
    from ..training.recipes import get_defense  # a defense an --arch-module registered, or the one-line error

    get_defense(name)


def is_debug() -> bool:
    return bool(_state["debug"])


__all__ = ["BUILTIN_DEFENSES", "BUILTIN_RECOGNISERS", "app", "check_defense", "console", "err_console", "fail", "handle_errors", "is_debug", "sys"]
