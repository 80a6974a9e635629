"""The Helm chart lints, renders with default and non-default values, and its values
schema rejects wrong values with a clear message."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "asyncjobs"
BIN_DIR = Path(
    os.environ.get(
        "ASYNCJOBS_BIN_DIR",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asyncjobs" / "bin",
    )
)

pytestmark = pytest.mark.payload_independent


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN_DIR / "helm"), *args], capture_output=True, text=True, timeout=120
    )


def render(*sets: str) -> list[dict[str, Any]]:
    flags = [item for s in sets for item in ("--set", s)]
    result = helm(
        "template", "aj", str(CHART), "--namespace", "platform", "--kube-version", "1.37.2", *flags
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def test_chart_lints_clean() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_render_has_both_processes_with_restricted_security() -> None:
    docs = render()
    deployments = {d["metadata"]["name"]: d for d in by_kind(docs, "Deployment")}
    assert set(deployments) == {"aj-asyncjobs-api", "aj-asyncjobs-operator"}
    assert deployments["aj-asyncjobs-operator"]["spec"]["strategy"]["type"] == "RollingUpdate"
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = pod["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        assert "limits" in container["resources"]
    crd = by_kind(docs, "CustomResourceDefinition")[0]
    assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert by_kind(docs, "HorizontalPodAutoscaler") == []


def test_jobs_live_in_their_own_namespace_by_default() -> None:
    docs = render()
    assert "platform-jobs" in {n["metadata"]["name"] for n in by_kind(docs, "Namespace")}
    api_role = next(r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "aj-asyncjobs-api")
    assert api_role["metadata"]["namespace"] == "platform-jobs"


def test_api_identity_has_no_rule_in_the_release_namespace() -> None:
    docs = render(
        "providers.providers.openai.type=openai",
        "providers.providers.openai.keys[0].secretRef.name=openai-key",
    )
    bindings = [b for b in by_kind(docs, "RoleBinding") if b["metadata"]["namespace"] == "platform"]
    assert [b["metadata"]["name"] for b in bindings] == ["aj-asyncjobs-operator-provider-keys"]
    keys_role = next(
        r
        for r in by_kind(docs, "Role")
        if r["metadata"]["name"] == "aj-asyncjobs-operator-provider-keys"
    )
    assert keys_role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "resourceNames": ["openai-key"],
        }
    ]


def test_non_default_values_render_optional_objects() -> None:
    docs = render(
        "crds.enabled=false",
        "jobs.namespace=llm-jobs",
        "jobs.createNamespace=false",
        "api.autoscaling.enabled=true",
        "api.podDisruptionBudget.enabled=true",
        "serviceMonitor.enabled=true",
        "api.auth.gatewayToken.existingSecret=gateway",
    )
    kinds = {doc["kind"] for doc in docs}
    assert {
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
    } <= kinds
    assert "CustomResourceDefinition" not in kinds
    assert [n["metadata"]["name"] for n in by_kind(docs, "Namespace")] == ["platform-keys"]
    assert by_kind(docs, "Secret") == [], "the given token Secret is used, none is made"
    api = next(d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-api"))
    assert "replicas" not in api["spec"], "the HPA owns the replica count"
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert "--namespace=llm-jobs" in container["args"]
    assert {
        "name": "ASYNCJOBS_GATEWAY_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "gateway", "key": "token"}},
    } in container["env"]


def test_the_operator_breaker_lease_and_backlog_values_reach_its_arguments() -> None:
    docs = render(
        "operator.providerCooldown.failures=3",
        "operator.providerCooldown.maxSeconds=120",
        "operator.retryAfterMaxSeconds=60",
        "operator.leaseDurationSeconds=30",
        "operator.maxStartedPerProvider=2000",
        "operator.listPageSize=250",
    )
    operator = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "aj-asyncjobs-operator"
    )
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    assert {
        "--cooldown-failures=3",
        "--cooldown-max-seconds=120",
        "--retry-after-max-seconds=60",
        "--lease-duration-seconds=30",
        "--max-started-per-provider=2000",
        "--list-page-size=250",
    } <= set(container["args"])


def test_operator_replicas_shard_the_jobs_through_member_leases() -> None:
    docs = render("operator.replicas=3")
    operator = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "aj-asyncjobs-operator"
    )
    assert operator["spec"]["replicas"] == 3
    # Replicas may overlap: a new pod joins before an old one leaves.
    assert operator["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    (container,) = operator["spec"]["template"]["spec"]["containers"]
    assert "--lease-prefix=aj-asyncjobs-operator" in container["args"]
    assert {
        "name": "POD_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    } in container["env"]
    role = next(
        r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "aj-asyncjobs-operator"
    )
    assert role["metadata"]["namespace"] == "platform-jobs"
    lease_rules = [r for r in role["rules"] if r["apiGroups"] == ["coordination.k8s.io"]]
    assert lease_rules == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "list", "create", "update", "delete"],
        },
    ]
    (pdb,) = [
        p for p in by_kind(docs, "PodDisruptionBudget") if "operator" in p["metadata"]["name"]
    ]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "operator"
    single = render()
    assert not [p for p in by_kind(single, "PodDisruptionBudget") if "operator" in str(p)]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("api.replicas=-1", "/api/replicas", id="negative-replicas"),
        pytest.param("operator.replicas=-1", "/operator/replicas", id="negative-operators"),
        pytest.param("image.pullPolicy=Sometimes", "/image/pullPolicy", id="bad-pull-policy"),
        pytest.param("api.port=70000", "/api/port", id="port-out-of-range"),
        pytest.param("providers.providers.x.type=telepathy", "type", id="unknown-provider-type"),
        pytest.param("unknownTopLevel=1", "unknownTopLevel", id="unknown-value"),
        pytest.param("jobs.namespace=Not_A_Name", "/jobs/namespace", id="bad-namespace"),
        pytest.param("api.auth.mode=open", "/api/auth/mode", id="unknown-auth-mode"),
        pytest.param("api.gatewayToken.key=t", "gatewayToken", id="token-moved-under-auth"),
    ],
)
def test_values_schema_rejects_wrong_values(value: str, message: str) -> None:
    result = helm("template", "aj", str(CHART), "--kube-version", "1.37.2", "--set", value)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def rules_for(docs: list[dict[str, Any]], role: str, resource: str) -> list[list[str]]:
    found = next(r for r in by_kind(docs, "Role") if r["metadata"]["name"] == role)
    return [rule["verbs"] for rule in found["rules"] if resource in rule["resources"]]


def test_secrets_backend_is_bounded_by_quota_flags_and_a_resource_quota() -> None:
    docs = render()
    (quota,) = by_kind(docs, "ResourceQuota")
    assert quota["metadata"]["namespace"] == "platform-jobs"
    assert quota["spec"]["hard"] == {
        "count/asyncjobs.asyncjobs.dev": "12000",
        "count/secrets": "40000",
    }
    api = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "aj-asyncjobs-api"
    )
    (container,) = api["spec"]["template"]["spec"]["containers"]
    assert {"--max-stored-jobs=10000", "--max-stored-bytes=536870912"} <= set(container["args"])
    assert env_of(container)["ASYNCJOBS_PAYLOADS"] == "secrets"
    assert rules_for(docs, "aj-asyncjobs-api", "secrets") == [["create", "get"]]


def test_s3_backend_configures_both_processes_and_needs_no_body_secrets() -> None:
    docs = render(
        "payloads.backend=s3",
        "payloads.s3.bucket=llm-bodies",
        "payloads.s3.endpoint=http://seaweedfs:8333",
        "payloads.s3.pathStyle=true",
        "payloads.s3.credentialsSecret.name=s3-credentials",
    )
    assert by_kind(docs, "ResourceQuota") == []
    for deployment in by_kind(docs, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = env_of(container)
        assert env["ASYNCJOBS_PAYLOADS"] == "s3"
        assert env["ASYNCJOBS_S3_BUCKET"] == "llm-bodies"
        assert env["ASYNCJOBS_S3_ENDPOINT"] == "http://seaweedfs:8333"
        assert env["ASYNCJOBS_S3_PATH_STYLE"] == "true"
        # The keys come from the Secret, never from values.
        assert env["AWS_SECRET_ACCESS_KEY"] == {
            "secretKeyRef": {"name": "s3-credentials", "key": "AWS_SECRET_ACCESS_KEY"}
        }
        assert not any(arg.startswith("--max-stored") for arg in container["args"])
    # Bodies are objects: neither process touches Secrets in the jobs namespace; the
    # API still watches the virtual keys in theirs.
    # Only the webhook signing secrets, which it creates and never reads.
    assert rules_for(docs, "aj-asyncjobs-api", "secrets") == [["create"]]
    # Only to read the webhook signing secrets, by name.
    assert rules_for(docs, "aj-asyncjobs-operator", "secrets") == [["get"]]
    assert rules_for(docs, "aj-asyncjobs-api-virtual-keys", "secrets") == [["list", "watch"]]


def test_s3_backend_without_a_bucket_is_refused_at_render() -> None:
    result = helm(
        "template", "aj", str(CHART), "--kube-version", "1.37.2", "--set", "payloads.backend=s3"
    )
    assert result.returncode != 0
    assert "payloads.backend=s3 needs payloads.s3.bucket" in result.stderr


# --- secure by default -------------------------------------------------------------------------


def api_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    api = next(
        d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "aj-asyncjobs-api"
    )
    (container,) = api["spec"]["template"]["spec"]["containers"]
    return container


def test_default_install_requires_a_generated_gateway_token() -> None:
    docs = render()
    (secret,) = by_kind(docs, "Secret")
    assert secret["metadata"] == {
        "name": "aj-asyncjobs-gateway-token",
        "namespace": "platform",
        "labels": secret["metadata"]["labels"],
    }
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) == 48
    assert token.isalnum()
    assert token != base64.b64decode(by_kind(render(), "Secret")[0]["data"]["token"]).decode(), (
        "random per install (an upgrade keeps the installed one through lookup)"
    )
    container = api_container(docs)
    assert env_of(container)["ASYNCJOBS_GATEWAY_TOKEN"] == {
        "secretKeyRef": {"name": "aj-asyncjobs-gateway-token", "key": "token"}
    }
    assert "--require-virtual-key" not in container["args"]


@pytest.mark.parametrize(
    ("mode", "token", "virtual_key"),
    [
        pytest.param("gatewayToken", True, False, id="token"),
        pytest.param("virtualKeys", False, True, id="virtual-keys"),
        pytest.param("gatewayTokenAndVirtualKeys", True, True, id="both"),
        pytest.param("anonymous", False, False, id="anonymous-opt-in"),
    ],
)
def test_auth_modes(mode: str, token: bool, virtual_key: bool) -> None:
    docs = render(f"api.auth.mode={mode}")
    container = api_container(docs)
    assert ("ASYNCJOBS_GATEWAY_TOKEN" in env_of(container)) is token
    assert bool(by_kind(docs, "Secret")) is token
    assert ("--require-virtual-key" in container["args"]) is virtual_key


def test_virtual_keys_live_in_their_own_namespace_where_alone_the_api_lists_secrets() -> None:
    docs = render()
    assert {n["metadata"]["name"] for n in by_kind(docs, "Namespace")} == {
        "platform-jobs",
        "platform-keys",
    }
    assert "--keys-namespace=platform-keys" in api_container(docs)["args"]
    keys_role = next(
        r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "aj-asyncjobs-api-virtual-keys"
    )
    assert keys_role["metadata"]["namespace"] == "platform-keys"
    assert keys_role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"]}
    ]
    listing = [
        (role["metadata"]["namespace"], rule["verbs"])
        for role in by_kind(docs, "Role")
        for rule in role["rules"]
        if "secrets" in rule["resources"] and {"list", "watch"} & set(rule["verbs"])
    ]
    assert listing == [("platform-keys", ["list", "watch"])], "nothing lists job Secrets"
    moved = render("virtualKeys.namespace=llm-keys", "virtualKeys.createNamespace=false")
    assert "--keys-namespace=llm-keys" in api_container(moved)["args"]
    assert [n["metadata"]["name"] for n in by_kind(moved, "Namespace")] == ["platform-jobs"]


def test_network_policies_are_on_by_default_and_open_only_to_the_release_namespace() -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(render(), "NetworkPolicy")}
    assert set(policies) == {"aj-asyncjobs-api", "aj-asyncjobs-operator"}
    api, operator = policies["aj-asyncjobs-api"], policies["aj-asyncjobs-operator"]
    assert api["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "api"
    assert api["ingress"] == [{"ports": [{"port": 8080}], "from": [{"podSelector": {}}]}]
    assert operator["ingress"] == [{"ports": [{"port": 9090}], "from": [{"podSelector": {}}]}]
    for spec in policies.values():
        # Egress is left alone: the operator must reach the apiserver and providers.
        assert spec["policyTypes"] == ["Ingress"]


def test_network_policy_peers_a_user_adds() -> None:
    ingress = "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}}"
    docs = helm_values(
        f"networkPolicy: {{from: [{ingress}], metricsFrom: [{{namespaceSelector: {{}}}}]}}"
    )
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs, "NetworkPolicy")}
    nginx = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    assert policies["aj-asyncjobs-api"]["ingress"] == [
        {"ports": [{"port": 8080}], "from": [{"podSelector": {}}, nginx]},
        {"ports": [{"port": 8080}], "from": [{"namespaceSelector": {}}]},
    ]
    assert policies["aj-asyncjobs-operator"]["ingress"] == [
        {"ports": [{"port": 9090}], "from": [{"podSelector": {}}, {"namespaceSelector": {}}]}
    ]
    assert by_kind(render("networkPolicy.enabled=false"), "NetworkPolicy") == []


def helm_values(text: str) -> list[dict[str, Any]]:
    """A render with values given as YAML (lists of mappings are awkward with --set)."""
    result = subprocess.run(
        [
            str(BIN_DIR / "helm"),
            "template",
            "aj",
            str(CHART),
            "--namespace",
            "platform",
            "--kube-version",
            "1.37.2",
            "--values",
            "-",
        ],
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
