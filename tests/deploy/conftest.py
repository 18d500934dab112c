"""The rendered Kubernetes manifests and what the tests of deploy/ need to read them."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = ("dev", "prod")
#: The Kubernetes version the schemas are checked against (the kubectl of the dev machine).
KUBERNETES_VERSION = "1.32.0"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")

#: Every process: its Python package (for ``python -m``), its settings class and env prefix.
PROCESSES: dict[str, dict[str, str]] = {
    "orchestrator": {
        "package": "orchestrator",
        "settings": "orchestrator.config:OrchestratorSettings",
        "prefix": "ORCH_",
    },
    "ingest": {
        "package": "services.ingest",
        "settings": "services.ingest.config:IngestSettings",
        "prefix": "INGEST_",
    },
    "scene": {
        "package": "services.scene",
        "settings": "services.scene.config:SceneSettings",
        "prefix": "SCENE_",
    },
    "audio": {
        "package": "services.audio",
        "settings": "services.audio.config:AudioSettings",
        "prefix": "AUDIO_",
    },
    "tracking": {
        "package": "services.tracking",
        "settings": "services.tracking.config:TrackingSettings",
        "prefix": "TRACKING_",
    },
    "gateway": {
        "package": "gateway",
        "settings": "gateway.config:GatewaySettings",
        "prefix": "GATEWAY_",
    },
    "downloads": {
        "package": "services.downloads",
        "settings": "services.downloads.config:DownloadsSettings",
        "prefix": "DOWNLOADS_",
    },
}
#: Processes written on other branches: tests that need them fail with this until merged.
PENDING = {"gateway": "wip-gateway", "downloads": "wip-downloads"}


def require_package(process: str) -> None:
    """Fails clearly when a process's package is not in this checkout yet."""
    package = PROCESSES[process]["package"]
    if importlib.util.find_spec(package.split(".")[0]) is None or (
        "." in package and importlib.util.find_spec(package) is None
    ):
        pytest.fail(
            f"the {process} process ({package}) is not in this checkout: merge "
            f"{PENDING.get(process, 'its branch')} first; deploy/k8s already describes it",
            pytrace=False,
        )


def settings_class(process: str) -> type[Any]:
    require_package(process)
    module, _, name = PROCESSES[process]["settings"].partition(":")
    return getattr(importlib.import_module(module), name)


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIRECTORY`` as a list of objects."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl (with its built-in kustomize) is needed to render deploy/k8s")
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass
class Rendered:
    """One rendered overlay."""

    name: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for obj in self.objects:
            if obj["kind"] == kind and obj["metadata"]["name"] == name:
                return obj
        raise AssertionError(f"{self.name}: no {kind} {name}")

    def workloads(self) -> Iterator[dict[str, Any]]:
        for obj in self.objects:
            if obj["kind"] in WORKLOAD_KINDS:
                yield obj

    def workload(self, name: str) -> dict[str, Any]:
        for obj in self.workloads():
            if obj["metadata"]["name"] == name:
                return obj
        raise AssertionError(f"{self.name}: no workload {name}")

    def env_of(self, container: dict[str, Any]) -> dict[str, str | None]:
        """A container's environment as the pod sees it: envFrom ConfigMaps, then env (literal
        values; a reference to a Secret becomes None, or its value when rendered here)."""
        env: dict[str, str | None] = {}
        for source in container.get("envFrom", []):
            ref = source["configMapRef"]["name"]
            env.update(self.get("ConfigMap", ref).get("data") or {})
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            else:
                env[item["name"]] = self.secret_value(item["valueFrom"]["secretKeyRef"])
        return env

    def secret_value(self, ref: dict[str, Any]) -> str | None:
        import base64

        for obj in self.of_kind("Secret"):
            if obj["metadata"]["name"] == ref["name"]:
                data = obj.get("data") or {}
                if ref["key"] in data:
                    return base64.b64decode(data[ref["key"]]).decode()
        return None


@pytest.fixture(scope="session")
def rendered() -> dict[str, Rendered]:
    return {name: Rendered(name, kustomize(K8S / "overlays" / name)) for name in OVERLAYS}


@pytest.fixture(scope="session")
def dockerfile_targets() -> dict[str, dict[str, list[str]]]:
    """``{target: {"entrypoint": [...], "cmd": [...], "user": [...]}}`` of deploy/Dockerfile."""
    import json

    targets: dict[str, dict[str, list[str]]] = {}
    current = ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        match = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match.group(1)
            targets[current] = {}
            continue
        for key in ("ENTRYPOINT", "CMD", "USER"):
            if line.startswith(key + " "):
                value = line[len(key) + 1 :].strip()
                targets[current][key.lower()] = (
                    json.loads(value) if value.startswith("[") else [value]
                )
    return targets


@pytest.fixture(scope="session")
def process_settings() -> Any:
    """``process_settings(name)``: that process's settings class (fails clearly when its
    package is not merged yet)."""
    return settings_class


@pytest.fixture(scope="session")
def process_info() -> dict[str, dict[str, str]]:
    return PROCESSES


@pytest.fixture(scope="session")
def need_package() -> Any:
    return require_package
