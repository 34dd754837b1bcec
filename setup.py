# setuptools reads everything else from pyproject.toml; cffi needs setup.py to hook its builder,
# and the vDSO image (a libc-free shared object, not a Python extension) is built beside it.
import importlib.util
import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_HERE = os.path.dirname(os.path.abspath(__file__))


def _vdso_builder():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("_build_vdso", os.path.join(_HERE, "native", "_build_vdso.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class build_ext_with_vdso(build_ext):
    """build_ext, then rxkernel/native/rxvdso.so: into the source tree for editable installs
    (inplace, like the extension), into build_lib for regular ones (the wheel picks it up)."""

    def _vdso_output(self) -> str:
        if self.inplace:
            package_dir = self.get_finalized_command("build_py").get_package_dir("rxkernel.native")
        else:
            package_dir = os.path.join(self.build_lib, "rxkernel", "native")
        return os.path.join(package_dir, "rxvdso.so")

    def run(self) -> None:
        super().run()
        _vdso_builder().build(self._vdso_output())

    def get_outputs(self) -> list:  # type: ignore[type-arg]
        return [*super().get_outputs(), self._vdso_output()]


# The Mutex fast path is a small CPython type (a cffi call costs more than the lock itself).
_rxlock = Extension("rxkernel.native._rxlock", sources=["native/pyext/rxlock.c"], extra_compile_args=["-O2", "-Wall", "-Wextra"])

setup(cffi_modules=["native/_build.py:ffibuilder"], ext_modules=[_rxlock], cmdclass={"build_ext": build_ext_with_vdso})
