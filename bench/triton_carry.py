"""Take the pinned Triton to a GPU machine that has another one and no network.

    python bench/triton_carry.py pack                # here: .gpu/triton-<version>-cp312-sm90.tar.xz
    python bench/triton_carry.py unpack ARCHIVE DIR  # there (gpu_report.py does it itself)
    PYTHONPATH=DIR python bench/triton_carry.py probe  # its version, after one kernel on the GPU

The borrowed GPU machine has Triton 3.6 and cannot install anything, while the kernels are
tuned and checked (``python -m kernels.compile_report``) with the version pyproject.toml pins:
under 3.6 the same tree spills 10 of its 250 default sm_90 kernels and pipelines 91 of 142 conv
loops (bench/results/compile_report-triton-3.6.0-sm_90.md), so its figures would not be these
kernels'. ``pack`` downloads the wheel of the Triton installed here (the pinned one, after
``make fit`` / ``make test``) for the GPU machine's Python (3.12 by default) from the package
index and keeps what compiling and launching CUDA kernels needs: the Python package,
``libtriton.so`` with its debug sections stripped (500 MB -> 190 MB), the NVIDIA backend with the
``ptxas`` Triton uses for the GPU's architecture (``--arch``), headers and libdevice. Left out:
the AMD backend, CUPTI and the profiler's library, the other ``ptxas``, test plugins. The
archive (53 MiB, xz) goes in ``.gpu/``, which git ignores and the device tool carries
(``carry: [".gpu"]``); the device machine's file limit is 64 MiB with the checkout.

``bench/gpu_report.py`` unpacks ``.gpu/triton-*.tar.xz`` when there is one (``--triton``) and
runs the kernel tests, parity, the Triton and eager timings with it (``TRITON_BACKENDS_IN_TREE=1``
so that only its own NVIDIA backend is loaded); ``torch.compile``'s timings keep the machine's
Triton, the one its torch was built with.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRY_DIR = ROOT / ".gpu"
LIMIT_MB = 60  # the device tool carries 64 MiB, the checkout included
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")
# wheel paths (prefixes) not needed to compile and launch on an NVIDIA GPU
LEFT_OUT = ("triton/backends/amd/", "triton/backends/nvidia/lib/cupti", "triton/_C/libproton.so",
            "triton/instrumentation/", "triton/plugins/", "triton/FileCheck")
STRIPPED = ("triton/_C/libtriton.so",)
# Triton compiles sm_90 and later with its CUDA 13 ptxas ("ptxas-blackwell", despite the name)
# and older GPUs with the other: the archive holds the one its GPU needs (both would not fit)
PTXAS = {80: "triton/backends/nvidia/bin/ptxas", 90: "triton/backends/nvidia/bin/ptxas-blackwell"}


def archive_name(version: str, python: str, arch: int) -> str:
    return f"triton-{version}-cp{python.replace('.', '')}-sm{arch}.tar.xz"


def download_wheel(version: str, python: str, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", "-d", str(into),
           *[a for p in PLATFORMS for a in ("--platform", p)], f"triton=={version}"]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    wheels = sorted(into.glob(f"triton-{version}-*.whl"))
    if done.returncode or not wheels:
        said = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]  # pip's reason
        raise SystemExit(f"error: pip could not download triton=={version} for Python {python} "
                         f"({said}); name another with --version / --python")
    return wheels[0]


def strip(data: bytes, workdir: Path) -> bytes:
    path = workdir / "lib.so"
    path.write_bytes(data)
    try:
        subprocess.run(["strip", "--strip-unneeded", str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"error: `strip` (binutils) failed on libtriton.so: {e}; install "
                         "binutils, the archive would not fit the device tool's 64 MiB") from e
    return path.read_bytes()


def pack(version: str, python: str, out_dir: Path, arch: int = 90) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / archive_name(version, python, arch)
    other_ptxas = {path for a, path in PTXAS.items() if a != arch}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wheel = download_wheel(version, python, tmp)
        print(f"packing {wheel.name} -> {out} (xz, a few minutes) ...", flush=True)
        partial = out.with_suffix(".partial")
        with zipfile.ZipFile(wheel) as whl, tarfile.open(partial, "w:xz", preset=9) as tar:
            for info in whl.infolist():
                name = info.filename
                if info.is_dir() or name.startswith(LEFT_OUT) or name in other_ptxas:
                    continue
                data = whl.read(info)
                if name in STRIPPED:
                    data = strip(data, tmp)
                entry = tarfile.TarInfo(name)
                entry.size = len(data)
                # executables (ptxas) keep their mode: the wheel records it in external_attr
                entry.mode = (info.external_attr >> 16) & 0o777 or 0o644
                tar.addfile(entry, io.BytesIO(data))
        size = partial.stat().st_size / 2**20
        if size > LIMIT_MB:  # the archives already there stay as they were
            partial.unlink()
            raise SystemExit(f"error: the archive would be {size:.1f} MiB, over the {LIMIT_MB} "
                             "MiB the device tool can carry beside the checkout")
        partial.replace(out)
    for old in out_dir.glob("triton-*.tar.xz"):  # one archive: gpu_report.py takes the only one
        if old != out:
            old.unlink()
    print(f"wrote {out} ({size:.1f} MiB)")
    return out


MARKER = ".triton-carry"  # in a folder unpack made: which archive it holds


def unpack(archive: Path, into: Path) -> str:
    """Extract ``archive`` into ``into`` and return the Triton version it holds. ``into`` is
    the tool's own: new or empty, or made by an earlier unpack (its MARKER names the archive,
    size and time; a folder holding another is emptied first, one holding this one is kept).
    Any other folder is refused, as is an archive that does not read."""
    stat = archive.stat()
    identity = f"{archive.resolve()} {stat.st_size} {stat.st_mtime_ns}\n"
    marker = into / MARKER
    if not (marker.exists() and marker.read_text() == identity):
        if into.exists() and any(into.iterdir()) and not marker.exists():
            raise SystemExit(f"error: {into} holds files that unpack did not write; give an "
                             "empty or new folder")
        shutil.rmtree(into, ignore_errors=True)  # no files of another version stay beside it
        into.mkdir(parents=True)
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(into, filter="data")
        except (tarfile.TarError, lzma.LZMAError, EOFError, OSError) as e:
            why = " ".join(str(e).split())[:200]  # tarfile's says why per method, in lines
            raise SystemExit(f"error: {archive} does not read as a .tar.xz ({why}); make it "
                             "again with `python bench/triton_carry.py pack`") from None
        marker.write_text(identity)
    init = into / "triton" / "__init__.py"
    for line in (init.read_text().splitlines() if init.exists() else []):
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("'\"")
    raise SystemExit(f"error: {archive} holds no triton/__init__.py with a __version__")


def probe() -> str:
    """The Triton version this process imports; with a GPU, after compiling and running one
    small kernel with it, and one of this project's ops (a custom operator, as torch dispatches
    it) against PyTorch: what a carried Triton must do beside the machine's torch."""
    import torch
    import triton
    import triton.backends.nvidia.driver  # the backend gpu_report's jobs load

    # the GPU; on a CPU the same checks under the interpreter (tests), else the imports only
    device = ("cuda" if torch.cuda.is_available() else
              "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else None)
    if device:
        import triton.language as tl

        @triton.jit
        def add_one(x_ptr, n: tl.constexpr):
            offs = tl.arange(0, n)
            tl.store(x_ptr + offs, tl.load(x_ptr + offs) + 1.0)

        x = torch.zeros(64, device=device)
        add_one[(1,)](x, 64)
        if x.sum().item() != 64:
            raise SystemExit(f"error: Triton {triton.__version__}'s test kernel wrote "
                             f"{x.sum().item()}, not 64")
        from kernels import max_pool2d

        x = torch.randn(2, 8, 13, 13, device=device)
        if not torch.equal(max_pool2d(x, 3, 2), torch.nn.functional.max_pool2d(x, 3, 2)):
            raise SystemExit(f"error: kernels.max_pool2d under Triton {triton.__version__} "
                             "differs from PyTorch's")
    return triton.__version__


def find_archive(folder: Path = CARRY_DIR) -> Path | None:
    """The one ``triton-*.tar.xz`` in ``folder``, or None; several: ValueError naming them."""
    found = sorted(folder.glob("triton-*.tar.xz"))
    if len(found) > 1:
        raise ValueError(f"several Triton archives in {folder}: "
                         f"{', '.join(p.name for p in found)}; keep one")
    return found[0] if found else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("pack", help="download the pinned Triton's wheel, write .gpu/*.tar.xz")
    pk.add_argument("--version", help="Triton version (default: the one installed here)")
    pk.add_argument("--python", default="3.12", help="the GPU machine's Python (default 3.12)")
    pk.add_argument("--arch", type=int, choices=sorted(PTXAS), default=90,
                    help="the GPU: 90 for sm_90 and later (H100/H200, the default), 80 for "
                         "A100-class (each needs its own ptxas)")
    pk.add_argument("--out", type=Path, default=CARRY_DIR)
    up = sub.add_parser("unpack", help="extract an archive; prints the Triton version")
    up.add_argument("archive", type=Path)
    up.add_argument("into", type=Path)
    sub.add_parser("probe", help="print the Triton version imported here, after running one "
                   "kernel with it when there is a GPU")
    args = p.parse_args(argv)
    if args.command == "probe":
        print(probe())
    elif args.command == "pack":
        version = args.version or importlib.metadata.version("triton")
        pack(version, args.python, args.out, args.arch)
    else:
        if not args.archive.is_file():
            p.error(f"{args.archive}: no such file")
        print(unpack(args.archive, args.into))
    return 0


if __name__ == "__main__":
    sys.exit(main())
