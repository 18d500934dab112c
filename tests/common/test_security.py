"""TLS, mTLS and the bearer token through a real ingest server, with certificates made here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from orchestrator.clients import Clients
from orchestrator.config import OrchestratorSettings
from protos.videoanalysis.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc
from services.common.channels import open_channel
from services.common.errors import InvalidArgument
from services.common.security import SecurityConfig, token_matches
from services.ingest.config import IngestSettings
from services.ingest.server import SERVICE_NAME, build_services

TOKEN = "s3cret-token"


class Pki:
    """A CA with a server and a client certificate, plus an unrelated CA, as files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca = trustme.CA()
        self.other_ca = trustme.CA()
        self.ca_file = self._write("ca.pem", self.ca.cert_pem.bytes())
        self.other_ca_file = self._write("other-ca.pem", self.other_ca.cert_pem.bytes())
        self.server_cert, self.server_key = self._issue(self.ca, "server", "localhost", "127.0.0.1")
        self.client_cert, self.client_key = self._issue(self.ca, "client", "orchestrator")
        self.rogue_cert, self.rogue_key = self._issue(self.other_ca, "rogue", "orchestrator")

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path

    def _issue(self, ca: trustme.CA, name: str, *identities: str) -> tuple[Path, Path]:
        leaf = ca.issue_cert(*identities)
        chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
        key = leaf.private_key_pem.bytes()
        return self._write(f"{name}.pem", chain), self._write(f"{name}.key", key)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def channels() -> AsyncIterator[Callable[..., grpc.aio.Channel]]:
    opened: list[grpc.aio.Channel] = []

    def make(address: str, **security: object) -> grpc.aio.Channel:
        channel = open_channel(address, security=SecurityConfig(**security))  # type: ignore[arg-type]
        opened.append(channel)
        return channel

    yield make
    for channel in opened:
        await channel.close()


def _settings(media_root: Path, **fields: object) -> IngestSettings:
    return IngestSettings(port=0, metrics_port=0, host="127.0.0.1", media_root=media_root, **fields)


def _mtls(media_root: Path, pki: Pki, **fields: object) -> IngestSettings:
    """A server that requires client certificates from the test CA."""
    return _settings(
        media_root,
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_ca=pki.ca_file,
        **fields,
    )


async def _probe(channel: grpc.aio.Channel, path: str) -> ingest_pb2.ProbeResponse:
    stub = ingest_pb2_grpc.IngestServiceStub(channel)
    request = ingest_pb2.ProbeRequest(media=common_pb2.MediaRef(path=path))
    return await stub.Probe(request, timeout=10)


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code()


async def test_tls_server_accepts_a_client_that_trusts_its_ca(
    grpc_server, channels, pki: Pki, media_root: Path, put_media
) -> None:
    running = await grpc_server(
        _settings(media_root, tls_cert=pki.server_cert, tls_key=pki.server_key), build_services
    )
    good = channels(running.address, ca=pki.ca_file)
    reply = await _probe(good, put_media("video/counter.mp4"))
    assert reply.info.frame_count > 0

    plaintext = channels(running.address)
    assert await _code(_probe(plaintext, "x.mp4")) == grpc.StatusCode.UNAVAILABLE
    wrong_ca = channels(running.address, ca=pki.other_ca_file)
    assert await _code(_probe(wrong_ca, "x.mp4")) == grpc.StatusCode.UNAVAILABLE


async def test_mtls_server_refuses_clients_without_a_certificate_from_its_ca(
    grpc_server, channels, pki: Pki, media_root: Path, put_media
) -> None:
    running = await grpc_server(_mtls(media_root, pki), build_services)
    good = channels(running.address, ca=pki.ca_file, cert=pki.client_cert, key=pki.client_key)
    assert (await _probe(good, put_media("video/counter.mp4"))).info.frame_count > 0

    no_cert = channels(running.address, ca=pki.ca_file)
    assert await _code(_probe(no_cert, "x.mp4")) == grpc.StatusCode.UNAVAILABLE
    rogue = channels(running.address, ca=pki.ca_file, cert=pki.rogue_cert, key=pki.rogue_key)
    assert await _code(_probe(rogue, "x.mp4")) == grpc.StatusCode.UNAVAILABLE
    wrong_ca = channels(
        running.address, ca=pki.other_ca_file, cert=pki.client_cert, key=pki.client_key
    )
    assert await _code(_probe(wrong_ca, "x.mp4")) == grpc.StatusCode.UNAVAILABLE


def _handled(code: str) -> float:
    """Probe calls the in-process server counted with ``code``."""
    labels = {"grpc_service": SERVICE_NAME, "grpc_method": "Probe", "grpc_code": code}
    return REGISTRY.get_sample_value("videoanalysis_grpc_server_handled_total", labels) or 0.0


async def test_token_is_required_except_for_health_and_reflection(
    grpc_server, channels, media_root: Path, put_media
) -> None:
    running = await grpc_server(_settings(media_root, auth_token=TOKEN), build_services)
    refused_before = _handled("UNAUTHENTICATED")

    good = channels(running.address, token=TOKEN)
    assert (await _probe(good, put_media("video/counter.mp4"))).info.frame_count > 0
    # A good token reaches the servicer, whose own errors come through unchanged.
    assert await _code(_probe(good, "missing.mp4")) == grpc.StatusCode.NOT_FOUND

    missing = channels(running.address)
    wrong = channels(running.address, token="s3cret-tokeN")
    for channel in (missing, wrong):
        assert await _code(_probe(channel, "x.mp4")) == grpc.StatusCode.UNAUTHENTICATED
        stream = ingest_pb2_grpc.IngestServiceStub(channel).NormalizeVideo(
            ingest_pb2.NormalizeVideoRequest(
                media=common_pb2.MediaRef(path="x.mp4"), output_path="y.mp4"
            )
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stream:
                pass
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "token" in (info.value.details() or "")
    # Another scheme than Bearer is no token.
    basic = ingest_pb2_grpc.IngestServiceStub(missing).Probe(
        ingest_pb2.ProbeRequest(media=common_pb2.MediaRef(path="x.mp4")),
        metadata=(("authorization", f"Basic {TOKEN}"),),
    )
    assert await _code(basic) == grpc.StatusCode.UNAUTHENTICATED

    # Probes and grpcurl carry no token.
    health = health_pb2_grpc.HealthStub(missing)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(missing)
    names: list[str] = []
    async for message in reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    ):
        names = [s.name for s in message.list_services_response.service]
    assert SERVICE_NAME in names

    # Refused calls are counted with their code (the interceptor sits inside the metrics one).
    for _ in range(50):
        if _handled("UNAUTHENTICATED") == refused_before + 3:
            break
        await asyncio.sleep(0.05)
    assert _handled("UNAUTHENTICATED") == refused_before + 3


async def test_rotated_tokens_are_all_accepted(grpc_server, channels, media_root: Path) -> None:
    settings = _settings(media_root, auth_token="new-one, old-one")
    running = await grpc_server(settings, build_services)
    for token in ("new-one", "old-one"):
        channel = channels(running.address, token=token)
        assert await _code(_probe(channel, "missing.mp4")) == grpc.StatusCode.NOT_FOUND
    stale = channels(running.address, token="older-one")
    assert await _code(_probe(stale, "missing.mp4")) == grpc.StatusCode.UNAUTHENTICATED


async def test_plain_health_port_answers_probes_while_the_main_port_is_mtls(
    grpc_server, pki: Pki, media_root: Path
) -> None:
    running = await grpc_server(_mtls(media_root, pki, health_port=0), build_services)
    assert running.health_port > 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # Only health is served there.
        assert await _code(_probe(channel, "x.mp4")) == grpc.StatusCode.UNIMPLEMENTED


async def test_orchestrator_clients_use_mtls_and_the_token_from_their_settings(
    grpc_server, pki: Pki, media_root: Path, put_media
) -> None:
    running = await grpc_server(_mtls(media_root, pki, auth_token=TOKEN), build_services)
    common = {"media_root": media_root, "metrics_port": -1, "retry_attempts": 1}
    addresses = {f"{s}_addr": running.address for s in ("ingest", "scene", "audio", "tracking")}
    good = OrchestratorSettings(
        **common,
        **addresses,
        tls_cert=pki.client_cert,
        tls_key=pki.client_key,
        tls_ca=pki.ca_file,
        auth_token=TOKEN,
    )
    clients = Clients.open(good)
    try:
        info = await clients.ingest.probe(put_media("video/counter.mp4"), deadline_s=10)
        assert info.frame_count > 0
    finally:
        await clients.close()

    from orchestrator.clients import CallFailed

    no_token = good.model_copy(update={"auth_token": OrchestratorSettings().auth_token})
    no_cert = good.model_copy(update={"tls_cert": None, "tls_key": None})
    for settings, code in (
        (no_token, grpc.StatusCode.UNAUTHENTICATED),
        (no_cert, grpc.StatusCode.UNAVAILABLE),
    ):
        clients = Clients.open(settings)
        try:
            with pytest.raises(CallFailed) as info:
                await clients.ingest.probe("missing.mp4", deadline_s=10)
            assert info.value.code == code
        finally:
            await clients.close()


def test_token_comparison_and_config_errors(pki: Pki) -> None:
    assert token_matches(b"abc", [b"xyz", b"abc"])
    assert not token_matches(b"abd", [b"abc"])
    assert not token_matches(b"", [b"abc"])
    with pytest.raises(InvalidArgument, match="both"):
        SecurityConfig(cert=pki.server_cert)
    with pytest.raises(InvalidArgument, match="cannot read"):
        SecurityConfig(cert=pki.folder / "none.pem", key=pki.server_key).server_credentials()
    # Nothing configured: plaintext, no interceptors.
    plain = SecurityConfig()
    assert plain.server_credentials() is None and plain.channel_credentials() is None
    assert plain.server_interceptors() == [] and plain.call_metadata() == []


async def test_gateway_and_download_monitor_call_over_mtls_with_the_token(
    grpc_server, pki: Pki, media_root: Path, aiohttp_client
) -> None:
    """The gateway's channels (health page) and the download monitor's orchestrator channel take
    the process's ``tls_*`` and ``auth_token`` settings (the prod overlay's tls component)."""
    from gateway.app import create_app
    from gateway.config import GatewaySettings
    from services.downloads.jobs import OrchestratorJobs
    from services.downloads.monitor import SubmitError

    running = await grpc_server(_mtls(media_root, pki, auth_token=TOKEN), build_services)
    client_tls = {"tls_cert": pki.client_cert, "tls_key": pki.client_key, "tls_ca": pki.ca_file}

    async def health_page(**security: object) -> dict[str, str]:
        settings = GatewaySettings(
            no_auth=True,
            metrics_port=-1,
            media_root=media_root,
            orchestrator_addr=running.address,
            ingest_addr=running.address,
            **security,  # type: ignore[arg-type]
        )
        client = await aiohttp_client(create_app(settings))
        services = (await (await client.get("/api/v1/services")).json())["services"]
        return {entry["name"]: entry["status"] for entry in services}

    assert (await health_page(**client_tls, auth_token=TOKEN))["ingest"] == "serving"
    assert (await health_page())["ingest"] != "serving"

    # The server is an ingest server: a SubmitJob that got through TLS and the token is
    # UNIMPLEMENTED there; a plaintext one does not get through the handshake.
    for security, code in (
        (SecurityConfig(cert=pki.client_cert, key=pki.client_key, ca=pki.ca_file, token=TOKEN),
         "UNIMPLEMENTED"),
        (None, "DEADLINE_EXCEEDED"),  # SubmitJob waits for a ready channel, which never comes
    ):  # fmt: skip
        jobs = OrchestratorJobs(running.address, timeout_s=1.5, security=security)
        try:
            with pytest.raises(SubmitError, match=code):
                await jobs.submit("in/a.zip", "tls")
        finally:
            await jobs.close()
