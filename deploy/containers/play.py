"""Run a Kubernetes overlay of deploy/kubernetes as containers with `podman kube play` (podman 4.3).

One pod per Deployment (or StatefulSet) on one podman network, each pod reachable under the names of
the Services that select it (network aliases), so the processes find each other as in a cluster.
`podman kube play` is not a cluster, so the rendered manifests are adapted first, and only where it
must be (each adaptation is listed in `Plan.adapted`):

- every object gets one name prefix (pods, ConfigMaps, Secrets, volumes), so `down` removes exactly
  what `up` made, and two shops on one machine do not share anything;
- a StatefulSet runs as a Deployment, its volumeClaimTemplates as named volumes;
- Secrets become podman secrets (the JSON map `kube play` reads), ConfigMaps are passed with
  `--configmap`, emptyDir volumes get a per-pod name (`kube play` shares one by name otherwise);
- container ports are not published (kube play publishes every containerPort on 0.0.0.0), except the
  ones asked for, which are published on 127.0.0.1 only;
- environment from `status.podIP` and similar fields is dropped (unsupported): the processes then
  advertise the address their hostname (the pod's name) resolves to;
- images can be replaced (e.g. `redis:7.4-alpine` by a locally built Redis where no registry serves it).

Usage (from the repository root, with the image built by `make image`):

    .venv/bin/python deploy/containers/play.py up --publish frontend:8080=18080 \\
        --publish observatory:16686=18686 --image redis:7.4-alpine=localhost/debian-redis:bookworm
    .venv/bin/python deploy/containers/play.py down
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OVERLAY = ROOT / "deploy" / "kubernetes" / "overlays" / "local"
WORKLOADS = ("Deployment", "StatefulSet")
# Downward-API fields `podman kube play` 4.3 can fill in; others make it refuse the pod.
SUPPORTED_FIELDS = {
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels",
    "metadata.annotations",
}
EXTERNAL_SERVICE_TYPES = {"LoadBalancer", "NodePort", "ExternalName"}

Doc = dict[str, Any]


@dataclass(frozen=True)
class Unit:
    """One workload as podman runs it: its pod, the names it answers to, and the manifest to play."""

    workload: str  # the Deployment's (or StatefulSet's) name in the manifests, e.g. cartservice
    pod: str  # podman's pod name: <prefix><workload>-pod-0
    aliases: tuple[str, ...]  # the Services selecting it: its DNS names on the network
    manifest: Doc
    containers: tuple[str, ...]

    def container(self, name: str | None = None) -> str:
        """podman's name for one of the pod's containers (the first when `name` is None)."""
        return f"{self.pod}-{name or self.containers[0]}"


@dataclass
class Plan:
    """Everything `up` makes: network, secrets, ConfigMaps, pods, volumes; all named with `prefix`."""

    prefix: str
    network: str
    units: list[Unit]
    configmaps: list[Doc]
    secrets: dict[str, dict[str, str]]  # podman secret name -> key -> base64 value
    volumes: list[str]
    published: dict[str, int]  # "workload:containerPort" -> port on 127.0.0.1
    adapted: list[str] = field(default_factory=list)

    def unit(self, workload: str) -> Unit:
        """The unit of one workload by its manifest name."""
        return next(unit for unit in self.units if unit.workload == workload)


def render(overlay: Path = DEFAULT_OVERLAY, kubectl: str = "kubectl") -> list[Doc]:
    """The overlay's objects, rendered by `kubectl kustomize` (with an empty kubeconfig: it contacts nothing)."""
    with tempfile.TemporaryDirectory(prefix="boutique-kubeconfig-") as home:
        config = Path(home) / "config"
        config.write_text("apiVersion: v1\nkind: Config\n")
        env = {**os.environ, "KUBECONFIG": str(config)}
        rendered = subprocess.run(
            [kubectl, "kustomize", str(overlay)], env=env, capture_output=True, text=True, timeout=120
        )
    if rendered.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {overlay} failed: {rendered.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def _pod_spec(doc: Doc) -> Doc:
    """The pod template's spec of a workload."""
    return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def _containers(spec: Doc) -> list[Doc]:
    """Init containers and containers of a pod spec."""
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _selects(service: Doc, labels: Mapping[str, str]) -> bool:
    """Whether the Service's selector picks pods with these labels."""
    selector = service.get("spec", {}).get("selector") or {}
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def _check_ports(service: Doc, spec: Doc) -> None:
    """A network alias cannot map ports: every Service port must be the container's port."""
    named = {
        p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p
    }
    for port in service["spec"].get("ports", []):
        target = port.get("targetPort", port["port"])
        target = named.get(target, target) if isinstance(target, str) else target
        if target != port["port"]:
            raise ValueError(
                f"Service {service['metadata']['name']} maps port {port['port']} to {target}: podman network "
                "aliases cannot remap ports"
            )


def _rename_refs(spec: Doc, configmaps: Mapping[str, str], secrets: Mapping[str, str]) -> None:
    """Point every ConfigMap and Secret reference of a pod spec at the prefixed names."""
    # (where a reference sits, the key holding the name, the new names)
    kinds = (
        ("configMapKeyRef", "name", configmaps),
        ("secretKeyRef", "name", secrets),
        ("configMapRef", "name", configmaps),
        ("secretRef", "name", secrets),
        ("configMap", "name", configmaps),
        ("secret", "secretName", secrets),
    )
    sources = [v.get("valueFrom", {}) for c in _containers(spec) for v in c.get("env", [])]
    sources += [s for c in _containers(spec) for s in c.get("envFrom", [])]
    sources += spec.get("volumes", [])
    for source in sources:
        for kind, key, names in kinds:
            if kind in source:
                ref = source[kind]
                ref[key] = names.get(ref[key], ref[key])


def _rename_volume(spec: Doc, old: str, new: str) -> None:
    """Rename a pod's volume and every mount of it."""
    for volume in spec.get("volumes", []):
        if volume["name"] == old:
            volume["name"] = new
    for container in _containers(spec):
        for mount in container.get("volumeMounts", []):
            if mount["name"] == old:
                mount["name"] = new


def _secret_data(doc: Doc) -> dict[str, str]:
    """A Secret's keys with base64 values, `stringData` included (as a cluster merges them)."""
    data = dict(doc.get("data") or {})
    for key, value in (doc.get("stringData") or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    return data


def adapt(
    docs: Iterable[Doc],
    prefix: str,
    network: str | None = None,
    images: Mapping[str, str] | None = None,
    publish: Mapping[str, int] | None = None,
) -> Plan:
    """Turn rendered manifests into what `podman kube play` runs (see the module's docstring).

    `images`: image in the manifests -> image to run. `publish`: "workload:containerPort" -> a port on
    127.0.0.1."""
    docs = [copy.deepcopy(doc) for doc in docs]
    images, publish = dict(images or {}), dict(publish or {})
    adapted: list[str] = []
    configmap_names = {
        d["metadata"]["name"]: prefix + d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"
    }
    secret_names = {
        d["metadata"]["name"]: prefix + d["metadata"]["name"] for d in docs if d["kind"] == "Secret"
    }
    configmaps = []
    for doc in (d for d in docs if d["kind"] == "ConfigMap"):
        doc["metadata"] = {"name": configmap_names[doc["metadata"]["name"]]}
        configmaps.append(doc)
    secrets = {secret_names[d["metadata"]["name"]]: _secret_data(d) for d in docs if d["kind"] == "Secret"}
    services = [d for d in docs if d["kind"] == "Service"]
    units: list[Unit] = []
    volumes: list[str] = []
    published: dict[str, int] = {}
    for doc in (d for d in docs if d["kind"] in WORKLOADS):
        name = doc["metadata"]["name"]
        spec = _pod_spec(doc)
        labels = doc["spec"]["template"]["metadata"].get("labels", {})
        if doc["kind"] == "StatefulSet":
            for claim in doc["spec"].pop("volumeClaimTemplates", []):
                volume = f"{prefix}{name}-{claim['metadata']['name']}"
                spec.setdefault("volumes", []).append(
                    {"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": volume}}
                )
                volumes.append(volume)
            for key in (
                "serviceName",
                "podManagementPolicy",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
            ):
                doc["spec"].pop(key, None)
            doc["kind"] = "Deployment"
            adapted.append(f"{name}: StatefulSet run as a Deployment, its claims as named volumes")
        doc["metadata"]["name"] = prefix + name
        _rename_refs(spec, configmap_names, secret_names)
        for volume in list(spec.get("volumes", [])):
            if "emptyDir" in volume:
                _rename_volume(spec, volume["name"], f"{prefix}{name}-{volume['name']}")
        aliases = []
        for service in services:
            if (
                _selects(service, labels)
                and service["spec"].get("type", "ClusterIP") not in EXTERNAL_SERVICE_TYPES
            ):
                _check_ports(service, spec)
                aliases.append(service["metadata"]["name"])
        for container in _containers(spec):
            if container.get("image") in images:
                adapted.append(f"{name}: image {container['image']} replaced by {images[container['image']]}")
                container["image"] = images[container["image"]]
            kept = []
            for variable in container.get("env", []):
                path = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if path is not None and path not in SUPPORTED_FIELDS:
                    adapted.append(f"{name}: {variable['name']} (from {path}) dropped")
                    continue
                kept.append(variable)
            if "env" in container:
                container["env"] = kept
            ports = []
            for port in container.pop("ports", []):
                key = f"{name}:{port['containerPort']}"
                if key in publish:
                    ports.append({**port, "hostPort": publish[key], "hostIP": "127.0.0.1"})
                    published[key] = publish[key]
            if ports:
                container["ports"] = ports
        units.append(
            Unit(
                name,
                f"{prefix}{name}-pod-0",
                tuple(aliases),
                doc,
                tuple(c["name"] for c in spec["containers"]),
            )
        )
    missing = sorted(set(publish) - set(published))
    if missing:
        raise ValueError(f"nothing to publish for {missing}: no such workload and container port")
    return Plan(prefix, network or f"{prefix}net", units, configmaps, secrets, volumes, published, adapted)


def podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one podman command; a failure raises with podman's own message."""
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def up(plan: Plan, workdir: Path) -> None:
    """Create the network and the secrets, then play every unit on the network under its aliases."""
    podman("network", "create", plan.network)
    for name, data in plan.secrets.items():
        path = workdir / f"{name}.json"
        path.write_text(json.dumps(data))
        path.chmod(0o600)
        podman("secret", "create", name, str(path))
        path.unlink()
    configmaps: list[str] = []  # one file each: `--configmap` reads only a file's first document
    for configmap in plan.configmaps:
        path = workdir / f"configmap-{configmap['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(configmap))
        configmaps += ["--configmap", str(path)]
    for unit in plan.units:
        manifest = workdir / f"{unit.workload}.yaml"
        manifest.write_text(yaml.safe_dump(unit.manifest))
        network = plan.network + "".join(
            (":" if i == 0 else ",") + f"alias={alias}" for i, alias in enumerate(unit.aliases)
        )
        podman("kube", "play", "--network", network, *configmaps, str(manifest))


def _names(*args: str, template: str = "{{.Name}}") -> list[str]:
    """The lines of a podman listing in the given format."""
    listed = podman(*args, "--format", template, check=False)
    return [line.strip() for line in listed.stdout.splitlines() if line.strip()]


def leftovers(prefix: str) -> dict[str, list[str]]:
    """Every podman object named with `prefix` (containers also by their pod's name), by kind."""
    containers = [
        line.split()[0]
        for line in _names("ps", "--all", template="{{.Names}} {{.PodName}}")
        if any(part.startswith(prefix) for part in line.split())
    ]
    found = {
        "containers": containers,
        "pods": [n for n in _names("pod", "ls") if n.startswith(prefix)],
        "networks": [n for n in _names("network", "ls") if n.startswith(prefix)],
        "volumes": [n for n in _names("volume", "ls") if n.startswith(prefix)],
        "secrets": [n for n in _names("secret", "ls") if n.startswith(prefix)],
    }
    return {kind: names for kind, names in found.items() if names}


def down(prefix: str) -> dict[str, list[str]]:
    """Remove every pod, container, volume, secret and network named with `prefix`; returns what is left."""
    pods = [n for n in _names("pod", "ls") if n.startswith(prefix)]
    if pods:  # stop first: `pod rm --force` alone waits out each container's stop timeout
        podman("pod", "stop", "--time", "0", *pods, check=False, timeout=120)
        podman("pod", "rm", "--force", *pods, check=False, timeout=120)
    left = leftovers(prefix)
    if left.get("containers"):
        podman("rm", "--force", "--time", "0", *left["containers"], check=False, timeout=120)
    if left.get("volumes"):
        podman("volume", "rm", "--force", *left["volumes"], check=False)
    if left.get("secrets"):
        podman("secret", "rm", *left["secrets"], check=False)
    if left.get("networks"):
        podman("network", "rm", "--force", *left["networks"], check=False)
    return leftovers(prefix)


def _publish(values: list[str]) -> dict[str, int]:
    """WORKLOAD:PORT=HOSTPORT options as a mapping."""
    published = {}
    for value in values:
        key, _, port = value.partition("=")
        published[key] = int(port)
    return published


def main(argv: list[str] | None = None) -> int:
    """`up` plays an overlay, `down` removes everything with the prefix."""
    parser = argparse.ArgumentParser(prog="play.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--overlay", type=Path, default=DEFAULT_OVERLAY)
    parser.add_argument("--prefix", default="boutique-", help="names of everything made (default boutique-)")
    parser.add_argument(
        "--image", action="append", default=[], metavar="FROM=TO", help="run TO where FROM is named"
    )
    parser.add_argument(
        "--publish",
        action="append",
        default=[],
        metavar="WORKLOAD:PORT=HOSTPORT",
        help="publish on 127.0.0.1",
    )
    args = parser.parse_args(argv)
    if args.action == "down":
        left = down(args.prefix)
        print(f"left behind: {left}" if left else f"removed everything named {args.prefix}*")
        return 1 if left else 0
    images = dict(value.split("=", 1) for value in args.image)
    plan = adapt(render(args.overlay), args.prefix, images=images, publish=_publish(args.publish))
    for line in plan.adapted:
        print(f"adapted: {line}")
    with tempfile.TemporaryDirectory(prefix="boutique-play-") as workdir:
        try:
            up(plan, Path(workdir))
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(exc, file=sys.stderr)
            down(args.prefix)
            return 1
    for key, port in plan.published.items():
        print(f"{key} on http://127.0.0.1:{port}")
    print(f"{len(plan.units)} pods on network {plan.network}; stop with: play.py down --prefix {args.prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
