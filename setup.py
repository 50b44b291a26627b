"""Builds genfast's libraries by driving CMakeLists.txt (the one build description).

Environment:
  GENFAST_CUDA=0|1|auto   build the CUDA backend (auto: when torch has CUDA and nvcc exists)
  GENFAST_CUDA_ARCHS      CUDA architectures, default "80;90"
  GENFAST_DEBUG=1         Debug build (-O0 -g) instead of Release
  MAX_JOBS=N              parallel compile jobs (default: all cores)

Install without build isolation so the build sees the torch you run
(otherwise pip builds against a second, freshly downloaded torch):
  pip install --no-build-isolation -e .
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        try:
            import torch
        except ImportError:
            sys.exit("genfast: install torch first, then build with --no-build-isolation "
                     "(pip install --no-build-isolation -e .)")
        out_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        self._genfast_out_dir = out_dir
        build_dir = self._build_dir(torch.__version__)
        build_dir.mkdir(parents=True, exist_ok=True)
        debug = os.environ.get("GENFAST_DEBUG", "0") not in ("", "0")
        args = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir),
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_BUILD_TYPE={'Debug' if debug else 'Release'}",
            f"-DGENFAST_OUTPUT_DIR={out_dir}",
            f"-DGENFAST_CUDA={os.environ.get('GENFAST_CUDA', 'auto')}",
        ]
        if shutil.which("ninja"):
            args += ["-G", "Ninja"]
        if "GENFAST_CUDA_ARCHS" in os.environ:
            args.append(f"-DGENFAST_CUDA_ARCHS={os.environ['GENFAST_CUDA_ARCHS']}")
        # Stale libraries from an earlier build would be loaded by mistake.
        for old in out_dir.glob("_C*"):
            old.unlink()
        subprocess.check_call(args)
        jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 1)
        subprocess.check_call(["cmake", "--build", str(build_dir), "-j", jobs])

    @staticmethod
    def _build_dir(torch_version):
        # A persistent build tree per (interpreter, torch): rebuilding after an
        # edit, or re-running the install, recompiles only what changed.
        key = hashlib.sha1(f"{sys.executable}|{torch_version}".encode()).hexdigest()[:10]
        return ROOT / "build" / f"cmake-{key}"

    def copy_extensions_to_source(self):
        # Editable installs: the default copies only genfast/_C*.so; the build
        # record (_C.json) and the CUDA library must travel with it.
        build_py = self.get_finalized_command("build_py")
        src_dir = Path(build_py.get_package_dir("genfast")).resolve()
        out_dir = self._genfast_out_dir
        if out_dir == src_dir:
            return
        for old in src_dir.glob("_C*"):
            old.unlink()
        for f in out_dir.glob("_C*"):
            shutil.copy2(f, src_dir / f.name)


setup(
    packages=find_packages(include=["genfast", "genfast.*"]),
    ext_modules=[CMakeExtension("genfast._C")],
    cmdclass={"build_ext": CMakeBuild},
    package_data={"genfast": ["_C*.json"]},
)
