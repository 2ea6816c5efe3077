"""Render the kustomize overlays with `kubectl kustomize` and look things up in what they render."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("local", "replicated", "external-otel")
WORKLOADS = ("Deployment", "StatefulSet")
# A kubeconfig that names no cluster, so kubectl never talks to anything (not even localhost:8080).
EMPTY_KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"
# What the downward API would give, for settings read from a rendered container's environment.
FIELD_VALUES = {"status.podIP": "10.1.2.3", "metadata.name": "pod-0"}


def kubectl() -> str:
    """The kubectl program, or a skip saying what to install."""
    found = shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed (it renders the kustomize overlays: install kubectl)")
    return found


def render(directory: Path, kubeconfig: Path) -> str:
    """`kubectl kustomize DIRECTORY`, with a kubeconfig that reaches no cluster."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(kubeconfig.parent)},
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return done.stdout


@dataclass
class Rendered:
    """The objects one overlay renders."""

    name: str
    text: str
    objects: list[dict[str, Any]]

    @classmethod
    def of(cls, name: str, directory: Path, kubeconfig: Path) -> Rendered:
        text = render(directory, kubeconfig)
        return cls(name, text, [o for o in yaml.safe_load_all(text) if o])

    def kind(self, kind: str) -> list[dict[str, Any]]:
        """Every object of a kind."""
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object of that kind and name (or, for a generated one, that name plus its hash), if rendered."""
        named = [
            o
            for o in self.kind(kind)
            if re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", o["metadata"]["name"])
        ]
        exact = [o for o in named if o["metadata"]["name"] == name]
        assert len(exact or named) <= 1, f"{self.name}: {len(named)} objects {kind} {name}"
        return (exact or named or [None])[0]

    def workloads(self) -> list[dict[str, Any]]:
        """Every Deployment and StatefulSet."""
        return [o for o in self.objects if o["kind"] in WORKLOADS]

    def containers(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, container) for every container and init container."""
        for workload in self.workloads():
            pod = workload["spec"]["template"]["spec"]
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                yield workload, container

    def value(self, kind: str, name: str, key: str) -> str:
        """A ConfigMap's or Secret's value (decoded); AssertionError when either is missing."""
        found = self.get(kind, name)
        assert found is not None, f"{self.name}: no {kind} {name}"
        data = found.get("data") or {}
        assert key in data, f"{self.name}: {kind} {name} has no key {key!r} (keys: {sorted(data)})"
        return base64.b64decode(data[key]).decode() if kind == "Secret" else str(data[key])

    def environment(self, container: dict[str, Any]) -> dict[str, str]:
        """The container's environment as the kubelet would set it (downward API values made up)."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env.update(self.get("ConfigMap", source["configMapRef"]["name"])["data"])  # type: ignore[index]
        for item in container.get("env", []):
            source = item.get("valueFrom")
            if source is None:
                env[item["name"]] = str(item.get("value", ""))
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                env[item["name"]] = self.value("ConfigMap", ref["name"], ref["key"])
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = self.value("Secret", ref["name"], ref["key"])
            elif "fieldRef" in source:
                env[item["name"]] = FIELD_VALUES[source["fieldRef"]["fieldPath"]]
            else:
                raise AssertionError(f"{self.name}: unexpected env source {source}")
        return env

    def selected_by(self, selector: dict[str, str]) -> list[dict[str, Any]]:
        """The workloads whose pods carry every label of `selector`."""
        return [
            w
            for w in self.workloads()
            if selector.items() <= w["spec"]["template"]["metadata"].get("labels", {}).items()
        ]


def served(container: dict[str, Any]) -> str | None:
    """The shop service a container runs (`boutique serve NAME`), else None."""
    args = container.get("args") or []
    return args[1] if len(args) == 2 and args[0] == "serve" else None
