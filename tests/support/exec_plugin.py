"""A real exec credential plugin for tests: a small Python script that a kubeconfig runs.

It answers an ExecCredential the way EKS's, GKE's or kubelogin's plugins do, and is
steered and observed through files in its state directory: `tokens` (one per line; the
n-th run answers the n-th, the last one thereafter), `lifetime` (seconds until its
expirationTimestamp), `fail` (exit 3 with this on stderr), `stdout` (printed instead of
an ExecCredential), `sleep` (seconds before answering). Each run appends what it saw
(arguments, environment, KUBERNETES_EXEC_INFO, standard input) to `calls.jsonl`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = r"""
import json, os, sys, time
from datetime import datetime, timedelta, timezone
from pathlib import Path

state = Path(sys.argv[1])
def read(name):
    path = state / name
    return path.read_text() if path.exists() else None

info = json.loads(os.environ.get("KUBERNETES_EXEC_INFO") or "null")
stdin = "" if sys.stdin is None or sys.stdin.closed else sys.stdin.read()
with open(state / "calls.jsonl", "a") as calls:
    calls.write(json.dumps({
        "args": sys.argv[2:],
        "env": os.environ.get("PLUGIN_GREETING"),
        "info": info,
        "stdin": stdin,
        "stdin_tty": bool(sys.stdin and not sys.stdin.closed and sys.stdin.isatty()),
    }) + "\n")
run = len((state / "calls.jsonl").read_text().splitlines())
if read("sleep"):
    time.sleep(float(read("sleep")))
if read("fail") is not None:
    sys.stderr.write(read("fail"))
    sys.exit(3)
if read("stdout") is not None:
    sys.stdout.write(read("stdout"))
    sys.exit(0)
tokens = (read("tokens") or "").split()
status = {}
if tokens:
    status["token"] = tokens[min(run, len(tokens)) - 1]
for key in ("clientCertificateData", "clientKeyData"):
    if read(key) is not None:
        status[key] = read(key)
if read("lifetime") is not None:
    expires = datetime.now(timezone.utc) + timedelta(seconds=float(read("lifetime")))
    status["expirationTimestamp"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
api_version = read("api_version") or (info or {}).get("apiVersion")
print(json.dumps({"apiVersion": api_version, "kind": "ExecCredential", "status": status}))
"""

V1 = "client.authentication.k8s.io/v1"
V1BETA1 = "client.authentication.k8s.io/v1beta1"


@dataclass
class ExecPluginScript:
    """The plugin's script and its state directory."""

    state: Path

    @classmethod
    def create(
        cls, directory: Path, *tokens: str, lifetime: float | None = None
    ) -> ExecPluginScript:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "plugin.py").write_text(SCRIPT)
        plugin = cls(directory)
        plugin.set("tokens", "\n".join(tokens))
        if lifetime is not None:
            plugin.set("lifetime", str(lifetime))
        return plugin

    @property
    def script(self) -> Path:
        return self.state / "plugin.py"

    def set(self, name: str, value: str | None) -> None:
        path = self.state / name
        if value is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(value)

    def exec_entry(self, api_version: str = V1, *args: str, **extra: Any) -> dict[str, Any]:
        """users[].user.exec: the test's own interpreter runs the script."""
        return {
            "apiVersion": api_version,
            "command": sys.executable,
            "args": [str(self.script), str(self.state), *args],
            "interactiveMode": "Never",
            **extra,
        }

    def calls(self) -> list[dict[str, Any]]:
        path = self.state / "calls.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    @property
    def runs(self) -> int:
        return len(self.calls())
