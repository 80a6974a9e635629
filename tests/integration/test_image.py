"""The image, built from the Dockerfile and run here by scripts/image-test: the API and the
operator from the image, as its non-root user on a read-only root filesystem, under the
chart's ServiceAccount tokens, complete one job of every request type and serve
/openapi.json. buildah (installed from Debian by scripts/test) builds and runs it without
a container engine; it needs root for its mounts."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.payload_independent,
    pytest.mark.skipif(shutil.which("buildah") is None, reason="buildah is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="buildah's chroot runs need root"),
]

REPO = Path(__file__).resolve().parents[2]


# Cold (base image made with mmdebstrap, every layer built) it takes about two minutes.
@pytest.mark.timeout(900)
def test_the_image_runs_every_request_type_as_the_chart_would_run_it(
    kubeconfig_path: str,
) -> None:
    ran = subprocess.run(
        [str(REPO / "scripts" / "image-test")],
        env={**os.environ, "KUBECONFIG": kubeconfig_path},
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-6000:]
    assert "image-test passed" in ran.stdout
    for request_type in ("chat_completion", "transcription", "image_variation", "ocr"):
        assert f"{request_type}: completed" in ran.stdout
    assert "root filesystem read-only" in ran.stderr
