"""The compiled fast path of the seccomp supervisor (guard/_core.c), built by `pip install`.

It is optional: where no C compiler or Python headers exist the build is skipped and guard runs the
same decisions in Python (guard.sandbox.fastpath says which is in use; `guard doctor` reports it)."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("guard._core", ["guard/_core.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                                                 "-Wno-unused-parameter", "-Wno-cast-function-type"])])
