"""What a person sees through kubectl: `kubectl explain` documents every field, and the
sample AsyncJobs in operator/samples are accepted by the apiserver as they are."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.payload_independent

REPO = Path(__file__).resolve().parents[2]


def kubectl() -> str:
    found = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    assert Path(found).exists(), "kubectl is installed by the dev dependency group"
    return found


async def run_kubectl(kubeconfig: str, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        kubectl(),
        *args,
        env={**os.environ, "KUBECONFIG": kubeconfig},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


def undocumented(schema: dict[str, Any], path: str) -> list[str]:
    missing = [] if schema.get("description") else [path]
    for name, child in (schema.get("properties") or {}).items():
        missing += undocumented(child, f"{path}.{name}")
    if "items" in schema:
        missing += undocumented(schema["items"], f"{path}[]")
    return missing


def test_every_spec_and_status_field_has_a_description() -> None:
    crd = next(d for d in yaml.safe_load_all((REPO / "manifests" / "crds.yaml").read_text()) if d)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    missing = undocumented(schema["properties"]["spec"], "spec")
    missing += undocumented(schema["properties"]["status"], "status")
    # Array items of plain strings are described by their array.
    assert [m for m in missing if not m.endswith("[]")] == []


async def test_kubectl_explain_shows_the_spec_descriptions(kubeconfig_path: str) -> None:
    explained = await run_kubectl(kubeconfig_path, "explain", "asyncjob.spec")
    assert "What to run. Set by the API on submit" in explained
    for field in (
        "requestType",
        "model",
        "fallbacks",
        "resultTTLSeconds",
        "requestRef",
        "virtualKeyId",
        "activeDeadlineSeconds",
        "backoffLimit",
    ):
        assert f"  {field}\t<" in explained, field
    status = await run_kubectl(kubeconfig_path, "explain", "aj.status.phase")
    assert "Completed and Failed are terminal" in status


@pytest.mark.parametrize(
    "sample", sorted((REPO / "operator" / "samples").glob("*.yaml")), ids=lambda p: p.name
)
async def test_sample_is_accepted_by_the_apiserver(
    sample: Path, kubeconfig_path: str, namespace: str
) -> None:
    created = await run_kubectl(
        kubeconfig_path, "apply", "--dry-run=server", "-n", namespace, "-f", str(sample)
    )
    assert "asyncjob.asyncjobs.dev/" in created
