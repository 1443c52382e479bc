"""midefend.attacks."""
