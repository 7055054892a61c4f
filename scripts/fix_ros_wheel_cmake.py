"""Point the ROS 2 wheels' exported CMake files at this interpreter.

The PyPI ROS 2 wheels export CMake targets whose include directories name the
wheel builder's Python and numpy headers (under /opt/python/...). Building an
interface package against them then fails on a missing directory. This rewrites
those paths, in place, to the running interpreter's include directories.
Idempotent: files that already point here are left untouched.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

# The builder's prefix differs between wheels only in the CPython tag.
_PYTHON_INCLUDE = re.compile(r"/opt/python/cp\d+-cp\d+t?/include/python3\.\d+t?")
_NUMPY_INCLUDE = re.compile(r"/opt/python/cp\d+-cp\d+t?/lib/python3\.\d+t?/site-packages/numpy/(?:_core|core)/include")


def fix_prefix(prefix: Path) -> int:
    """Rewrite every *.cmake under ``prefix/share``; return how many files changed."""
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for cmake_file in (prefix / "share").rglob("*.cmake"):
        text = cmake_file.read_text()
        # numpy first: its pattern contains no python include, but order keeps it obvious.
        fixed = _NUMPY_INCLUDE.sub(numpy_include, text)
        fixed = _PYTHON_INCLUDE.sub(python_include, fixed)
        if fixed != text:
            cmake_file.write_text(fixed)
            changed += 1
    return changed


if __name__ == "__main__":
    prefix = Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix)
    print(f"fixed include paths in {fix_prefix(prefix)} CMake files under {prefix}/share")
