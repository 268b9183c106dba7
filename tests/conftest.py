"""Test-wide setup.

The Triton kernels run on CPU under Triton's interpreter, which must be switched on before
``kernels`` (and so ``@triton.jit``) is first imported: this file is imported by pytest before
any test module.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


# With a GPU, the kernel tests run compiled on it (``make gpu-report``'s first stage): their
# tensors are created on the default device, which is CUDA for these modules when one exists.
KERNEL_TEST_MODULES = {
    "test_conv2d_relu", "test_conv2d_relu_edge", "test_custom_ops", "test_lrn",
    "test_max_pool2d", "test_lrn_max_pool2d", "test_convergence", "test_lrn_pool_custom_ops",
    "test_lrn_sweep", "test_conv2d_relu_tma", "test_conv2d_relu_persistent",
}


@pytest.fixture(autouse=True)
def _kernel_tests_on_the_gpu(request):
    name = request.module.__name__.rsplit(".", 1)[-1]
    if torch.cuda.is_available() and name in KERNEL_TEST_MODULES:
        with torch.device("cuda"):
            yield
    else:
        yield


# --- a tiny trained run, shared by the predict and show tests ---------------------------------

WORDNET_CLASSES = ("n01440764", "n02123045", "n03126707")  # tench, tabby, crane (the machine)


def make_image_tree(root, classes=WORDNET_CLASSES, per_class=(8, 3)):
    """train/ and val/ of small JPEGs, a bright bar placed by class on noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in zip(("train", "val"), per_class):
        for ci, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)
                img[20:60, 10 + 20 * ci:30 + 20 * ci] = 255
                Image.fromarray(img).save(d / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One epoch of the tiny preset at a 64-pixel crop on a 3-class WordNet-named tree:
    (data root, run folder, checkpoint)."""
    from pathlib import Path

    from lightning_alexnet.cli import main

    work = tmp_path_factory.mktemp("tiny_run")
    root = make_image_tree(work / "data")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        cli = main(["fit", "--config", "tiny", "--data.root", str(root),
                    "--data.resize_size", "72", "--data.crop_size", "64",
                    "--data.batch_size", "8", "--data.num_workers", "0",
                    "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
                    "--trainer.enable_progress_bar", "false",
                    "--trainer.enable_model_summary", "false"])
    finally:
        os.chdir(cwd)
    ckpt = Path(work, cli.trainer.checkpoint_callback.best_model_path)
    return root, ckpt.parent.parent, ckpt


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """The command line's ``main(args)`` -> (exit code, stdout, stderr); 0 when it returns."""
    from lightning_alexnet.cli import main

    code = 0
    try:
        main(list(args))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
