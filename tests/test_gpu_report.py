"""bench/gpu_report.py (`make gpu-report`) where no GPU is needed: arguments, the refusal without
a GPU, the plan's time limits, the report and summary built from recorded CSVs, that nothing it
imports needs jsonargparse, and (slow) the whole machinery on CPU under the interpreter."""

import csv
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SCRIPT = BENCH / "gpu_report.py"


@pytest.fixture(scope="module")
def report():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("gpu_report")
    finally:
        sys.path.remove(str(BENCH))


# hides any GPU from the child, so the no-GPU path is tested on GPU machines too
NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}


def run(args, env_extra=None, drop=("TRITON_INTERPRET",)) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for k in drop:
        env.pop(k, None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=900)


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------------------------
# Without a GPU
# ----------------------------------------------------------------------------------------------


def test_without_a_gpu_it_says_so_and_exits_2():
    before = sorted(p.name for p in (BENCH / "results").iterdir())
    proc = run([], env_extra=NO_GPU)
    assert proc.returncode == 2
    assert "no CUDA GPU visible to torch" in proc.stderr and "--summary-only DIR" in proc.stderr
    assert sorted(p.name for p in (BENCH / "results").iterdir()) == before  # nothing written


@pytest.mark.parametrize("argv, message", [
    (["--stages", "parity,bogus"], "--stages: unknown or empty ['bogus']"),
    (["--ops", ""], "--ops: unknown or empty ''"),
    (["--budget-s", "0"], "--budget-s and --jobs must be positive, got 0.0 and"),
    (["--device", "cpu", "--out", "x"], "set TRITON_INTERPRET=1"),
])
def test_bad_arguments_are_named(report, argv, message, capsys, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(SystemExit) as e:
        report.parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cpu_mode_needs_an_out_folder_and_skips_the_tests_stage(report, capsys, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(SystemExit):
        report.parse_args(["--device", "cpu"])
    assert "--device cpu needs --out" in capsys.readouterr().err
    args = report.parse_args(["--device", "cpu", "--out", "x"])
    assert args.stages == ["parity", "kernels", "train"]


@pytest.mark.parametrize("name, label, bf16, tb_s", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 989.4, 3.35),
    ("NVIDIA H200", "H200 SXM", 989.4, 4.8),
    ("NVIDIA H100 PCIe", "H100 PCIe", 756.0, 2.0),
    ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB", 312.0, 2.039),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB", 312.0, 1.935),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB", 312.0, 1.555),
])
def test_peak_table(report, name, label, bf16, tb_s):
    found, tflops, bandwidth = report.peak_of(name)
    assert (found, tflops["bf16"], bandwidth) == (label, bf16, tb_s)
    assert tflops["fp32"] < tflops["tf32"] < tflops["bf16"] == tflops["fp16"]


def test_a_triton_outside_the_pin_is_named(report):
    assert report.triton_note("3.9.0") == "" and report.triton_note("3.9.2+git1") == ""
    assert report.triton_note("3.10.0").startswith("note: Triton 3.10.0 is outside")
    assert "(>=3.9,<3.10)" in report.triton_note("3.6.0")


def test_unknown_device_has_no_peak(report):
    assert report.peak_of("NVIDIA GeForce RTX 4090") is None
    assert report.slug("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"


def test_the_plan_fits_the_budget_and_covers_every_layer(report):
    args = report.parse_args([])
    phases = report.plan(args, Path("/tmp/out"))
    names = [job.name for phase in phases for job in phase]
    tests = next(j for p in phases for j in p if j.name == "tests")
    assert {f"tests/test_{op}.py" for op in report.KERNEL_OPS} <= set(tests.argv)
    # one parity job per layer, and per precision for the convolutions (spread over the cores)
    assert {n for n in names if n.startswith("parity-")} == {
        f"parity-{layer}" + (f"-{p}" if op == "conv2d_relu" else "")
        for op, layers in report.LAYERS.items() for layer in layers
        for p in ("bf16", "fp16", "fp32", "tf32")}
    # started most relevant first: conv in bf16, the quick LRN / pool jobs, conv's others
    parity = [n.removeprefix("parity-") for n in names if n.startswith("parity-")]
    assert parity[:12] == ["conv1-bf16", "conv2-bf16", "conv3-bf16", "conv4-bf16", "conv5-bf16",
                           "lrn1", "lrn2", "pool1", "pool2", "pool5", "lrn_pool1", "lrn_pool2"]
    assert [n.split("-")[1] for n in parity[12:]] == ["tf32"] * 5 + ["fp16"] * 5 + ["fp32"] * 5
    conv3_tf32 = next(j for p in phases for j in p if j.name == "parity-conv3-tf32")
    assert conv3_tf32.argv[conv3_tf32.argv.index("--precision") + 1] == "tf32"
    assert conv3_tf32.argv[conv3_tf32.argv.index("--csv") + 1] == "/tmp/out/parity/conv3-tf32.csv"
    assert "--precision" not in next(j for p in phases for j in p if j.name == "parity-lrn1").argv
    assert [n for n in names if n.startswith("bench_")] == [
        "bench_conv2d_relu", "bench_conv2d_relu-compile", "bench_conv2d_relu-unverified",
        *[f"bench_{op}{part}" for op in report.KERNEL_OPS[1:] for part in ("", "-compile")]]
    conv = next(j for p in phases for j in p if j.name == "bench_conv2d_relu")
    assert conv.argv[conv.argv.index("--batch") + 1] == "128"
    assert [conv.argv[i + 1] for i, a in enumerate(conv.argv) if a == "--dtype"] == [
        "bf16", "tf32", "fp32"]
    # torch.compile in jobs of their own, into compile/, with the machine's Triton
    by_name = {j.name: j for p in phases for j in p}
    own = {n for n, j in by_name.items() if not j.carried}
    assert own == {f"bench_{op}-compile" for op in report.KERNEL_OPS} | {"train-compile"}
    for name in own:
        argv = by_name[name].argv
        assert argv[argv.index("--results") + 1] == "/tmp/out/compile"
        assert "triton" not in argv[argv.index("--provider" if "--provider" in argv
                                               else "--providers") + 1]
    assert [conv.argv[i + 1] for i, a in enumerate(conv.argv) if a == "--provider"] == [
        "triton", "eager"]
    # the gated configurations: parity checks them, one conv run times them, nothing else sees them
    gate = {"LIGHTNING_ALEXNET_UNVERIFIED": "1"}
    from kernels.tuning import UNVERIFIED_ENV
    assert report.UNVERIFIED_ENV == UNVERIFIED_ENV
    gated = {j.name for p in phases for j in p if j.env == gate}
    assert gated == {n for n in names if n.startswith("parity-")} | {
        "bench_conv2d_relu-unverified"}
    extra = next(j for p in phases for j in p if j.name == "bench_conv2d_relu-unverified")
    assert extra.argv[extra.argv.index("--results") + 1] == "/tmp/out/unverified"
    assert extra.argv[extra.argv.index("--provider") + 1] == "triton"
    train = [j for p in phases for j in p if j.stage == "train"]
    assert {a for j in train for a in j.argv[j.argv.index("--providers") + 1].split(",")} == {
        "eager", "triton", "compile"}
    # phases run one after the other; inside one, every job ends by the phase's longest limit
    # (tests and parity, side by side) or the sum of its limits (the timed ones, one at a time)
    worst = sum(max(job.timeout for job in phase) if phase[0].stage not in ("kernels", "train")
                else sum(job.timeout for job in phase) for phase in phases)
    assert worst <= args.budget_s + 1e-6 < 8 * 60  # (float sums of the shares)


@pytest.mark.parametrize("xdist, jobs, workers", [(True, 16, "4"), (True, 7, None),
                                                  (False, 16, None)])
def test_the_tests_stage_spreads_over_a_quarter_of_the_cores_with_xdist(
        report, monkeypatch, xdist, jobs, workers):
    monkeypatch.setattr(report, "has_xdist", lambda: xdist)
    args = report.parse_args(["--stages", "tests", "--jobs", str(jobs)])
    (tests,), = report.plan(args, Path("/tmp/out"))
    assert (tests.argv[tests.argv.index("-n") + 1] if "-n" in tests.argv else None) == workers


def test_run_jobs_kills_a_job_at_its_limit_and_records_the_others(report, tmp_path):
    py = sys.executable
    jobs = [report.Job("x", "slow", [py, "-c", "import time; time.sleep(60)"], 1.0),
            report.Job("x", "fails", [py, "-c", "import sys; print('boom'); sys.exit(3)"], 30.0),
            report.Job("x", "fine", [py, "-c", "print('hello')"], 30.0)]
    done = report.run_jobs(jobs, 3, tmp_path, "cpu")
    assert done["slow"][0] is None and done["slow"][1] < 30
    assert done["fails"][0] == 3 and done["fine"][0] == 0
    assert (tmp_path / "fails.log").read_text().strip() == "boom"


def test_run_jobs_one_at_a_time_gives_each_its_own_limit_and_environment(report, tmp_path):
    py = sys.executable
    show = "import os; print(os.environ.get('LIGHTNING_ALEXNET_UNVERIFIED', 'unset'))"
    jobs = [report.Job("x", "first", [py, "-c", "import time; time.sleep(1.5)"], 2.0),
            report.Job("x", "gated", [py, "-c", show], 2.0,
                       env={"LIGHTNING_ALEXNET_UNVERIFIED": "1"}),
            report.Job("x", "plain", [py, "-c", show], 2.0)]
    done = report.run_jobs(jobs, 1, tmp_path, "cpu")
    # sequential: the last job still gets its own 2 s after the first used 1.5 s of the phase
    assert [done[n][0] for n in ("first", "gated", "plain")] == [0, 0, 0]
    assert (tmp_path / "gated.log").read_text().strip() == "1"
    assert (tmp_path / "plain.log").read_text().strip() in ("unset", "0")


def test_run_jobs_puts_the_carried_triton_first_except_for_torch_compile(report, tmp_path):
    py = sys.executable
    show = ("import os; print(os.environ['PYTHONPATH'].split(os.pathsep)[0], "
            "os.environ.get('TRITON_BACKENDS_IN_TREE', 'unset'))")
    site = tmp_path / "site"
    jobs = [report.Job("x", "kernels", [py, "-c", show], 30.0),
            report.Job("x", "compile", [py, "-c", show], 30.0, carried=False)]
    report.run_jobs(jobs, 2, tmp_path, "cpu", site)
    assert (tmp_path / "kernels.log").read_text().split() == [str(site), "1"]
    assert (tmp_path / "compile.log").read_text().split() == [str(report.ROOT), "unset"]


# ----------------------------------------------------------------------------------------------
# The pinned Triton carried to a GPU machine that has another (bench/triton_carry.py)
# ----------------------------------------------------------------------------------------------


def fake_wheel(path: Path, version: str, driver: str = "") -> Path:
    """A wheel laid out as Triton's: what the GPU needs, and what pack leaves out."""
    import zipfile

    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("triton/__init__.py", f"__version__ = '{version}'\n")
        whl.writestr("triton/backends/__init__.py", "")
        whl.writestr("triton/backends/nvidia/__init__.py", "")
        whl.writestr("triton/backends/nvidia/driver.py", driver)
        for name in ("ptxas", "ptxas-blackwell"):
            ptxas = zipfile.ZipInfo(f"triton/backends/nvidia/bin/{name}")
            ptxas.external_attr = 0o755 << 16
            whl.writestr(ptxas, "#!/bin/sh\n")
        whl.writestr("triton/_C/libtriton.so", "x" * 1000)
        for left_out in ("triton/backends/amd/lib/libtriton_amd_codegen.so",
                         "triton/backends/nvidia/lib/cupti/libcupti.so",
                         "triton/_C/libproton.so"):
            whl.writestr(left_out, "never carried")
    return path


@pytest.fixture
def carry(monkeypatch):
    sys.path.insert(0, str(BENCH))
    try:
        module = importlib.import_module("triton_carry")
        yield module
    finally:
        sys.path.remove(str(BENCH))


def packed(carry, monkeypatch, tmp_path, version="9.1.0", driver="", arch=90):
    monkeypatch.setattr(carry, "download_wheel",
                        lambda v, py, into: fake_wheel(into / f"triton-{v}-x.whl", v, driver))
    monkeypatch.setattr(carry, "strip", lambda data, workdir: data[:10])  # binutils' job
    return carry.pack(version, "3.12", tmp_path / "carry", arch)


def test_pack_keeps_what_cuda_needs_strips_libtriton_and_unpack_names_the_version(
        carry, monkeypatch, tmp_path):
    import tarfile

    archive = packed(carry, monkeypatch, tmp_path)
    assert archive.name == "triton-9.1.0-cp312-sm90.tar.xz"
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert set(members) == {"triton/__init__.py", "triton/_C/libtriton.so",
                                "triton/backends/__init__.py",
                                "triton/backends/nvidia/__init__.py",
                                "triton/backends/nvidia/bin/ptxas-blackwell",  # sm_90's
                                "triton/backends/nvidia/driver.py"}
        assert members["triton/_C/libtriton.so"].size == 10  # stripped
        assert members["triton/backends/nvidia/bin/ptxas-blackwell"].mode == 0o755
    assert carry.unpack(archive, tmp_path / "site") == "9.1.0"
    assert os.access(tmp_path / "site/triton/backends/nvidia/bin/ptxas-blackwell", os.X_OK)
    assert carry.find_archive(archive.parent) == archive
    older = packed(carry, monkeypatch, tmp_path, version="9.2.0", arch=80)  # replaces it
    assert [p.name for p in archive.parent.iterdir()] == ["triton-9.2.0-cp312-sm80.tar.xz"]
    with tarfile.open(older) as tar:
        assert {m.name for m in tar.getmembers() if "/bin/" in m.name} == {
            "triton/backends/nvidia/bin/ptxas"}


def test_make_gpu_carry_names_a_version_it_cannot_download(tmp_path):
    # through make, as the README shows it; a version that does not exist fails at pip
    # (-o: the venv stamp counts as up to date: the test installs nothing)
    proc = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "gpu-carry",
                           f"PY={sys.executable}",
                           f"ARGS=--version 0.0.0 --python 3.11 --arch 80 --out {tmp_path}"],
                          cwd=ROOT, check=False,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]  # (then make's)
    assert line.startswith("error: pip could not download triton==0.0.0 for Python 3.11 (")
    assert line.endswith("); name another with --version / --python")
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_unpack_from_the_command_line_prints_the_version(carry, monkeypatch, tmp_path):
    archive = packed(carry, monkeypatch, tmp_path)
    proc = subprocess.run([sys.executable, str(BENCH / "triton_carry.py"), "unpack",
                           str(archive), str(tmp_path / "site")], cwd=ROOT, check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "9.1.0", proc.stderr
    assert (tmp_path / "site" / "triton" / "_C" / "libtriton.so").exists()


def test_pack_refuses_an_archive_too_big_to_carry_and_keeps_the_one_there(carry, monkeypatch,
                                                                          tmp_path):
    good = packed(carry, monkeypatch, tmp_path)
    monkeypatch.setattr(carry, "LIMIT_MB", 0)
    with pytest.raises(SystemExit, match=r"would be 0.0 MiB, over the 0 MiB the device tool"):
        packed(carry, monkeypatch, tmp_path, version="9.2.0")
    assert list(good.parent.iterdir()) == [good]


def test_unpack_refuses_a_folder_it_did_not_make_and_an_archive_that_does_not_read(
        carry, monkeypatch, tmp_path):
    archive = packed(carry, monkeypatch, tmp_path)
    mine = tmp_path / "home"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="holds files that unpack did not write"):
        carry.unpack(archive, mine)
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    broken = tmp_path / "triton-9.9.9-cp312-sm90.tar.xz"
    broken.write_bytes(b"")
    with pytest.raises(SystemExit, match=r"does not read as a \.tar\.xz .*make it again"):
        carry.unpack(broken, tmp_path / "site")


def test_unpack_extracts_again_an_archive_made_again_under_the_same_name(carry, monkeypatch,
                                                                         tmp_path):
    archive = packed(carry, monkeypatch, tmp_path)
    site = tmp_path / "site"
    carry.unpack(archive, site)
    (site / "triton" / "stale.py").write_text("")  # as if the earlier archive had held it
    assert carry.unpack(archive, site) == "9.1.0" and (site / "triton" / "stale.py").exists()
    os.utime(archive, ns=(1, 1))  # packed again: same name, another time
    assert carry.unpack(archive, site) == "9.1.0"
    assert not (site / "triton" / "stale.py").exists()


def test_the_report_uses_a_carried_triton_only_when_it_imports(report, carry, monkeypatch,
                                                               tmp_path):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(report.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    good = packed(carry, monkeypatch, tmp_path)
    site, note = report.carried_triton(good)
    assert site == tmp_path / "tmp" / f"lightning_alexnet-triton-{os.getuid()}"
    assert note.startswith("Triton 9.1.0 carried from triton-9.1.0-cp312-sm90.tar.xz ran every")
    bad = tmp_path / "bad"
    bad.mkdir()
    broken = packed(carry, monkeypatch, bad, version="9.3.0", driver="raise ImportError('gone')")
    site, note = report.carried_triton(broken)
    assert site is None
    assert note == ("carried Triton NOT used: triton-9.3.0-cp312-sm90.tar.xz failed its probe "
                    "(ImportError: gone)")
    corrupt = tmp_path / "corrupt.tar.xz"
    corrupt.write_bytes(b"not xz")
    site, note = report.carried_triton(corrupt)  # a report line, not a crash
    assert site is None and note.startswith(f"carried Triton NOT used: {corrupt} does not read")


@pytest.mark.parametrize("usable", [True, False])
def test_the_carry_is_a_row_of_the_stage_table_and_fails_the_run_when_unusable(
        report, monkeypatch, tmp_path, usable):
    import torch

    archive = tmp_path / "triton-9.1.0-cp312-sm90.tar.xz"
    archive.write_bytes(b"")
    note = "Triton 9.1.0 carried" if usable else "carried Triton NOT used: bad"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "NVIDIA H200")
    monkeypatch.setattr(report, "carried_triton",
                        lambda path: (tmp_path if usable else None, note))
    monkeypatch.setattr(report, "plan", lambda args, out: [])  # no stages: the set-up alone
    assert report.main(["--triton", str(archive), "--out", str(tmp_path / "r")]) == (
        0 if usable else 1)
    (row,) = report.read_csv(tmp_path / "r" / "stages.csv")
    assert (row["stage"], row["job"], row["status"]) == (
        "setup", "triton-carry", "ok" if usable else "failed")
    assert note in (tmp_path / "r" / "summary.txt").read_text()


def test_the_probe_runs_a_kernel_and_an_op_of_this_project():
    # the GPU's checks, under the interpreter here: a Triton that imports but cannot run fails
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / "triton_carry.py"), "probe"], cwd=ROOT,
                          env=env, check=False, capture_output=True, text=True, timeout=300)
    import triton

    assert proc.returncode == 0 and proc.stdout.strip() == triton.__version__, proc.stderr


def test_the_triton_option_is_checked(report, capsys, monkeypatch, tmp_path):
    with pytest.raises(SystemExit):
        report.parse_args(["--triton", str(tmp_path / "nope.tar.xz")])
    assert "nope.tar.xz: no such file (make one with" in capsys.readouterr().err
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(SystemExit):
        report.parse_args(["--device", "cpu", "--out", "x", "--triton", "a.tar.xz"])
    assert "the carried Triton is for --device cuda" in capsys.readouterr().err
    assert report.parse_args(["--triton", "machine"]).triton == "machine"
    monkeypatch.delenv("TRITON_INTERPRET")
    two = [tmp_path / f"triton-9.{v}.0-cp312-sm90.tar.xz" for v in (1, 2)]
    for archive in two:
        archive.write_bytes(b"")
    monkeypatch.setattr(report.triton_carry.find_archive, "__defaults__", (tmp_path,))
    with pytest.raises(SystemExit) as e:
        report.parse_args([])
    assert e.value.code == 2 and "several Triton archives in" in capsys.readouterr().err
    assert report.parse_args(["--summary-only", str(tmp_path)]).triton == "machine"


# ----------------------------------------------------------------------------------------------
# The report from recorded CSVs
# ----------------------------------------------------------------------------------------------

H100 = "NVIDIA H100 80GB HBM3"


def kernel_row(provider, mode, ms, tflops, dtype="bf16", layer="conv2"):
    return {"date": "2026-01-01 00:00", "git": "abc", "device": H100, "torch": "2.11",
            "triton": "3.6", "op": "conv2d_relu", "layer": layer, "shape": "s", "dtype": dtype,
            "provider": provider, "mode": mode, "ms_median": ms, "ms_p20": ms, "ms_p80": ms,
            "throughput": tflops, "unit": "TFLOP/s"}


def parity_row(ok, error="1e-3", note=""):
    return {"op": "conv2d_relu", "layer": "conv2", "shape": "s", "precision": "bf16",
            "autotuner": "_conv_fwd[mma]", "config": "BLOCK_M=128 w4 s3", "tensor": "output",
            "error": error, "eager_error": "1e-3", "bound": "1.6e-2", "ok": str(ok),
            "note": note}


def train_row(provider, precision, img_s, mem):
    return {"date": "2026", "git": "abc", "device": H100, "torch": "2.11", "preset": "paper",
            "towers": "2", "lrn": "True", "batch": "128", "provider": provider,
            "precision": precision, "ms_median": "10", "ms_p20": "9", "ms_p80": "11",
            "images_per_s": img_s, "peak_mem_mb": mem}


@pytest.fixture
def recorded(tmp_path):
    write_csv(tmp_path / "stages.csv", [
        {"device": H100, "stage": "parity", "job": "parity-conv2", "status": "exit 1",
         "seconds": "40"},
        {"device": H100, "stage": "kernels", "job": "bench_conv2d_relu", "status": "timed out",
         "seconds": "110"}])
    write_csv(tmp_path / "parity" / "conv2.csv",
              [parity_row(True), parity_row(False, error="0.5")])
    write_csv(tmp_path / "parity" / "conv3.csv", [parity_row(True)])
    write_csv(tmp_path / "conv2d_relu.csv", [
        kernel_row("triton", "full", "2.0", "494.7"),  # half the H100's dense bf16 peak
        kernel_row("eager", "full", "1.0", "989.4"),
        kernel_row("triton", "forward", "0.5", "300"),
    ])
    # torch.compile's job writes apart (it runs with the machine's Triton)
    write_csv(tmp_path / "compile" / "conv2d_relu.csv", [kernel_row("compile", "full", "1.5", "660")])
    (tmp_path / "triton.txt").write_text("Triton 3.6 carried from t.tar.xz ran every job\n")
    write_csv(tmp_path / "unverified" / "conv2d_relu.csv", [
        kernel_row("triton", "full", "1.6", "618")])
    write_csv(tmp_path / "train_step.csv", [
        train_row("eager", "32-true", "4000", "9000"), train_row("triton", "32-true", "3000", "8000"),
        train_row("eager", "bf16-mixed", "8000", "6000")])
    return tmp_path


def test_summary_only_builds_the_report_from_recorded_csvs(recorded):
    proc = run(["--summary-only", str(recorded)])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"GPU report: {H100}" in out and "H100 SXM" in out
    assert "parity: 3 checks (configuration x tensor), 1 failed" in out
    assert "FAILED conv2d_relu conv2 bf16 _conv_fwd[mma] BLOCK_M=128 w4 s3 output 0.5" in out
    full = next(line for line in out.splitlines() if line.startswith("conv2d_relu  conv2"))
    # triton 2 ms, cuDNN 1 ms: 0.50x; compile 1.5 ms: 0.75x; 494.7 of 989.4 TFLOP/s: 50%
    assert full.split()[4:] == ["2.000", "1.000", "1.500", "0.50x", "0.75x", "50%"]
    assert "timed out" in out and "exit 1" in out
    assert "note: Triton 3.6 is outside the range the compile report was checked with" in out
    assert "Triton 3.6 carried from t.tar.xz ran every job" in out
    gated = next(line for line in out.splitlines() if line.startswith("conv2  bf16"))
    assert gated.split() == ["conv2", "bf16", "full", "2.000", "1.600", "1.25x"]
    triton = next(line for line in out.splitlines() if line.startswith("32-true     triton"))
    assert triton.split()[2:6] == ["3000", "10", "8000", "0.75x"]
    report = (recorded / "report.md").read_text()
    assert "| conv2d_relu | conv2 | bf16 | forward | 0.500 | - | - | - | - | 30% |" in report
    assert (recorded / "summary.txt").read_text().strip() == out.strip()
    with (recorded / "parity.csv").open() as f:  # the shards merged
        assert len(list(csv.DictReader(f))) == 3


def test_summary_only_on_a_missing_folder_fails_clearly(tmp_path):
    proc = run(["--summary-only", str(tmp_path / "nope")])
    assert proc.returncode == 2 and "no such folder" in proc.stderr


def test_an_empty_report_says_there_are_no_results(report, tmp_path):
    summary = report.write_report(tmp_path)
    assert "parity: no results" in summary and summary.count("no results") == 4
    assert "is not in bench/gpu_report.py's table" in summary


# ----------------------------------------------------------------------------------------------
# What it imports: the bare GPU machine has no jsonargparse
# ----------------------------------------------------------------------------------------------


def test_nothing_the_report_runs_imports_jsonargparse():
    code = ("import sys; sys.modules['jsonargparse'] = None; sys.path.insert(0, 'bench')\n"
            "import gpu_report, parity, bench_train_step, bench_data, bench_conv2d_relu\n"
            "import bench_lrn, bench_max_pool2d, bench_lrn_max_pool2d, kernels\n"
            "import lightning_alexnet.model, lightning_alexnet.data\n"
            "print('ok')")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# ----------------------------------------------------------------------------------------------
# The whole machinery on CPU (Triton interpreter, quick shapes)
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cpu_smoke_run_writes_every_file(tmp_path):
    proc = run(["--device", "cpu", "--out", str(tmp_path), "--ops", "max_pool2d",
                "--budget-s", "1500", "--jobs", "2"], env_extra={"TRITON_INTERPRET": "1"},
               drop=())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("report.md", "summary.txt", "stages.csv", "parity.csv", "max_pool2d.csv",
                 "max_pool2d.md", "train_step.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    with (tmp_path / "parity.csv").open() as f:
        rows = list(csv.DictReader(f))
    # 3 pool layers x fp32 x 2 autotuners x 1 config x (output, grad_input)
    assert len(rows) == 12 and all(r["ok"] == "True" for r in rows)
    assert "parity: 12 checks (configuration x tensor), 0 failed" in proc.stdout
    assert "max_pool2d  pool5  fp32" not in proc.stdout  # forward only: no full-mode row
    assert "eager" in (tmp_path / "train_step.csv").read_text()


# ----------------------------------------------------------------------------------------------
# The README's command: make gpu-report
# ----------------------------------------------------------------------------------------------


def make(*args, env_extra=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH")}
    env.update(env_extra or {})
    return subprocess.run(["make", "--no-print-directory", "gpu-report",
                           f"PY={sys.executable}", *args], cwd=ROOT, env=env, check=False,
                          capture_output=True, text=True, timeout=600)


def test_make_gpu_report_rebuilds_a_summary(recorded):
    proc = make(f"ARGS=--summary-only {recorded}")
    assert proc.returncode == 0, proc.stderr
    assert "parity: 3 checks (configuration x tensor), 1 failed" in proc.stdout
    assert (recorded / "report.md").exists()


def test_make_gpu_report_without_a_gpu_fails_with_the_message():
    proc = make(env_extra=NO_GPU)
    assert proc.returncode != 0 and "no CUDA GPU visible to torch" in proc.stderr
