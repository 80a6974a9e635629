"""Where the API keeps completion-webhook endpoints: AsyncJobWebhook objects and their
signing-secret Secrets in the jobs namespace.

The API creates Secrets there but never reads, updates, lists or deletes them: a new or
rotated signing secret is a new Secret owned by its endpoint, so deleting the endpoint
deletes them all (garbage collection), and the secret itself is answered once, from the
value the API just generated. Endpoints are few and read on every submit that names
one, each by a GET; a failing apiserver is an ApiError(503).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from asyncjobs.api.errors import ApiError
from asyncjobs.core import resources, webhook_endpoints, webhook_log
from asyncjobs.core.kube import KubeClient, KubeError, KubeObject
from asyncjobs.core.webhook_endpoints import EndpointFields

log = logging.getLogger(__name__)


class WebhookStore(Protocol):
    async def find(self, name: str) -> KubeObject | None: ...

    async def list(self) -> list[KubeObject]: ...

    async def create(self, name: str, fields: EndpointFields) -> tuple[KubeObject, str]:
        """The new endpoint and its signing secret; ApiError(409) if the name is taken."""
        ...

    async def replace(self, webhook: KubeObject, fields: EndpointFields) -> KubeObject: ...

    async def delete(self, webhook: KubeObject) -> None: ...

    async def rotate(self, webhook: KubeObject) -> str:
        """A new signing secret, in force from now on."""
        ...

    async def ask_test(self, webhook: KubeObject, test_id: str) -> None:
        """Asks the operator to send the endpoint a test event."""
        ...

    async def ask_redelivery(self, job_id: str, token: str) -> bool:
        """Asks the operator to deliver a job's notification again; False when the job
        is gone."""
        ...


def name_taken(name: str) -> ApiError:
    return ApiError(409, f"webhook endpoint with name {name!r} already exists")


def _unavailable(exc: KubeError) -> ApiError:
    log.warning("webhook store request failed: %s %s", exc.status, exc.reason)
    if exc.transient:
        return ApiError(503, "the webhook store is unavailable, retry later")
    return ApiError(500, "the webhook store refused the request")


class KubeWebhookStore:
    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def _path(self, name: str | None = None) -> str:
        return resources.webhooks_path(self.namespace, name)

    async def find(self, name: str) -> KubeObject | None:
        if not webhook_endpoints.valid_name(name):
            return None
        try:
            return await self.client.get(self._path(name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise _unavailable(exc) from exc

    async def list(self) -> list[KubeObject]:
        try:
            listed = await self.client.list(self._path())
        except KubeError as exc:
            raise _unavailable(exc) from exc
        items: list[KubeObject] = listed.get("items", [])
        return sorted(items, key=lambda item: item["metadata"]["name"])

    async def create(self, name: str, fields: EndpointFields) -> tuple[KubeObject, str]:
        secret_name = webhook_endpoints.signing_secret_name(name)
        try:
            webhook = await self.client.create(
                self._path(), webhook_endpoints.build_webhook(name, fields, secret_name)
            )
        except KubeError as exc:
            if exc.status == 409:
                raise name_taken(name) from exc
            raise _unavailable(exc) from exc
        try:
            secret = await self._write_secret(webhook, secret_name)
        except ApiError:
            # An endpoint without its secret could never sign: take it back.
            await self._delete_quietly(webhook)
            raise
        return webhook, secret

    async def replace(self, webhook: KubeObject, fields: EndpointFields) -> KubeObject:
        spec = webhook_endpoints.spec_of(fields, webhook["spec"]["signingSecretName"])
        # A merge patch merges maps: headers the replacement drops are removed by name.
        old_headers = webhook.get("spec", {}).get("headers", {})
        headers: dict[str, Any] = {name: None for name in old_headers if name not in fields.headers}
        headers.update(fields.headers)
        spec["headers"] = headers
        patch = {
            "metadata": {"resourceVersion": webhook["metadata"]["resourceVersion"]},
            "spec": spec,
        }
        try:
            return await self.client.merge_patch(self._path(webhook["metadata"]["name"]), patch)
        except KubeError as exc:
            if exc.status == 409:
                raise ApiError(409, "the webhook endpoint changed meanwhile, retry") from exc
            if exc.status == 404:
                raise ApiError(404, "webhook endpoint not found") from exc
            raise _unavailable(exc) from exc

    async def delete(self, webhook: KubeObject) -> None:
        try:
            await self.client.delete(self._path(webhook["metadata"]["name"]))
        except KubeError as exc:
            if exc.status != 404:
                raise _unavailable(exc) from exc

    async def rotate(self, webhook: KubeObject) -> str:
        secret_name = webhook_endpoints.signing_secret_name(webhook["metadata"]["name"])
        secret = await self._write_secret(webhook, secret_name)
        patch = {"spec": {"signingSecretName": secret_name}}
        try:
            await self.client.merge_patch(self._path(webhook["metadata"]["name"]), patch)
        except KubeError as exc:
            raise _unavailable(exc) from exc
        return secret

    async def ask_test(self, webhook: KubeObject, test_id: str) -> None:
        patch = {"metadata": {"annotations": {webhook_log.TEST_ANNOTATION: test_id}}}
        try:
            await self.client.merge_patch(self._path(webhook["metadata"]["name"]), patch)
        except KubeError as exc:
            if exc.status == 404:
                raise ApiError(404, "webhook endpoint not found") from exc
            raise _unavailable(exc) from exc

    async def ask_redelivery(self, job_id: str, token: str) -> bool:
        patch = {"metadata": {"annotations": {webhook_log.REDELIVER_ANNOTATION: token}}}
        try:
            await self.client.merge_patch(resources.asyncjobs_path(self.namespace, job_id), patch)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise _unavailable(exc) from exc
        return True

    async def _write_secret(self, webhook: KubeObject, secret_name: str) -> str:
        secret = webhook_endpoints.generate_secret()
        body = webhook_endpoints.build_signing_secret(secret_name, webhook, secret)
        try:
            await self.client.create(resources.secrets_path(self.namespace), body)
        except KubeError as exc:
            raise _unavailable(exc) from exc
        return secret

    async def _delete_quietly(self, webhook: KubeObject) -> None:
        try:
            await self.client.delete(self._path(webhook["metadata"]["name"]))
        except KubeError as exc:
            log.warning("could not roll back webhook endpoint: %s %s", exc.status, exc.reason)


class NoWebhookStore:
    """The store of an app given none (unit tests of other parts): it knows no endpoint,
    so a submit naming one is refused, and it creates none."""

    async def find(self, name: str) -> KubeObject | None:
        return None

    async def list(self) -> list[KubeObject]:
        return []

    async def create(self, name: str, fields: EndpointFields) -> tuple[KubeObject, str]:
        raise ApiError(503, "webhook endpoints are not available in this deployment")

    async def replace(self, webhook: KubeObject, fields: EndpointFields) -> KubeObject:
        raise ApiError(503, "webhook endpoints are not available in this deployment")

    async def delete(self, webhook: KubeObject) -> None:
        raise ApiError(503, "webhook endpoints are not available in this deployment")

    async def rotate(self, webhook: KubeObject) -> str:
        raise ApiError(503, "webhook endpoints are not available in this deployment")

    async def ask_test(self, webhook: KubeObject, test_id: str) -> None:
        raise ApiError(503, "webhook endpoints are not available in this deployment")

    async def ask_redelivery(self, job_id: str, token: str) -> bool:
        raise ApiError(503, "webhook endpoints are not available in this deployment")
