"""A job whose result expires before its notification is delivered is not deleted (and
its notification not lost) until the delivery ends: here the job's TTL is one second
and the receiver's first answer a 503, so the retry comes seconds after the job
expired, and it is still delivered; the job is deleted once it has been."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp

from asyncjobs.api.submit_and_poll import TTL_HEADER
from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, KubeError
from tests.integration.webhook_support import (
    register,
    serving_receiver,
    submit,
    webhook_system,
)


async def gone(kube: KubeClient, namespace: str, job_id: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await kube.get(resources.asyncjobs_path(namespace, job_id))
        except KubeError as error:
            if error.status == 404:
                return True
            raise
        await asyncio.sleep(0.2)
    return False


async def test_a_job_expiring_before_its_delivery_waits_for_it(
    kubeconfig_path: str, namespace: str, log_dir: Path, tmp_path: Path, kube: KubeClient
) -> None:
    flags = ("--webhook-first-retry-seconds", "4")
    async with serving_receiver() as (state, server):
        state.fail_first = 1
        url = f"http://127.0.0.1:{server.port}/hook"
        with webhook_system(kubeconfig_path, namespace, log_dir, tmp_path, *flags) as base:
            async with aiohttp.ClientSession() as session:
                endpoint = await register(session, base, "late", url, allow_private_network=True)
                state.secret = endpoint["secret"]
                job_id = await submit(session, base, "late", **{TTL_HEADER: "1"})
            # The first attempt fails; the job's TTL passes long before the retry.
            await asyncio.wait_for(state.arrived.wait(), 30)
            state.arrived.clear()
            await asyncio.sleep(2)
            job = await kube.get(resources.asyncjobs_path(namespace, job_id))
            assert job["status"]["webhook"]["pending"] is True
            await asyncio.wait_for(state.arrived.wait(), 30)
            assert [event["data"]["job_id"] for event in state.received] == [job_id, job_id]
            assert state.unverified == 0
            # Delivered: now the expired job goes.
            assert await gone(kube, namespace, job_id, 30)
