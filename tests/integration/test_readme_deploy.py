"""The README's deploy commands, run as a new user would after `scripts/up`: its plane
already serves the CRD (tools/plane.py installs it without Helm's ownership metadata), and
the documented `helm install` for that plane installs the chart. The commands are read
from README.md, so the test follows the README; only the namespace is made unique."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.payload_independent

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BIN_DIR = Path(
    os.environ.get(
        "ASYNCJOBS_BIN_DIR",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asyncjobs" / "bin",
    )
)
DOCUMENTED_NAMESPACE = "asyncjobs"


def deploy_commands() -> list[str]:
    """Every command of the shell blocks in the README's "Deploying" section, with
    continuation lines joined and comments dropped."""
    section = README.read_text().split("\n## Deploying\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL):
        joined = block.replace("\\\n", " ")
        commands += [line.strip() for line in joined.splitlines() if line.strip()[:1] not in "#"]
    return commands


def plane_helm_install() -> list[str]:
    """The helm install the README gives for the plane of `scripts/up` (the one that
    leaves the CRD to the plane)."""
    installs = [c for c in deploy_commands() if c.startswith("helm install")]
    assert installs, "the README's deploy section has no helm install"
    for_plane = [c for c in installs if "crds.enabled=false" in c] or installs
    return shlex.split(for_plane[0])


def run(kubeconfig: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    path = f"{BIN_DIR}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(
        argv,
        env={**os.environ, "KUBECONFIG": kubeconfig, "PATH": path},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def after_scripts_up(kubeconfig_path: str) -> Iterator[str]:
    """What `scripts/up` leaves behind that matters to Helm: the plane's CRD, installed by
    tools/plane.py, and the namespace it creates. Yields that namespace."""
    namespace = f"readme-{uuid.uuid4().hex[:8]}"
    plane = run(kubeconfig_path, [sys.executable, "tools/plane.py", "up"])
    assert plane.returncode == 0, plane.stderr
    created = run(kubeconfig_path, ["kubectl", "create", "namespace", namespace])
    assert created.returncode == 0, created.stderr
    yield namespace
    run(kubeconfig_path, ["helm", "uninstall", "asyncjobs", "--namespace", namespace])
    run(kubeconfig_path, ["kubectl", "delete", "namespace", namespace, "--wait=false"])


def test_the_readme_helm_install_works_on_the_plane_of_scripts_up(
    kubeconfig_path: str, after_scripts_up: str
) -> None:
    namespace = after_scripts_up
    argv = plane_helm_install()
    assert argv[argv.index("--namespace") + 1] == DOCUMENTED_NAMESPACE
    argv[argv.index("--namespace") + 1] = namespace
    installed = run(kubeconfig_path, argv)
    assert installed.returncode == 0, installed.stderr
    manifest = run(kubeconfig_path, ["helm", "get", "manifest", "asyncjobs", "-n", namespace])
    kinds = {doc["kind"] for doc in yaml.safe_load_all(manifest.stdout) if doc}
    assert {"Deployment", "ServiceAccount", "Role"} <= kinds
    assert "CustomResourceDefinition" not in kinds
    deployments = run(
        kubeconfig_path, ["kubectl", "-n", namespace, "get", "deployments", "-o", "name"]
    )
    assert set(deployments.stdout.split()) == {
        "deployment.apps/asyncjobs-api",
        "deployment.apps/asyncjobs-operator",
    }
