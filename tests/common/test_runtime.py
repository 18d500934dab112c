"""Shared runtime through a real ingest server: health, reflection, metrics, errors."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from protos.videoanalysis.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc
from services.common.errors import InvalidArgument, MediaNotFound
from services.common.media import MediaRoot
from services.common.server import start_server
from services.ingest.config import IngestSettings
from services.ingest.server import SERVICE_NAME, build_services


@pytest.fixture
async def ingest(grpc_server, media_root: Path):
    settings = IngestSettings(port=0, metrics_port=0, media_root=media_root)
    return await grpc_server(settings, build_services)


async def test_health_reports_liveness_and_readiness(ingest, channel_to) -> None:
    stub = health_pb2_grpc.HealthStub(channel_to(ingest))
    for service in ("", SERVICE_NAME):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_the_service(ingest, channel_to) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel_to(ingest))
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names = []
    async for reply in stub.ServerReflectionInfo(iter([request])):
        names = [s.name for s in reply.list_services_response.service]
    assert SERVICE_NAME in names
    assert "grpc.health.v1.Health" in names


def _handled(metrics_port: int, code: str) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    wanted = (
        f'videoanalysis_grpc_server_handled_total{{grpc_code="{code}",grpc_method="Probe",'
        'grpc_service="videoanalysis.v1.IngestService"}'
    )
    for line in body.splitlines():
        if line.startswith(wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_handled_rpcs_by_code(ingest, channel_to, put_media) -> None:
    stub = ingest_pb2_grpc.IngestServiceStub(channel_to(ingest))
    ok_before = _handled(ingest.metrics_port, "OK")
    missing_before = _handled(ingest.metrics_port, "NOT_FOUND")
    await stub.Probe(
        ingest_pb2.ProbeRequest(media=common_pb2.MediaRef(path=put_media("video/counter.mp4")))
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.Probe(ingest_pb2.ProbeRequest(media=common_pb2.MediaRef(path="missing.mp4")))
    # An aborted RPC's status reaches the client before the server-side interceptor counts it.
    for _ in range(50):
        counts = (_handled(ingest.metrics_port, "OK"), _handled(ingest.metrics_port, "NOT_FOUND"))
        if counts == (ok_before + 1, missing_before + 1):
            break
        await asyncio.sleep(0.05)
    assert counts == (ok_before + 1, missing_before + 1)


async def test_request_id_is_echoed(ingest, channel_to, put_media) -> None:
    stub = ingest_pb2_grpc.IngestServiceStub(channel_to(ingest))
    call = stub.Probe(
        ingest_pb2.ProbeRequest(media=common_pb2.MediaRef(path=put_media("video/counter.mp4"))),
        metadata=(("x-request-id", "req-123"),),
    )
    await call
    assert ("x-request-id", "req-123") in tuple(await call.initial_metadata())


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("missing.mp4", grpc.StatusCode.NOT_FOUND),
        ("../outside.mp4", grpc.StatusCode.INVALID_ARGUMENT),
        ("/etc/passwd", grpc.StatusCode.INVALID_ARGUMENT),
        ("", grpc.StatusCode.INVALID_ARGUMENT),
        ("escape", grpc.StatusCode.INVALID_ARGUMENT),
        ("notes.txt", grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_bad_media_paths_get_precise_codes(
    ingest, channel_to, media_root: Path, path, code
) -> None:
    (media_root / "notes.txt").write_text("not a video")
    (media_root / "escape").symlink_to("/etc/hostname")
    stub = ingest_pb2_grpc.IngestServiceStub(channel_to(ingest))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Probe(ingest_pb2.ProbeRequest(media=common_pb2.MediaRef(path=path)))
    assert info.value.code() == code, info.value.details()


def test_media_root_confines_paths(tmp_path: Path) -> None:
    root = MediaRoot(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "v.mp4").write_bytes(b"x")
    assert root.resolve("a/v.mp4") == (tmp_path / "a" / "v.mp4").resolve()
    assert root.resolve("a/./v.mp4") == (tmp_path / "a" / "v.mp4").resolve()
    for bad in ("../x", "a/../../x", "/abs", "C:/x", "a/\x00"):
        with pytest.raises(InvalidArgument):
            root.resolve(bad)
    with pytest.raises(MediaNotFound):
        root.resolve("a/none.mp4")


async def test_request_id_crosses_a_hop_through_open_channel(ingest, put_media) -> None:
    from services.common.channels import open_channel
    from services.common.logs import request_id_var

    token = request_id_var.set("job-42")
    try:
        async with open_channel(ingest.address) as channel:
            call = ingest_pb2_grpc.IngestServiceStub(channel).Probe(
                ingest_pb2.ProbeRequest(
                    media=common_pb2.MediaRef(path=put_media("video/counter.mp4"))
                )
            )
            await call
            assert ("x-request-id", "job-42") in tuple(await call.initial_metadata())
    finally:
        request_id_var.reset(token)


def test_channel_targets() -> None:
    from services.common.channels import channel_target

    assert channel_target("127.0.0.1:1,127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target("scene:50052") == "dns:///scene:50052"
    assert channel_target(["[::1]:5"]) == "ipv6:[::1]:5"
    with pytest.raises(InvalidArgument):
        channel_target("a:1,b:2")


async def test_stopping_drains_then_runs_each_close_hook(media_root: Path) -> None:
    """``RunningServer.stop`` (what SIGTERM runs) reports NOT_SERVING, stops the server and then
    releases each service's resources (worker pools, child processes) through its close hook."""
    closed: list[str] = []
    settings = IngestSettings(port=0, metrics_port=-1, media_root=media_root)
    (ingest,) = build_services(settings)
    ingest.close = lambda: closed.append("ingest")
    running = await start_server(settings, [ingest])
    await running.mark_ready()
    async with grpc.aio.insecure_channel(running.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    await running.stop(0)
    assert closed == ["ingest"]
    async with grpc.aio.insecure_channel(running.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
    assert error.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
