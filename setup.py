"""The one compiled piece: the CPU box-erasing loop (midefend/defenses/_erase_cpu.c).

Everything else is in pyproject.toml. The extension is optional: where no C compiler is found
the install still succeeds and erasing uses the pure-torch path (``midefend.defenses.
erasing_native.HAVE_NATIVE`` says which one is active).
"""

import sys

from setuptools import Extension, setup

compile_args = ["/O2"] if sys.platform == "win32" else ["-O3"]
setup(
    ext_modules=[
        Extension(
            "midefend.defenses._erase_cpu",
            sources=["midefend/defenses/_erase_cpu.c"],
            extra_compile_args=compile_args,
            optional=True,
        )
    ]
)
