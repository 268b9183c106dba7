"""Compile the kernel configurations a default ``fit`` runs for sm_80 and sm_90, and report
their resources, how their loads were lowered, and a model of each at AlexNet's batch 128.

    python -m kernels.compile_report                       # what fit runs, sm_80 and sm_90
    python -m kernels.compile_report --all                 # also the exact-fp32 convolutions
    python -m kernels.compile_report --arch 90 --kernel conv2d_relu_fwd
    python -m kernels.compile_report --markdown            # also bench/results/compile_report.md

No GPU needed: Triton compiles ahead of time, the bundled ``ptxas -v`` gives registers and spill
bytes, and the PTX gives load widths, ``cp.async``/TMA and wait depths (see :mod:`kernels._aot`).
Exit status 1 when any spec fails to compile, spills registers, promises tensor cores
(``uses_dot``) without an ``mma``/``wgmma`` instruction, needs more shared memory than an SM
has (NO-FIT), or issues more global loads per element
than its module's ``LOAD_BOUNDS`` state (the LRN backwards, see :func:`load_targets`).

What a default fit runs (:func:`in_default_fit`): channels_last convolutions (the conv specs are
all channels_last) in fp32 with TF32, bf16 and fp16, forward (conv1's own packed kernel; the
general one's conv1 configurations only with ``--all``), dgrad (not conv1's) and wgrad with its
split-K sum, plus every LRN and pooling spec. NCHW convolutions are not compiled here: the
NCHW gather is not on the fit path (see kernels.conv2d_relu's docstring). The configurations on
that path that the autotuners take only with LIGHTNING_ALEXNET_UNVERIFIED=1 (8 warps, TMA, a
persistent grid: not yet run on a GPU, see kernels.tuning) are compiled too and counted apart
(:func:`is_gated`).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
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
from kernels._report_model import (  # noqa: F401 (the report's model, read here by tests)
    GPUS,
    Gpu,
    Workload,
    blocks_per_sm,
    modelled_us,
    split_name,
    workload,
)
from kernels.tuning import UNVERIFIED_ENV

ROOT = Path(__file__).resolve().parent.parent
MARKDOWN = ROOT / "bench" / "results" / "compile_report.md"
COLUMNS = ["kernel", "config", "dtype", "arch", "regs", "spill st/ld (B)", "shared (B)",
           "tensor cores", "ld.global B×n", "cp.async B×n", "TMA", "cp wait", "wgmma wait",
           "tile eff", "blocks", "per SM", "waves", "model µs", "bound", "status"]
# Spec labels of the conv kernels that a default fit does not run: exact fp32 products, which
# the kernels use only when TF32 is turned off (torch.backends.cudnn.allow_tf32 = False).
EXACT_FP32 = "fp32"
_CONV_GEMMS = ("conv2d_relu_fwd", "conv2d_relu_dgrad", "conv2d_relu_wgrad")
_CONV_PACKED = ("conv2d_relu_fwd_packed", "conv2d_relu_wgrad_packed")  # conv1's own kernels


def in_default_fit(name: str) -> bool:
    """Whether a default ``fit`` on a GPU runs this spec.

    The model runs channels_last (every conv spec is), convolutions in fp32 with TF32 (cuDNN's
    default, ``torch.backends.cudnn.allow_tf32 = True``) or in bf16/fp16 under autocast, and
    LRN/pooling in whichever of the three dtypes reaches them. Off that path: the exact-fp32
    conv GEMMs (label ``fp32``; TF32's are ``fp32-tf32``; the split-K sum that follows wgrad is
    labelled by its output dtype and runs for TF32 as well), and the general forward of a layer
    and weight gradient of a layer that conv1's packed kernels take (``_Packing.fits``:
    conv1).
    """
    return _on_fit_path(name) and not is_gated(name)


def is_gated(name: str) -> bool:
    """Whether a spec is one of the configurations not yet run on a GPU, which the autotuners
    take only with LIGHTNING_ALEXNET_UNVERIFIED=1 (``aot_specs`` ends their config tag in
    "unverified"). The report compiles those on the fit path too, and counts them apart."""
    return split_name(name)[1].endswith("unverified")


def _on_fit_path(name: str) -> bool:
    kernel, config, dtype = split_name(name)
    if kernel in (*_CONV_GEMMS, *_CONV_PACKED) and dtype == EXACT_FP32:
        return False
    replaced = kernel in ("conv2d_relu_fwd", "conv2d_relu_wgrad")
    return not (replaced and _packed_layer(config.split(",")[0]))


def _packed_layer(layer: str) -> bool:
    """Whether conv1's packed kernels take this AlexNet layer instead of the general ones."""
    conv = importlib.import_module("kernels.conv2d_relu")
    if layer not in conv.ALEXNET_CONVS:
        return False
    (n, _, h, w), (c_out, cg_in, kh, kw), stride, pad, groups, _ = conv.ALEXNET_CONVS[layer]
    oh, ow = (h + 2 * pad - kh) // stride + 1, (w + 2 * pad - kw) // stride + 1
    geo = conv._Geometry(n, cg_in, h, w, c_out // groups, oh, ow, kh, kw, (stride, stride),
                         (pad, pad), groups)
    return conv._Packing.of(geo).fits(geo)


def hopper_targets(results: list[CompileResult], consts: dict, gated: bool = False) -> list[str]:
    """One line per sm_90 goal for the tensor-core conv kernels (issue 13): how many specs meet
    it, and the (kernel, layer) pairs with a spec that does not. Over what a default fit runs,
    or (``gated``) over the configurations behind LIGHTNING_ALEXNET_UNVERIFIED on its path."""
    convs = [r for r in results if r.ok and r.arch == 90 and r.uses_dot
             and split_name(r.name)[0] in (*_CONV_GEMMS, *_CONV_PACKED)
             and _on_fit_path(r.name) and is_gated(r.name) == gated]
    if not convs:
        return []

    def layer(r):  # conv1's packed kernels count as its forward and wgrad
        kernel, config, _ = split_name(r.name)
        return kernel.removeprefix("conv2d_relu_").removesuffix("_packed"), config.split(",")[0]

    def waves(r):
        load = workload(r.name, consts[r.name], GPUS[90].sms)
        per_sm = blocks_per_sm(GPUS[90], r.registers, r.shared, r.num_warps)
        return load.blocks / (GPUS[90].sms * per_sm) if per_sm else 0.0

    goals = [
        ("conv2-5 pipelined (TMA, or 16-byte cp.async with wait_group >= 1)",
         lambda r: layer(r)[1] != "conv1",
         lambda r: r.stats.tma > 0 or (r.stats.cp_async_wait or 0) >= 1
         and 16 in r.stats.cp_async),
        ("async wgmma overlap (wgmma.wait_group >= 1)", lambda r: True,
         lambda r: (r.stats.wgmma_wait or 0) >= 1),
        ("conv1 forward: every global load and copy >= 8 B, and pipelined",
         lambda r: layer(r) == ("fwd", "conv1"),
         lambda r: r.stats.narrowest_load >= 8 and r.stats.pipelined),
        ("tile efficiency >= 90%", lambda r: True,
         lambda r: workload(r.name, consts[r.name]).tile_efficiency >= 0.9),
        ("wgrad >= 2 waves on an H100", lambda r: layer(r)[0] == "wgrad",
         lambda r: waves(r) >= 2),
    ]
    lines = []
    for goal, applies, met in goals:
        subset = [r for r in convs if applies(r)]
        if not subset:
            continue
        short = [r for r in subset if not met(r)]
        misses = sorted({" ".join(layer(r)) for r in short})
        lines.append(f"- {goal}: {len(subset) - len(short)}/{len(subset)} specs"
                     + (f"; short: {', '.join(misses)}" if misses else ""))
    return lines


def unlaunchable(r: CompileResult) -> bool:
    """Whether a compiled kernel cannot be resident on an SM at all (its shared memory, with the
    1 KB reserved per block, over the SM's: the launch would fail)."""
    return r.ok and blocks_per_sm(GPUS[r.arch], r.registers, r.shared, r.num_warps) == 0


def status(r: CompileResult) -> str:
    """The compile status, or NO-FIT for a kernel that compiled but cannot launch."""
    return "NO-FIT" if r.status == "ok" and unlaunchable(r) else r.status


def load_bounds(modules=KERNEL_MODULES) -> dict:
    """kernel -> the bound its module states (``LOAD_BOUNDS``, next to the kernel) on global
    loads per element and channel step, as a function of the spec's constexprs."""
    bounds = {}
    for module in modules:
        bounds.update(getattr(importlib.import_module(module), "LOAD_BOUNDS", {}))
    return bounds


def loads_per_element(r: CompileResult, consts: dict) -> float:
    """``ld.global`` instructions in the PTX per element a thread owns (BLOCK / threads, at least
    1). Static counts: for the channel-sweep kernels, whose one loop over channels holds every
    load, the loads per element and channel step (a vector load counts once)."""
    return sum(r.stats.ld_global.values()) / max(1, consts["BLOCK"] // (32 * r.num_warps))


def load_targets(results: list[CompileResult], consts: dict,
                 bounds: dict) -> tuple[list[str], list[CompileResult]]:
    """One line per kernel with a stated load bound (issue 13: the LRN backwards load each
    element a bounded number of times): the specs whose PTX stays within it, the PTX counts;
    and the results over their bound."""
    lines, over = [], []
    for kernel, bound in bounds.items():
        subset = [r for r in results if r.ok and split_name(r.name)[0] == kernel]
        if not subset:
            continue
        counts = [loads_per_element(r, consts[r.name]) for r in subset]
        stated = sorted({bound(consts[r.name]) for r in subset})
        short = [r for r, n in zip(subset, counts) if n > bound(consts[r.name])]
        over += short
        lines.append(f"- {kernel}: global loads per element and channel step <= "
                     f"{'/'.join(map(str, stated))}: {len(subset) - len(short)}/{len(subset)} "
                     f"specs (PTX: {min(counts):g}-{max(counts):g})")
    return lines, over


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def _widths(counts: dict) -> str:
    return " ".join(f"{b}×{n}" for b, n in counts.items()) or "-"


def row(r: CompileResult, consts: dict | None = None) -> list[str]:
    kernel, config, dtype = split_name(r.name)
    if not r.ok:
        return [kernel, config, dtype, f"sm_{r.arch}"] + ["-"] * (len(COLUMNS) - 5) + ["ERROR"]
    st = r.stats
    cells = [kernel, config, dtype, f"sm_{r.arch}", str(r.registers),
             f"{r.spill_stores}/{r.spill_loads}", str(r.shared), r.mma or "no",
             _widths(st.ld_global), _widths(st.cp_async), str(st.tma),
             "-" if st.cp_async_wait is None else str(st.cp_async_wait),
             "-" if st.wgmma_wait is None else str(st.wgmma_wait)]
    if consts is None:
        cells += ["-"] * 6
    else:
        gpu = GPUS[r.arch]
        load = workload(r.name, consts, gpu.sms)
        per_sm = blocks_per_sm(gpu, r.registers, r.shared, r.num_warps)
        us, bound = modelled_us(gpu, dtype, load)
        cells += [f"{load.tile_efficiency:.0%}", str(load.blocks), str(per_sm),
                  f"{load.blocks / (gpu.sms * per_sm):.1f}" if per_sm else "0", f"{us:.0f}",
                  bound]
    return cells + [status(r)]


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
    out = subprocess.run([ptxas_path(arch), "--version"], capture_output=True, text=True,
                         check=False)
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
    p.add_argument("--all", action="store_true",
                   help="also the exact-fp32 conv kernels (TF32 turned off), which a default "
                        "fit does not run")
    p.add_argument("--jobs", type=int, default=default_jobs(),
                   help="worker processes (default: %(default)s, the CPUs available)")
    p.add_argument("--markdown", nargs="?", const=str(MARKDOWN), default=None, metavar="PATH",
                   help=f"also write a markdown report (default path: {MARKDOWN.relative_to(ROOT)})")
    p.add_argument("--errors", action="store_true", help="print each failure's full message")
    return p.parse_args(argv)


MARKDOWN_NOTES = """\
Columns: registers and spill bytes from `ptxas -v`; shared memory from Triton's metadata; the
rest read from the PTX (static instruction counts, not executions) and modelled at batch 128:
- *tensor cores*: `mma` (`mma.sync`) or `wgmma` (`wgmma.mma_async`) in the PTX.
- *ld.global B×n*: bytes per thread of each `ld.global` and how many there are (16 = a 128-bit
  vector load); *cp.async B×n* the same for asynchronous global-to-shared copies; *TMA*: the
  number of `cp.async.bulk.tensor` (Hopper's tensor memory accelerator).
- *cp wait*: the deepest `cp.async.wait_group N`, i.e. the copy groups left in flight while one
  is consumed: the pipelining depth achieved (0: none; `-`: no `cp.async`).
- *wgmma wait*: the deepest `wgmma.wait_group N`; N > 0 keeps an MMA running while the next
  is issued (async MMA overlap on sm_90).
- *tile eff*: useful multiply-adds / multiply-adds the tiles issue for this layer (padding of M,
  N and K to the tile; for dgrad also taps masked at the borders, and BN=32+16 is a program of
  two accumulators, 48 columns); elements / lanes for the elementwise kernels.
- *blocks*: programs in the grid at batch 128 (a persistent grid, `pN` in its config: its
  programs, about N per SM, each looping over tiles); *per SM*: resident blocks per SM by registers,
  shared memory and threads; *waves*: blocks / (SMs x per SM). sm_90 rows are modelled on an
  {h100}, sm_80 rows on an {a100}.
- *model µs*, *bound*: a roofline, the slower of 2 x issued MACs at the dtype's dense peak
  (bf16/fp16 tensor cores, TF32 tensor cores, or fp32 FMA for exact fp32) and compulsory bytes
  (each operand read once, each result written once) at HBM bandwidth: {peaks}. A lower bound
  for the tile, not a measurement.
"""


def _peaks() -> str:
    return "; ".join(f"{g.name} {g.tflops['bf16']:g}/{g.tflops['fp32-tf32']:g}/"
                     f"{g.tflops['fp32']:g} TFLOP/s bf16/TF32/fp32, {g.tb_per_s:g} TB/s"
                     for g in GPUS.values())


def main(argv=None) -> int:
    args = parse_args(argv)
    archs = sorted(set(args.arch or ARCHS))
    specs = [(ref, spec) for ref, spec in spec_refs(tuple(args.module or KERNEL_MODULES))
             if (not args.kernel or any(k in ref.name for k in args.kernel))
             and (args.all or _on_fit_path(ref.name))]
    if not specs:
        print(f"no kernel spec matches --kernel {args.kernel}", file=sys.stderr)
        return 2
    consts = {ref.name: spec.constexprs for ref, spec in specs}
    todo = [(ref, arch) for ref, spec in specs for arch in archs if arch >= spec.min_arch]
    print(f"compiling {len(specs)} specs x {len(archs)} archs = {len(todo)} kernels "
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

    rows = []
    for r in results:
        try:
            model = consts[r.name] if r.ok else None
            rows.append(row(r, model))
        except (KeyError, ValueError) as e:  # a spec outside the model (e.g. a probe kernel)
            print(f"  no workload model for {r.name}: {e}", file=sys.stderr)
            rows.append(row(r, None))
    bad = [r for r in results if status(r) != "ok"]
    counts = {s: sum(status(r) == s for r in results)
              for s in ("ok", "SPILL", "NO-MMA", "NO-FIT", "ERROR")}
    n_gated = sum(is_gated(r.name) for r in results)
    scope = ("every shipped configuration" if args.all else
             "the configurations a default fit runs") + (
        f", and {n_gated} behind {UNVERIFIED_ENV}=1" if n_gated else "")
    summary = (f"{len(results) - n_gated} kernels ({scope}) in {elapsed:.0f} s: "
               + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    print(text_table(rows))
    print(summary)
    targets = hopper_targets(results, consts)
    if targets:
        print("sm_90 tensor-core convs against issue 13's goals:\n" + "\n".join(targets))
    gated_targets = hopper_targets(results, consts, gated=True)
    if gated_targets:
        print(f"the same goals, configurations behind {UNVERIFIED_ENV}=1:\n"
              + "\n".join(gated_targets))
    loads, over = load_targets(results, consts, load_bounds(tuple(args.module or KERNEL_MODULES)))
    if loads:
        print("Channel sweeps against the loads their docstrings state:\n" + "\n".join(loads))
    for r in over:
        print(f"  LOADS: {r.name} sm_{r.arch} -- {loads_per_element(r, consts[r.name]):g} global "
              "loads per element and channel step, over its stated bound")
    for r in bad:
        detail = r.error if args.errors else r.error.splitlines()[0][:200] if r.error else ""
        why = {"SPILL": f"spill {r.spill_stores}/{r.spill_loads} B",
               "NO-MMA": "no mma/wgmma in the PTX",
               "NO-FIT": f"{r.shared} B of shared memory: no block fits on an SM"}
        print(f"  {status(r)}: {r.name} sm_{r.arch} -- {detail or why.get(status(r), '')}")

    if args.markdown:
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (f"# Ahead-of-time compile report\n\n"
                  f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} "
                  f"by `python -m kernels.compile_report{' --all' if args.all else ''}` at git "
                  f"{git_revision()}, **Triton {triton.__version__}**, ptxas "
                  f"{'; '.join(f'sm_{a}: {ptxas_version(a)}' for a in archs)} (no GPU).\n\n"
                  f"{summary}.\n\n"
                  + MARKDOWN_NOTES.format(h100=GPUS[90].name, a100=GPUS[80].name,
                                          peaks=_peaks()) + "\n")
        if targets:
            header += ("Tensor-core conv kernels on sm_90 against issue 13's goals "
                       "(specs meeting the goal / specs; the layers with a spec short of it):\n\n"
                       + "\n".join(targets) + "\n\n")
        if gated_targets:
            header += (f"The same goals over the configurations behind {UNVERIFIED_ENV}=1 "
                       "(never run on a GPU; config tags ending in `unverified`):\n\n"
                       + "\n".join(gated_targets) + "\n\n")
        if loads:
            header += ("LRN backward channel sweeps against the bound their docstrings state "
                       "(`ld.global` in the PTX per element a thread owns; static, so per "
                       "channel step):\n\n" + "\n".join(loads) + "\n\n")
        path.write_text(header + markdown_table(rows) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 1 if bad or over else 0


if __name__ == "__main__":
    sys.exit(main())
