"""kopf's settings and the operator's only handlers, kept thin.

The operator uses kopf for what it is good at (list + watch with reconnection, per-object
event queues, login, signals) and nothing that writes to the apiserver on its own:

- one `@kopf.on.event` handler and no change-detecting handlers (on.create/update/resume),
  so kopf keeps no progress or diff-base annotations and patches nothing per job;
- no on.delete handler, hence no finalizer: a job can always be deleted, even while the
  operator is down (and the names kopf would use are under asyncjobs.dev anyway);
- no Kubernetes Events from kopf's log lines (the operator posts its own, for failures);
- bounded retries and timeouts for kopf's own API calls, and no kopf peering (member
  Leases decide which replica runs which jobs: members.py);
- a server-side label selector: the replica lists and watches only its own shards'
  jobs (core/shards.py), so its memory and CPU shrink as replicas are added.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import kopf

from asyncjobs.core import resources
from asyncjobs.core.credentials import Credential, CredentialError
from asyncjobs.core.kube import KubeConfig

PREFIX = resources.GROUP
# Objects per page of the listing kopf makes before each watch (see settings()).
LIST_PAGE_SIZE = 500

log = logging.getLogger(__name__)


class NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """No essence at all: kopf builds one (a deep copy of the object) on every event to
    detect changes for change-detecting handlers, which this operator does not have.
    Profiling put that copy at a fifth of kopf's per-event cost."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None


def settings(label_selector: str = "") -> kopf.OperatorSettings:
    s = kopf.OperatorSettings()
    if label_selector:
        # Read by kopf at each list and watch request; a new selector needs a new kopf.
        s.watching.label_selectors[resources.GROUP, resources.PLURAL] = label_selector
    s.persistence.finalizer = f"{PREFIX}/finalizer"
    s.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    s.persistence.diffbase_storage = NoDiffBase(prefix=PREFIX, key="last-handled-configuration")
    s.posting.enabled = False
    s.peering.standalone = True
    s.peering.mandatory = False
    # The namespace is given explicitly: no need to watch CRDs and namespaces too.
    s.scanning.disabled = True
    s.networking.request_timeout = 30
    s.networking.connect_timeout = 10
    s.networking.error_backoffs = (1, 2, 5, 10, 20)
    s.queueing.error_delays = (1, 2, 5, 10, 30, 60)
    # A long-lived watch is fine; kopf's inactivity timeout (bookmarks every ~60 s)
    # replaces a stream that went silent.
    s.watching.server_timeout = 600
    s.watching.client_timeout = 660
    # The listing before the watch, in pages: unpaginated, 100,000 pending jobs were one
    # answer the apiserver could not send within the request timeout, and parsing it
    # would hold the event loop past the member Lease's renew deadline.
    s.watching.chunk_size = LIST_PAGE_SIZE
    return s


def connection(config: KubeConfig, credential: Credential) -> kopf.ConnectionInfo:
    """kopf's credentials: the ones the operator's own client uses, valid until they are
    due for renewal (kopf logs in again then)."""
    return kopf.ConnectionInfo(
        server=config.server,
        ca_path=config.ca_file,
        ca_data=config.ca_data,
        insecure=config.insecure,
        scheme="Bearer" if credential.token else None,
        token=credential.token,
        certificate_path=credential.cert_file,
        certificate_data=credential.cert_data,
        private_key_path=credential.key_file,
        private_key_data=credential.key_data,
        default_namespace=config.namespace,
        expiration=credential.renew_at,
    )


def login_handler(config: KubeConfig) -> Callable[..., Awaitable[kopf.ConnectionInfo]]:
    """kopf asks again only once the last credentials expired or were refused (401), so
    every later ask renews them (an exec plugin runs again); kopf would refuse the same
    ones a second time."""
    given: list[Credential] = []

    async def login(**_: Any) -> kopf.ConnectionInfo:
        source = config.credentials
        try:
            credential = await (source.renew(given[-1]) if given else source.current())
        except CredentialError as error:
            raise kopf.TemporaryError(str(error), delay=5) from None
        given[:] = [credential]
        return connection(config, credential)

    return login


class Observer(Protocol):
    """What the handlers hand events to."""

    def observe(self, event_type: str | None, obj: dict[str, Any]) -> None: ...


def registry(config: KubeConfig, observer: Observer) -> kopf.OperatorRegistry:
    reg = kopf.OperatorRegistry()

    kopf.on.login(registry=reg, id="login")(login_handler(config))

    @kopf.on.event(
        resources.GROUP, resources.VERSION, resources.PLURAL, id="job_event", registry=reg
    )
    async def job_event(event: kopf.RawEvent, **_: Any) -> None:
        try:
            observer.observe(event["type"], dict(event["object"]))
        except Exception as error:  # one bad event must not flood the log with tracebacks
            log.error("cannot handle an AsyncJob event: %s: %s", type(error).__name__, error)

    return reg


def quiet_kopf_logs() -> None:
    # kopf logs every (re)connection at INFO; keep its warnings and errors only.
    logging.getLogger("kopf").setLevel(logging.WARNING)
