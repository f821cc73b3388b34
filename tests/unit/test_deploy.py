"""deploy/ stays true to the code: every file parses, the app's containers set only variables the
service reads, dashboards and alerts query only metrics that exist, each alert has a runbook, the
probes are the ones that mean what Kubernetes thinks, images are pinned, and only the webhook
port is reachable from outside the cluster."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tests.support.paths import ROOT
from worker.config import ENV_VARS
from worker.infra import metrics

DEPLOY = ROOT / "deploy"
KNOWN_ENV = {v.name for v in ENV_VARS}


def _documents() -> dict[Path, list[Any]]:
    docs: dict[Path, list[Any]] = {}
    for path in sorted(DEPLOY.rglob("*")):
        if path.suffix in (".yml", ".yaml"):
            docs[path] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        elif path.suffix == ".json":
            docs[path] = [json.loads(path.read_text())]
    return docs


def _walk(node: Any) -> Any:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _app_env_names(doc: Any) -> set[str]:
    """Variable names the billing-worker containers get, in compose and Kubernetes shapes."""
    names: set[str] = set()
    if isinstance(doc, dict) and "services" in doc:  # docker compose
        for service in doc["services"].values():
            if str(service.get("image", "")).startswith("billing-worker"):
                names |= set((service.get("environment") or {}).keys())
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        names |= set(doc.get("data", {}))
    for node in _walk(doc):
        if isinstance(node, dict) and "containers" in node:
            for container in node["containers"]:
                names |= {e["name"] for e in container.get("env", [])}
        if isinstance(node, dict) and "secretKeyRef" in node:
            names.add(node["secretKeyRef"]["key"])
    return names


def _exposed_metric_names() -> set[str]:
    names = set()
    for metric in metrics.REGISTRY.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",),
            "info": ("_info",),
        }
        names |= {metric.name + s for s in suffixes[metric.type]}
    return names


# Metric names in a PromQL expression: ours, the process collector's, and Prometheus' own `up`.
_METRIC = re.compile(r"\b(?:billing|process)_[a-z_]+|\bup(?=\s*[{=<>!])")


def _queries(doc: Any) -> list[str]:
    return [
        node["expr"] for node in _walk(doc) if isinstance(node, dict) and isinstance(node.get("expr"), str)
    ]


def test_every_deploy_file_parses_and_the_expected_ones_exist():
    docs = _documents()
    names = {p.relative_to(DEPLOY).as_posix() for p in docs}
    assert {
        "docker-compose.yml",
        "k8s/receiver.yaml",
        "k8s/worker.yaml",
        "k8s/api.yaml",
        "k8s/networkpolicy.yaml",
        "prometheus/alerts.yml",
        "prometheus/alerts_test.yml",
        "grafana/billing-worker.json",
    } <= names
    kinds = {d.get("kind") for ds in docs.values() for d in ds if isinstance(d, dict)}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Job", "NetworkPolicy"} <= kinds


def test_containers_set_only_variables_the_service_reads():
    seen: set[str] = set()
    for path, docs in _documents().items():
        for doc in docs:
            names = _app_env_names(doc)
            assert names <= KNOWN_ENV, f"{path}: unknown variables {sorted(names - KNOWN_ENV)}"
            seen |= names
    assert {"DATABASE_URL", "REDIS_URL", "STRIPE_WEBHOOK_SECRETS", "BW_INTERNAL_TOKEN"} <= seen


def test_alerts_and_dashboard_query_only_existing_metrics():
    exposed = _exposed_metric_names()
    queried: set[str] = set()
    for path, docs in _documents().items():
        for doc in docs:
            for expr in _queries(doc):
                used = set(_METRIC.findall(expr))
                assert used, f"{path}: {expr!r} queries no metric of ours"
                assert used <= exposed | {"up"}, f"{path}: unknown metrics {sorted(used - exposed - {'up'})}"
                queried |= used
    # Every billing metric is on the dashboard or in an alert.
    for metric in metrics.REGISTRY.collect():
        if metric.name.startswith("billing_"):
            assert any(q.startswith(metric.name) for q in queried), metric.name


def test_every_alert_has_a_runbook_entry():
    readme = (ROOT / "README.md").read_text()
    alerts = [
        rule["alert"]
        for group in yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    assert {"BillingDeadLetters", "BillingOldestUnprocessedEvent", "BillingSignatureFailureSpike"} <= set(
        alerts
    )
    assert "BillingPendingPlanChangesStuck" in alerts
    assert {
        "BillingTargetDown",
        "BillingTargetAbsent",
        "BillingWorkersStalled",
        "BillingWebhooksSilent",
    } <= set(alerts)
    for alert in alerts:
        assert f"### {alert}" in readme, f"README has no runbook for {alert}"


def test_redis_is_persistent_and_never_evicts_and_the_image_runs_unprivileged():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command and "--maxmemory-policy noeviction" in command
    assert compose["services"]["migrate"]["command"] == ["migrate"]
    workers = [s for s in compose["services"].values() if s.get("command") == ["worker"]]
    assert len(workers) == 2
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:[\d.]+-slim$", dockerfile, re.M)
    assert re.search(r"^USER 10001", dockerfile, re.M)
    for name in ("receiver.yaml", "worker.yaml"):
        for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()):
            if doc["kind"] == "Deployment":
                container = doc["spec"]["template"]["spec"]["containers"][0]
                assert container["resources"]["limits"] and container["readinessProbe"]
                assert doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def _k8s(kind: str) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict) and doc.get("kind") == kind
    ]


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return doc["spec"]["template"]["spec"]["containers"]


def _images() -> list[str]:
    images = [
        str(n["image"])
        for d in _documents().values()
        for n in _walk(d)
        if isinstance(n, dict) and "image" in n
    ]
    images += re.findall(r"^FROM (\S+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    return images


def test_images_are_pinned_and_ours_carry_the_project_version():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = _images()
    assert any(i.startswith("billing-worker:") for i in images)
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", f"{image}: pin a tag"
        if name.endswith("billing-worker"):
            assert tag == version, f"{image}: the image tag is pyproject.toml's version {version}"


def test_every_deployment_probes_livez_readyz_and_waits_for_start_up():
    components = set()
    for doc in _k8s("Deployment"):
        components.add(doc["metadata"]["labels"]["app.kubernetes.io/component"])
        for container in _containers(doc):
            where = f"{doc['metadata']['name']}/{container['name']}"
            live, ready, start = (
                container.get(p) for p in ("livenessProbe", "readinessProbe", "startupProbe")
            )
            assert live and ready and start, f"{where}: liveness, readiness and startup probes"
            assert live["httpGet"]["path"] == "/livez", where  # no I/O: a stalled database never restarts it
            assert start["httpGet"]["path"] == "/livez", where
            assert ready["httpGet"]["path"] == "/readyz", where
            # /readyz answers within 1 s; the probes wait at least that long.
            assert ready.get("timeoutSeconds", 1) >= 1 and live.get("timeoutSeconds", 1) >= 1, where
            # migrations and warm-up: minutes, not the liveness probe's 30 s
            assert start["periodSeconds"] * start["failureThreshold"] >= 120, where
            ports = {p["name"] for p in container["ports"]}
            for probe in (live, ready, start):
                assert probe["httpGet"]["port"] in ports, where
    assert components == {"receiver", "api", "worker"}


def _policy_for(labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        p
        for p in _k8s("NetworkPolicy")
        if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        and "Ingress" in p["spec"]["policyTypes"]
    ]


def test_only_the_webhook_port_is_reachable_from_outside_the_cluster():
    for doc in _k8s("Deployment"):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        policies = _policy_for(labels)
        assert policies, f"{doc['metadata']['name']}: no NetworkPolicy selects its pods"
        rules = [rule for p in policies for rule in p["spec"].get("ingress", [])]
        for container in _containers(doc):
            for port in container["ports"]:
                allowing = [
                    r
                    for r in rules
                    if any(p["port"] in (port["containerPort"], port["name"]) for p in r["ports"])
                ]
                assert allowing, f"{port}: not allowed at all"
                if port["name"] == "webhooks":
                    continue
                for rule in allowing:  # in-cluster peers only: no ipBlock, no rule open to all
                    peers = rule.get("from")
                    assert peers, f"{doc['metadata']['name']} {port['name']}: open to every source"
                    for peer in peers:
                        assert set(peer) <= {"namespaceSelector", "podSelector"}, peer


def test_the_alerts_job_names_are_the_scrape_configs_and_the_components():
    components = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in _k8s("Deployment")}
    scrape = (DEPLOY / "prometheus/prometheus.yml").read_text()
    assert "replacement: billing-$1" in scrape and "app_kubernetes_io_component" in scrape
    rules = (DEPLOY / "prometheus/alerts.yml").read_text()
    named = set(re.findall(r'job="billing-([a-z]+)"', rules))
    for alternatives in re.findall(r'job=~"billing-\(([a-z|]+)\)"', rules):
        named |= set(alternatives.split("|"))
    assert named == components
