"""``benchmarks/RESULTS.md`` holds one section per benchmark script (speed, accuracy), each
between ``<!-- begin NAME -->`` and ``<!-- end NAME -->`` lines, so a script rewrites its own
section and leaves the others as they were."""

from __future__ import annotations

from pathlib import Path


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
