"""midefend.defenses."""
