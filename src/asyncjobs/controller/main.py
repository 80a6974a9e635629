"""`asyncjobs-operator`: the command line, and the wiring of the operator's parts.

Everything is built here and passed in (clients, clocks, limits), so no part creates a
client at import time and each one can be tested alone. With a providers file, the
providers follow it (core/providers/reloading.py) and each reload also sets the call
limits of the admission queue, so neither a new key, URL or provider nor a new limit
needs a restart. Jobs run only while this process holds the operator Lease
(leadership.py); a standby serves /healthz and /metrics and waits.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import os
import socket
import sys
import time
from datetime import UTC, datetime

import kopf

from asyncjobs.controller import kopf_setup, probes
from asyncjobs.controller.admission import Admission
from asyncjobs.controller.executor import Context
from asyncjobs.controller.expiry import Expiry
from asyncjobs.controller.health import WatchHealth
from asyncjobs.controller.leadership import LeaderOnly, Leadership, LeadershipLost, Timing
from asyncjobs.controller.metrics import Metrics
from asyncjobs.controller.supervisor import Supervisor
from asyncjobs.controller.writer import JobWriter
from asyncjobs.core import payload_stores, provider_config, resources
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

# kopf stops its watches in well under a second once cancelled; a leader that lost its
# Lease must not linger for longer than this.
_KOPF_STOP_SECONDS = 5.0

# Exit code after losing the Lease: the kubelet restarts the container, which waits for
# the Lease like any standby and re-lists everything once it holds it.
EXIT_LEADERSHIP_LOST = 3


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
        "--lease-name",
        default="asyncjobs-operator",
        help="the coordination.k8s.io Lease, in the jobs namespace, that the one operator "
        "running jobs holds",
    )
    parser.add_argument(
        "--lease-identity",
        help="this process's name on the Lease; default: $POD_NAME, else <hostname>-<pid>. "
        "Unique per running process: one that finds its own name there takes it at once",
    )
    parser.add_argument(
        "--lease-duration-seconds",
        type=int,
        default=15,
        help="how long a standby waits after the holder's last renewal before taking over; "
        "the holder renews every 2/15 of it and stops after 2/3 of it without a renewal",
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


async def operate(args: argparse.Namespace, config: KubeConfig) -> None:
    namespace = args.namespace or config.namespace
    policy = Policy(
        default_deadline_seconds=args.default_deadline_seconds,
        default_backoff_limit=args.default_backoff_limit,
        default_ttl_seconds=args.default_ttl_seconds,
        backoff_base_seconds=args.backoff_base_seconds,
        backoff_max_seconds=args.backoff_max_seconds,
        request_grace_seconds=args.request_grace_seconds,
        max_interruptions=args.max_interruptions,
    )
    configuration = provider_config.load(args.providers_config)
    metrics = Metrics()
    health = WatchHealth(time.monotonic, args.watch_stall_seconds)
    loop = asyncio.get_running_loop()
    async with (
        KubeClient(config, max_connections=200) as client,
        payload_stores.open_store(args, client, namespace) as payloads,
    ):
        keys_namespace = args.secrets_namespace or namespace
        reader = secret_reader(client, keys_namespace)
        admission = Admission(CallBudget(max_in_flight=0))

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
        writer = JobWriter(client, namespace, metrics, health, time.time)
        expiry = Expiry(writer.delete_job, wall)
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
        supervisor = Supervisor(ctx, expiry, health)
        metrics.waiting.set_function(admission.waiting)
        metrics.jobs_running.set_function(lambda: len(supervisor.tasks))
        metrics.jobs_expiring.set_function(lambda: len(expiry))
        leadership = Leadership(
            client,
            namespace,
            args.lease_name,
            lease_identity(args),
            Timing.for_duration(args.lease_duration_seconds),
            on_change=metrics.leader.set,
        )
        # A standby answers /healthz and /metrics (leader 0) while it waits.
        app = probes.create_app(metrics, health)
        runner = await probes.start(app, args.metrics_host, args.metrics_port)
        try:
            await leadership.acquire()
            listed = await client.list(resources.asyncjobs_path(namespace), limit="1")
            existing = len(listed.get("items", []))
            supervisor.expect_listed(existing + listed["metadata"].get("remainingItemCount", 0))
            # Should the listing never be confirmed (a bug, an odd apiserver), run anyway.
            loop.call_later(30, supervisor.listing_done)
            log.info(
                "serving namespace %s with providers %s (max %d calls in flight)",
                namespace,
                ", ".join(sorted(providers)),
                providers.max_in_flight,
            )
            await run_while_leading(leadership, supervisor, expiry, config, namespace)
        finally:
            await runner.cleanup()
            await providers.close()


async def run_while_leading(
    leadership: Leadership,
    supervisor: Supervisor,
    expiry: Expiry,
    config: KubeConfig,
    namespace: str,
) -> None:
    """Runs kopf until it stops (SIGTERM) or the Lease is lost (LeadershipLost). Jobs stop
    before the Lease is released, so the next holder never overlaps with this one."""
    gate = LeaderOnly(supervisor, leadership)
    holding = asyncio.create_task(leadership.hold(), name="lease")
    expiring = asyncio.create_task(expiry.run(), name="expiry")
    operator = asyncio.create_task(
        kopf.operator(
            registry=kopf_setup.registry(config, gate),
            settings=kopf_setup.settings(),
            namespaces=[namespace],
            standalone=True,
        ),
        name="kopf",
    )
    lost = False
    try:
        await asyncio.wait({holding, operator}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gate.close()
        lost = holding.done()  # hold() ends only when the Lease is lost (or on a bug)
        holding.cancel()
        expiring.cancel()
        await supervisor.close()
        if not lost:
            await leadership.release()
        # Cancelled rather than given a stop flag: kopf would wait 5 s for the task that
        # watches such a flag, as for any task it did not start itself.
        operator.cancel()
        await asyncio.wait({operator}, timeout=_KOPF_STOP_SECONDS)
    if lost:
        raise LeadershipLost(leadership.name) from holding.exception()
    await operator


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    kopf_setup.quiet_kopf_logs()
    try:
        config = load_config(args.kubeconfig)
        asyncio.run(operate(args, config))
    except ProviderConfigError as error:
        log.error("provider configuration: %s", error)
        raise SystemExit(2) from None
    except (OSError, ValueError) as error:
        log.error("cannot start: %s", error)
        raise SystemExit(2) from None
    except LeadershipLost:
        raise SystemExit(EXIT_LEADERSHIP_LOST) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
