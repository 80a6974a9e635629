"""`asyncjobs-operator`: the command line, and the wiring of the operator's parts.

Everything is built here and passed in (clients, clocks, limits), so no part creates a
client at import time and each one can be tested alone. With a providers file, the
providers follow it (core/providers/reloading.py) and each reload also sets the call
limits of the admission queue, so neither a new key, URL or provider nor a new limit
needs a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import sys
import time
from datetime import UTC, datetime

import kopf

from asyncjobs.controller import kopf_setup, probes
from asyncjobs.controller.admission import Admission
from asyncjobs.controller.executor import Context
from asyncjobs.controller.expiry import Expiry
from asyncjobs.controller.health import WatchHealth
from asyncjobs.controller.metrics import Metrics
from asyncjobs.controller.supervisor import Supervisor
from asyncjobs.controller.writer import JobWriter
from asyncjobs.core import provider_config, resources
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
    parser.add_argument("--watch-stall-seconds", type=float, default=60.0)
    parser.add_argument("--log-level", default="INFO")
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


async def operate(args: argparse.Namespace, config: KubeConfig) -> None:
    namespace = args.namespace or config.namespace
    policy = Policy(
        default_deadline_seconds=args.default_deadline_seconds,
        default_backoff_limit=args.default_backoff_limit,
        default_ttl_seconds=args.default_ttl_seconds,
        backoff_base_seconds=args.backoff_base_seconds,
        backoff_max_seconds=args.backoff_max_seconds,
        request_grace_seconds=args.request_grace_seconds,
    )
    configuration = provider_config.load(args.providers_config)
    metrics = Metrics()
    health = WatchHealth(time.monotonic, args.watch_stall_seconds)
    loop = asyncio.get_running_loop()
    async with KubeClient(config, max_connections=200) as client:
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
            providers=providers,
            admission=admission,
            writer=writer,
            metrics=metrics,
            policy=policy,
            wall=wall,
            on_terminal=lambda _: None,
        )
        supervisor = Supervisor(ctx, expiry, health)
        metrics.waiting.set_function(admission.waiting)
        metrics.jobs_running.set_function(lambda: len(supervisor.tasks))
        metrics.jobs_expiring.set_function(lambda: len(expiry))
        listed = await client.list(resources.asyncjobs_path(namespace), limit="1")
        existing = len(listed.get("items", [])) + listed["metadata"].get("remainingItemCount", 0)
        supervisor.expect_listed(existing)
        app = probes.create_app(metrics, health)
        runner = await probes.start(app, args.metrics_host, args.metrics_port)
        expiry_task = asyncio.create_task(expiry.run(), name="expiry")
        # Should the listing never be confirmed (a bug, an odd apiserver), run anyway.
        loop.call_later(30, supervisor.listing_done)
        log.info(
            "serving namespace %s with providers %s (max %d calls in flight)",
            namespace,
            ", ".join(sorted(providers)),
            providers.max_in_flight,
        )
        try:
            await kopf.operator(
                registry=kopf_setup.registry(config, supervisor),
                settings=kopf_setup.settings(),
                namespaces=[namespace],
                standalone=True,
            )
        finally:
            expiry_task.cancel()
            await supervisor.close()
            await runner.cleanup()
            await providers.close()


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
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
