"""An in-memory WebhookStore: endpoints as AsyncJobWebhook objects built by the same core
functions the Kubernetes store uses, with a uid and a creation time as the apiserver
would add them, and each signing secret kept per endpoint so tests can check rotation."""

from __future__ import annotations

import copy
import uuid

from asyncjobs.api.webhook_store import name_taken
from asyncjobs.core import webhook_endpoints
from asyncjobs.core.kube import KubeObject
from asyncjobs.core.webhook_endpoints import EndpointFields


class FakeWebhookStore:
    def __init__(self) -> None:
        self.objects: dict[str, KubeObject] = {}
        # Every secret each endpoint was given, newest last.
        self.secrets: dict[str, list[str]] = {}
        # Test events and redeliveries asked for (the operator answers them), and the
        # jobs that still exist.
        self.tests_asked: list[tuple[str, str]] = []
        self.redeliveries_asked: list[str] = []
        self.jobs: set[str] = set()

    def put(self, name: str, fields: EndpointFields) -> KubeObject:
        webhook = webhook_endpoints.build_webhook(name, fields, f"secret-{name}")
        webhook["metadata"]["uid"] = str(uuid.uuid4())
        webhook["metadata"]["creationTimestamp"] = "2026-02-19T08:00:00Z"
        self.objects[name] = webhook
        return webhook

    async def find(self, name: str) -> KubeObject | None:
        found = self.objects.get(name)
        return copy.deepcopy(found) if found is not None else None

    async def list(self) -> list[KubeObject]:
        return [copy.deepcopy(self.objects[name]) for name in sorted(self.objects)]

    async def create(self, name: str, fields: EndpointFields) -> tuple[KubeObject, str]:
        if name in self.objects:
            raise name_taken(name)
        webhook = self.put(name, fields)
        secret = webhook_endpoints.generate_secret()
        self.secrets[name] = [secret]
        return copy.deepcopy(webhook), secret

    async def replace(self, webhook: KubeObject, fields: EndpointFields) -> KubeObject:
        name = webhook["metadata"]["name"]
        stored = self.objects[name]
        stored["spec"] = webhook_endpoints.spec_of(fields, stored["spec"]["signingSecretName"])
        return copy.deepcopy(stored)

    async def delete(self, webhook: KubeObject) -> None:
        self.objects.pop(webhook["metadata"]["name"], None)

    async def rotate(self, webhook: KubeObject) -> str:
        secret = webhook_endpoints.generate_secret()
        self.secrets.setdefault(webhook["metadata"]["name"], []).append(secret)
        return secret

    async def ask_test(self, webhook: KubeObject, test_id: str) -> None:
        self.tests_asked.append((webhook["metadata"]["name"], test_id))

    async def ask_redelivery(self, job_id: str, token: str) -> bool:
        self.redeliveries_asked.append(job_id)
        return job_id in self.jobs
