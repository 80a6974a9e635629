"""kopf is configured to write nothing per job on its own, and to block no deletion."""

from __future__ import annotations

import kopf

from asyncjobs.controller import kopf_setup
from asyncjobs.core import resources


def test_bookkeeping_names_are_under_our_group_and_events_are_not_posted() -> None:
    settings = kopf_setup.settings()
    assert settings.persistence.finalizer.startswith("asyncjobs.dev/")
    assert settings.posting.enabled is False
    assert settings.peering.standalone is True
    assert max(settings.networking.error_backoffs) <= 60  # type: ignore[type-var]


def test_a_shard_selector_goes_to_the_apiserver_for_asyncjobs_only() -> None:
    asyncjobs = kopf.Resource(resources.GROUP, resources.VERSION, resources.PLURAL)
    secrets = kopf.Resource("", "v1", "secrets")
    selector = "asyncjobs.dev/shard in (1,5)"
    settings = kopf_setup.settings(selector)
    assert settings.watching.label_selectors.collect(asyncjobs) == [selector]
    assert settings.watching.label_selectors.collect(secrets) == []
    assert kopf_setup.settings().watching.label_selectors.collect(asyncjobs) == []


def test_the_listing_before_each_watch_comes_in_pages() -> None:
    # One unpaginated list of 100,000 jobs timed out and held the loop past the Lease's
    # renew deadline (bench/capacity_bench.py).
    assert kopf_setup.settings("").watching.chunk_size == kopf_setup.LIST_PAGE_SIZE
