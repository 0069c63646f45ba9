"""What the benchmark scripts share: the machine line, and ``benchmarks/RESULTS.md``, which
holds one section per script (speed, accuracy), each between ``<!-- begin NAME -->`` and
``<!-- end NAME -->`` lines, so a script rewrites its own section and leaves the others."""

from __future__ import annotations

import platform
from pathlib import Path

import torch


def machine() -> str:
    """The CPU model, torch's thread count and the versions, for a results header."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}; {torch.get_num_threads()} threads; torch {torch.__version__}; "
            f"Python {platform.python_version()}")


def write_section(path: Path, name: str, text: str) -> str:
    """Put ``text`` as section ``name`` of ``path`` (replacing that section, or appending it
    when the file has none); return the whole new file."""
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        new = old + ("\n" if old and not old.endswith("\n\n") else "") + block
    path.write_text(new)
    return new
