# setuptools reads everything else from pyproject.toml; cffi needs setup.py to hook its builder.
from setuptools import setup

setup(cffi_modules=["native/_build.py:ffibuilder"])
