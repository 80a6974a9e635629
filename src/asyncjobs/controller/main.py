"""`asyncjobs-operator`: the command line, and the wiring of the operator's parts.

Everything is built here and passed in (clients, clocks, limits), so no part creates a
client at import time and each one can be tested alone. With a providers file, the
providers follow it (core/providers/reloading.py) and each reload also sets the call
limits of the admission queue, so neither a new key, URL or provider nor a new limit
needs a restart. Jobs run only while this process holds its member Lease
(member_lease.py), and only those of the shards it owns among the live members
(members.py, core/shards.py): the job watch (job_watch.py) lists and watches those shards
by label, and starts again with the new selector whenever the live members change.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from asyncjobs.controller import job_watch, probes
from asyncjobs.controller.admission import Admission
from asyncjobs.controller.deliverer import Deliverer
from asyncjobs.controller.endpoint_requests import EndpointRequests
from asyncjobs.controller.executor import Context
from asyncjobs.controller.expiry import Expiry
from asyncjobs.controller.health import WatchHealth
from asyncjobs.controller.member_lease import (
    LeaseLost,
    MemberLease,
    MemberOnly,
    Timing,
    member_lease_name,
)
from asyncjobs.controller.member_metrics import register_member_metrics
from asyncjobs.controller.members import Members, wait_for_single_leader
from asyncjobs.controller.metrics import Metrics
from asyncjobs.controller.shard_labels import ShardLabeller
from asyncjobs.controller.supervisor import (
    STARTED_PER_PROVIDER,
    Supervisor,
    started_per_provider,
)
from asyncjobs.controller.usage_folder import UsageFolder
from asyncjobs.controller.webhook_sender import Sender
from asyncjobs.controller.writer import JobWriter
from asyncjobs.core import (
    payload_stores,
    provider_config,
    resources,
    shards,
    webhook_delivery,
    webhook_log,
)
from asyncjobs.core.cooldown import CooldownPolicy
from asyncjobs.core.kube import KubeClient, KubeConfig, load_config
from asyncjobs.core.lifecycle import Policy
from asyncjobs.core.limits import CallBudget
from asyncjobs.core.providers.registry import (
    ProviderConfigError,
    ProviderSet,
    SecretReader,
    build_providers,
)
from asyncjobs.core.providers.reloading import ProvidersReloader

log = logging.getLogger("asyncjobs.operator")

# A cancelled watch stops in well under a second; a member that lost its Lease must
# not linger for longer than this.
_WATCH_STOP_SECONDS = 5.0

# Exit code after losing the member Lease: the kubelet restarts the container, which
# joins again as a new process and lists its shards afresh.
EXIT_LEASE_LOST = 3


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asyncjobs-operator", description=__doc__)
    parser.add_argument("--kubeconfig", help="default: $KUBECONFIG, in-cluster, ~/.kube/config")
    parser.add_argument("--namespace", help="namespace to serve; default: the kubeconfig's")
    parser.add_argument("--providers-config", help="providers YAML; default: offline `local`")
    parser.add_argument(
        "--providers-reload-seconds",
        type=float,
        default=10.0,
        help="how often the providers file is checked for changes",
    )
    parser.add_argument(
        "--secrets-namespace",
        help="namespace of the provider-key Secrets; default: the jobs namespace. The chart "
        "keeps them beside the Deployments, where the API's identity cannot read them",
    )
    parser.add_argument("--metrics-host", default="0.0.0.0")  # noqa: S104 - a pod's port
    parser.add_argument("--metrics-port", type=int, default=8080)
    parser.add_argument("--default-deadline-seconds", type=int, default=3600)
    parser.add_argument("--default-backoff-limit", type=int, default=3)
    parser.add_argument("--default-ttl-seconds", type=int, default=3600)
    parser.add_argument("--backoff-base-seconds", type=float, default=1.0)
    parser.add_argument("--backoff-max-seconds", type=float, default=60.0)
    parser.add_argument(
        "--webhook-first-retry-seconds",
        type=float,
        default=webhook_delivery.FIRST_RETRY_SECONDS,
        help="the first completion-webhook retry delay; the next ones double it, up to 8x",
    )
    parser.add_argument(
        "--webhook-record-retention-seconds",
        type=float,
        default=webhook_log.DEFAULT_RETENTION_SECONDS,
        help="how long an endpoint keeps the records of its ended deliveries "
        "(status.deliveries, at most 100); default 30 days",
    )
    parser.add_argument(
        "--retry-after-max-seconds",
        type=float,
        default=300.0,
        help="the longest retry delay taken from a provider's Retry-After",
    )
    parser.add_argument(
        "--cooldown-failures",
        type=int,
        default=5,
        help="5xx answers or calls with no answer in a row that hold a provider's calls "
        "(one 429 does)",
    )
    parser.add_argument(
        "--cooldown-max-seconds",
        type=float,
        default=300.0,
        help="the longest a provider's calls are held before a probe call, Retry-After included",
    )
    parser.add_argument(
        "--fair-share",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="share call slots between virtual keys by their weight (--no-fair-share: "
        "oldest job first whatever its key, for comparison)",
    )
    parser.add_argument("--request-grace-seconds", type=float, default=30.0)
    parser.add_argument(
        "--max-interruptions",
        type=int,
        default=20,
        help="operator stops a job survives (they spend none of its attempts); one more "
        "fails it with InterruptionLimitExceeded",
    )
    parser.add_argument("--watch-stall-seconds", type=float, default=60.0)
    parser.add_argument(
        "--list-page-size",
        type=positive_int,
        default=job_watch.LIST_PAGE_SIZE,
        help="AsyncJobs per page of the watch's listing",
    )
    parser.add_argument(
        "--max-started-per-provider",
        type=positive_int,
        default=STARTED_PER_PROVIDER,
        help="jobs of one provider started at once (at least twice limits.maxInFlight); "
        "more pending ones wait parked, in fair-share order, at about 2 KiB each",
    )
    parser.add_argument(
        "--lease-prefix",
        default="asyncjobs-operator",
        help="each replica holds the coordination.k8s.io Lease <prefix>-<identity> in the "
        "jobs namespace while it runs jobs",
    )
    parser.add_argument(
        "--lease-identity",
        help="this replica's name among the members; default: $POD_NAME, else "
        "<hostname>-<pid>. Unique per running process: one that finds its own name on a "
        "Lease takes it over at once",
    )
    parser.add_argument(
        "--lease-duration-seconds",
        type=int,
        default=15,
        help="how long after a replica's last renewal the others take its jobs over; "
        "each renews every 2/15 of it and stops after 2/3 of it without a renewal",
    )
    parser.add_argument("--log-level", default="INFO")
    payload_stores.add_arguments(parser)
    return parser.parse_args(argv)


def secret_reader(client: KubeClient, namespace: str) -> SecretReader:
    async def read(name: str, key: str) -> str:
        secret = await client.get(resources.secrets_path(namespace, name))
        value = (secret.get("data") or {}).get(key)
        if value is None:
            raise KeyError(key)
        return base64.b64decode(value).decode()

    return read


def wall() -> datetime:
    return datetime.now(UTC)


def lease_identity(args: argparse.Namespace) -> str:
    explicit: str | None = args.lease_identity or os.environ.get("POD_NAME")
    return explicit or f"{socket.gethostname()}-{os.getpid()}"


def process_holder(identity: str) -> str:
    """The holder this process writes on its Lease and into the jobs it runs: the
    identity plus a token of this process, so the others can tell a restarted container
    (same identity) from the process that claimed a job before it died."""
    return f"{identity}/{secrets.token_hex(4)}"


async def operate(args: argparse.Namespace, config: KubeConfig) -> None:
    namespace = args.namespace or config.namespace
    policy = Policy(
        default_deadline_seconds=args.default_deadline_seconds,
        default_backoff_limit=args.default_backoff_limit,
        default_ttl_seconds=args.default_ttl_seconds,
        backoff_base_seconds=args.backoff_base_seconds,
        backoff_max_seconds=args.backoff_max_seconds,
        retry_after_max_seconds=args.retry_after_max_seconds,
        request_grace_seconds=args.request_grace_seconds,
        max_interruptions=args.max_interruptions,
    )
    configuration = provider_config.load(args.providers_config)
    metrics = Metrics()
    health = WatchHealth(time.monotonic, args.watch_stall_seconds)
    async with (
        KubeClient(config, max_connections=200) as client,
        # The Leases have connections of their own: a burst of job requests queued in
        # the pool must not hold up a renewal until the member gives its Lease up.
        KubeClient(config, max_connections=4) as lease_client,
        payload_stores.open_store(args, client, namespace) as payloads,
    ):
        keys_namespace = args.secrets_namespace or namespace
        reader = secret_reader(client, keys_namespace)
        cooldown = CooldownPolicy(
            failures_to_open=args.cooldown_failures, max_seconds=args.cooldown_max_seconds
        )
        admission = Admission(
            CallBudget(max_in_flight=0, cooldown=cooldown), fair_share=args.fair_share
        )

        def apply_limits(new: ProviderSet) -> None:
            admission.reconfigure(new.max_in_flight, new.limits)
            metrics.provider_reloads.inc()
            log.info(
                "providers now %s (max %d calls in flight)",
                ", ".join(sorted(new)),
                new.max_in_flight,
            )

        providers: ProviderSet | ProvidersReloader
        if args.providers_config:
            providers = ProvidersReloader(
                args.providers_config,
                reader,
                interval_seconds=args.providers_reload_seconds,
                on_reload=apply_limits,
            )
            await providers.start()
        else:
            providers = await build_providers(configuration, reader)
        admission.reconfigure(providers.max_in_flight, providers.limits)
        timing = Timing.for_duration(args.lease_duration_seconds)
        identity = lease_identity(args)
        lease = MemberLease(
            lease_client,
            namespace,
            member_lease_name(args.lease_prefix, identity),
            process_holder(identity),
            timing,
            on_change=metrics.member.set,
        )
        members = Members(lease_client, namespace, lease.name, lease.holder, timing)
        writer = JobWriter(client, namespace, metrics, health, time.time, member=lease.holder)
        usage = UsageFolder(client, namespace, metrics, wall)
        expiry = Expiry(usage.folding(writer.delete_job), wall)
        ctx = Context(
            client=client,
            namespace=namespace,
            payloads=payloads,
            providers=providers,
            admission=admission,
            writer=writer,
            metrics=metrics,
            policy=policy,
            wall=wall,
        )
        supervisor = Supervisor(
            ctx,
            expiry,
            health,
            usage=usage,
            per_lane=lambda: started_per_provider(
                args.max_started_per_provider, admission.budget.max_in_flight
            ),
        )
        sender = Sender()
        deliverer = Deliverer(
            client,
            namespace,
            sender,
            first_retry_seconds=args.webhook_first_retry_seconds,
            metrics=metrics,
            retention_seconds=args.webhook_record_retention_seconds,
            payloads=payloads,
        )
        endpoint_requests = EndpointRequests(deliverer, lambda: supervisor.ownership)
        writer.may_claim = supervisor.may_claim
        metrics.waiting.set_function(supervisor.waiting)
        metrics.waiting_by_key.source = supervisor.waiting_by_group
        metrics.jobs_running.set_function(lambda: len(supervisor.tasks))
        metrics.jobs_expiring.set_function(lambda: len(expiry))
        metrics.webhook_pending.set_function(lambda: len(deliverer.tasks))
        register_member_metrics(metrics.registry, lease, members, supervisor)
        labeller = ShardLabeller(client, namespace, lambda: supervisor.ownership, metrics)
        # /healthz and /metrics answer while the process joins.
        app = probes.create_app(metrics, health)
        runner = await probes.start(app, args.metrics_host, args.metrics_port)
        try:
            await wait_for_single_leader(lease_client, namespace, args.lease_prefix, timing)
            await lease.join()
            await members.refresh()
            log.info(
                "serving namespace %s with providers %s (max %d calls in flight)",
                namespace,
                ", ".join(sorted(providers)),
                providers.max_in_flight,
            )
            await run_member(
                lease,
                members,
                supervisor,
                expiry,
                labeller,
                client,
                namespace,
                also=[deliverer],
                loops=[endpoint_requests.run],
                page_size=args.list_page_size,
            )
        finally:
            await deliverer.close()
            await sender.close()
            await runner.cleanup()
            await providers.close()


class Fanout:
    """Hands each watch event to several observers (the supervisor, the deliverer)."""

    def __init__(self, observers: Sequence[job_watch.Observer]) -> None:
        self.observers = observers

    def observe(self, event_type: str | None, obj: dict[str, Any]) -> None:
        for observer in self.observers:
            try:
                observer.observe(event_type, obj)
            except Exception as error:  # one bad event must not stop the watch
                log.error("cannot handle an AsyncJob event: %s: %s", type(error).__name__, error)


async def stop_watch(watch: asyncio.Task[None] | None) -> None:
    if watch is None:
        return
    watch.cancel()
    await asyncio.wait({watch}, timeout=_WATCH_STOP_SECONDS)


def catch_stop_signals(stopping: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)


async def run_member(
    lease: MemberLease,
    members: Members,
    supervisor: Supervisor,
    expiry: Expiry,
    labeller: ShardLabeller,
    client: KubeClient,
    namespace: str,
    *,
    also: Sequence[job_watch.Observer] = (),
    loops: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    page_size: int = job_watch.LIST_PAGE_SIZE,
) -> None:
    """Watches this replica's shards until it stops (SIGTERM) or the Lease is lost
    (LeaseLost), watching again with the new shards whenever the live members change.
    Jobs stop before the Lease is deleted, so no one resumes them while they still run
    here."""
    gate = MemberOnly(Fanout([supervisor, *also]), lease)
    stopping = asyncio.Event()
    catch_stop_signals(stopping)
    holding = asyncio.create_task(lease.hold(), name="lease")
    helpers = [
        asyncio.create_task(expiry.run(), name="expiry"),
        asyncio.create_task(members.run(), name="members"),
        asyncio.create_task(labeller.run(), name="shard labels"),
        # They start once this coroutine yields, after the first reshard below.
        *(asyncio.create_task(run_loop()) for run_loop in loops),
    ]
    watch: asyncio.Task[None] | None = None
    try:
        while True:
            ownership = members.snapshot()
            supervisor.reshard(ownership)
            selector = shards.selector(ownership.shards)
            log.info(
                "%d live members; this one runs %d of %d shards",
                len(ownership.members),
                len(ownership.shards),
                shards.SHARDS,
            )
            if selector:
                reflector = job_watch.job_watch(
                    client, namespace, selector, gate, supervisor, page_size=page_size
                )
                watch = asyncio.create_task(reflector.run(), name="AsyncJob watch")
            waiters = {
                asyncio.create_task(members.changed.wait()),
                asyncio.create_task(stopping.wait()),
            }
            watched = {holding, *waiters} | ({watch} if watch else set())
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if holding.done() or stopping.is_set() or (watch and watch.done()):
                break
            await stop_watch(watch)  # the members changed: watch the new shards
            watch = None
    finally:
        gate.close()
        # The watch first: a listing it completed later would start parked jobs.
        failed = watch is not None and watch.done()
        if not failed:
            await stop_watch(watch)
        lost = holding.done()  # hold() ends only when the Lease is lost (or on a bug)
        holding.cancel()
        for helper in helpers:
            helper.cancel()
        await supervisor.close()
        if not lost:
            await lease.leave()
    if lost:
        raise LeaseLost(lease.name) from holding.exception()
    if failed and watch is not None:
        await watch  # the watch's own error (it runs until cancelled otherwise)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.kubeconfig)
        asyncio.run(operate(args, config))
    except ProviderConfigError as error:
        log.error("provider configuration: %s", error)
        raise SystemExit(2) from None
    except (OSError, ValueError) as error:
        log.error("cannot start: %s", error)
        raise SystemExit(2) from None
    except LeaseLost:
        raise SystemExit(EXIT_LEASE_LOST) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
