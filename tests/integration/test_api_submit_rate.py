"""The submit rate per virtual key, through the real API process and apiserver: the
default from the flag, a key's own rate from its Secret, 429 with Retry-After, and
nothing written for a refused submit."""

from __future__ import annotations

import base64

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient
from asyncjobs.core.request_types import RequestType
from tests.integration.test_api import (  # noqa: F401 - start_api is a fixture
    KEY_A,
    KEY_A_ID,
    ApiFactory,
    create_virtual_key,
    request_for,
    start_api,
)

UNLIMITED_KEY = "sk-bf-integration-unlimited"


async def create_key_with_rate(
    kube: KubeClient, namespace: str, name: str, key: str, per_minute: str
) -> None:
    data = {"key": key, "submitsPerMinute": per_minute}
    await kube.create(
        resources.secrets_path(namespace),
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": {resources.LABEL_VIRTUAL_KEY: "true"}},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        },
    )


async def test_a_key_over_its_submit_rate_gets_429_and_nothing_is_written(
    start_api: ApiFactory,  # noqa: F811 - the imported fixture
    kube: KubeClient,
    namespace: str,
) -> None:
    await create_virtual_key(kube, namespace, "vk-alpha", KEY_A, KEY_A_ID)
    await create_key_with_rate(kube, namespace, "vk-unlimited", UNLIMITED_KEY, "0")
    # Six a minute (one every ten seconds), two at once.
    api = await start_api("--submits-per-minute-per-key", "6", "--submit-burst-per-key", "2")
    body, content_type = request_for(RequestType.CHAT_COMPLETION)
    path = "/v1/async/chat/completions"

    async def submit(key: str) -> tuple[int, str | None, dict[str, object]]:
        async with api.session.post(
            api.base + path, data=body, headers={"Content-Type": content_type, "x-bf-vk": key}
        ) as response:
            return response.status, response.headers.get("Retry-After"), await response.json()

    assert [(await submit(KEY_A))[0] for _ in range(2)] == [202, 202]
    status, retry_after, document = await submit(KEY_A)
    assert status == 429, document
    assert retry_after is not None
    assert 1 <= int(retry_after) <= 10
    assert document["status_code"] == 429
    error = document["error"]
    assert isinstance(error, dict)
    assert error["message"].startswith(
        "Rate limit check failed: rate limit violated for VK: request limit exceeded (at most 6"
    )
    assert document["type"] == "request_limited"
    # The key whose Secret sets submitsPerMinute: 0 is not limited.
    assert [(await submit(UNLIMITED_KEY))[0] for _ in range(4)] == [202] * 4
    jobs = (await kube.list(resources.asyncjobs_path(namespace)))["items"]
    by_key = [job["spec"].get("virtualKeyId") for job in jobs]
    assert sorted(by_key) == sorted([KEY_A_ID] * 2 + ["vk-unlimited"] * 4)
