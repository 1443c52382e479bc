"""CLI commands (see midefend.cli)."""
