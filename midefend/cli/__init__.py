"""The ``midefend`` command: each subcommand lives in its own module and registers on ``app``."""

from __future__ import annotations

from ._common import app

# Importing the command modules registers their subcommands on ``app``.
from . import checkpoint_cmds as _checkpoint_cmds  # noqa: F401,E402  inspect, harden
from . import prior_cmd as _prior_cmd  # noqa: F401,E402  prior adapt
from . import review_cmd as _review_cmd  # noqa: F401,E402  review
from . import train_cmd as _train_cmd  # noqa: F401,E402  train
from . import tune_cmd as _tune_cmd  # noqa: F401,E402  tune
from . import verify_cmds as _verify_cmds  # noqa: F401,E402  verify, compare, demo


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
