"""The one compiled part: monitoring/_binning.c, drift's one-pass binning. Optional: where it cannot be built
(no C compiler), installing still succeeds and the gateway bins with numpy instead (monitoring/drift.py)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("monitoring._binning", ["monitoring/_binning.c"], optional=True, extra_compile_args=["-O3"])])
