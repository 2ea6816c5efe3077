"""Build hook for the one compiled module, the span walker: optional, so Boutique installs anywhere.

Without a C compiler (or Python's headers) the build says so in one line and the install goes on;
`boutique.observatory.otlp.walk` then uses the pure-Python walker.
"""

from __future__ import annotations

import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

WALKER = "boutique.observatory.otlp._walker"
# Optimised, and without debug information or symbols: the module is then the same bytes wherever it is
# built from the same sources (deploy/containers/wheels.sh relies on that), and a fifth of the size.
UNIX_FLAGS = ([] if sys.platform == "win32" else ["-O3", "-g0"], [] if sys.platform == "win32" else ["-s"])


class OptionalBuildExt(build_ext):
    """build_ext that lets an extension fail to build (the walker has a pure-Python fallback)."""

    def run(self) -> None:
        """Build the extensions, or say in one line why not."""
        try:
            super().run()
        except Exception as exc:  # no compiler at all: distutils raises before any extension
            print(f"boutique: compiled span walker not built ({exc}); ingest uses the pure-Python walker")

    def build_extension(self, ext: Extension) -> None:
        """Build one extension, or say in one line why not."""
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"boutique: compiled span walker not built ({exc}); ingest uses the pure-Python walker")


setup(
    ext_modules=[
        Extension(
            WALKER,
            ["src/boutique/observatory/otlp/_walker.pyx"],
            extra_compile_args=UNIX_FLAGS[0],
            extra_link_args=UNIX_FLAGS[1],
            optional=True,
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
