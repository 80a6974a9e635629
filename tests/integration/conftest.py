"""Fixtures for tests against a real control plane.

One plane serves the whole session: the one KUBECONFIG names, or the project's own
(tools/plane.py), started here if it is not up yet and stopped at the end only if this
session started it. Each test gets a fresh namespace, deleted afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, KubeError, load_config
from tests.integration.operator_support import FAKE_KEY, FakeOpenAI, create_key_secret
from tests.support import bodies

REPO = Path(__file__).resolve().parents[2]
PLANE = REPO / "tools" / "plane.py"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The s3 pass (scripts/test runs the suite once per payload backend) leaves out the
    tests that store no job bodies: they ran in the first pass."""
    if bodies.backend() != "s3":
        return
    kept = [item for item in items if item.get_closest_marker("payload_independent") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture(scope="session", autouse=True)
def payload_store_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """With ASYNCJOBS_PAYLOADS=s3 and no S3 endpoint given, a SeaweedFS S3 server for the
    session (tools/s3server.py); its settings go into this process's environment, which
    every API and operator process the tests start inherits (core/payload_stores.py)."""
    if bodies.backend() != "s3" or os.environ.get("ASYNCJOBS_S3_ENDPOINT"):
        yield
        return
    from tools import s3server

    with s3server.start(tmp_path_factory.mktemp("s3")) as server:
        settings = {**server.env(), "ASYNCJOBS_S3_PATH_STYLE": "true"}
        os.environ.update(settings)
        try:
            yield
        finally:
            for name in settings:
                os.environ.pop(name, None)


@pytest.fixture(scope="session")
def kubeconfig_path() -> Iterator[str]:
    if os.environ.get("KUBECONFIG"):
        subprocess.run([sys.executable, str(PLANE), "up"], check=True)
        yield os.environ["KUBECONFIG"]
        return
    already_up = (
        subprocess.run([sys.executable, str(PLANE), "status"], capture_output=True).returncode == 0
    )
    path = subprocess.run(
        [sys.executable, str(PLANE), "up"], check=True, capture_output=True, text=True
    ).stdout.strip()
    yield path
    if not already_up and not os.environ.get("ASYNCJOBS_KEEP_PLANE"):
        subprocess.run([sys.executable, str(PLANE), "down"], check=False)


@pytest.fixture
async def kube(kubeconfig_path: str) -> AsyncIterator[KubeClient]:
    """A client with the plane's admin credentials."""
    async with KubeClient(load_config(kubeconfig_path)) as client:
        yield client


@pytest.fixture
async def namespace(kube: KubeClient) -> AsyncIterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    await kube.create(
        resources.namespaces_path(),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    yield name
    try:
        await kube.delete(resources.namespaces_path(name))
    except KubeError as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Where processes started by a test write their logs."""
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
async def fake(log_dir: Path, kube: KubeClient, namespace: str) -> AsyncIterator[FakeOpenAI]:
    """The fake OpenAI server as a process, accepting only the key the operator reads
    from a Secret in the test's namespace."""
    await create_key_secret(kube, namespace)
    with FakeOpenAI(log_dir) as server:
        await server.aconfig(api_keys=[FAKE_KEY])
        yield server
