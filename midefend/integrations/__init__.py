"""Optional integrations with training frameworks (each module imports its framework lazily).

- :mod:`midefend.integrations.lightning`: PyTorch Lightning callbacks (``pip install 'midefend[lightning]'``).
"""
