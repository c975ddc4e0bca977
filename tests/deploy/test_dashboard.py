"""The Grafana dashboard and the Prometheus scrape config.

A panel querying a misspelt metric shows "No data" forever and nobody
notices, so every PromQL expression is checked against the metrics the
workers export: names, label names and the values of enumerated labels.
"""

from __future__ import annotations

import json
import re
from typing import Dict, Iterator, List, Set, Tuple

import pytest
import yaml

from .helpers import (
    DASHBOARD,
    PROMETHEUS,
    REPO,
    environment,
    services,
    volume_mounts,
    worker_services,
)

# The one list of what workers export (see workers' metrics module).
# name -> (type, labels, {label: allowed values} for enumerated labels)
METRICS: Dict[str, Tuple[str, Tuple[str, ...], Dict[str, Set[str]]]] = {
    "promptq_provider_requests_total": ("counter", ("provider", "outcome"), {"outcome": {"success", "error"}}),
    "promptq_provider_errors_total": ("counter", ("provider", "category"), {}),
    "promptq_provider_latency_seconds": ("histogram", ("provider",), {}),
    "promptq_tokens_total": ("counter", ("provider", "direction"), {"direction": {"input", "output"}}),
    "promptq_cost_usd_total": ("counter", ("endpoint",), {}),
    "promptq_retries_total": ("counter", ("provider",), {}),
    "promptq_failovers_total": ("counter", ("from_provider", "to_provider"), {}),
    "promptq_circuit_state": ("gauge", ("provider",), {}),
    "promptq_queue_depth": ("gauge", ("queue",), {}),
    "promptq_jobs_total": ("counter", ("status",), {"status": {"succeeded", "failed", "dead_lettered"}}),
    # Capacity per provider:model (issue 8); `source` is "learned" or "configured:<scope>".
    "promptq_capacity_limit_rpm": ("gauge", ("endpoint", "source"), {}),
    "promptq_capacity_rate_rpm": ("gauge", ("endpoint",), {}),
    "promptq_capacity_tokens_this_minute": ("gauge", ("endpoint",), {}),
    "promptq_capacity_rate_limited_total": ("counter", ("endpoint",), {}),
    "promptq_capacity_waiting_jobs": ("gauge", ("endpoint",), {}),
    "promptq_capacity_paused_seconds": ("gauge", ("endpoint",), {}),
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Labels Prometheus adds to every series at scrape time (plus our relabelled `group`).
TARGET_LABELS = {"job", "instance", "group"}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    with DASHBOARD.open(encoding="utf-8") as fh:
        return json.load(fh)


def _panels(dash: dict) -> Iterator[dict]:
    for panel in dash.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows nest their panels


def _expressions(dash: dict) -> List[Tuple[str, str]]:
    out = []
    for panel in _panels(dash):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append((f"panel {panel.get('title')!r} {target.get('refId')}", target["expr"]))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            text = query.get("query") if isinstance(query, dict) else query
            out.append((f"variable {var['name']!r}", text or var.get("definition", "")))
    return out


def _base_metric(name: str) -> str:
    if name in METRICS:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base in METRICS and METRICS[base][0] == "histogram":
            return base
    raise AssertionError(f"{name} is not a metric promptq exports")


def check_expression(where: str, expr: str) -> Set[str]:
    """Asserts the PromQL uses only known metrics and labels; returns the metrics used."""
    names = set(re.findall(r"\bpromptq_[a-z0-9_]+", expr))
    assert names, f"{where}: queries no promptq metric: {expr}"
    bases = set()
    for name in names:
        try:
            bases.add(_base_metric(name))
        except AssertionError as exc:
            raise AssertionError(f"{where}: {exc}: {expr}") from None
    allowed = set(TARGET_LABELS)
    for base in bases:
        kind, labels, _ = METRICS[base]
        allowed |= set(labels)
        if kind == "histogram":
            allowed.add("le")
    # by (...) / without (...) / label_values(metric, label)
    grouped = [lab.strip() for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr) for lab in group.split(",")]
    grouped += re.findall(r"label_values\(\s*[a-z0-9_]+\s*,\s*([a-z_]+)\s*\)", expr)
    for label in filter(None, grouped):
        assert label in allowed, f"{where}: groups by {label!r}, which no metric in it has: {expr}"
    for selector in re.findall(r"\{([^}]*)\}", expr):
        for label, op, value in re.findall(r"(\w+)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"", selector):
            assert label in allowed, f"{where}: filters on {label!r}, which no metric in it has: {expr}"
            for base in bases:
                enum = METRICS[base][2].get(label)
                if enum and op == "=":
                    assert value in enum, f"{where}: {label}={value!r} is never exported (values: {sorted(enum)})"
    if "histogram_quantile" in expr:
        assert "_bucket" in expr and re.search(r"by\s*\([^)]*\ble\b", expr), f"{where}: histogram_quantile needs _bucket by le: {expr}"
    return bases


def test_metrics_list_matches_what_workers_export():
    # The list above is only worth checking against if it is what the
    # workers really serve: build the worker's registry and read it back.
    from prometheus_client import CollectorRegistry

    from promptq.tasks.settings import Settings
    from promptq.workers.metrics import PrometheusObserver, RedisStateCollector

    registry = CollectorRegistry()
    observer = PrometheusObserver(registry)
    # Port 1 refuses at once: the gauges come back as families without samples.
    registry.register(RedisStateCollector(Settings(redis_url="redis://127.0.0.1:1/0")))
    observer.request_finished("openai", ok=False, latency_s=0.2, category="rate_limit",
                              usage={"input_tokens": 3, "output_tokens": 5})
    observer.request_finished("openai", ok=True, latency_s=0.1)
    observer.priced("openai:gpt-4o-mini", 0.0004)
    observer.retried("openai", 1.0)
    observer.failed_over("openai", "claude")
    observer.job_finished("succeeded")

    exported: Dict[str, Tuple[str, Set[str]]] = {}
    for family in registry.collect():
        # prometheus_client names a counter family without its _total suffix.
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        exported[name] = (family.type, labels)
    assert set(exported) == set(METRICS), f"workers export {sorted(exported)}, the dashboard expects {sorted(METRICS)}"
    for name, (kind, labels) in exported.items():
        assert kind == METRICS[name][0], f"{name} is a {kind}, expected a {METRICS[name][0]}"
        if labels:  # the Redis-read gauges have no samples here
            assert labels == set(METRICS[name][1]), f"{name} has labels {sorted(labels)}, expected {METRICS[name][1]}"


def test_dashboard_basics(dashboard):
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard.get("uid") and dashboard.get("title")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = [v for v in variables.values() if v["type"] == "datasource"]
    assert ds and ds[0]["query"] == "prometheus", "the dashboard needs a Prometheus datasource variable"
    ds_ref = "${" + ds[0]["name"] + "}"
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"]["uid"] == ds_ref, f"variable {var['name']!r} does not use {ds_ref}"
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == ds_ref, f"panel {panel['title']!r} does not use {ds_ref}"
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target.get("datasource", panel["datasource"])["uid"] == ds_ref


def test_panels_do_not_overlap(dashboard):
    boxes = [(p["title"], p["gridPos"]) for p in _panels(dashboard)]
    for i, (ta, a) in enumerate(boxes):
        assert a["x"] + a["w"] <= 24, f"{ta} is wider than the grid"
        for tb, b in boxes[i + 1 :]:
            overlap = a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
            assert not overlap, f"panels {ta!r} and {tb!r} overlap"


def test_every_query_uses_known_metrics_and_labels(dashboard):
    exprs = _expressions(dashboard)
    assert exprs
    for where, expr in exprs:
        check_expression(where, expr)


def test_every_metric_has_a_panel(dashboard):
    used = set()
    for where, expr in _expressions(dashboard):
        used |= check_expression(where, expr)
    missing = set(METRICS) - used
    assert not missing, f"no panel shows {sorted(missing)}"


def test_latency_panel_has_p50_p95_p99(dashboard):
    quantiles = set()
    for _, expr in _expressions(dashboard):
        quantiles |= set(re.findall(r"histogram_quantile\(\s*(0\.\d+)", expr))
    assert {"0.5", "0.95", "0.99"} <= quantiles, quantiles


@pytest.mark.parametrize(
    "expr",
    [
        "rate(promptq_provider_request_total[5m])",  # misspelt metric
        "sum by (model) (rate(promptq_tokens_total[5m]))",  # label it lacks
        'rate(promptq_jobs_total{status="ok"}[5m])',  # value never exported
        "rate(promptq_queue_depth_bucket[5m])",  # _bucket of a gauge
        "rate(http_requests_total[5m])",  # not a promptq metric at all
    ],
)
def test_checker_rejects_bad_queries(expr):
    with pytest.raises(AssertionError):
        check_expression("test", expr)


# --- Prometheus --------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus() -> dict:
    with PROMETHEUS.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def test_prometheus_scrapes_every_worker_group(prometheus):
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert len(jobs) == len(prometheus["scrape_configs"]), "duplicate job_name"
    scraped: Dict[str, int] = {}
    for job in jobs.values():
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                scraped[name] = int(sd["port"])
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host, _, port = target.rpartition(":")
                scraped[host] = int(port)
    for host in scraped:
        assert host in services(), f"prometheus scrapes {host!r}, which is no compose service"
    for name, svc in worker_services().items():
        assert name in scraped, f"prometheus does not scrape worker group {name}"
        port = int(environment(svc)["PROMPTQ_METRICS_PORT"])
        assert scraped[name] == port, f"prometheus scrapes {name} on {scraped[name]}, it serves metrics on {port}"


def test_monitoring_services_mount_the_files_they_need():
    svcs = services()
    prom_mounts = {source: target for kind, source, target in volume_mounts(svcs["prometheus"]) if kind == "bind"}
    assert prom_mounts.get("./deploy/prometheus.yml") == "/etc/prometheus/prometheus.yml"
    graf_mounts = {source: target for kind, source, target in volume_mounts(svcs["grafana"]) if kind == "bind"}
    dash_target = graf_mounts.get("./deploy/grafana/promptq-dashboard.json")
    assert dash_target, "grafana does not mount the dashboard"
    prov_target = graf_mounts.get("./deploy/grafana/provisioning")
    assert prov_target == "/etc/grafana/provisioning"
    with (REPO / "deploy/grafana/provisioning/dashboards/promptq.yml").open() as fh:
        provider = yaml.safe_load(fh)["providers"][0]
    assert dash_target.rsplit("/", 1)[0] == provider["options"]["path"].rstrip("/"), "grafana looks for dashboards elsewhere"
    with (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").open() as fh:
        source = yaml.safe_load(fh)["datasources"][0]
    assert source["type"] == "prometheus"
    assert source["url"].split("//", 1)[1].split(":", 1)[0] in svcs, "grafana's datasource is not the compose prometheus"
