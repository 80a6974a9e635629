"""tools/plane.py refuses clearly instead of half-starting: a taken port is named and
the exit status is non-zero; `status` of a plane that is not running says so."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.payload_independent

REPO = Path(__file__).resolve().parents[2]
PLANE = REPO / "tools" / "plane.py"


@pytest.mark.skipif(bool(os.environ.get("KUBECONFIG")), reason="a user cluster is in use")
def test_taken_port_is_a_clear_error(tmp_path: Path, kubeconfig_path: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = subprocess.run(
            [sys.executable, str(PLANE), "up"],
            env={
                **os.environ,
                "ASYNCJOBS_PLANE_DIR": str(tmp_path),
                "ASYNCJOBS_ETCD_PORT": str(port),
                "ASYNCJOBS_APISERVER_PORT": "1",
            },
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 1
    assert f"port {port} (etcd) is taken by another process" in result.stderr
    assert not (tmp_path / "etcd.pid").exists()


def test_status_of_a_plane_that_is_not_running_exits_non_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(PLANE), "status"],
        env={**os.environ, "ASYNCJOBS_PLANE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout.strip()) == (1, "down")
