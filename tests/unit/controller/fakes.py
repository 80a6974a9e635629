"""In-memory stand-ins for what a job run talks to: the apiserver's Secrets, the status
writer and a provider. They keep the real contracts (409 on a second create, a merge
patch applied to the status, KubeError with apiserver statuses), so the executor's
behaviour is tested without a cluster."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncjobs.controller.admission import Admission
from asyncjobs.controller.executor import Context
from asyncjobs.controller.metrics import Metrics
from asyncjobs.controller.writer import Conflict
from asyncjobs.core import payloads, secret_payloads
from asyncjobs.core.jobs import format_time
from asyncjobs.core.kube import KubeError, KubeObject
from asyncjobs.core.lifecycle import Policy
from asyncjobs.core.limits import CallBudget
from asyncjobs.core.providers.base import ProviderError, ProviderRequest, ProviderResult
from asyncjobs.core.providers.registry import ProviderLimits
from asyncjobs.core.secret_payloads import SecretPayloads

SUBMITTED = datetime(2026, 1, 1, tzinfo=UTC)
REQUEST = b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}'


def asyncjob(
    status: dict[str, Any] | None = None, name: str = "j1", uid: str = "u1", **spec: Any
) -> KubeObject:
    ref = payloads.describe(name, "request", REQUEST, "application/json")
    return {
        "metadata": {
            "name": name,
            "uid": uid,
            "resourceVersion": "1",
            "creationTimestamp": format_time(SUBMITTED),
        },
        "spec": {
            "requestType": "chat_completion",
            "model": "openai/gpt-4o",
            "submittedAt": format_time(SUBMITTED),
            "requestRef": ref.to_dict(),
            **spec,
        },
        "status": status or {},
    }


class FakeSecrets:
    """Secrets by name, with the apiserver's answers: 404, 409 on an existing name.
    `failures` are raised, in order, by the next creates."""

    def __init__(self) -> None:
        self.objects: dict[str, KubeObject] = {}
        self.failures: list[Exception] = []
        self.creates = 0
        self.reads: list[str] = []

    async def get(self, path: str) -> KubeObject:
        name = path.rsplit("/", 1)[-1]
        self.reads.append(name)
        if name not in self.objects:
            raise KubeError(404, "NotFound", f"secrets {name!r} not found")
        return copy.deepcopy(self.objects[name])

    async def create(self, path: str, obj: KubeObject) -> KubeObject:
        self.creates += 1
        if self.failures:
            raise self.failures.pop(0)
        name = obj["metadata"]["name"]
        if name in self.objects:
            raise KubeError(409, "AlreadyExists", f"secrets {name!r} already exists")
        self.objects[name] = copy.deepcopy(obj)
        return obj

    async def put_body(self, owner: KubeObject, kind: str, body: bytes, **kw: Any) -> None:
        """Stores a body the way the API (request) or the operator (result) does."""
        ref = payloads.describe(owner["metadata"]["name"], kind, body, "application/json", **kw)
        for secret in secret_payloads.build_secrets(
            ref, owner["metadata"]["name"], kind, body, owner
        ):
            self.objects[secret["metadata"]["name"]] = secret


class StatusWriter:
    """Applies merge patches to one object in memory and records the Events posted."""

    def __init__(self, obj: KubeObject) -> None:
        self.obj = obj
        self.events: list[str] = []
        self.patches: list[dict[str, Any]] = []
        self.conflicts = 0  # claims (patches with a precondition) to refuse with Conflict
        self.gone = False  # the job was deleted: every patch answers None

    async def patch_status(
        self, name: str, status: dict[str, Any], precondition: str | None = None
    ) -> KubeObject | None:
        if self.gone:
            return None
        if precondition is not None and self.conflicts:
            self.conflicts -= 1
            raise Conflict(name)
        self.patches.append(status)
        merged = {**(self.obj.get("status") or {}), **status}
        merged = {key: value for key, value in merged.items() if value is not None}
        version = str(int(self.obj["metadata"].get("resourceVersion", "1")) + 1)
        self.obj = {
            **self.obj,
            "metadata": {**self.obj["metadata"], "resourceVersion": version},
            "status": merged,
        }
        return self.obj

    async def post_event(self, obj: KubeObject, reason: str, message: str) -> None:
        self.events.append(reason)

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.obj.get("status") or {})


class ScriptedProvider:
    """Answers each call with the next scripted outcome; counts the calls."""

    def __init__(self, name: str, *outcomes: ProviderResult | ProviderError) -> None:
        self.name = name
        self.outcomes = list(outcomes)
        self.calls: list[ProviderRequest] = []

    async def call(self, request: ProviderRequest) -> ProviderResult:
        self.calls.append(request)
        outcome = self.outcomes.pop(0) if self.outcomes else answer()
        if isinstance(outcome, ProviderError):
            raise outcome
        return outcome

    async def close(self) -> None:
        pass


def answer(text: str = "hello") -> ProviderResult:
    return ProviderResult(
        {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
    )


class Clock:
    """Wall time that the test moves; every read advances it a little, as time does."""

    def __init__(self, start: datetime, step_seconds: float = 0.0) -> None:
        self.now = start
        self.step = timedelta(seconds=step_seconds)

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


def admission_for(providers: dict[str, Any]) -> Admission:
    admission = Admission(CallBudget(max_in_flight=10))
    limits = {name: ProviderLimits(4, None) for name in providers}
    admission.reconfigure(10, limits)
    return admission


def context(
    writer: StatusWriter,
    secrets: FakeSecrets | None = None,
    providers: dict[str, Any] | None = None,
    policy: Policy | None = None,
    wall: Callable[[], datetime] | None = None,
) -> Context:
    client = secrets or FakeSecrets()
    return Context(
        client=client,
        namespace="ns",
        payloads=SecretPayloads(client, "ns"),
        providers=providers or {},
        admission=admission_for(providers or {}),
        writer=writer,
        metrics=Metrics(),
        policy=policy or Policy(request_poll_seconds=0.001),
        wall=wall or Clock(SUBMITTED + timedelta(seconds=1)),
        store_retry_delays=(0.0,),
    )
