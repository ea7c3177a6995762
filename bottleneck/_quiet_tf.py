"""Silence the C++ lines TensorFlow writes to stderr while it is imported.

TF 2.16+ logs "All log messages before absl::InitializeLog() ..." and "Could not find cuda drivers" from C++
before TF_CPP_MIN_LOG_LEVEL is read, straight to file descriptor 2, on every CPU machine (and, on some, a
"failed call to cuInit" while probing devices). They drown progress bars and one-line errors. Only the import
and the device probe are silenced (fd 2 is restored right after), and only when TF_CPP_MIN_LOG_LEVEL asks for
quiet; a failing import still raises its Python exception normally.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
from contextlib import contextmanager


@contextmanager
def _stderr_fd_silenced():
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finders locate the package
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") < "2":
            return spec
        exec_module = spec.loader.exec_module

        def quiet_exec(module):
            with _stderr_fd_silenced():
                exec_module(module)
                try:
                    # Device probing ("failed call to cuInit" on machines without a GPU driver) logs from C++
                    # too; listing physical devices probes now, in silence, and leaves the runtime (and so its
                    # thread settings) uninitialised.
                    module.config.list_physical_devices()
                except Exception:
                    pass

        spec.loader.exec_module = quiet_exec
        return spec


def install() -> None:
    if "tensorflow" not in sys.modules and not any(
        isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
