"""The one lazy, quiet TensorFlow / Keras import of the library, and TensorFlow's thread setup.

TF 2.16+ writes C++ lines to file descriptor 2 while it is imported ("All log messages before
absl::InitializeLog() ...", "Could not find cuda drivers", and on some machines "failed call to cuInit" when it
probes devices), before TF_CPP_MIN_LOG_LEVEL could be read from Python. They drown progress bars and one-line
errors. Every module of the package that needs TensorFlow or Keras gets it through ``tensorflow()`` or
``keras()`` here: the import runs with fd 2 silenced and TF_CPP_MIN_LOG_LEVEL at 3, and both are restored
right after, so a program that imports bottleneck keeps its own environment and stderr. A user who set
TF_CPP_MIN_LOG_LEVEL below 2 asked for the lines and gets them. A failing import still raises normally.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager

_LOCK = threading.Lock()
_THREADS_SET = False


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


@contextmanager
def environment_kept(name: str = "TF_CPP_MIN_LOG_LEVEL"):
    """Put one environment variable back as it was when the block ends: our quiet import sets it meanwhile, and
    tf2onnx sets it for the whole process when imported."""
    old = os.environ.get(name)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def wants_quiet() -> bool:
    """False when the user asked TensorFlow for its C++ log lines (TF_CPP_MIN_LOG_LEVEL 0 or 1)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") >= "2"


def tensorflow():
    """``import tensorflow``, quietly the first time (see the module docstring)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    with _LOCK:
        if "tensorflow" in sys.modules:
            return sys.modules["tensorflow"]
        if not wants_quiet():
            import tensorflow as tf

            return tf
        # TF reads the level once, on its first log line, which comes during the import: set it only meanwhile.
        with environment_kept(), _stderr_fd_silenced():
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")
            import tensorflow as tf

            try:
                # Listing physical devices probes them now, in silence, and leaves the runtime (and so its
                # thread settings) uninitialised.
                tf.config.list_physical_devices()
            except Exception:
                pass
        return tf


def keras():
    """``import keras`` (TensorFlow backend) after the quiet TensorFlow import."""
    tensorflow()
    import keras as k

    return k


def cpu_count() -> int:
    """Cores this process may run on (its CPU affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_threads(intra: int | None = None, inter: int = 1) -> None:
    """Set TF thread pools once, before TF builds any op.

    TF's defaults start one pool per core for both intra- and inter-op work, which oversubscribes a 2-core
    machine that also decodes JPEGs; one inter-op thread loses nothing for a single sequential model.
    """
    global _THREADS_SET
    if _THREADS_SET:
        return
    tf = tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra or cpu_count())
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        pass  # TF already initialised by the caller; keep its settings
    _THREADS_SET = True
