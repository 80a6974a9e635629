"""A completion-webhook endpoint: its rules, its Kubernetes object and its JSON document.

An endpoint is an AsyncJobWebhook object (kubectl-managed, like a job) whose signing
secret lives in a Secret it owns. The `/api/webhooks` routes and the submit header read
and write those objects; the rules a new or replaced endpoint must pass are decided here
once, as pure functions, and the CRD's CEL rules say the same for objects applied with
kubectl (charts/asyncjobs/templates/crd-asyncjobwebhooks.yaml). The address an endpoint
resolves to is judged again at every connection, not here.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from asyncjobs.core import resources

EVENT_COMPLETED = "async_job.completed"
EVENT_FAILED = "async_job.failed"
EVENTS = (EVENT_COMPLETED, EVENT_FAILED)

# Headers a delivery sets itself; an endpoint's own headers may not replace them, or a
# receiver could be handed a forged signature or a body it cannot parse.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "content-type",
        "content-length",
        "transfer-encoding",
        "host",
        "user-agent",
        "x-bifrost-event",
        "connection",
    }
)
MAX_HEADERS = 32
MAX_HEADER_VALUE = 1024
MAX_URL_LENGTH = 2048

DEFAULT_TIMEOUT_SECONDS = 10
MAX_TIMEOUT_SECONDS = 60
DEFAULT_MAX_ATTEMPTS = 5
MAX_ATTEMPTS = 10

# The Secret key that holds the `whsec_…` signing secret.
SECRET_KEY = "secret"  # noqa: S105 - the name of a data key, not a secret
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix every signing secret has

# Names become object names, so they follow Kubernetes' rule for one DNS label.
_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class EndpointFields:
    """What a client sets on an endpoint (create and replace take the whole set)."""

    url: str
    events: tuple[str, ...] = EVENTS
    headers: Mapping[str, str] = field(default_factory=dict)
    include_response: bool = False
    allow_private_network: bool = False
    disabled: bool = False
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


class InvalidEndpoint(ValueError):
    """A body that cannot be an endpoint; its message is answered as a 400."""


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def generate_secret() -> str:
    """`whsec_` and 32 random bytes in base64, as Standard Webhooks secrets are."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def url_problem(url: str, allow_private_network: bool) -> str | None:
    """Why `url` cannot be an endpoint's address, or None. Only its form is judged: where
    it resolves to is checked when a delivery connects."""
    if len(url) > MAX_URL_LENGTH:
        return f"url must be at most {MAX_URL_LENGTH} characters"
    if not _SCHEME.match(url):
        return "url must be an absolute http(s) URL"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "url is not a valid URL"
    # The scheme in lowercase only, as the CRD's rule reads it.
    if url.startswith("http://"):
        if not allow_private_network:
            return "url must use https unless allow_private_network is set"
    elif not url.startswith("https://"):
        return "url must use https (or http with allow_private_network), in lowercase"
    if "@" in parts.netloc:
        return "url must not contain user info"
    if "#" in url:
        return "url must not contain a fragment"
    if not parts.hostname:
        return "url must name a host"
    if any(character.isspace() for character in url):
        return "url must not contain whitespace"
    return None


def parse_fields(body: Any) -> EndpointFields:
    """The endpoint a create or replace body describes (Bifrost's snake_case fields);
    InvalidEndpoint naming the first field that is wrong."""
    if not isinstance(body, dict):
        raise InvalidEndpoint("request body must be a JSON object")
    url = body.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidEndpoint("url is required")
    allow_private = _bool(body, "allow_private_network")
    problem = url_problem(url, allow_private)
    if problem is not None:
        raise InvalidEndpoint(problem)
    return EndpointFields(
        url=url,
        events=_events(body.get("events")),
        headers=_headers(body.get("headers")),
        include_response=_bool(body, "include_response"),
        allow_private_network=allow_private,
        disabled=_bool(body, "disabled"),
        timeout_seconds=_bounded(
            body, "timeout_seconds", DEFAULT_TIMEOUT_SECONDS, 1, MAX_TIMEOUT_SECONDS
        ),
        max_attempts=_bounded(body, "max_attempts", DEFAULT_MAX_ATTEMPTS, 1, MAX_ATTEMPTS),
    )


def _bool(body: Mapping[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise InvalidEndpoint(f"{key} must be a boolean")
    return value


def _bounded(body: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidEndpoint(f"{key} must be an integer from {low} to {high}")
    return value


def _events(value: Any) -> tuple[str, ...]:
    if value is None:
        return EVENTS
    if not isinstance(value, list) or not value:
        raise InvalidEndpoint(f"events must be a non-empty list of {', '.join(EVENTS)}")
    for event in value:
        if event not in EVENTS:
            raise InvalidEndpoint(f"unknown event {event!r}: events are {', '.join(EVENTS)}")
    # In the order the contract lists them, each once.
    return tuple(event for event in EVENTS if event in value)


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEndpoint("headers must be an object of header names to strings")
    if len(value) > MAX_HEADERS:
        raise InvalidEndpoint(f"headers may hold at most {MAX_HEADERS} entries")
    for name, text in value.items():
        if not _HEADER_NAME.fullmatch(name):
            raise InvalidEndpoint("headers must have valid header names")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidEndpoint(f"header {name!r} is reserved and set by the sender")
        if not isinstance(text, str) or len(text) > MAX_HEADER_VALUE:
            raise InvalidEndpoint(f"header values must be strings of at most {MAX_HEADER_VALUE}")
        if any(character in text for character in "\r\n\0"):
            raise InvalidEndpoint("header values must not contain line breaks or NUL")
    return dict(value)


# --- the object and its documents -------------------------------------------------------------


def spec_of(fields: EndpointFields, signing_secret_name: str) -> dict[str, Any]:
    """The AsyncJobWebhook spec (camelCase, as the CRD spells it)."""
    return {
        "url": fields.url,
        "events": list(fields.events),
        "headers": dict(fields.headers),
        "includeResponse": fields.include_response,
        "allowPrivateNetwork": fields.allow_private_network,
        "disabled": fields.disabled,
        "timeoutSeconds": fields.timeout_seconds,
        "maxAttempts": fields.max_attempts,
        "signingSecretName": signing_secret_name,
    }


def build_webhook(name: str, fields: EndpointFields, signing_secret_name: str) -> dict[str, Any]:
    return {
        "apiVersion": resources.API_VERSION,
        "kind": resources.WEBHOOK_KIND,
        "metadata": {
            "name": name,
            "labels": {resources.LABEL_MANAGED_BY: resources.MANAGED_BY},
        },
        "spec": spec_of(fields, signing_secret_name),
    }


def signing_secret_name(webhook_name: str) -> str:
    """A fresh name for the Secret of a new (or rotated) signing secret; each rotation
    writes a new Secret, so the API never needs to update or read Secrets."""
    return f"asyncjobs-webhook-{webhook_name}-{secrets.token_hex(4)}"


def build_signing_secret(name: str, webhook: Mapping[str, Any], secret: str) -> dict[str, Any]:
    """The Secret holding `secret`, owned by its webhook so that deleting the endpoint
    deletes it (and every older, rotated one) too."""
    metadata = webhook["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "labels": {
                resources.LABEL_MANAGED_BY: resources.MANAGED_BY,
                resources.LABEL_WEBHOOK: metadata["name"],
            },
            "ownerReferences": [
                {
                    "apiVersion": resources.API_VERSION,
                    "kind": resources.WEBHOOK_KIND,
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "stringData": {SECRET_KEY: secret},
    }


def is_disabled(webhook: Mapping[str, Any]) -> bool:
    return bool(webhook.get("spec", {}).get("disabled", False))


def endpoint_document(webhook: Mapping[str, Any]) -> dict[str, Any]:
    """The endpoint as `/api/webhooks` answers it: never its secret, which is shown once."""
    metadata = webhook["metadata"]
    spec = webhook.get("spec", {})
    status = webhook.get("status", {})
    document: dict[str, Any] = {
        "id": metadata.get("uid", ""),
        "name": metadata["name"],
        "url": spec.get("url", ""),
        "events": list(spec.get("events", EVENTS)),
        "headers": dict(spec.get("headers", {})),
        "include_response": bool(spec.get("includeResponse", False)),
        "allow_private_network": bool(spec.get("allowPrivateNetwork", False)),
        "disabled": bool(spec.get("disabled", False)),
        "timeout_seconds": int(spec.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)),
        "max_attempts": int(spec.get("maxAttempts", DEFAULT_MAX_ATTEMPTS)),
        "created_at": metadata.get("creationTimestamp", ""),
    }
    if "lastDeliveryTime" in status:
        document["last_delivery_at"] = status["lastDeliveryTime"]
    return document
