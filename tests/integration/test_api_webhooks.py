"""Completion-webhook endpoints against the real control plane: the /api/webhooks routes
of a running API write AsyncJobWebhook objects and their signing Secrets, the CRD's own
rules refuse a bad endpoint applied directly (as kubectl would), and the submit header
records the endpoint's id on the job or answers 400 creating nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
import pytest

from asyncjobs.core import resources
from asyncjobs.core.kube import KubeClient, KubeError
from asyncjobs.core.request_types import RequestType
from tests.integration.test_api import (  # noqa: F401 - start_api is a fixture
    Api,
    ApiFactory,
    request_for,
    start_api,
)

REFUSED = "failed to resolve webhook endpoint: invalid webhook endpoint reference: "


@pytest.fixture
async def api(start_api: ApiFactory) -> Api:  # noqa: F811 - the imported fixture
    return await start_api()


async def call(
    api: Api, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    async with api.session.request(method, api.base + path, json=body) as response:
        return response.status, await response.json(content_type=None)


async def secrets_of(kube: KubeClient, namespace: str, webhook: str) -> list[dict[str, Any]]:
    listed = await kube.list(
        resources.secrets_path(namespace), labelSelector=f"{resources.LABEL_WEBHOOK}={webhook}"
    )
    return list(listed["items"])


def secret_text(secret: dict[str, Any]) -> str:
    return base64.b64decode(secret["data"]["secret"]).decode()


async def test_endpoint_lifecycle_through_the_api_lands_in_objects_and_secrets(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    status, created = await call(
        api,
        "POST",
        "/api/webhooks",
        {"name": "orders", "url": "https://hooks.example.com/in", "headers": {"X-Team": "a"}},
    )
    assert status == 201, created
    webhook = await kube.get(resources.webhooks_path(namespace, "orders"))
    assert created["id"] == webhook["metadata"]["uid"]
    assert webhook["spec"]["events"] == ["async_job.completed", "async_job.failed"]
    (secret,) = await secrets_of(kube, namespace, "orders")
    assert secret["metadata"]["name"] == webhook["spec"]["signingSecretName"]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == webhook["metadata"]["uid"]
    assert secret_text(secret) == created["secret"]
    assert "whsec_" not in json.dumps(webhook)

    status, replaced = await call(
        api, "PUT", f"/api/webhooks/{created['id']}", {"url": "https://h.example/2"}
    )
    assert status == 200, replaced
    webhook = await kube.get(resources.webhooks_path(namespace, "orders"))
    assert webhook["spec"]["url"] == "https://h.example/2"
    assert webhook["spec"].get("headers", {}) == {}

    status, rotated = await call(api, "POST", "/api/webhooks/orders/rotate-secret")
    assert status == 200, rotated
    webhook = await kube.get(resources.webhooks_path(namespace, "orders"))
    current = await kube.get(
        resources.secrets_path(namespace, webhook["spec"]["signingSecretName"])
    )
    assert secret_text(current) == rotated["secret"] != created["secret"]

    status, listed = await call(api, "GET", "/api/webhooks")
    assert (status, [w["name"] for w in listed["webhooks"]]) == (200, ["orders"])
    assert "secret" not in json.dumps(listed)

    status, _ = await call(api, "DELETE", "/api/webhooks/orders")
    assert status == 200
    assert (await call(api, "GET", "/api/webhooks/orders"))[0] == 404
    # Garbage collection takes every signing Secret the endpoint owned.
    deadline = time.monotonic() + 60
    while await secrets_of(kube, namespace, "orders"):
        assert time.monotonic() < deadline, "signing Secrets outlived their endpoint"
        await asyncio.sleep(0.5)


async def test_invalid_endpoint_answers_400_and_a_taken_name_409(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    status, refused = await call(
        api, "POST", "/api/webhooks", {"name": "a", "url": "http://hooks.example.com/"}
    )
    assert status == 400
    assert "https" in refused["error"]["message"]
    body = {"name": "a", "url": "https://hooks.example.com/"}
    assert (await call(api, "POST", "/api/webhooks", body))[0] == 201
    status, taken = await call(api, "POST", "/api/webhooks", body)
    assert status == 409, taken
    assert len(await secrets_of(kube, namespace, "a")) == 1


def endpoint(url: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": resources.API_VERSION,
        "kind": resources.WEBHOOK_KIND,
        "metadata": {"name": "direct"},
        "spec": {"url": url, "signingSecretName": "s", **spec},
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (endpoint("http://h.example/"), "url must use https unless allowPrivateNetwork is set"),
        (endpoint("https://u:p@h.example/"), "url must not contain user info"),
        (endpoint("https://h.example/#f"), "url must not contain a fragment"),
        (endpoint("h.example"), "url must be an absolute http(s) URL naming a host"),
        (endpoint("https://h.example/", headers={"Webhook-Id": "x"}), "reserved header"),
        (endpoint("https://h.example/", headers={"Bad Name": "x"}), "valid header names"),
        (endpoint("https://h.example/", events=["x"]), "Unsupported value"),
        (endpoint("https://h.example/", timeoutSeconds=0), "should be greater than or equal to 1"),
    ],
)
async def test_the_crd_refuses_a_bad_endpoint_applied_directly(
    kube: KubeClient, namespace: str, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubeError) as refused:
        await kube.create(resources.webhooks_path(namespace), body)
    assert refused.value.status == 422
    assert message in refused.value.message


async def test_the_crd_accepts_http_to_a_private_network_and_fills_defaults(
    kube: KubeClient, namespace: str
) -> None:
    created = await kube.create(
        resources.webhooks_path(namespace),
        endpoint("http://10.1.2.3:8080/hook", allowPrivateNetwork=True),
    )
    spec = created["spec"]
    assert spec["events"] == ["async_job.completed", "async_job.failed"]
    assert (spec["timeoutSeconds"], spec["maxAttempts"], spec["disabled"]) == (10, 5, False)


async def test_submits_naming_an_endpoint_record_its_id_or_answer_400_creating_nothing(
    api: Api, kube: KubeClient, namespace: str
) -> None:
    status, created = await call(
        api, "POST", "/api/webhooks", {"name": "on", "url": "https://h.example/"}
    )
    assert status == 201
    await call(
        api, "POST", "/api/webhooks", {"name": "off", "url": "https://h.example/", "disabled": True}
    )
    job = await api.submit(RequestType.CHAT_COMPLETION, {"x-bf-async-webhook": "on"})
    stored = await kube.get(resources.asyncjobs_path(namespace, job["id"]))
    assert stored["spec"]["webhookId"] == created["id"]

    body, content_type = request_for(RequestType.CHAT_COMPLETION)
    for name, message in [
        ("nope", f'{REFUSED}unknown webhook endpoint with name "nope"'),
        ("off", f'{REFUSED}webhook endpoint "off" is disabled'),
    ]:
        status, refused = await api.post(
            "/v1/async/chat/completions", body, content_type, {"x-bf-async-webhook": name}
        )
        assert (status, refused["error"]["message"]) == (400, message)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            api.base + "/openai/v1/responses",
            json={"model": "local/echo", "input": "hi"},
            headers={"x-bf-async": "true", "x-bf-async-webhook": "nope"},
        ) as response,
    ):
        assert response.status == 400
        assert "unknown webhook endpoint" in await response.text()
    listed = await kube.list(resources.asyncjobs_path(namespace))
    assert [item["metadata"]["name"] for item in listed["items"]] == [job["id"]]
