"""The Kubernetes manifests: every overlay renders, passes the API schemas strictly, and holds together."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from boutique.mesh.settings import MeshSettings
from boutique.shop.services import SERVICES
from tests.deploy.render import KUBERNETES, OVERLAYS, ROOT, Rendered, render, served

# Online Boutique's Deployment and Service names, and each one's port (a headless Service does no port
# translation, so the Service port is the container port: emailservice is 8080 here, not OB's 5000).
NAMES = {
    "productcatalog": "productcatalogservice",
    "currency": "currencyservice",
    "cart": "cartservice",
    "recommendation": "recommendationservice",
    "shipping": "shippingservice",
    "payment": "paymentservice",
    "email": "emailservice",
    "checkout": "checkoutservice",
    "ad": "adservice",
    "frontend": "frontend",
    "loadgen": "loadgenerator",
}
PORTS = {
    "productcatalog": 3550,
    "currency": 7000,
    "cart": 7070,
    "recommendation": 8080,
    "shipping": 50051,
    "payment": 50051,
    "email": 8080,
    "checkout": 5050,
    "ad": 9555,
    "frontend": 8080,
}
# The oldest Kubernetes the manifests are written for (gRPC probes GA and matchLabelKeys on by default since
# 1.27) and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")
METRICS_PORT = "9464"
SHIPPED_FLAGS = ROOT / "src" / "boutique" / "flags" / "default.flagd.json"
COLLECTOR = "otel-collector.observability"
NO_SERVER = ("loadgen",)  # serves nothing: no ports, no probes, no metrics


def host_port(value: str) -> tuple[str, int]:
    """'http://name:1234/path' or 'name:1234' as (name, 1234)."""
    rest = value.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    assert host and port.isdigit(), f"not host:port: {value!r}"
    return host, int(port)


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment or StatefulSet."""
    return workload["spec"]["template"]["spec"]


def shop_containers(rendered: Rendered) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Service name -> (workload, container) of every `boutique serve` container."""
    found = {}
    for workload, container in rendered.containers():
        name = served(container)
        if name is not None:
            assert name not in found, f"{rendered.name}: two workloads serve {name}"
            found[name] = (workload, container)
    return found


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, overlays: dict[str, Rendered]) -> Rendered:
    """Each overlay in turn."""
    return overlays[request.param]


def test_every_service_of_the_shop_has_an_online_boutique_name() -> None:
    assert set(NAMES) == set(SERVICES), "a shop service without a manifest (or a manifest without a service)"
    assert set(PORTS) == {name for name, spec in SERVICES.items() if spec.kind != "load"}


def test_every_overlay_passes_the_api_schemas_strictly(rendered: Rendered, tmp_path: Path) -> None:
    program = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    if program is None:
        pytest.skip("kubernetes-validate is not installed (pip install -e '.[dev]')")
    path = tmp_path / f"{rendered.name}.yaml"
    path.write_text(rendered.text)
    for version in KUBERNETES_VERSIONS:
        done = subprocess.run(
            [program, "--strict", "--kubernetes-version", version, "--quiet", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        # --quiet prints only failures and warnings: nothing at all is a pass of every object.
        assert done.returncode == 0 and not done.stdout.strip(), (
            f"{rendered.name} on {version}:\n{done.stdout}"
        )
    print(
        f"{rendered.name}: {len(rendered.objects)} objects valid on Kubernetes {', '.join(KUBERNETES_VERSIONS)}"
    )


def test_every_shop_service_has_a_deployment_and_a_headless_service(rendered: Rendered) -> None:
    containers = shop_containers(rendered)
    assert set(containers) == set(SERVICES), f"{rendered.name}: {sorted(set(SERVICES) ^ set(containers))}"
    for name, (workload, container) in containers.items():
        assert workload["kind"] == "Deployment" and workload["metadata"]["name"] == NAMES[name]
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        if name in PORTS:
            service = rendered.get("Service", NAMES[name])
            assert service is not None, f"{rendered.name}: no Service {NAMES[name]}"
            assert service["spec"].get("clusterIP") == "None", f"{NAMES[name]} is not headless"
            assert service["spec"]["selector"] == selector
            env = rendered.environment(container)
            assert env["PORT"] == str(PORTS[name])
            ports = {p["containerPort"] for p in container["ports"]}
            assert [p["port"] for p in service["spec"]["ports"]] == [PORTS[name]]
            assert PORTS[name] in ports


def test_every_container_is_locked_down_and_sized(rendered: Rendered) -> None:
    for workload, container in rendered.containers():
        where = f"{rendered.name} {workload['metadata']['name']}/{container['name']}"
        security = container.get("securityContext", {})
        assert security.get("runAsNonRoot") is True and security.get("runAsUser") == 10001, where
        assert security.get("allowPrivilegeEscalation") is False, where
        assert security.get("readOnlyRootFilesystem") is True, where
        assert security.get("capabilities", {}).get("drop") == ["ALL"], where
        assert security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        pod = pod_spec(workload)
        assert pod["securityContext"].get("runAsNonRoot") is True, where
        assert pod.get("automountServiceAccountToken") is False, where
        resources = container.get("resources", {})
        for kind in ("cpu", "memory"):
            request, limit = resources["requests"][kind], resources["limits"][kind]
            assert quantity(request) <= quantity(limit), f"{where}: {kind} request {request} > limit {limit}"
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for path, volume in mounts.items():
            assert volume in volumes or volume in templates, f"{where}: {path} mounts unknown volume {volume}"
        if served(container) or "observatory" in (container.get("args") or []):
            assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp is not an emptyDir"


def quantity(text: str | int) -> float:
    """A Kubernetes quantity (100m, 128Mi, 1) as a number."""
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    text = str(text)
    for unit, factor in sorted(units.items(), key=lambda item: -len(item[0])):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def test_every_server_has_readiness_and_liveness_probes_on_its_own_port(rendered: Rendered) -> None:
    for workload, container in rendered.containers():
        where = f"{rendered.name} {workload['metadata']['name']}/{container['name']}"
        name = served(container)
        if name in NO_SERVER:
            assert "ports" not in container and "readinessProbe" not in container, where
            continue
        declared = {p["containerPort"] for p in container["ports"]} | {p["name"] for p in container["ports"]}
        for kind in ("readinessProbe", "livenessProbe"):
            probe = container.get(kind)
            assert probe, f"{where} has no {kind}"
            action = next(k for k in ("grpc", "httpGet", "tcpSocket", "exec") if k in probe)
            if action != "exec":
                assert probe[action]["port"] in declared, f"{where}: {kind} port is no container port"
        if name is not None and SERVICES[name].kind == "grpc":
            # Kubernetes' own gRPC probe, on grpc.health.v1 that every service serves (boutique.mesh.server).
            assert container["readinessProbe"]["grpc"]["port"] == PORTS[name], where
        if name == "frontend":
            assert container["readinessProbe"]["httpGet"] == {"path": "/_healthz", "port": PORTS[name]}


def test_every_process_reads_its_environment_as_the_contract_says(rendered: Rendered) -> None:
    expected_backend = "etcd" if rendered.name == "replicated" else "dns"
    for name, (_workload, container) in shop_containers(rendered).items():
        env = rendered.environment(container)
        where = f"{rendered.name} {name}"
        if name in NO_SERVER:
            continue
        assert env["BIND_HOST"] == "0.0.0.0", where
        pod_ip = next(e for e in container["env"] if e["name"] == "POD_IP")
        assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", where
        assert env["METRICS_PORT"] == METRICS_PORT, where
        assert env["BOUTIQUE_SERVICE"] == env["OTEL_SERVICE_NAME"] == name, where
        assert env["BOUTIQUE_STATUS_TOKEN"], where
        settings = MeshSettings.from_env(env)  # the mesh's own reading: a bad value fails here
        assert settings.process.port == PORTS[name], where
        assert settings.status.port == int(METRICS_PORT), where
        assert settings.discovery.backend == expected_backend, where
        assert settings.tracing.target.protocol == "grpc", where
        assert settings.flags.source_path == env["FLAGD_OFFLINE_FLAG_SOURCE_PATH"], where


def test_every_address_names_a_service_of_the_right_workload_and_port(rendered: Rendered) -> None:
    variables = {spec.address_variable: name for name, spec in SERVICES.items() if spec.address_variable}
    checked = 0
    for workload, container in rendered.containers():
        for variable, value in rendered.environment(container).items():
            where = f"{rendered.name} {workload['metadata']['name']} {variable}={value}"
            if variable.endswith("_SERVICE_ADDR"):
                target = NAMES[variables[variable]]
            elif variable == "REDIS_ADDR":
                target = "redis-cart"
            elif variable == "FRONTEND_URL":
                target = "frontend"
            elif variable.startswith("OTEL_EXPORTER_OTLP") and variable.endswith("ENDPOINT"):
                target = "observatory"
                if rendered.name == "external-otel":
                    continue  # outside the cluster's manifests: checked in the external-otel test
            else:
                continue
            host, port = host_port(value)
            service = rendered.get("Service", host)
            assert service is not None, f"{where}: no Service {host}"
            assert port in [p["port"] for p in service["spec"]["ports"]], (
                f"{where}: {host} has no port {port}"
            )
            selected = [w["metadata"]["name"] for w in rendered.selected_by(service["spec"]["selector"])]
            assert selected == [target], f"{where}: Service {host} selects {selected}, not {target}"
            checked += 1
    assert checked > 10, f"{rendered.name}: only {checked} addresses found"


def test_every_reference_to_a_configmap_or_secret_resolves(rendered: Rendered) -> None:
    for workload, container in rendered.containers():
        rendered.environment(container)  # every configMapKeyRef and secretKeyRef, or AssertionError
        for volume in pod_spec(workload).get("volumes", []):
            if "configMap" in volume:
                assert rendered.get("ConfigMap", volume["configMap"]["name"]), f"{rendered.name}: {volume}"
            if "secret" in volume:
                assert rendered.get("Secret", volume["secret"]["secretName"]), f"{rendered.name}: {volume}"


def test_prometheus_scrapes_every_shop_process_on_its_metrics_port(rendered: Rendered) -> None:
    for name, (workload, container) in shop_containers(rendered).items():
        annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
        if name in NO_SERVER:
            assert "prometheus.io/scrape" not in annotations
            continue
        assert annotations.get("prometheus.io/scrape") == "true", name
        assert annotations.get("prometheus.io/path") == "/metrics", name
        assert annotations.get("prometheus.io/port") == rendered.environment(container)["METRICS_PORT"], name
        assert {"name": "metrics", "containerPort": int(METRICS_PORT)} in container["ports"], name


def test_the_flag_configmap_is_the_shipped_flag_file(rendered: Rendered) -> None:
    shipped = SHIPPED_FLAGS.read_text()
    assert (KUBERNETES / "base" / "flags" / "flags.json").read_text() == shipped, (
        "deploy/kubernetes/base/flags/flags.json differs from src/boutique/flags/default.flagd.json: copy it"
    )
    assert rendered.value("ConfigMap", "boutique-flags", "flags.json") == shipped
    for name, (workload, container) in shop_containers(rendered).items():
        path = Path(rendered.environment(container)["FLAGD_OFFLINE_FLAG_SOURCE_PATH"])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(workload)["volumes"]}
        volume = volumes[mounts[str(path.parent)]]
        assert volume["configMap"]["name"] == "boutique-flags" and path.name == "flags.json", name


def test_the_exporters_carry_the_observatory_token(rendered: Rendered) -> None:
    token = rendered.value("Secret", "boutique-tokens", "observatory-token")
    headers = rendered.value("Secret", "boutique-tokens", "otlp-headers")
    if rendered.name == "external-otel":
        assert headers == "", "the observatory's token would go to a collector that is not the observatory"
    else:
        assert headers == f"authorization=Bearer%20{token}"
        observatory = rendered.get("StatefulSet", "observatory")
        assert observatory is not None
        env = rendered.environment(pod_spec(observatory)["containers"][0])
        assert env["BOUTIQUE_OBSERVATORY_TOKEN"] == token


def test_the_images_are_the_ones_the_overlay_deploys(rendered: Rendered) -> None:
    wanted = "localhost/boutique:dev" if rendered.name == "local" else "boutique"
    for workload, container in rendered.containers():
        if served(container) or workload["metadata"]["name"] == "observatory":
            assert container["image"] == wanted, f"{rendered.name} {workload['metadata']['name']}"


def test_local_runs_everything_once_with_the_observatory_on_a_volume(overlays: dict[str, Rendered]) -> None:
    local = overlays["local"]
    assert all(w["spec"].get("replicas", 1) == 1 for w in local.workloads())
    assert not local.kind("PodDisruptionBudget")
    observatory = local.get("StatefulSet", "observatory")
    assert observatory is not None and observatory["spec"]["serviceName"] == "observatory"
    (claim,) = observatory["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in pod_spec(observatory)["containers"][0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    service = local.get("Service", "observatory")
    assert service is not None
    assert {p["port"] for p in service["spec"]["ports"]} == {4317, 4318, 9411, 16686}
    assert local.get("Deployment", "redis-cart") and local.get("Service", "redis-cart")


def test_replicated_budgets_cover_exactly_the_replicated_workloads(overlays: dict[str, Rendered]) -> None:
    replicated = overlays["replicated"]
    many = {w["metadata"]["name"] for w in replicated.workloads() if w["spec"].get("replicas", 1) >= 2}
    budgets: dict[str, str] = {}
    for budget in replicated.kind("PodDisruptionBudget"):
        selected = replicated.selected_by(budget["spec"]["selector"]["matchLabels"])
        assert len(selected) == 1, f"PDB {budget['metadata']['name']} selects {len(selected)} workloads"
        budgets[selected[0]["metadata"]["name"]] = budget["metadata"]["name"]
        workload = selected[0]
        allowed_down = workload["spec"].get("replicas", 1) - budget["spec"].get("minAvailable", 0)
        assert allowed_down >= 1 or budget["spec"].get("maxUnavailable"), f"{budget} blocks every eviction"
    assert set(budgets) == many, (
        f"without a budget: {many - set(budgets)}; budget, one replica: {set(budgets) - many}"
    )
    # Stateless services are replicated; the ones left at one keep their records on a pod's own volume.
    containers = shop_containers(replicated)
    for name, (workload, container) in containers.items():
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        if name not in NO_SERVER:
            assert (workload["metadata"]["name"] in many) != ("/data" in mounts), name


def test_replicated_services_find_each_other_through_etcd(overlays: dict[str, Rendered]) -> None:
    replicated = overlays["replicated"]
    etcd = replicated.get("StatefulSet", "etcd")
    service = replicated.get("Service", "etcd")
    assert etcd is not None and service is not None and service["spec"]["clusterIP"] == "None"
    members = {f"etcd-{i}.etcd" for i in range(etcd["spec"]["replicas"])}
    for name, (_workload, container) in shop_containers(replicated).items():
        env = replicated.environment(container)
        if name in NO_SERVER:
            continue
        assert not [v for v in env if v.endswith("_SERVICE_ADDR")], f"{name}: an address pins a dependency"
        endpoints = [host_port(e) for e in env["BOUTIQUE_ETCD_ENDPOINTS"].split(",")]
        assert {host for host, _ in endpoints} == members and {port for _, port in endpoints} == {2379}, name


def test_external_otel_exports_to_the_collector_and_runs_no_observatory(
    overlays: dict[str, Rendered],
) -> None:
    external = overlays["external-otel"]
    assert not [o for o in external.objects if o["metadata"]["name"] == "observatory"]
    assert "observatory" not in yaml.safe_dump([o for o in external.objects if o["kind"] != "Secret"])
    endpoints = 0
    for workload, container in external.containers():
        env = external.environment(container)
        for variable in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
            if variable in env:
                grpc = env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "grpc"
                assert host_port(env[variable]) == (COLLECTOR, 4317 if grpc else 4318), workload["metadata"]
                endpoints += 1
        assert env.get("OBSERVATORY_URL", "") == ""
    assert endpoints == len(SERVICES)


def test_skaffold_builds_the_image_the_manifests_use(kubeconfig: Path) -> None:
    config = yaml.safe_load((ROOT / "skaffold.yaml").read_text())
    (artifact,) = config["build"]["artifacts"]
    assert artifact["image"] == "boutique"
    assert (ROOT / artifact.get("context", ".") / artifact["docker"]["dockerfile"]).is_file()
    paths = list(config["manifests"]["kustomize"]["paths"])
    profiles = {p["name"]: p["manifests"]["kustomize"]["paths"] for p in config["profiles"]}
    assert set(profiles) >= {"replicated", "external-otel"}
    for path in [*paths, *(p for listed in profiles.values() for p in listed)]:
        text = render(ROOT / path, kubeconfig)
        images = {
            c["image"]
            for o in yaml.safe_load_all(text)
            if o and o["kind"] in ("Deployment", "StatefulSet")
            for c in o["spec"]["template"]["spec"]["containers"]
        }
        assert "boutique" in images, f"{path}: skaffold replaces `boutique`, which {path} does not use"
