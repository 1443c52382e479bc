"""midefend.data."""
