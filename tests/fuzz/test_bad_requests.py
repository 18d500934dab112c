"""Bad requests a new user would try, each refused at the edge with its precise status code
(against the real servers of every service, with the shared interceptors)."""

from __future__ import annotations

import math
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from protos.videoanalysis.v1 import (
    audio_pb2,
    common_pb2,
    ingest_pb2,
    orchestrator_pb2,
    scene_pb2,
    tracking_pb2,
)

pytestmark = pytest.mark.asyncio(loop_scope="package")

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND

LONG_PATH = "in/" + "a" * 5000  # one 5,000-character name
DEEP_PATH = "/".join(["b" * 200] * 25)  # 25 names of 200 characters: 5,024 in all
CLIP = "in/clip.mp4"


def media(path: str) -> common_pb2.MediaRef:
    return common_pb2.MediaRef(path=path)


def job(inputs: tuple[str, ...] = (CLIP,), label: str = "", **options: Any) -> Message:
    return orchestrator_pb2.SubmitJobRequest(
        inputs=[media(p) for p in inputs],
        options=orchestrator_pb2.JobOptions(**options),
        label=label,
    )


CLIP_REF = media(CLIP)
ZIP_REF = media("in/project.zip")
Case = tuple[str, str, Message, grpc.StatusCode]


def path_cases(path: str) -> list[Case]:
    """``path`` in every request field that names media."""
    return [
        ("ingest", "IngestService/Probe", ingest_pb2.ProbeRequest(media=media(path)), INVALID),
        ("ingest", "IngestService/NormalizeVideo",
         ingest_pb2.NormalizeVideoRequest(media=media(path)), INVALID),
        ("ingest", "IngestService/NormalizeVideo",
         ingest_pb2.NormalizeVideoRequest(media=CLIP_REF, output_path=path), INVALID),
        ("ingest", "IngestService/ExtractArchive",
         ingest_pb2.ExtractArchiveRequest(archive=media(path)), INVALID),
        ("ingest", "IngestService/ExtractArchive",
         ingest_pb2.ExtractArchiveRequest(archive=ZIP_REF, output_dir=path), INVALID),
        ("scene", "SceneService/DetectScenes",
         scene_pb2.DetectScenesRequest(media=media(path)), INVALID),
        ("audio", "AudioService/Diarize", audio_pb2.DiarizeRequest(media=media(path)), INVALID),
        ("tracking", "TrackingService/Track",
         tracking_pb2.TrackRequest(media=media(path)), INVALID),
        ("orchestrator", "OrchestratorService/SubmitJob", job((path,)), INVALID),
        ("orchestrator", "OrchestratorService/SubmitJob", job(output_dir=path), INVALID),
    ]  # fmt: skip


SUBMIT = ("orchestrator", "OrchestratorService/SubmitJob")
NORMALIZE = ("ingest", "IngestService/NormalizeVideo")
EXTRACT = ("ingest", "IngestService/ExtractArchive")
DIARIZE = ("audio", "AudioService/Diarize")

CASES: list[Case] = [
    *path_cases(LONG_PATH),
    *path_cases(DEEP_PATH),
    (*SUBMIT, job(max_faces=-1), INVALID),
    (*SUBMIT, job(max_faces=1000), INVALID),
    (*SUBMIT, job(num_speakers=-1), INVALID),
    (*SUBMIT, job(num_speakers=100_000), INVALID),
    (*SUBMIT, job(min_speakers=3, max_speakers=2), INVALID),
    (*SUBMIT, job(scene_threshold=math.nan), INVALID),
    (*SUBMIT, job(scene_threshold=-0.5), INVALID),
    (*SUBMIT, job(scene_mode=7), INVALID),
    (*SUBMIT, job(audio_engine=7), INVALID),
    (*SUBMIT, job(output_dir="/tmp/out"), INVALID),
    (*SUBMIT, job(output_dir="../out"), INVALID),
    (*SUBMIT, job(label="x" * 10_000), INVALID),
    (*SUBMIT, job(inputs=()), INVALID),
    (*SUBMIT, job(inputs=("in/missing.mp4",)), NOT_FOUND),
    ("orchestrator", "OrchestratorService/GetJob", orchestrator_pb2.GetJobRequest(), INVALID),
    ("orchestrator", "OrchestratorService/GetJob",
     orchestrator_pb2.GetJobRequest(job_id="x" * 5000), NOT_FOUND),
    # The message quoting it would need a 36 KiB trailer: cut, or the client sees
    # RESOURCE_EXHAUSTED instead.
    ("orchestrator", "OrchestratorService/WatchJob",
     orchestrator_pb2.WatchJobRequest(job_id="é" * 3000), NOT_FOUND),
    ("orchestrator", "OrchestratorService/ListJobs",
     orchestrator_pb2.ListJobsRequest(limit=-1), INVALID),
    ("orchestrator", "OrchestratorService/ListJobs",
     orchestrator_pb2.ListJobsRequest(states=[42]), INVALID),
    (*NORMALIZE, ingest_pb2.NormalizeVideoRequest(media=CLIP_REF, target_fps=math.nan), INVALID),
    (*NORMALIZE, ingest_pb2.NormalizeVideoRequest(media=CLIP_REF, target_fps=-25), INVALID),
    (*NORMALIZE, ingest_pb2.NormalizeVideoRequest(media=CLIP_REF, target_fps=1e12), INVALID),
    (*NORMALIZE, ingest_pb2.NormalizeVideoRequest(media=CLIP_REF, encoder="bogus"), INVALID),
    (*EXTRACT, ingest_pb2.ExtractArchiveRequest(
        archive=ZIP_REF, limits=ingest_pb2.ExtractionLimits(max_total_bytes=-1)), INVALID),
    (*EXTRACT, ingest_pb2.ExtractArchiveRequest(
        archive=ZIP_REF, limits=ingest_pb2.ExtractionLimits(max_member_ratio=math.nan)), INVALID),
    (*EXTRACT, ingest_pb2.ExtractArchiveRequest(
        archive=ZIP_REF, project_name="../../escape"), INVALID),
    (*DIARIZE, audio_pb2.DiarizeRequest(media=CLIP_REF, num_speakers=-1), INVALID),
    (*DIARIZE, audio_pb2.DiarizeRequest(media=CLIP_REF, min_speakers=4, max_speakers=2), INVALID),
    (*DIARIZE, audio_pb2.DiarizeRequest(media=CLIP_REF, engine=9), INVALID),
    ("scene", "SceneService/DetectScenes",
     scene_pb2.DetectScenesRequest(media=CLIP_REF, threshold=math.inf), INVALID),
    ("scene", "SceneService/DetectScenes",
     scene_pb2.DetectScenesRequest(media=CLIP_REF, mode=5), INVALID),
    ("tracking", "TrackingService/Track",
     tracking_pb2.TrackRequest(media=CLIP_REF, max_faces=-1), INVALID),
    ("tracking", "TrackingService/Track",
     tracking_pb2.TrackRequest(media=CLIP_REF, workers=-1), INVALID),
]  # fmt: skip

#: Bytes that no request message decodes: a truncated varint, a length past the end, and a
#: string field (a MediaRef's path inside field 1, or field 1 itself) holding invalid UTF-8.
UNDECODABLE = {
    "truncated": b"\x08\xff\xff",
    "overlong": b"\x0a\x7f\x00",
    "bad-utf8": b"\x0a\x04\x0a\x02\xff\xfe",
    "bad-utf8-top": b"\x0a\x02\xff\xfe",
}

#: Every RPC of every service (server, full method, whether the response streams).
RPCS = [
    ("ingest", "IngestService/ExtractArchive", True),
    ("ingest", "IngestService/Probe", False),
    ("ingest", "IngestService/NormalizeVideo", True),
    ("scene", "SceneService/DetectScenes", True),
    ("audio", "AudioService/Diarize", True),
    ("tracking", "TrackingService/Track", True),
    ("orchestrator", "OrchestratorService/SubmitJob", False),
    ("orchestrator", "OrchestratorService/GetJob", False),
    ("orchestrator", "OrchestratorService/ListJobs", False),
    ("orchestrator", "OrchestratorService/CancelJob", False),
    ("orchestrator", "OrchestratorService/WatchJob", True),
    ("orchestrator", "OrchestratorService/WatchJobs", True),
    ("orchestrator", "OrchestratorService/GetJobLogs", False),
]


def _case_id(case: tuple[str, str, Message, grpc.StatusCode]) -> str:
    _server, method, request, code = case

    def short(value: object) -> str:
        text = str(value).replace("\n", " ").strip()
        return text if len(text) <= 24 else f"{text[:12]}...({len(text)})"

    fields = ",".join(f"{d.name}={short(v)}" for d, v in request.ListFields())
    return f"{method.split('/')[1]}[{fields}]->{code.name}"


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
async def test_a_bad_request_gets_its_code(fleet: Any, case: Any) -> None:
    server, method, request, expected = case
    streaming = not method.endswith(("Probe", "SubmitJob", "GetJob", "ListJobs"))
    code, details = await fleet.call(server, method, request.SerializeToString(), streaming)
    assert code == expected, f"got {code.name}: {details[:200]}"
    assert details and "internal error" not in details


def request_class(method: str) -> type[Message]:
    """The request message class of ``Service/Method`` (from the generated descriptors)."""
    service, name = method.split("/")
    descriptor = descriptor_pool.Default().FindServiceByName(f"videoanalysis.v1.{service}")
    return message_factory.GetMessageClass(descriptor.FindMethodByName(name).input_type)


def undecodable_for(method: str) -> list[bytes]:
    """The payloads of :data:`UNDECODABLE` that really do not parse as ``method``'s request (a
    field of another wire type is kept as an unknown field, so not every one fails everywhere)."""
    cls = request_class(method)
    failing = []
    for payload in UNDECODABLE.values():
        try:
            cls.FromString(payload)
        except DecodeError:
            failing.append(payload)
    return failing


@pytest.mark.slow
@pytest.mark.parametrize(("server", "method", "streaming"), RPCS, ids=[m for _, m, _ in RPCS])
async def test_undecodable_bytes_are_an_invalid_argument(
    fleet: Any, server: str, method: str, streaming: bool
) -> None:
    payloads = undecodable_for(method)
    assert len(payloads) >= 2
    for payload in payloads:
        code, details = await fleet.call(server, method, payload, streaming)
        assert code == INVALID, f"{payload!r} got {code.name}: {details[:200]}"
        assert "not a valid videoanalysis.v1." in details
