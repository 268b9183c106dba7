"""Compile every kernel configuration for sm_80 and sm_90 and report its resources.

    python -m kernels.compile_report                       # all kernels, sm_80 and sm_90
    python -m kernels.compile_report --arch 90 --kernel conv2d_relu_fwd
    python -m kernels.compile_report --markdown            # also bench/results/compile_report.md

No GPU needed: Triton compiles ahead of time, the bundled ``ptxas -v`` gives registers and spill
bytes (see :mod:`kernels._aot`). Exit status 1 when any spec fails to compile, spills registers,
or promises tensor cores (``uses_dot``) without an ``mma``/``wgmma`` instruction.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

import triton

from kernels._aot import (
    ARCHS,
    KERNEL_MODULES,
    CompileResult,
    compile_specs,
    default_jobs,
    ptxas_path,
    spec_refs,
)

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN = ROOT / "bench" / "results" / "compile_report.md"
COLUMNS = ["kernel", "config", "dtype", "arch", "regs", "spill st/ld (B)", "shared (B)",
           "tensor cores", "status"]


def split_name(name: str) -> tuple[str, str, str]:
    """'conv2d_relu_fwd[conv2, BM=64 BN=64 BK=16 w4 s2, fp32]' -> (kernel, config, dtype)."""
    kernel, _, rest = name.partition("[")
    parts = [p.strip() for p in rest.rstrip("]").split(",")] if rest else []
    if len(parts) >= 2:
        return kernel, ", ".join(parts[:-1]), parts[-1]
    return kernel, ", ".join(parts), ""


def row(r: CompileResult) -> list[str]:
    kernel, config, dtype = split_name(r.name)
    if not r.ok:
        return [kernel, config, dtype, f"sm_{r.arch}", "-", "-", "-", "-", "ERROR"]
    tc = r.mma if r.mma else "no"
    return [kernel, config, dtype, f"sm_{r.arch}", str(r.registers),
            f"{r.spill_stores}/{r.spill_loads}", str(r.shared), tc, r.status]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(c) for c in col) for col in zip(COLUMNS, *rows)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                             capture_output=True, text=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ptxas_version(arch: int = 80) -> str:
    out = subprocess.run([ptxas_path(arch), "--version"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1] if out.returncode == 0 else "unknown"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kernels.compile_report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", type=int, action="append", choices=[80, 90],
                   help="compute capability; repeat for several (default: 80 and 90)")
    p.add_argument("--kernel", action="append", default=[],
                   help="keep specs whose name contains this text (repeatable, any matches)")
    p.add_argument("--module", action="append",
                   help=f"module with aot_specs() (repeatable; default: {', '.join(KERNEL_MODULES)})")
    p.add_argument("--jobs", type=int, default=default_jobs(),
                   help="worker processes (default: %(default)s, the CPUs available)")
    p.add_argument("--markdown", nargs="?", const=str(MARKDOWN), default=None, metavar="PATH",
                   help=f"also write a markdown report (default path: {MARKDOWN.relative_to(ROOT)})")
    p.add_argument("--errors", action="store_true", help="print each failure's full message")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    archs = sorted(set(args.arch or ARCHS))
    refs = [ref for ref, _ in spec_refs(tuple(args.module or KERNEL_MODULES))
            if not args.kernel or any(k in ref.name for k in args.kernel)]
    if not refs:
        print(f"no kernel spec matches --kernel {args.kernel}", file=sys.stderr)
        return 2
    todo = [(ref, arch) for ref in refs for arch in archs]
    print(f"compiling {len(refs)} specs x {len(archs)} archs = {len(todo)} kernels "
          f"with {args.jobs} worker(s) ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = []

    def progress(r: CompileResult) -> None:
        done.append(r)
        if len(done) % 25 == 0 or len(done) == len(todo):
            print(f"  [{len(done)}/{len(todo)}] {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)

    results = compile_specs(todo, jobs=args.jobs, progress=progress)
    elapsed = time.perf_counter() - start

    rows = [row(r) for r in results]
    bad = [r for r in results if r.status != "ok"]
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "SPILL", "NO-MMA", "ERROR")}
    summary = (f"{len(results)} kernels in {elapsed:.0f} s: "
               + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    print(text_table(rows))
    print(summary)
    for r in bad:
        detail = r.error if args.errors else r.error.splitlines()[0][:200] if r.error else ""
        print(f"  {r.status}: {r.name} sm_{r.arch}"
              + (f" -- {detail}" if detail else f" -- spill {r.spill_stores}/{r.spill_loads} B"
                 if r.status == "SPILL" else " -- no mma/wgmma in the PTX"))

    if args.markdown:
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (f"# Ahead-of-time compile report\n\n"
                  f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} "
                  f"by `python -m kernels.compile_report` at git {git_revision()}, "
                  f"Triton {triton.__version__}, ptxas {ptxas_version()} (no GPU: registers and "
                  f"spills from `ptxas -v`, shared memory from Triton's metadata).\n\n"
                  f"{summary}.\n\n")
        path.write_text(header + markdown_table(rows) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
