"""Every ``>>>`` example in the package runs and shows what it says (as einops runs its docstrings).

One test per module, so a wrong example names its module. Modules whose import needs an optional
extra that is not installed are skipped with that reason.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import midefend

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(midefend.__path__, prefix="midefend.")
    if not name.endswith("__main__")  # running it would start the CLI
)  # fmt: skip


def _has_examples(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None and ">>>" in open(spec.origin, encoding="utf-8").read()


@pytest.mark.parametrize("name", [m for m in MODULES if _has_examples(m)])
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as exc:  # an optional extra (transformers, lightning, triton ...)
        pytest.skip(f"{name} needs an optional dependency: {exc}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, raise_on_error=False, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (run: python -m pytest --doctest-modules {name.replace('.', '/')}.py)"


def test_examples_were_found():
    # the count of modules with examples: a walk that silently finds nothing would pass the test above
    assert len([m for m in MODULES if _has_examples(m)]) >= 60
