"""The short chaos run (bench/chaos.py --short --webhooks): about 100 jobs, each naming a
completion webhook, while the operator is SIGKILLed a few times, the API once and
kube-apiserver is restarted once; no job may end up stuck, lost or unreadable, and every
terminal job's notification must reach the run's receiver (which verifies each one and
fails every 5th on purpose) at least once. It runs on a plane of its own (it kills the
apiserver), so it neither needs nor disturbs the session's plane."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench import chaos


@pytest.mark.skipif(
    bool(os.environ.get("KUBECONFIG")), reason="kills kube-apiserver: needs a plane of its own"
)
# A bound against a hang, not a speed check: about 90-180 s here depending on load.
@pytest.mark.timeout(420)
async def test_short_chaos_run_leaves_no_job_stuck_lost_unreadable_or_undelivered(
    tmp_path: Path, log_dir: Path
) -> None:
    settings = chaos.short_settings(plane_dir=tmp_path / "plane", webhooks=True)
    try:
        summary = await chaos.run(settings, log_dir=log_dir)
    finally:
        chaos.plane_down(tmp_path / "plane")  # also after a timeout inside the run
    outcome = {key: summary[key] for key in ("stuck", "lost", "unreadable", "other")}
    assert outcome == {"stuck": 0, "lost": 0, "unreadable": 0, "other": 0}, chaos.report(summary)
    assert summary["accepted"] == settings.jobs, chaos.report(summary)
    assert summary["completed_without_result"] == 0, chaos.report(summary)
    delivery = {key: summary[key] for key in ("webhook_undelivered", "webhook_unverified")}
    assert delivery == {"webhook_undelivered": 0, "webhook_unverified": 0}, chaos.report(summary)
    assert summary["webhook_terminal_jobs"] == settings.jobs, chaos.report(summary)
