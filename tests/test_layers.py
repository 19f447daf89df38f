import shutil
import subprocess
import sys
from pathlib import Path


def test_import_contracts_hold():
    """The layers of DESIGN.md, checked by import-linter against the contracts in pyproject.toml."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    result = subprocess.run([lint, "--no-cache"], cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
