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


def peak_rss_kib() -> int:
    """This process's peak resident set size so far, in KiB (Linux's VmHWM; not ``ru_maxrss``,
    which Linux carries across fork and exec, so a child would start at its parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status: peak memory needs Linux")


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
