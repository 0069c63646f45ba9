"""rnnkit.gpu's kernels compiled ahead of time for NVIDIA GPUs, on a machine without one.

The interpreter (``gpu_interpret.py``) runs a kernel's Python, not triton's compiler: a kernel
it runs can still fail to compile (a loop-carried value changing type, a non-constexpr global,
``tl.dot`` on a bad shape). Here every kernel variant the drivers launch is compiled to a cubin
for a given architecture with triton's own compiler and ptxas (both in the triton wheel; no
driver, no GPU). ``python tests/gpu_compile.py [ARCH...]`` (default 90: H100/H200; 80: A100)
prints one JSON line per variant, ``{"id", "arch", "ok", "error", "shared"}`` (``shared``: the
bytes of shared memory the compiled kernel asks for). Run it with ``TRITON_CACHE_DIR`` set
where its cubins may go.
"""

from __future__ import annotations

import json
import os
import sys


def variants() -> list[tuple[str, object, dict, str, dict]]:
    """``(id, kernel, constexprs, dtype, options)`` for every kernel the drivers launch, over
    each flag that changes its code (tile sizes fixed: they only change the shapes), with the
    launch options the drivers give (``num_warps``)."""
    from rnnkit.gpu import common, elman, gru, lstm, persistent

    out = []

    def add(kernel, dtype="fp32", options=None, **c):
        name = f"{kernel.__module__.split('.')[-1]}.{kernel.__name__}"
        flags = ",".join(f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in c.items()
                         if not k.startswith("B"))
        out.append((f"{name}[{flags}]{'' if dtype == 'fp32' else '-' + dtype}", kernel, c,
                    dtype, options or {}))

    add(common._masked_outputs, BN=8, BW=128)
    for m in (False, True):
        add(common._split_gradient, MASKED=m, BN=8, BW=128)
        add(gru._step, MASKED=m, BN=8, BH=128)
        add(gru._step_back, MASKED=m, BN=8, BH=128)
        for relu in (False, True):
            add(elman._step, RELU=relu, MASKED=m, BN=8, BH=128)
            add(elman._step_back, RELU=relu, MASKED=m, BN=8, BH=128)
    for peep, parts in ((0, [(lstm.BOTH, lstm.BOTH)]), (1, [(lstm.BOTH, lstm.BOTH)]),
                        (2, [(lstm.GATES, lstm.OUT), (lstm.OUT, lstm.GATES)])):
        for fwd, back in parts:
            for tg, tp, proj, m in ((True, True, False, True), (False, False, True, False),
                                    (True, False, False, False), (False, True, True, True)):
                c = dict(PEEP=peep, TANH_G=tg, TANH_PHI=tp, PROJ=proj, MASKED=m, BN=8, BH=128)
                add(lstm._step, PART=fwd, **c)
                add(lstm._step_back, PART=back, **c)
    for peep in (0, 1, 2):
        BH = 64 if peep < 2 else 32  # the largest that fit persistent.BUDGET
        for rev, tg, tp, proj, m in ((False, True, True, False, True),
                                     (True, False, False, True, False),
                                     (True, True, False, False, False),
                                     (False, False, True, True, True)):
            BR = 16 if proj else BH
            add(persistent._lstm, REVERSE=rev, PEEP=peep, TANH_G=tg, TANH_PHI=tp, PROJ=proj,
                MASKED=m, BN=persistent.BN, BH=BH, BR=BR,
                options={"num_warps": persistent.warps(BH, BR, proj, peep)})
    add(elman._step, "fp64", RELU=False, MASKED=True, BN=8, BH=128)
    add(gru._step_back, "fp64", MASKED=True, BN=8, BH=128)
    add(lstm._step, "fp64", PEEP=1, PART=lstm.BOTH, TANH_G=True, TANH_PHI=True, PROJ=False,
        MASKED=True, BN=8, BH=128)
    add(lstm._step_back, "fp64", PEEP=1, PART=lstm.BOTH, TANH_G=True, TANH_PHI=True,
        PROJ=False, MASKED=True, BN=8, BH=128)
    return out


def compile_for(kernel, constexprs: dict, dtype: str, arch: int, options: dict):
    """``triton.compile`` of ``kernel`` for ``sm_<arch>``: pointers ``*<dtype>`` (the mask's
    ``*u8``), sizes ``i32``."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {}
    for p in kernel.params:
        if p.is_constexpr:
            signature[p.name] = "constexpr"
        elif p.name in ("N", "H", "W", "T", "R"):
            signature[p.name] = "i32"
        else:
            signature[p.name] = "*u8" if p.name == "valid" else f"*{dtype}"
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)


def main(archs: list[int]) -> int:
    for arch in archs:
        for name, kernel, constexprs, dtype, options in variants():
            row = {"id": name, "arch": arch, "ok": True, "error": None, "shared": None}
            try:
                compiled = compile_for(kernel, constexprs, dtype, arch, options)
                row["shared"] = compiled.metadata.shared
            except Exception as e:  # reported to the test, which fails with it
                row.update(ok=False, error=f"{type(e).__name__}: {e}")
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this rnnkit
    sys.exit(main([int(a) for a in sys.argv[1:]] or [90]))
