"""The dev overlay boots the processes it names: each container's command (the image's
ENTRYPOINT from deploy/Dockerfile + the container's args) runs here with the pod's environment
(its ConfigMaps and the overlay's Secret), and answers its probes and serves its Services' ports.

Only what is host-specific is rewritten, and nothing else:
- ``python`` (the image's interpreter) becomes this test's interpreter;
- the listen host ``0.0.0.0`` becomes ``127.0.0.1`` (args and ``*_HOST``);
- every container port (gRPC, metrics, HTTP) becomes a free loopback port, wherever it
  appears: ``--port``/``--metrics-port`` args, ``*_PORT`` variables, and ``<service>:<port>``
  addresses, which become ``127.0.0.1:<that service's new port>`` (after checking that the port
  in the address is the one the service's container listens on);
- every path under a volume mount (``/media``, ``/var/lib/videoanalysis``, ``/cache``) moves into
  a temporary folder per process and volume; the scene pod's init container (a copy of the
  Winograd extension built into the image) is replayed as a copy of this machine's build.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 900.0
SERVING = health_pb2.HealthCheckResponse.SERVING

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


@dataclass
class Pod:
    """One workload of the overlay, mapped onto this machine."""

    name: str
    workload: dict[str, Any]
    env: dict[str, str]
    command: list[str]
    ports: dict[int, int]  # container port -> loopback port
    log: Path
    process: subprocess.Popen[bytes] | None = None
    mounts: dict[str, Path] = field(default_factory=dict)

    @property
    def container(self) -> dict[str, Any]:
        return _container(self.workload)

    def port(self, name_or_number: str | int) -> int:
        """The loopback port of a container port, by name or number."""
        if isinstance(name_or_number, int):
            return self.ports[name_or_number]
        for port in self.container["ports"]:
            if port["name"] == name_or_number:
                return self.ports[int(port["containerPort"])]
        raise AssertionError(f"{self.name}: no port {name_or_number}")

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        return ""

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(
                f"{self.name} exited with {self.process.returncode}:\n{self.tail()}", pytrace=False
            )

    def stop(self, timeout_s: float) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


class Cluster:
    """The rendered overlay's workloads as local processes."""

    def __init__(
        self,
        rendered: Any,
        dockerfile_targets: dict[str, Any],
        root: Path,
        secrets: dict[str, dict[str, bytes]] | None = None,
    ) -> None:
        """``secrets``: the contents of Secrets the overlay does not render (prod creates them
        out of band), ``{name: {key: value}}``, for env references and secret volumes."""
        self.rendered = rendered
        self.secrets = secrets or {}
        self.targets = dockerfile_targets
        self.root = root
        self.ports: dict[str, dict[int, int]] = {}
        for workload in rendered.workloads():
            name = workload["metadata"]["name"]
            self.ports[name] = {
                int(p["containerPort"]): _free_port() for p in _container(workload)["ports"]
            }

    def _address(self, value: str) -> str:
        """``scene:50052`` → ``127.0.0.1:<scene's loopback port>`` (also in comma lists)."""

        def one(address: str) -> str:
            host, _, port = address.strip().rpartition(":")
            if host in self.ports:
                mapped = self.ports[host]
                assert int(port) in mapped, f"{address}: {host} does not listen on {port}"
                return f"127.0.0.1:{mapped[int(port)]}"
            return address

        return ",".join(one(a) for a in value.split(","))

    def pod(self, name: str) -> Pod:
        workload = self.rendered.workload(name)
        container = _container(workload)
        ports = self.ports[name]
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        mounts = {m["mountPath"]: folder / m["name"] for m in container["volumeMounts"]}
        media = self.root / "media"  # one shared media volume, as the PVC is
        for path, local in list(mounts.items()):
            volume = next(
                v
                for v in workload["spec"]["template"]["spec"].get("volumes", [])
                + [
                    {"name": t["metadata"]["name"]}
                    for t in workload["spec"].get("volumeClaimTemplates", [])
                ]
                if v["name"] == local.name
            )
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            mounts[path] = media if claim == "videoanalysis-media" else local
            mounts[path].mkdir(parents=True, exist_ok=True)
            secret = volume.get("secret", {}).get("secretName")
            for key, value in self.secrets.get(secret, {}).items():
                (local / key).write_bytes(value)

        def path(value: str) -> str:
            for mount, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
                if value == mount or value.startswith(mount + "/"):
                    return str(local) + value[len(mount) :]
            return value

        def rewrite(key: str, value: str) -> str:
            if value == "0.0.0.0" and key.endswith("HOST"):
                return "127.0.0.1"
            if key.endswith("_PORT") and value.isdigit() and int(value) in ports:
                return str(ports[int(value)])
            if re.fullmatch(r"[a-z0-9-]+:\d+(,[a-z0-9-]+:\d+)*", value):
                return self._address(value)
            return path(value)

        pod_env = self.rendered.env_of(container)
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref and pod_env[item["name"]] is None and ref["name"] in self.secrets:
                pod_env[item["name"]] = self.secrets[ref["name"]][ref["key"]].decode()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("ORCH_", "INGEST_", "SCENE_", "AUDIO_", "TRACKING_"))
            and not k.startswith(("GATEWAY_", "DOWNLOADS_"))
        }
        env.update({"PYANNOTE_METRICS_ENABLED": "0", "PYTHONUNBUFFERED": "1"})  # image ENV
        env.update({k: rewrite(k, v) for k, v in pod_env.items() if v is not None})

        args = list(container.get("args", []))
        for flag in ("--port", "--metrics-port"):
            if flag in args:
                i = args.index(flag) + 1
                if int(args[i]) >= 0:
                    assert int(args[i]) in ports, f"{name}: {flag} {args[i]} is no container port"
                    args[i] = str(ports[int(args[i])])
        args = ["127.0.0.1" if a == "0.0.0.0" else path(a) for a in args]
        image = container["image"].split("/")[-1].split(":")[0]
        target = self.targets[image]
        entrypoint = [sys.executable if a == "python" else a for a in target["entrypoint"]]
        self._replay_init_containers(workload, mounts)
        return Pod(
            name,
            workload,
            env,
            [*entrypoint, *(args or target.get("cmd", []))],
            ports,
            folder / "log.txt",
            mounts=mounts,
        )

    @staticmethod
    def _replay_init_containers(workload: dict[str, Any], mounts: dict[str, Path]) -> None:
        for init in workload["spec"]["template"]["spec"].get("initContainers", []):
            assert init["command"][:2] == ["cp", "-a"], "only the Winograd copy is known here"
            (mount,) = [m["mountPath"] for m in init["volumeMounts"]]
            # The image's /opt/videoanalysis/cache is what install.sh built on this machine.
            built = Path(
                os.environ.get("VIDEOANALYSIS_CACHE", Path.home() / ".cache" / "videoanalysis")
            )
            if (built / "torch_extensions").is_dir():
                # Not the lock file of a build that may be running here right now (the
                # image's copy has none: its build finished).
                shutil.copytree(
                    built / "torch_extensions",
                    mounts[mount] / "torch_extensions",
                    dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("lock"),
                )


async def _health(port: int, service: str) -> int | None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        with contextlib.suppress(grpc.aio.AioRpcError):
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=3
            )
            return int(reply.status)
    return None


async def _wait_grpc_ready(pod: Pod, deadline: float) -> None:
    container = pod.container
    readiness = container["readinessProbe"]["grpc"]
    while True:
        pod.check_alive()
        if await _health(pod.port(readiness["port"]), readiness["service"]) == SERVING:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"{pod.name} not ready in time:\n{pod.tail()}", pytrace=False)
        await asyncio.sleep(0.5)
    for probe in ("startupProbe", "livenessProbe"):
        spec = container[probe]["grpc"]
        assert await _health(pod.port(spec["port"]), spec.get("service", "")) == SERVING


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        return reply.read().decode()


def _http_ok(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as reply:
        return bool(reply.status == 200)
    return False


def _check_services(cluster: Cluster, pod: Pod) -> None:
    """Each port of the pod's Services reaches a container port the process really serves."""
    service = cluster.rendered.get("Service", pod.name)
    for port in service["spec"]["ports"]:
        local = pod.port(port["targetPort"])
        if port["name"] == "metrics":
            assert "videoanalysis_" in _scrape(local) or "process_" in _scrape(local)
        else:
            with socket.create_connection(("127.0.0.1", local), timeout=5):
                pass


@pytest.fixture
def clusters(rendered, dockerfile_targets, tmp_path: Path):
    """``clusters(overlay, secrets=None)``: a Cluster whose started pods are stopped after."""
    running: list[Pod] = []

    def make(overlay: str, secrets: dict[str, dict[str, bytes]] | None = None) -> Cluster:
        made = Cluster(rendered[overlay], dockerfile_targets, tmp_path / overlay, secrets)

        def start(name: str) -> Pod:
            pod = made.pod(name)
            pod.start()
            running.append(pod)
            return pod

        made.start = start  # type: ignore[attr-defined]
        return made

    yield make
    for pod in running:
        pod.stop(5)


@pytest.fixture
def cluster(clusters):
    return clusters("dev")


def _stop_within_grace(pods: list[Pod]) -> None:
    """SIGTERM drains and exits 0 well inside terminationGracePeriodSeconds."""
    for pod in pods:
        assert pod.process is not None
        pod.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    for pod in pods:
        assert pod.process is not None
        period = pod.workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        try:
            code = pod.process.wait(max(0.0, started + period - time.monotonic()))
        except subprocess.TimeoutExpired:
            code = None  # the kubelet would SIGKILL it now; the fixture does
        assert code == 0, f"{pod.name} exited with {code} after SIGTERM:\n{pod.tail()}"


async def test_dev_overlay_boots_the_services_and_the_orchestrator(cluster) -> None:
    services = [cluster.start(name) for name in ("ingest", "scene", "audio", "tracking")]
    deadline = time.monotonic() + READY_TIMEOUT_S
    for pod in services:
        await _wait_grpc_ready(pod, deadline)
        _check_services(cluster, pod)
    orchestrator = cluster.start("orchestrator")
    await _wait_grpc_ready(orchestrator, deadline)
    _check_services(cluster, orchestrator)
    # It reached the services through the rewritten addresses: its job store is on the state
    # volume and not under the media root.
    db = Path(orchestrator.env["ORCH_DB_PATH"])
    assert await asyncio.to_thread(db.exists)
    assert orchestrator.mounts["/media"] not in db.parents
    _stop_within_grace([orchestrator, *services])


async def test_dev_overlay_boots_the_download_monitor(cluster, need_package) -> None:
    need_package("downloads")
    pod = cluster.start("downloads")
    await _wait_grpc_ready(pod, time.monotonic() + 300)
    _check_services(cluster, pod)
    _stop_within_grace([pod])


async def test_dev_overlay_boots_the_gateway(cluster, need_package) -> None:
    need_package("gateway")
    pod = cluster.start("gateway")
    container = pod.container
    deadline = time.monotonic() + 300
    probe = container["readinessProbe"]["httpGet"]
    url = f"http://127.0.0.1:{pod.port(probe['port'])}{probe['path']}"
    while True:
        pod.check_alive()
        if await asyncio.to_thread(_http_ok, url):
            break
        if time.monotonic() > deadline:
            pytest.fail(f"gateway not ready:\n{pod.tail()}", pytrace=False)
        await asyncio.sleep(0.5)
    # The dashboard's gateway panels read what this /metrics serves (after the probes' requests).
    dashboard = json.loads(
        (REPO_ROOT / "deploy/k8s/components/monitoring/dashboards/videoanalysis.json").read_text()
    )
    wanted = {
        name
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        for name in re.findall(r"videoanalysis_gateway_\w+", target["expr"])
    }
    text = await asyncio.to_thread(_scrape, pod.port("http"))
    exported = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert wanted and wanted <= exported, sorted(wanted - exported)
    _stop_within_grace([pod])


async def test_prod_tls_component_serves_mtls_with_the_token_and_plain_probes(clusters) -> None:
    """components/tls as rendered in prod: ingest and the orchestrator listen with mTLS and
    require the token; their probes answer in plaintext on the health port. (Scene and audio
    are left out: prod sends them to CUDA.) The Secrets prod expects are made here."""
    import trustme

    from protos.videoanalysis.v1 import (
        common_pb2,
        ingest_pb2,
        ingest_pb2_grpc,
        orchestrator_pb2,
        orchestrator_pb2_grpc,
    )
    from services.common.channels import open_channel
    from services.common.security import SecurityConfig

    ca = trustme.CA()
    # The addresses become 127.0.0.1: the certificate names it besides the Service names.
    leaf = ca.issue_cert("127.0.0.1", "ingest", "orchestrator", "scene", "audio", "tracking")
    files = {
        "tls.crt": b"".join(blob.bytes() for blob in leaf.cert_chain_pems),
        "tls.key": leaf.private_key_pem.bytes(),
        "ca.crt": ca.cert_pem.bytes(),
    }
    token = "prod-test-token"
    cluster = clusters(
        "prod",
        {
            "videoanalysis-tls": files,
            "videoanalysis-secrets": {"grpc-token": token.encode(), "hf-token": b""},
        },
    )
    ingest = cluster.start("ingest")
    orchestrator = cluster.start("orchestrator")
    deadline = time.monotonic() + READY_TIMEOUT_S
    for pod in (ingest, orchestrator):
        await _wait_grpc_ready(pod, deadline)  # plaintext, on the probes' (health) port
    tls_dir = ingest.mounts["/etc/videoanalysis/tls"]
    client = {"ca": tls_dir / "ca.crt", "cert": tls_dir / "tls.crt", "key": tls_dir / "tls.key"}

    async def probe(**security: Any) -> grpc.StatusCode:
        async with open_channel(
            f"127.0.0.1:{ingest.port('grpc')}", security=SecurityConfig(**security)
        ) as channel:
            request = ingest_pb2.ProbeRequest(media=common_pb2.MediaRef(path="missing.mp4"))
            try:
                await ingest_pb2_grpc.IngestServiceStub(channel).Probe(request, timeout=10)
            except grpc.aio.AioRpcError as err:
                return err.code()
        return grpc.StatusCode.OK

    assert await probe(**client, token=token) == grpc.StatusCode.NOT_FOUND  # reached the servicer
    assert await probe(**client) == grpc.StatusCode.UNAUTHENTICATED
    assert await probe(ca=client["ca"], token=token) == grpc.StatusCode.UNAVAILABLE  # no cert
    assert await probe(token=token) == grpc.StatusCode.UNAVAILABLE  # plaintext
    # Health on the main port needs TLS too; in plaintext only the health port answers.
    assert await _health(ingest.port("grpc"), "") is None
    async with open_channel(
        f"127.0.0.1:{orchestrator.port('grpc')}", security=SecurityConfig(**client, token=token)
    ) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetJob(orchestrator_pb2.GetJobRequest(job_id="no-such-job"), timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    _stop_within_grace([orchestrator, ingest])
