"""Optional integrations with training frameworks (each module imports its framework lazily).

- :mod:`midefend.integrations.lightning`: PyTorch Lightning callbacks (``pip install 'midefend[lightning]'``);
- :mod:`midefend.integrations.hf_trainer`: transformers' ``Trainer`` with the CA loss and an erasing
  collator (``pip install 'midefend[hf]'``).
"""
