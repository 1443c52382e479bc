"""midefend.evaluation."""
