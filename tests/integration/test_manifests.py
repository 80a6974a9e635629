"""manifests/ is rendered from the chart; this fails when the two drift apart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.payload_independent

REPO = Path(__file__).resolve().parents[2]


def test_committed_manifests_match_the_chart(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(REPO / "scripts" / "render-manifests"), str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    rendered = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in (REPO / "manifests").glob("*.yaml"))
    assert rendered == committed
    for name in rendered:
        assert (tmp_path / name).read_text() == (REPO / "manifests" / name).read_text(), (
            f"manifests/{name} drifted from the chart: run scripts/render-manifests"
        )
