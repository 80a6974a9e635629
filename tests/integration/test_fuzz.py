"""A property-based fuzz run of the real API from its own OpenAPI document.

The API and the operator (with the offline `local` provider) run as processes against
the control plane. schemathesis loads the document the API serves at /openapi.json and,
for every operation, sends the document's examples, the boundary and negative values of
each schema (its coverage phase), generated valid and invalid requests (fuzzing), and
submit-then-poll sequences along the document's links (stateful), checking that no
answer is a 5xx and that every status, content type, header and body is one the
document lists for that operation.

The run is bounded and reproducible: at most MAX_EXAMPLES generated cases per operation
and phase, in schemathesis's deterministic mode (Hypothesis derandomised: the same
document and code give the same requests), one worker: about 2,000 requests, 2 to 3
minutes on the shared two cores. api/README.md "The OpenAPI document and the fuzz run"
says how to run it by hand.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.operator_support import local_providers, running_operator
from tests.support.procs import ManagedProcess, free_port, python_module

pytestmark = pytest.mark.payload_independent

MAX_EXAMPLES = 6
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
PHASES = ("examples", "coverage", "fuzzing", "stateful")
# The body limit of the run: what a small install would set (generated bodies are far
# smaller; the 413 path has its own tests).
MAX_REQUEST_BYTES = 256 * 1024


@pytest.fixture
def api_base(kubeconfig_path: str, namespace: str, log_dir: Path, tmp_path: Path) -> Iterator[str]:
    providers = local_providers(tmp_path)
    with running_operator(kubeconfig_path, namespace, providers, log_dir) as operator:
        operator.start()
        port = free_port()
        api = ManagedProcess(
            "api",
            python_module(
                "asyncjobs.api.main",
                "--kubeconfig",
                kubeconfig_path,
                "--namespace",
                namespace,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--providers-config",
                str(providers),
                "--max-request-bytes",
                str(MAX_REQUEST_BYTES),
            ),
            log_dir=log_dir,
        )
        with api:
            base = f"http://127.0.0.1:{port}"
            api.wait_http_ok(f"{base}/readyz", timeout=60)
            yield base
        # A 5xx is what the checks look for; a traceback is the same failure in the log.
        for log in log_dir.glob("*.log"):
            assert "Traceback" not in log.read_text(errors="replace"), log.name


def schemathesis_run(base: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process (it runs its own event loops and threads), started in
    a scratch directory so neither a config file nor a Hypothesis database is read from
    or left in the repository."""
    argv = python_module(
        "schemathesis.cli",
        "run",
        f"{base}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        ",".join(PHASES),
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(workdir / "fuzz-junit.xml"),
    )
    return subprocess.run(
        argv, cwd=workdir, capture_output=True, text=True, timeout=400, check=False
    )


@pytest.mark.timeout(480)
def test_fuzzing_from_the_document_finds_no_server_error_or_mismatch(
    api_base: str, tmp_path: Path
) -> None:
    run = schemathesis_run(api_base, tmp_path)
    output = run.stdout + run.stderr
    # The whole report stays beside the test's logs for a failure to be read in full.
    (tmp_path / "fuzz-output.txt").write_text(output)
    assert run.returncode == 0, output[-20_000:]
    # Every operation of the document was exercised, not just loaded.
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    cases = re.search(r"(\d+) generated, (\d+) passed", output)
    assert selected is not None, output[-5_000:]
    assert tested is not None, output[-5_000:]
    assert cases is not None, output[-5_000:]
    assert selected.group(1) == selected.group(2) == tested.group(1), output[-5_000:]
    assert cases.group(1) == cases.group(2), output[-5_000:]
    phases = re.findall(r"(Examples|Coverage|Fuzzing|Stateful) \(in ([0-9.]+s)\)", output)
    print(f"\nfuzz run: {tested.group(1)} operations, {cases.group(1)} cases passed;", phases)
