"""Ahead-of-time compilation of the kernels for GPUs this machine does not have.

``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` lowers a ``@triton.jit``
function to PTX and a cubin without a driver. Registers and spills are not in Triton's metadata
without a GPU (they are filled in when the cubin is loaded), so they come from the bundled
``ptxas -v``, run on the PTX with the flags Triton itself uses for the cubin. Tensor cores are
read from the PTX: ``mma.sync`` (sm_80) and ``wgmma.mma_async`` (sm_90a). :func:`ptx_stats` reads
how the memory side was lowered (load widths, ``cp.async``/TMA, pipelining depth, wgmma overlap).

Specs come from each kernel module's ``aot_specs()`` (:class:`kernels._common.KernelSpec`). Under
``TRITON_INTERPRET=1`` (the test suite) ``@triton.jit`` returns interpreter objects: helper
kernels in a module's globals are ``InterpretedFunction``s the code generator cannot lower, and
running the interpreter patches ``triton.language`` for the rest of the process. So compilation
runs in worker processes started with the interpreter off, which rebuild the specs by
(module, index); see :func:`compile_specs`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import importlib
import io
import multiprocessing
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import triton
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.cache import get_cache_manager

from kernels._common import KernelSpec

ARCHS = (80, 90)
KERNEL_MODULES = ("kernels.conv2d_relu", "kernels.lrn", "kernels.max_pool2d",
                  "kernels.lrn_max_pool2d")

_MMA = re.compile(r"\b(wgmma\.mma_async|mma\.sync)\b")
_REGS = re.compile(r"Used (\d+) registers")
_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
# one PTX instruction, after an optional predicate guard: "@%p3 ld.global.v4.b32 {...}, [...];"
_INSTR = re.compile(r"^\s*(?:@!?%\w+\s+)?([a-z][\w.:]*)\s*(.*?);?\s*$", re.MULTILINE)
_BITS = re.compile(r"^[bsuf](8|16|32|64|128)$")


@dataclass(frozen=True)
class PtxStats:
    """How a kernel's memory side was lowered, read from its PTX (static instruction counts,
    not executions: a load inside the main loop counts once)."""

    ld_global: dict[int, int]  # bytes per thread per ld.global -> how many instructions
    cp_async: dict[int, int]  # bytes per cp.async (global -> shared, Ampere+) -> how many
    tma: int  # cp.async.bulk.tensor (Hopper TMA) instructions
    cp_async_wait: int | None  # deepest cp.async.wait_group N: N groups left in flight
    wgmma_wait: int | None  # deepest wgmma.wait_group N: N > 0 keeps MMAs in flight (sm_90)

    @property
    def pipelined(self) -> bool:
        """Async copies with at least one group in flight while the MMA works on another."""
        return bool(self.cp_async_wait) or self.tma > 0

    @property
    def widest_load(self) -> int:
        return max([*self.ld_global, *self.cp_async, 0])

    @property
    def narrowest_load(self) -> int:
        """Bytes of the narrowest global load or copy (0: none): 16 means all are 128-bit."""
        return min([*self.ld_global, *self.cp_async], default=0)


def _access_bytes(opcode: str) -> int:
    """Bytes one thread moves with ``ld.global[.mods][.vN].<type>``, e.g. v4.b32 -> 16."""
    parts = opcode.split(".")
    vec = next((int(p[1:]) for p in parts if re.fullmatch(r"v\d+", p)), 1)
    bits = next((int(m.group(1)) for p in reversed(parts) if (m := _BITS.match(p))), 0)
    if not bits:
        raise ValueError(f"no operand type in PTX instruction {opcode!r}")
    return vec * bits // 8


def ptx_stats(ptx: str) -> PtxStats:
    """Global load widths, async copies and wait depths of one kernel's PTX."""
    ld_global: dict[int, int] = {}
    cp_async: dict[int, int] = {}
    tma = 0
    waits: dict[str, list[int]] = {"cp": [], "wgmma": []}
    for m in _INSTR.finditer(ptx):
        opcode, operands = m.group(1), m.group(2)
        if opcode.startswith("ld.global"):
            size = _access_bytes(opcode)
            ld_global[size] = ld_global.get(size, 0) + 1
        elif opcode.startswith("cp.async.bulk.tensor"):
            tma += 1
        elif opcode.startswith(("cp.async.ca.shared.global", "cp.async.cg.shared.global")):
            # cp.async.cg.shared.global [dst], [src], cp-size(, src-size): 4, 8 or 16 bytes
            size = int(operands.split(",")[2].strip(), 0)
            cp_async[size] = cp_async.get(size, 0) + 1
        elif opcode == "cp.async.wait_group":
            waits["cp"].append(int(operands.strip(), 0))
        elif opcode.startswith("wgmma.wait_group"):
            waits["wgmma"].append(int(operands.strip(), 0))
    return PtxStats(ld_global=dict(sorted(ld_global.items(), reverse=True)),
                    cp_async=dict(sorted(cp_async.items(), reverse=True)), tma=tma,
                    cp_async_wait=max(waits["cp"], default=None),
                    wgmma_wait=max(waits["wgmma"], default=None))


@dataclass(frozen=True)
class SpecRef:
    """A spec by where it comes from, so a clean worker process can rebuild it."""

    module: str  # a module with aot_specs()
    index: int
    name: str


@dataclass
class CompileResult:
    name: str
    arch: int
    ok: bool
    error: str = ""
    registers: int | None = None
    spill_stores: int | None = None  # bytes, from ptxas -v
    spill_loads: int | None = None
    shared: int | None = None  # bytes of dynamic shared memory (Triton metadata)
    stats: PtxStats | None = None  # from the PTX, see ptx_stats
    mma: str = ""  # "wgmma", "mma" or "" (no tensor-core instruction in the PTX)
    uses_dot: bool = False  # the spec's promise: must compile to mma/wgmma
    num_warps: int = 0
    num_stages: int = 0
    seconds: float = 0.0
    ptxas_log: str = ""
    ptx: str = field(default="", repr=False)
    cubin: bytes = field(default=b"", repr=False)

    @property
    def spills(self) -> int:
        return (self.spill_stores or 0) + (self.spill_loads or 0)

    @property
    def status(self) -> str:
        if not self.ok:
            return "ERROR"
        if self.spills:
            return "SPILL"
        if self.uses_dot and not self.mma:
            return "NO-MMA"
        return "ok"


def sm_name(arch: int) -> str:
    """ptxas's name for a capability, as Triton passes it (sm_90 -> sm_90a for wgmma)."""
    return f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"


def ptxas_path(arch: int) -> str:
    """The ptxas Triton itself uses for ``arch`` (Triton 3.9 takes its CUDA 13 one from sm_90)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError:  # older layouts
        return (knobs.nvidia.ptxas_blackwell if arch >= 100 else knobs.nvidia.ptxas).path
    return get_ptxas(arch).path


def run_ptxas(ptx: str, arch: int) -> str:
    """``ptxas -v`` on the PTX with Triton's own cubin flags; returns the log (stderr)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [ptxas_path(arch), "-lineinfo", "-v", "--regAllocOptLevel=2",
               f"--gpu-name={sm_name(arch)}", src, "-o", src + ".o"]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ptxas failed ({done.returncode}) for {sm_name(arch)}:\n{done.stderr}")
    return done.stderr


def _ptxas_log(kernel, arch: int) -> str:
    """The ptxas log, cached next to Triton's own cache entry for this compiled kernel."""
    cache = get_cache_manager(kernel.hash)
    fname = f"aot_ptxas_{sm_name(arch)}.log"
    path = cache.get_file(fname)
    if path is not None:
        with open(path) as f:
            return f.read()
    log = run_ptxas(kernel.asm["ptx"], arch)
    cache.put(log, fname, binary=False)
    return log


def attrs_for(spec: KernelSpec) -> dict:
    """The JIT's tt.divisibility=16 hints, keyed by argument index path as ASTSource wants."""
    names = list(spec.fn.arg_names)
    unknown = [a for a in spec.divisible if a not in names]
    if unknown:
        raise ValueError(f"{spec.name}: divisible names unknown arguments {unknown}")
    return {(names.index(a),): [["tt.divisibility", 16]] for a in spec.divisible}


def compile_spec(spec: KernelSpec, arch: int, keep_asm: bool = True) -> CompileResult:
    """Compile one spec for ``sm_<arch>`` in this process; errors are returned, not raised.

    Needs real ``JITFunction``s: in a process running the interpreter use :func:`compile_specs`.
    """
    from triton.runtime.jit import JITFunction

    start = time.perf_counter()
    base = {"name": spec.name, "arch": arch, "uses_dot": spec.uses_dot,
            "num_warps": spec.num_warps, "num_stages": spec.num_stages}
    if not isinstance(spec.fn, JITFunction):
        raise TypeError(
            f"{spec.name}: fn is {type(spec.fn).__name__}, not a JITFunction (TRITON_INTERPRET=1 "
            "at import?); compile with kernels._aot.compile_specs, which uses clean workers"
        )
    noise = io.StringIO()  # Triton prints the whole PTX to stdout when ptxas fails
    try:
        src = ASTSource(spec.fn, dict(spec.signature), dict(spec.constexprs), attrs_for(spec))
        with contextlib.redirect_stdout(noise):
            kernel = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                                    options={"num_warps": spec.num_warps,
                                             "num_stages": spec.num_stages})
        log = _ptxas_log(kernel, arch)
    except Exception as e:  # noqa: BLE001 -- one report per spec, whatever failed
        message = f"{type(e).__name__}: {e}".strip()
        return CompileResult(**base, ok=False, error=message[:4000],
                             seconds=time.perf_counter() - start)
    regs = _REGS.findall(log)
    spills = _SPILLS.findall(log)
    if not regs or not spills:
        return CompileResult(**base, ok=False, error=f"unreadable ptxas -v log:\n{log}",
                             ptxas_log=log, seconds=time.perf_counter() - start)
    ptx = kernel.asm["ptx"]
    found = {m.group(1) for m in _MMA.finditer(ptx)}
    mma = "wgmma" if "wgmma.mma_async" in found else "mma" if found else ""
    return CompileResult(
        **base, ok=True, registers=max(int(r) for r in regs),
        spill_stores=sum(int(s) for s, _ in spills), spill_loads=sum(int(ld) for _, ld in spills),
        shared=int(kernel.metadata.shared), mma=mma, stats=ptx_stats(ptx),
        seconds=time.perf_counter() - start,
        ptxas_log=log, ptx=ptx if keep_asm else "", cubin=kernel.asm["cubin"] if keep_asm else b"",
    )


# ----------------------------------------------------------------------------------------------
# Many specs, in clean worker processes
# ----------------------------------------------------------------------------------------------


def spec_refs(modules=KERNEL_MODULES) -> list[tuple[SpecRef, KernelSpec]]:
    """Every (reference, spec) of the given modules' ``aot_specs()``, in order."""
    out = []
    for module in modules:
        for i, spec in enumerate(_load_specs(module)):
            out.append((SpecRef(module, i, spec.name), spec))
    return out


@functools.cache
def _load_specs(module: str) -> tuple[KernelSpec, ...]:
    mod = importlib.import_module(module)  # not getattr: kernels.conv2d_relu is also a function
    if not hasattr(mod, "aot_specs"):
        raise AttributeError(f"module {module} has no aot_specs()")
    return tuple(mod.aot_specs())


def _compile_ref(ref: SpecRef, arch: int, keep_asm: bool) -> CompileResult:
    try:
        spec = _load_specs(ref.module)[ref.index]
        if spec.name != ref.name:
            raise LookupError(f"{ref.module}.aot_specs()[{ref.index}] is {spec.name!r}, "
                              f"expected {ref.name!r}")
    except Exception as e:  # noqa: BLE001
        return CompileResult(name=ref.name, arch=arch, ok=False, error=f"{type(e).__name__}: {e}")
    return compile_spec(spec, arch, keep_asm=keep_asm)


@contextlib.contextmanager
def _interpreter_off():
    """Workers inherit the environment at start: they must import the kernels compiled."""
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved


def default_jobs() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def compile_specs(jobs_list: list[tuple[SpecRef, int]], jobs: int | None = None,
                  keep_asm: bool = False, progress=None) -> list[CompileResult]:
    """Compile every (spec reference, arch), in order, collecting errors per spec.

    Runs in ``jobs`` spawned worker processes with the interpreter off (in this process only
    when ``jobs == 1`` and the interpreter is off here). ``progress(result)`` is called as each
    one finishes. Triton's cache (~/.triton/cache) makes repeated runs fast.
    """
    jobs = default_jobs() if jobs is None else jobs
    if jobs == 1 and not knobs.runtime.interpret:
        results = []
        for ref, arch in jobs_list:
            results.append(_compile_ref(ref, arch, keep_asm))
            if progress:
                progress(results[-1])
        return results
    results: list[CompileResult | None] = [None] * len(jobs_list)
    with _interpreter_off(), cf.ProcessPoolExecutor(
        max_workers=max(1, min(jobs, len(jobs_list))),
        mp_context=multiprocessing.get_context("spawn"),
    ) as pool:
        futures = {pool.submit(_compile_ref, ref, arch, keep_asm): i
                   for i, (ref, arch) in enumerate(jobs_list)}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                results[i] = fut.result()
            except Exception as e:  # noqa: BLE001 -- a crashed worker fails its spec only
                ref, arch = jobs_list[i]
                results[i] = CompileResult(name=ref.name, arch=arch, ok=False,
                                           error=f"worker failed: {type(e).__name__}: {e}")
            if progress:
                progress(results[i])
    return results  # type: ignore[return-value]
