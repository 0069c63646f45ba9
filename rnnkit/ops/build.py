"""Building and loading rnnkit's compiled CPU ops (``rnnkit/csrc``).

The C++ sources are compiled with torch's own extension machinery (``cpp_extension.load``, a
ninja build against the installed torch) into a cache directory, once: ``make`` runs
``python -m rnnkit.ops build`` right after installing, so a first call only loads the library
(well under a second). A later change of the sources or of torch rebuilds on first use.

Why at install and not as a ``setup.py`` extension: pip builds in an isolated environment that
would fetch another torch (the pinned CPU wheel is found only from this machine's index), and a
failed compile would fail the install; here a failed build is one warning and rnnkit runs its
pure-torch kernels, as before.

``RNNKIT_KERNELS=python`` forces the pure-torch kernels (no build, no load);
``RNNKIT_BUILD_DIR`` moves the cache (default ``~/.cache/rnnkit/<torch version>/<checkout>``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = ["clockwork.cpp", "ctrnn.cpp", "elman.cpp", "fully.cpp", "gru.cpp", "indrnn.cpp",
           "jordan.cpp", "lstm.cpp", "minrnn.cpp", "scrn.cpp"]
NAME = "rnnkit_ops"

_state: dict = {}  # "loaded": bool, "error": str


def build_dir() -> Path:
    """``RNNKIT_BUILD_DIR``, else ``~/.cache/rnnkit/<torch version>/<checkout>``, else (a home
    that cannot be written) the same under the system's temporary directory. ``<checkout>`` is
    a short hash of this checkout's ``csrc`` path: two checkouts (a clone beside a working copy)
    keep one build each instead of rebuilding each other's on every switch."""
    if "RNNKIT_BUILD_DIR" in os.environ:
        return Path(os.environ["RNNKIT_BUILD_DIR"])
    version = torch.__version__.replace("+", "-")
    checkout = hashlib.sha256(str(CSRC).encode()).hexdigest()[:10]
    default = Path.home() / ".cache" / "rnnkit" / version / checkout
    try:
        default.mkdir(parents=True, exist_ok=True)
        return default
    except OSError:
        return Path(tempfile.gettempdir()) / f"rnnkit-{os.getuid()}" / version / checkout


def wanted() -> bool:
    """Whether the compiled ops may be used (``RNNKIT_KERNELS`` is not ``python``)."""
    choice = os.environ.get("RNNKIT_KERNELS", "auto").lower()
    if choice not in ("auto", "compiled", "python"):
        raise ValueError(f"RNNKIT_KERNELS: expected auto, compiled or python, got {choice!r}")
    return choice != "python"


# The vector ISA ATen itself picked on this CPU -> the flags that make at::vec::Vectorized use it
# (its exp/tanh are the Sleef functions libtorch_cpu exports). The build is local, so the CPU
# that compiles is the CPU that runs.
_VECTOR_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma",
               "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
}


def vector_flags() -> list[str]:
    """Compiler flags for ATen's vector ISA on this CPU (none: the portable scalar code)."""
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 (an old or unusual build of torch: stay portable)
        return []
    return _VECTOR_FLAGS.get(capability, [])


def openmp_flags() -> list[str]:
    """``-fopenmp`` where torch's own parallel backend is OpenMP. Without it ATen's headers
    compile ``at::parallel_for`` to a plain serial call, so every pointwise pass of the loops ran
    on one thread. The library then links libgomp.so.1, the soname torch has already loaded, so
    both share torch's thread pool and its ``torch.set_num_threads``."""
    return ["-fopenmp"] if "OpenMP" in torch.__config__.parallel_info() else []


def _ninja_on_path() -> None:
    """cpp_extension runs ``ninja`` from PATH; the pip package puts it beside the venv's python,
    which is not on PATH when a venv is used without activating it."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def load(verbose: bool = False) -> bool:
    """Build (if needed) and load the compiled ops into ``torch.ops.rnnkit``; True on success.
    On failure, warns once naming the fix; rnnkit then runs its pure-torch kernels."""
    if "loaded" in _state:
        return _state["loaded"]
    _state["loaded"] = False
    if not wanted():
        return False
    try:
        from torch.utils import cpp_extension

        _ninja_on_path()
        out = build_dir()
        out.mkdir(parents=True, exist_ok=True)
        if not (out / f"{NAME}.so").exists():
            print(f"rnnkit: compiling the C++ ops into {out} (once, about 80 s on 2 cores)",
                  file=sys.stderr, flush=True)
        cpp_extension.load(
            name=NAME, sources=[str(CSRC / s) for s in SOURCES], build_directory=str(out),
            extra_cflags=["-O3", *vector_flags(), *openmp_flags()],
            extra_ldflags=openmp_flags(), is_python_module=False, verbose=verbose)
    except Exception as e:  # no compiler, no ninja, a compile error: fall back, say so once
        _state["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e) else ''}"
        msg = (f"rnnkit: the compiled kernels could not be built ({_state['error']}); running "
               "the pure-torch kernels instead. Fix: install a C++ compiler (g++) and `pip install "
               "ninja`, then run `python -m rnnkit.ops build`; RNNKIT_KERNELS=python silences "
               "this.")
        if os.environ.get("RNNKIT_KERNELS", "auto").lower() == "compiled":
            raise RuntimeError(msg) from e
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return False
    _state["loaded"] = True
    return True


def status() -> str:
    """One line: which kernels run, and why."""
    if not wanted():
        return "pure-torch kernels (RNNKIT_KERNELS=python)"
    if load():
        return f"compiled CPU ops ({build_dir()})"
    return f"pure-torch kernels (the compiled ops failed to build: {_state.get('error')})"
