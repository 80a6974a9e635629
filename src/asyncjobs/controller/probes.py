"""The operator's small HTTP endpoint: /metrics for Prometheus, /healthz for the kubelet.

/healthz fails (503) when the AsyncJob watch stopped delivering (controller/health.py),
which is the one failure a restart fixes; everything else the operator retries itself.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from asyncjobs.controller.health import WatchHealth
from asyncjobs.controller.metrics import Metrics


def create_app(metrics: Metrics, health: WatchHealth) -> web.Application:
    async def metrics_view(_: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        stalled = health.stalled_for()
        if health.healthy():
            return web.json_response({"status": "ok"})
        return web.json_response(
            {"status": "watch stalled", "unechoed_write_seconds": round(stalled, 1)}, status=503
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    return app


async def start(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
