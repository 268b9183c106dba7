"""Every script in bench/ runs to the end on CPU with its quickest option, as a user runs it
(`python bench/<script>.py ...`), writing into a temporary folder, never bench/results/."""

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None

# script -> (quickest arguments, files it writes, CSV rows one run appends); "OUT" is replaced
# by the temporary folder
KERNEL_ARGS = ["--device", "cpu", "--quick", "--provider", "eager", "--dtype", "fp32",
               "--results", "OUT"]
SCRIPTS = {
    "bench_conv2d_relu.py": (KERNEL_ARGS, ["conv2d_relu.csv", "conv2d_relu.md"], 5 * 3),
    "bench_lrn.py": (KERNEL_ARGS, ["lrn.csv", "lrn.md"], 2 * 3),
    "bench_max_pool2d.py": (KERNEL_ARGS, ["max_pool2d.csv", "max_pool2d.md"], 3 * 3),
    "bench_lrn_max_pool2d.py": (KERNEL_ARGS, ["lrn_max_pool2d.csv", "lrn_max_pool2d.md"], 2 * 3),
    "bench_train_step.py": (["--device", "cpu", "--quick", "--providers", "eager",
                             "--results", "OUT"], ["train_step.csv", "train_step.md"], 1),
    "bench_data.py": (["--quick", "--results", "OUT"], ["data.csv", "data.md"], 5),
    # the Triton kernels under the interpreter (TRITON_INTERPRET=1 for this one): one layer,
    # fp32, 2 autotuners x 1 config x 2 tensors
    "parity.py": (["--device", "cpu", "--quick", "--precision", "fp32", "--op", "max_pool2d",
                   "--layer", "pool5", "--csv", "OUT/parity.csv"], ["parity.csv"], 4),
}
# bench/gpu_report.py needs a GPU and triton_carry.py a package index: tests/test_gpu_report.py
# covers their CPU paths
NOT_HERE = {"_common.py", "gpu_report.py", "triton_carry.py"}


def run_script(name: str, args: list[str], out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRITON_INTERPRET", None)  # as a user runs them: CPU providers only
    if name == "parity.py":
        env["TRITON_INTERPRET"] = "1"
    argv = [a.replace("OUT", str(out)) for a in args]
    return subprocess.run([sys.executable, str(BENCH / name), *argv], cwd=ROOT, env=env,
                          check=False, capture_output=True, text=True, timeout=600)


def bench_module(name: str):
    """A bench script imported in this process (bench/ on sys.path, as when run)."""
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCH))


def test_every_bench_script_is_covered():
    scripts = {p.name for p in BENCH.glob("*.py")} - NOT_HERE
    assert scripts == set(SCRIPTS)


# The kernel scripts share bench/_common.py's machinery, which bench_conv2d_relu.py exercises
# in the default set; the other three and the training step (5-8 s each) run with the slow ones.
SLOW_SCRIPTS = {"bench_lrn.py", "bench_max_pool2d.py", "bench_lrn_max_pool2d.py",
                "bench_train_step.py"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_SCRIPTS
                                  else n for n in sorted(SCRIPTS)])
def test_bench_script_runs_to_the_end(name, tmp_path):
    args, files, rows = SCRIPTS[name]
    committed = {p: p.stat().st_mtime_ns for p in (BENCH / "results").iterdir()}
    proc = run_script(name, args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for f in files:
        assert (tmp_path / f).stat().st_size > 0, f"{f} not written"
    with (tmp_path / files[0]).open() as f:
        assert len(list(csv.DictReader(f))) == rows
    if args is KERNEL_ARGS:
        png = tmp_path / files[0].replace(".csv", ".png")
        if HAS_MATPLOTLIB:
            assert png.stat().st_size > 0 and f"wrote {png}" in proc.stdout
        else:
            assert "no plot: matplotlib is not installed" in proc.stdout
    assert {p: p.stat().st_mtime_ns for p in (BENCH / "results").iterdir()} == committed


@pytest.mark.parametrize("script, argv, message", [
    ("bench_train_step", ["--device", "cpu", "--providers", "cudnn"],
     "--providers: unknown ['cudnn']"),
    ("bench_train_step", ["--device", "cpu", "--precision", "fp8"], "--precision: unknown ['fp8']"),
    ("bench_data", ["--images", "0"], "--images and --rounds must be >= 1, got 0 and 5"),
])
def test_bench_rejects_a_bad_option_with_a_message(script, argv, message, capsys):
    module = bench_module(script)
    parse = getattr(module, "parse_args", None) or module.main
    with pytest.raises(SystemExit) as e:
        parse(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_kernel_bench_refuses_triton_on_cpu_without_the_interpreter(monkeypatch, capsys):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(SystemExit):
        bench_module("_common").parse_args(bench_module("bench_lrn").OP,
                                           ["--device", "cpu", "--provider", "triton"])
    assert "needs the Triton interpreter: run with TRITON_INTERPRET=1" in capsys.readouterr().err


@pytest.mark.parametrize("name", [
    "parity.py",
    pytest.param("bench_conv2d_relu.py", marks=pytest.mark.slow),  # same helper, other caller
    pytest.param("bench_train_step.py", marks=pytest.mark.slow),  # the text passed on by ops
])
def test_a_bad_gate_value_is_one_line_and_exit_2(name, tmp_path):
    args = {"bench_conv2d_relu.py": ["--device", "cpu", "--quick", "--provider", "triton",
                                     "--dtype", "fp32", "--results", "OUT"],
            "bench_train_step.py": ["--device", "cpu", "--quick", "--providers", "triton",
                                    "--results", "OUT"]}.get(name, SCRIPTS[name][0])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1",
           "LIGHTNING_ALEXNET_UNVERIFIED": "yes"}
    proc = subprocess.run([sys.executable, str(BENCH / name),
                           *[a.replace("OUT", str(tmp_path)) for a in args]], cwd=ROOT,
                          env=env, check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: LIGHTNING_ALEXNET_UNVERIFIED='yes': set it to 1")
    assert "Traceback" not in proc.stderr
    from kernels.tuning import UNVERIFIED_ENV

    assert bench_module("_common").UNVERIFIED_ENV == UNVERIFIED_ENV


def test_append_csv_keeps_old_rows_when_columns_are_added(tmp_path):
    append_csv = bench_module("_common").append_csv
    path = tmp_path / "x.csv"
    append_csv(path, ["a", "b"], [{"a": 1, "b": 2}])
    append_csv(path, ["a", "b", "c"], [{"a": 3, "b": 4, "c": 5}])
    append_csv(path, ["a", "b", "c"], [{"a": 6, "b": 7, "c": 8}])
    with path.open() as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["a", "b", "c"]
        assert [tuple(r.values()) for r in reader] == [("1", "2", ""), ("3", "4", "5"),
                                                        ("6", "7", "8")]
