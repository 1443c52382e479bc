"""midefend's own small networks for low-resolution data (registered as ``midefend/<name>``)."""

from __future__ import annotations
