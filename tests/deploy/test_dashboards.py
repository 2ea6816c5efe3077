"""The Grafana dashboards ask only for what a real running shop exports, through the shipped scrape config.

One `boutique up` (free ports, its own data directory) takes an order and some browsing; every
process's /metrics is scraped. Every metric a dashboard's PromQL names must be exported by one of
them (a sample, or a family the process declares that has no sample until its first event, such as
ejections), with the suffixes its type gives (_bucket, _count, _sum; _total for counters). Where
Prometheus is installed, it then scrapes the same processes through deploy/prometheus/prometheus.yml
(its pod discovery replaced by a file of the same pods' metadata) and evaluates every expression.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from boutique.run.ports import free_port
from tests.deploy.promql import label_names, metric_names, substitute
from tests.deploy.render import ROOT
from tests.e2e.harness import Up, start_up
from tests.e2e.test_prometheus_scrape import place_order
from tests.faults.traffic import Shoppers, browsing

pytestmark = pytest.mark.e2e

DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
NAMESPACE = "boutique"
SUFFIXES = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum"), "counter": ("",)}
_TYPE = re.compile(r"^# TYPE (\S+) (\S+)$")
_SAMPLE = re.compile(r"^([A-Za-z_:][\w:]*)(\{([^}]*)\})?\s")
_LABEL = re.compile(r'([A-Za-z_]\w*)="')
_LABEL_VALUES = re.compile(r"label_values\((.*),\s*(\w+)\)")
# Panels that must show data after one order and some browsing (by title, in any dashboard).
MUST_SHOW = {
    "Requests per second",
    "Duration p50 / p99",
    "Client calls by outcome",
    "Breaker state",
    "Instances known per service",
    "Orders per minute by currency",
    "Revenue per hour by currency",
    "Add-to-cart per minute",
}


@dataclass(frozen=True)
class Target:
    """One expression of one panel."""

    dashboard: str
    panel: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel}: {self.expr}"

    def parts(self) -> tuple[str, str | None]:
        """The PromQL of the expression, and the label a `label_values(SELECTOR, LABEL)` variable lists."""
        found = _LABEL_VALUES.fullmatch(self.expr)
        return (found.group(1), found.group(2)) if found else (self.expr, None)

    def metrics(self) -> set[str]:
        """The metrics the expression selects."""
        return metric_names(self.parts()[0])

    def labels(self) -> set[str]:
        """The labels the expression matches on, groups by or lists."""
        promql, listed = self.parts()
        return label_names(promql) | ({listed} if listed else set())


@dataclass
class Exported:
    """What the shop's processes export: sample names with their labels, and declared families."""

    labels: dict[str, set[str]] = field(default_factory=dict)  # name of a sample -> label names seen
    declared: set[str] = field(default_factory=set)  # names a TYPE line makes valid

    def add(self, text: str) -> None:
        """Read one process's /metrics answer."""
        for line in text.splitlines():
            typed = _TYPE.match(line)
            if typed:
                name, kind = typed.groups()
                self.declared.update(name + suffix for suffix in SUFFIXES.get(kind, ("",)))
                continue
            sample = _SAMPLE.match(line)
            if sample:
                self.labels.setdefault(sample.group(1), set()).update(_LABEL.findall(sample.group(3) or ""))

    def names(self) -> set[str]:
        """Every name a query may use."""
        return set(self.labels) | self.declared


def dashboards() -> list[dict[str, Any]]:
    """Every shipped dashboard, parsed."""
    return [json.loads(path.read_text()) for path in DASHBOARDS]


def targets() -> Iterator[Target]:
    """Every panel's expressions and every query variable's, of every dashboard."""
    for board in dashboards():
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield Target(board["title"], panel["title"], target["expr"])
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                yield Target(board["title"], f"variable {variable['name']}", variable["definition"])


def target_labels() -> set[str]:
    """The labels the scrape config gives every series (plus Prometheus' own job and instance)."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    labels = {"job", "instance"}
    for job in config["scrape_configs"]:
        for rule in job.get("relabel_configs", []):
            if not rule.get("target_label", "__").startswith("__"):
                labels.add(rule["target_label"])
    return labels


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """A running shop that has taken one order and some browsing."""
    up = start_up(tmp_path_factory.mktemp("shop"), "--redis", "on")
    try:
        place_order(up)
        shoppers = Shoppers(up.url, browsing, count=2).start()
        time.sleep(3)
        visits = shoppers.stop()
        assert any(v.status == 200 for v in visits), visits[-5:]
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def exported(shop: Up) -> Exported:
    """What every process of the shop exports, scraped once."""
    found = Exported()
    processes = [p for p in shop.state()["processes"] if p.get("metrics")]
    assert len(processes) >= 10, processes
    for process in processes:
        found.add(httpx.get(f"http://{process['metrics']}/metrics", timeout=10).text)
    return found


def test_the_dashboards_are_well_formed() -> None:
    assert {p.name for p in DASHBOARDS} == {
        "boutique-red.json",
        "boutique-mesh.json",
        "boutique-business.json",
    }
    uids = [board["uid"] for board in dashboards()]
    assert len(set(uids)) == len(uids)
    for board in dashboards():
        variables = {v["name"] for v in board["templating"]["list"]}
        assert {"datasource", "namespace"} <= variables, board["title"]
        ids = [panel["id"] for panel in board["panels"]]
        assert len(set(ids)) == len(ids), board["title"]
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, (board["title"], panel["title"])
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(set(refs)) == len(refs), panel["title"]
            for target in panel["targets"]:
                assert metric_names(target["expr"]), f"{panel['title']}: no metric in {target['expr']}"
                used = set(re.findall(r"\$\{?(\w+)", target["expr"])) - {
                    "__rate_interval",
                    "__interval",
                    "__range",
                }
                assert used <= variables, f"{panel['title']}: unknown variables {used - variables}"


def test_grafana_is_provisioned_with_prometheus_the_observatory_and_the_dashboards() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "boutique.yaml").read_text())["datasources"]
    by_type = {source["type"]: source for source in sources}
    assert set(by_type) == {"prometheus", "jaeger"}
    # The observatory's Jaeger-compatible API: the base's Service and port, with its token.
    assert by_type["jaeger"]["url"] == "http://observatory:16686"
    assert by_type["jaeger"]["secureJsonData"]["httpHeaderValue1"] == "Bearer ${BOUTIQUE_OBSERVATORY_TOKEN}"
    base = (ROOT / "deploy" / "kubernetes" / "base" / "observatory.yaml").read_text()
    service = next(o for o in yaml.safe_load_all(base) if o["kind"] == "Service")
    assert service["metadata"]["name"] == "observatory" and 16686 in [
        p["port"] for p in service["spec"]["ports"]
    ]
    (provider,) = yaml.safe_load((PROVISIONING / "dashboards" / "boutique.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith(
        "/var/lib/grafana/dashboards"
    )


def test_every_metric_a_dashboard_names_is_exported_by_the_shop(exported: Exported) -> None:
    available = exported.names()
    missing = {str(t): sorted(t.metrics() - available) for t in targets() if t.metrics() - available}
    assert not missing, json.dumps(missing, indent=2)
    used = set().union(*(t.metrics() for t in targets()))
    declared_only = sorted(used - set(exported.labels))
    print(f"{len(used)} metrics used, all exported; declared with no sample yet: {declared_only}")


def test_every_label_a_dashboard_uses_is_on_its_metrics(exported: Exported) -> None:
    given = target_labels() | {"le"}
    for target in targets():
        seen = [exported.labels[name] for name in target.metrics() if name in exported.labels]
        if not seen:
            continue  # declared-only families: no sample to read labels from yet
        known = set().union(*seen) | given
        assert target.labels() <= known, f"{target}: unknown labels {target.labels() - known}"


def file_sd_config(tmp_path: Path, up: Up) -> Path:
    """deploy/prometheus/prometheus.yml with its pod discovery replaced by a file describing the same pods."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    del job["kubernetes_sd_configs"]
    job["file_sd_configs"] = [{"files": [str(tmp_path / "pods.json")]}]
    config["global"]["scrape_interval"] = "1s"
    pods = []
    for process in up.state()["processes"]:
        if not process.get("metrics"):
            continue
        host, port = process["metrics"].rsplit(":", 1)
        pods.append(pod(process["instance"], process["service"], host, port, "true", "Running"))
    # What the relabelling must leave out: a pod that asks for no scrape, and one that has finished.
    pods.append(pod("quiet-0", "quiet", "127.0.0.1", "1", "false", "Running"))
    pods.append(pod("done-0", "done", "127.0.0.1", "2", "true", "Succeeded"))
    (tmp_path / "pods.json").write_text(json.dumps(pods))
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def pod(name: str, app: str, ip: str, port: str, scrape: str, phase: str) -> dict[str, Any]:
    """One target group as Kubernetes pod discovery would give it (the metadata labels relabelling reads)."""
    meta = "__meta_kubernetes_"
    return {
        "targets": [f"{ip}:8080"],
        "labels": {
            f"{meta}namespace": NAMESPACE,
            f"{meta}pod_name": name,
            f"{meta}pod_ip": ip,
            f"{meta}pod_phase": phase,
            f"{meta}pod_label_app": app,
            f"{meta}pod_label_app_kubernetes_io_component": "service",
            f"{meta}pod_annotation_prometheus_io_scrape": scrape,
            f"{meta}pod_annotation_prometheus_io_port": port,
            f"{meta}pod_annotation_prometheus_io_path": "/metrics",
        },
    }


def wait_for(what: str, probe: Any, timeout: float = 60.0) -> Any:
    """Call `probe` until it answers something truthy; fail naming `what` and the last answer."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def test_prometheus_scrapes_the_pods_by_annotation_and_answers_every_panel(shop: Up, tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("install prometheus (apt-get install prometheus) to evaluate the dashboards' queries")
    config = file_sd_config(tmp_path, shop)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    log = tmp_path / "prometheus.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        processes = {p["instance"] for p in shop.state()["processes"] if p.get("metrics")}

        def scraped() -> list[dict[str, Any]] | None:
            assert server.poll() is None, log.read_text()[-3000:]
            active = httpx.get(f"{api}/targets", params={"state": "active"}, timeout=5).json()["data"]
            found = active["activeTargets"]
            up = len(found) == len(processes) and all(t["health"] == "up" for t in found)
            return found if up and all(t["lastScrape"][:4] != "0001" for t in found) else None

        found = wait_for(f"Prometheus scraping the {len(processes)} annotated pods", scraped)
        assert {t["labels"]["pod"] for t in found} == processes
        assert {t["labels"]["namespace"] for t in found} == {NAMESPACE}
        time.sleep(3)  # a few more scrapes, so rates have two samples
        answered: dict[str, int] = {}
        for target in targets():
            expr = substitute(target.expr, {"namespace": NAMESPACE})
            promql, label = Target(target.dashboard, target.panel, expr).parts()
            if label is not None:
                reply = httpx.get(
                    f"{api}/label/{label}/values", params={"match[]": promql}, timeout=10
                ).json()
            else:
                reply = httpx.get(f"{api}/query", params={"query": promql}, timeout=10).json()
            assert reply["status"] == "success", f"{target}: {reply}"
            count = len(reply["data"]) if isinstance(reply["data"], list) else len(reply["data"]["result"])
            answered[str(target)] = count
            if target.panel in MUST_SHOW or target.panel.startswith("variable"):
                assert count, f"no data for {target}"
        print(f"{len(answered)} expressions evaluated; empty (no such event yet): "
              f"{sorted(t for t, n in answered.items() if not n)}")  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)
