"""midefend.io."""
