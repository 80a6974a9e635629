#!/usr/bin/env python3
"""A real S3 server for development and tests: SeaweedFS's `weed mini` (master, volume
server, filer and S3 gateway in one process) on 127.0.0.1, next to tools/plane.py.

The binary is built from the Go module proxy (`tools/build-binaries.sh weed`). Every
fresh start generates random credentials and authentication is always on, so code that
works here signs its requests as it must against AWS. `up` also creates the bucket and
writes DIR/s3.env (ASYNCJOBS_S3_ENDPOINT, ASYNCJOBS_S3_BUCKET, ASYNCJOBS_S3_REGION,
ASYNCJOBS_S3_PATH_STYLE, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) for scripts to source.

    uv run --frozen python tools/s3server.py up [--dir DIR] [--port N] [--bucket NAME]
                                    # start (or reuse); prints the endpoint
    python3 tools/s3server.py down [--dir DIR]     # stop it and drop its data
    python3 tools/s3server.py status [--dir DIR]   # exit 0 when S3 answers

DIR defaults to $ASYNCJOBS_PLANE_DIR/s3 (.plane/s3), the port to $ASYNCJOBS_S3_PORT or
28333; `--port 0` picks a free one. Only `up` needs botocore (the project's environment),
to create the bucket. Tests use the same thing as a function:

    with s3server.start(tmp_path / "s3") as s3:   # a free port; stopped on exit
        client = session.create_client("s3", endpoint_url=s3.endpoint, ...)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 28333
DEFAULT_BUCKET = "asyncjobs"
# SeaweedFS accepts any region in a signature; clients still need one to sign with.
REGION = "us-east-1"
START_TIMEOUT = 60.0
# Volumes are files that grow as objects arrive (no preallocation); small ones keep a
# development disk tidy, and 64 of them (4 GiB) outlast any test or benchmark run.
VOLUME_SIZE_MB = 64
MAX_VOLUMES = 64
# Written and deleted at start-up to prove that writes go through.
PROBE_KEY = ".s3server-probe"
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


class S3ServerError(RuntimeError):
    """The server could not be started, reached or stopped; the message says why."""


@dataclass(frozen=True)
class S3Server:
    """A running server and everything a client needs to use it."""

    state_dir: Path
    endpoint: str
    region: str
    access_key_id: str
    secret_access_key: str
    bucket: str

    def env(self) -> dict[str, str]:
        """The settings as environment variables, as the API and the operator read them
        (core/payload_stores.py): the env file's content."""
        return {
            "ASYNCJOBS_S3_ENDPOINT": self.endpoint,
            "ASYNCJOBS_S3_BUCKET": self.bucket,
            "ASYNCJOBS_S3_REGION": self.region,
            # Buckets have no DNS names on 127.0.0.1.
            "ASYNCJOBS_S3_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def stop(self) -> None:
        stop(self.state_dir)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Layout:
    """Where one server keeps its files: everything weed writes but its Unix sockets,
    whose paths weed fixes under /tmp."""

    state: Path

    @property
    def pidfile(self) -> Path:
        return self.state / "weed.pid"

    @property
    def log(self) -> Path:
        return self.state / "logs" / "weed.log"

    @property
    def env_file(self) -> Path:
        return self.state / "s3.env"

    @property
    def identities(self) -> Path:
        return self.state / "identities.json"

    @property
    def ports(self) -> Path:
        return self.state / "ports.json"

    @property
    def data(self) -> Path:
        return self.state / "data"


def default_state_dir() -> Path:
    return Path(os.environ.get("ASYNCJOBS_PLANE_DIR", REPO / ".plane")) / "s3"


def bin_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("ASYNCJOBS_BIN_DIR", cache / "asyncjobs" / "bin"))


def log(message: str) -> None:
    print(f"[s3] {message}", file=sys.stderr, flush=True)


# --- the function API -------------------------------------------------------------


def start(
    state_dir: Path,
    port: int | None = None,
    bucket: str = DEFAULT_BUCKET,
    timeout: float = START_TIMEOUT,
) -> S3Server:
    """Starts a server keeping its files in state_dir, or reuses the one running there,
    and returns it once S3 answers and the bucket exists. port None or 0 picks a free
    port; a port held by another process is an error."""
    if not BUCKET_NAME.fullmatch(bucket):
        raise S3ServerError(f"{bucket!r} is not a valid S3 bucket name")
    layout = Layout(state_dir.resolve())
    layout.state.mkdir(parents=True, exist_ok=True)
    with locked(layout):
        server = running(layout)
        if server is not None:
            check_reused_port(server, port)
            log(f"already running at {server.endpoint}")
        else:
            server = launch(layout, port or 0, timeout)
        server = with_bucket(server, bucket, timeout)
        write_env_file(layout, server)
        return server


def stop(state_dir: Path) -> None:
    """Stops the server of state_dir, if one runs, and drops its data and credentials:
    both belong to the control plane that is stopped with it."""
    layout = Layout(state_dir.resolve())
    if not layout.state.exists():
        return
    with locked(layout):
        stop_process(layout)
        shutil.rmtree(layout.data, ignore_errors=True)
        layout.env_file.unlink(missing_ok=True)
        layout.identities.unlink(missing_ok=True)


def running(layout: Layout) -> S3Server | None:
    """The server of this state dir when its process is alive and S3 answers."""
    if weed_pid(layout.pidfile) is None:
        return None
    server = read_env_file(layout)
    if server is None or not s3_answers(server.endpoint):
        return None
    return server


@contextlib.contextmanager
def locked(layout: Layout) -> Iterator[None]:
    # Two test sessions or two shells starting the same state dir share one server.
    with (layout.state / "s3.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def check_reused_port(server: S3Server, port: int | None) -> None:
    if port and not server.endpoint.endswith(f":{port}"):
        raise S3ServerError(
            f"a server already runs from {server.state_dir} at {server.endpoint}, "
            f"not on port {port}; stop it first (tools/s3server.py down)"
        )


# --- processes --------------------------------------------------------------------


def weed_pid(pidfile: Path) -> int | None:
    """The PID in pidfile while it names a live weed: not a zombie (killed, not yet
    reaped) and not an unrelated process that was given the PID of a dead weed."""
    try:
        pid = int(pidfile.read_text().strip())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ValueError):
        return None
    name, _, fields = stat.partition("(")[2].rpartition(")")
    return pid if name == "weed" and fields.split()[0] != "Z" else None


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def free_ports(count: int) -> list[int]:
    """Distinct ports the kernel considers free right now. All sockets stay open until
    every port is chosen, so no two are the same."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def weed_binary() -> Path:
    binary = bin_dir() / "weed"
    if not binary.exists():
        raise S3ServerError(
            f"{binary} is missing; build it with `bash tools/build-binaries.sh weed`"
        )
    return binary


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one weed process: S3 plus the internal servers, each with
    an HTTP and a gRPC port. All but S3 are picked free at every start rather than
    weed's fixed defaults (9333, 8080, 8888, 12535 and their gRPC twins at +10000),
    which other services, or a second server for another test session, may hold."""

    s3: int
    s3_grpc: int
    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    admin: int
    admin_grpc: int

    @classmethod
    def pick(cls, s3: int) -> Ports:
        free = free_ports(10)
        return cls(s3 or free.pop(), *free[:9])

    def unix_sockets(self) -> list[Path]:
        """The sockets weed adds beside these ports, at paths of its own under /tmp. A
        killed weed leaves them behind, so stop_process removes them."""
        grpc = {
            "master": self.master_grpc,
            "volume": self.volume_grpc,
            "filer": self.filer_grpc,
            "s3": self.s3_grpc,
            "admin": self.admin_grpc,
        }
        paths = [f"/tmp/seaweedfs-{name}-grpc-{port}.sock" for name, port in grpc.items()]
        paths += [f"/tmp/seaweedfs-filer-{self.filer}.sock", f"/tmp/seaweedfs-s3-{self.s3}.sock"]
        return [Path(path) for path in paths]


def launch(layout: Layout, port: int, timeout: float) -> S3Server:
    if port and port_taken(port):
        raise S3ServerError(
            f"port {port} (S3) is taken by another process; "
            "set ASYNCJOBS_S3_PORT or --port (0 picks a free one), or stop it"
        )
    binary = weed_binary()
    forget_ports(layout)  # left behind if the last server crashed
    ports = Ports.pick(port)
    server = S3Server(layout.state, f"http://127.0.0.1:{ports.s3}", REGION, *credentials(layout))
    write_identities(layout, server)
    layout.ports.write_text(json.dumps(dataclasses.asdict(ports)))
    layout.data.mkdir(parents=True, exist_ok=True)
    layout.log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with layout.log.open("ab") as out:
        process = subprocess.Popen(
            [str(binary), *weed_arguments(layout, ports)],
            cwd=layout.state,  # weed also reads *.toml from its working directory
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the caller; stopped by PID in `down`
        )
    layout.pidfile.write_text(str(process.pid))
    CHILDREN[process.pid] = process
    try:
        wait_until_answering(layout, server, timeout)
    except S3ServerError:
        stop_process(layout)
        raise
    log(f"S3 answering after {time.monotonic() - started:.1f}s at {server.endpoint}")
    return server


def credentials(layout: Layout) -> tuple[str, str, str]:
    """Access key id, secret and bucket: fresh random ones, except after a crash (the
    env file outlives only a server that was not stopped), when processes started with
    the old env file are still running and must keep working."""
    previous = read_env_file(layout)
    if previous is not None:
        return previous.access_key_id, previous.secret_access_key, previous.bucket
    return secrets.token_hex(10).upper(), secrets.token_hex(20), DEFAULT_BUCKET


def weed_arguments(layout: Layout, ports: Ports) -> list[str]:
    """`weed mini`: master, volume server, filer and S3 gateway in one process, tuned by
    upstream for a single node. Unlike `weed server` it admits writes as soon as its own
    volume server reports, about 5 s after start instead of 11. It always adds an admin
    server and a maintenance worker, on loopback like everything else."""
    return [
        "-logtostderr",  # into our log file instead of files in /tmp
        "mini",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={layout.data}",
        f"-master.port={ports.master}",
        f"-master.port.grpc={ports.master_grpc}",
        "-master.telemetry=false",
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}",
        f"-volume.port={ports.volume}",
        f"-volume.port.grpc={ports.volume_grpc}",
        f"-volume.max={MAX_VOLUMES}",
        f"-filer.port={ports.filer}",
        f"-filer.port.grpc={ports.filer_grpc}",
        f"-s3.port={ports.s3}",
        f"-s3.port.grpc={ports.s3_grpc}",
        f"-s3.config={layout.identities}",
        # AWS answers a write to a missing bucket with NoSuchBucket; weed would create it.
        "-s3.autoCreateBucket=false",
        # Unused services that are on by default, some at fixed ports.
        "-s3.iam=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        f"-admin.port={ports.admin}",
        f"-admin.port.grpc={ports.admin_grpc}",
        "-admin.port.legacy=0",
    ]


def write_identities(layout: Layout, server: S3Server) -> None:
    """The static identities file (-s3.config) with a single admin identity. Having any
    identity switches authentication on; there is no anonymous one, so an unsigned or
    wrongly signed request is refused."""
    identity = {
        "name": "asyncjobs",
        "credentials": [{"accessKey": server.access_key_id, "secretKey": server.secret_access_key}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    write_private(layout.identities, json.dumps({"identities": [identity]}, indent=2))


def write_private(path: Path, text: str) -> None:
    # Created with owner-only permissions, so the secret is never readable by others.
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text)


def stop_process(layout: Layout) -> None:
    """Kills weed outright. A graceful stop takes 1 to 15 seconds (the filer's last
    metadata-log flush retries once the volume server is gone) and would save nothing:
    the data goes away with the server."""
    pid = weed_pid(layout.pidfile)
    if pid is not None:
        os.killpg(pid, signal.SIGKILL)  # its own process group (start_new_session)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and weed_pid(layout.pidfile):
            reap(pid)
            time.sleep(0.05)
        child = CHILDREN.pop(pid, None)
        if child is not None:
            child.wait(timeout=10)
        log(f"stopped weed (pid {pid})")
    layout.pidfile.unlink(missing_ok=True)
    forget_ports(layout)


def forget_ports(layout: Layout) -> None:
    """Removes the Unix sockets of the last weed of this state dir, dead by now."""
    with contextlib.suppress(FileNotFoundError, TypeError, ValueError):
        for path in Ports(**json.loads(layout.ports.read_text())).unix_sockets():
            path.unlink(missing_ok=True)
    layout.ports.unlink(missing_ok=True)


# Servers this process started (start() in a test process), kept until stopped: a Popen
# collected while its child runs is reported as a leak, and its exit status is ours to
# collect.
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def reap(pid: int) -> None:
    """Collects the exit status when weed is our own child (start() in a test process),
    which would otherwise linger as a zombie that still counts as alive."""
    child = CHILDREN.get(pid)
    if child is not None:
        if child.poll() is not None:
            del CHILDREN[pid]
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(layout: Layout) -> str:
    try:
        return layout.log.read_text(errors="replace")[-3000:]
    except FileNotFoundError:
        return "(no log)"


# --- health and the bucket --------------------------------------------------------


def s3_answers(endpoint: str) -> bool:
    """True when the S3 gateway itself answers: an unsigned request is refused with an
    S3 error document. A bare open port is not enough, since weed opens it before the
    gateway has reached its filer."""
    try:
        with urllib.request.urlopen(f"{endpoint}/", timeout=2) as answer:
            body = answer.read()
    except urllib.error.HTTPError as refused:
        body = refused.read()
    except OSError:
        return False
    return b"<Error>" in body or b"<ListAllMyBucketsResult" in body


def wait_until_answering(layout: Layout, server: S3Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if s3_answers(server.endpoint):
            return
        if weed_pid(layout.pidfile) is None:
            raise S3ServerError(f"weed exited during start-up; its log ends:\n{log_tail(layout)}")
        time.sleep(0.2)
    raise S3ServerError(
        f"S3 not answering at {server.endpoint} after {timeout:.0f}s; "
        f"{layout.log} ends:\n{log_tail(layout)}"
    )


def with_bucket(server: S3Server, bucket: str, timeout: float) -> S3Server:
    """Creates the bucket (or finds it there) and writes and deletes an object in it, so
    that the first write of a caller does not wait, unseen, for the filer's write locks
    (a few seconds after start-up). Returns the server naming the bucket."""
    client = s3_client(server)
    from botocore.exceptions import BotoCoreError, ClientError  # s3_client checked it

    deadline = time.monotonic() + timeout
    while True:
        try:
            create_bucket(client, bucket)
            client.put_object(Bucket=bucket, Key=PROBE_KEY, Body=b"")
            client.delete_object(Bucket=bucket, Key=PROBE_KEY)
            return dataclasses.replace(server, bucket=bucket)
        except (BotoCoreError, ClientError) as error:
            if time.monotonic() > deadline:
                raise S3ServerError(f"bucket {bucket} not writable: {error}") from error
        time.sleep(0.5)


def create_bucket(client: Any, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            raise


def s3_client(server: S3Server) -> Any:
    """A botocore S3 client for the server. Typed Any: botocore's stubs describe no
    service operations (those come from a separate package the project does not use)."""
    try:
        import botocore.config
        import botocore.session
    except ImportError as missing:
        raise S3ServerError(
            "botocore is needed to create the bucket; run this in the project's "
            "environment: uv run --frozen python tools/s3server.py up"
        ) from missing
    return botocore.session.get_session().create_client(
        "s3",
        endpoint_url=server.endpoint,
        region_name=server.region,
        aws_access_key_id=server.access_key_id,
        aws_secret_access_key=server.secret_access_key,
        config=botocore.config.Config(s3={"addressing_style": "path"}),
    )


# --- the env file -----------------------------------------------------------------


def write_env_file(layout: Layout, server: S3Server) -> None:
    """KEY=value lines, readable by `set -a; . s3.env` and by env-file parsers alike;
    every value is hex, a bucket name or a loopback URL, so none needs quoting."""
    lines = [f"{key}={value}\n" for key, value in server.env().items()]
    write_private(layout.env_file, "".join(lines))


def read_env_file(layout: Layout) -> S3Server | None:
    try:
        text = layout.env_file.read_text()
    except FileNotFoundError:
        return None
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    try:
        return S3Server(
            layout.state,
            values["ASYNCJOBS_S3_ENDPOINT"],
            values["ASYNCJOBS_S3_REGION"],
            values["AWS_ACCESS_KEY_ID"],
            values["AWS_SECRET_ACCESS_KEY"],
            values["ASYNCJOBS_S3_BUCKET"],
        )
    except KeyError:
        return None


# --- the command line -------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--dir", type=Path, default=default_state_dir(), help="state folder")
    parser.add_argument(
        "--port",
        type=int,
        help=f"S3 port on 127.0.0.1 for a new server: 0 picks a free one; default "
        f"$ASYNCJOBS_S3_PORT or {DEFAULT_PORT}",
    )
    parser.add_argument("--bucket", default=DEFAULT_BUCKET, help="bucket to create")
    args = parser.parse_args()
    try:
        run(args.command, args.dir, args.port, args.bucket)
    except S3ServerError as error:
        print(f"[s3] error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def run(command: str, state_dir: Path, port: int | None, bucket: str) -> None:
    layout = Layout(state_dir.resolve())
    if command == "up":
        # The default port is for a new server only: a bare `up` reuses a running one
        # wherever it listens.
        if port is None and running(layout) is None:
            port = int(os.environ.get("ASYNCJOBS_S3_PORT", DEFAULT_PORT))
        server = start(state_dir, port, bucket)
        log(f"settings in {layout.env_file}")
        print(server.endpoint)
    elif command == "down":
        stop(state_dir)
    else:
        server_or_none = running(layout)
        print(server_or_none.endpoint if server_or_none else "down")
        raise SystemExit(0 if server_or_none else 1)


if __name__ == "__main__":
    main()
