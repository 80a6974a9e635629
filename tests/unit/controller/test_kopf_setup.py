"""kopf is configured to write nothing per job on its own, and to block no deletion."""

from __future__ import annotations

from asyncjobs.controller import kopf_setup


def test_bookkeeping_names_are_under_our_group_and_events_are_not_posted() -> None:
    settings = kopf_setup.settings()
    assert settings.persistence.finalizer.startswith("asyncjobs.dev/")
    assert settings.posting.enabled is False
    assert settings.peering.standalone is True
    assert max(settings.networking.error_backoffs) <= 60  # type: ignore[type-var]
