"""``python -m rnnkit.ops build``: compile the C++ ops now (``make`` runs it after installing);
``python -m rnnkit.ops status``: say which kernels run."""

import sys

from . import build


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "status"
    if what not in ("build", "status"):
        print(f"rnnkit.ops: expected 'build' or 'status', got {what!r}", file=sys.stderr)
        return 2
    if what == "build":
        ok = build.load(verbose=False)
        print(f"rnnkit: {build.status()}")
        return 0 if ok else 1
    print(f"rnnkit: {build.status()}")
    from . import _wiring  # (importing rnnkit.ops registered every op)

    python_only = [name for name in _wiring._specs if not _wiring.compiled_on_cpu(name)]
    if build.wanted() and python_only:
        print(f"rnnkit: pure-torch on the CPU (no C++ loop yet): {', '.join(python_only)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
