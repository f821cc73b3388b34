"""deploy/ stays true to the code: every file parses, the app's containers set only variables the
service reads, dashboards and alerts query only metrics that exist, and each alert has a runbook."""

from __future__ import annotations

import json
import re
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
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
        names |= {metric.name + s for s in suffixes[metric.type]}
    return names


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
        "prometheus/alerts.yml",
        "grafana/billing-worker.json",
    } <= names
    kinds = {d.get("kind") for ds in docs.values() for d in ds if isinstance(d, dict)}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Job"} <= kinds


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
                used = set(re.findall(r"\bbilling_[a-z_]+", expr))
                assert used, f"{path}: {expr!r} queries no billing metric"
                assert used <= exposed, f"{path}: unknown metrics {sorted(used - exposed)}"
                queried |= used
    # Every metric the issue lists is on the dashboard or in an alert.
    for metric in metrics.REGISTRY.collect():
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
