"""The image's install steps, run in a fresh virtual environment: the runtime
dependencies from uv.lock alone (no dev group) give working console scripts for both
entrypoints. The image cannot be built here (no container engine); this is what it runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.payload_independent

REPO = Path(__file__).resolve().parents[2]


def test_runtime_install_from_the_lock_file_provides_both_entrypoints(tmp_path: Path) -> None:
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "venv")}
    subprocess.run(
        ["uv", "sync", "--frozen", "--no-dev", "--no-editable", "--quiet"],
        cwd=REPO,
        env=env,
        check=True,
        timeout=600,
    )
    for script in ("asyncjobs-api", "asyncjobs-operator"):
        shown = subprocess.run(
            [str(tmp_path / "venv" / "bin" / script), "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert "--namespace" in shown.stdout
    # The contract is package data: the installed API serves /openapi.json.
    served = subprocess.run(
        [
            str(tmp_path / "venv" / "bin" / "python"),
            "-c",
            "import json; from asyncjobs.api.ops import load_openapi; "
            "print(json.loads(load_openapi())['openapi'])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert served.returncode == 0, served.stderr
    assert served.stdout.startswith("3.")
    dev_only = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "python"), "-c", "import pytest"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert dev_only.returncode != 0, "the runtime install must not carry dev tools"
    assert "No module named 'pytest'" in dev_only.stderr
