"""Build wiring for the one optional native part: pressured.scan._skim (the skim loop in C).

``optional=True``: where no compiler is present the build goes on without it, and pressured
uses its pure-Python skim (the same results; tests/test_scan_skim.py runs both).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pressured.scan._skim",
            sources=["pressured/scan/_skim.c"],
            optional=True,
            extra_compile_args=["-O2"],
        )
    ]
)
