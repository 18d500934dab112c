"""The audio service end to end over gRPC: real models, real conversations, real servers."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from protos.videoanalysis.v1 import audio_pb2, audio_pb2_grpc, common_pb2
from services.audio.config import AudioSettings
from services.audio.server import build_services

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"

ENGINE = audio_pb2.DiarizeRequest


def der(result: audio_pb2.DiarizeResult, rttm: Path) -> float:
    """pyannote.metrics DER, collar 0.25 s, overlapped speech scored."""
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference, hypothesis = Annotation(), Annotation()
    for line in rttm.read_text().splitlines():
        fields = line.split()
        start, duration = float(fields[3]), float(fields[4])
        reference[Segment(start, start + duration)] = fields[7]
    for segment in result.segments:
        hypothesis[Segment(segment.start_s, segment.end_s)] = segment.speaker
    metric = DiarizationErrorRate(collar=0.25, skip_overlap=False)
    return metric(reference, hypothesis, uem=Segment(0, result.duration_s))


@pytest.mark.parametrize(
    ("name", "speakers"), [("conv_dev_1", 2), ("conv_dev_2", 2), ("conv_dev_3", 3)]
)
async def test_embedded_engine_diarizes_real_conversations(
    run_diarize, audio_stub, name: str, speakers: int
) -> None:
    _steps, result = await run_diarize(audio_stub, f"{name}.wav")
    assert result.has_audio
    assert result.engine == "embedded" and result.device == "cpu"
    assert result.num_speakers == speakers
    assert list(result.speakers) == [f"SPEAKER_{i:02d}" for i in range(speakers)]
    assert der(result, TESTDATA / f"audio/{name}.rttm") <= 0.10
    starts = [s.start_s for s in result.segments]
    assert starts == sorted(starts)
    assert all(0 <= s.start_s < s.end_s <= result.duration_s + 1e-6 for s in result.segments)
    assert 0.5 < result.speech_coverage < 1.0


async def test_speaker_count_constraints_are_obeyed(run_diarize, audio_stub) -> None:
    _, forced = await run_diarize(audio_stub, "conv_dev_3.wav", num_speakers=2)
    assert forced.num_speakers == 2
    _, capped = await run_diarize(audio_stub, "conv_dev_1.wav", max_speakers=1)
    assert capped.num_speakers == 1
    assert {s.speaker for s in capped.segments} == {"SPEAKER_00"}


def _audio_seconds() -> float:
    value = REGISTRY.get_sample_value(
        "videoanalysis_media_audio_seconds_processed_total",
        {"service": "audio", "engine": "embedded"},
    )
    return value or 0.0


async def test_progress_is_streamed_before_the_result(run_diarize, audio_stub) -> None:
    before = _audio_seconds()
    steps, result = await run_diarize(audio_stub, "conv_dev_2.wav", engine=ENGINE.ENGINE_EMBEDDED)
    assert _audio_seconds() - before == pytest.approx(result.duration_s)
    stages = [step.stage for step in steps]
    for stage in ("decode", "speech", "embeddings", "clustering", "resegmentation"):
        assert stage in stages
    assert stages.index("decode") < stages.index("speech") < stages.index("embeddings")
    embeddings = [step for step in steps if step.stage == "embeddings"]
    assert embeddings[-1].done == embeddings[-1].total > 0
    assert all(0 <= step.done <= step.total for step in steps)
    assert result.num_speakers == 2


async def test_video_without_audio_stream_is_an_explicit_no_audio_result(
    run_diarize, audio_stub
) -> None:
    steps, result = await run_diarize(audio_stub, "testvideo.mp4")
    assert not result.has_audio
    assert result.duration_s == pytest.approx(24, abs=1)
    assert not result.segments and result.num_speakers == 0 and result.speech_coverage == 0
    assert all(step.stage == "decode" for step in steps)


async def test_video_with_audio_is_diarized(run_diarize, audio_stub) -> None:
    _, result = await run_diarize(audio_stub, "short_hamilton_clip.mp4")
    assert result.has_audio and result.duration_s == pytest.approx(9.5, abs=1)
    assert result.num_speakers >= 1 and result.speech_coverage > 0.2


async def test_silence_has_audio_but_no_speech(run_diarize, audio_stub) -> None:
    _, result = await run_diarize(audio_stub, "silence.m4a")
    assert result.has_audio and result.duration_s == pytest.approx(4, abs=0.2)
    assert not result.segments and result.num_speakers == 0 and result.speech_coverage == 0


@pytest.mark.parametrize("kind", ["random-bytes", "truncated-mp4"])
async def test_corrupt_media_is_failed_precondition(
    run_diarize, audio_stub, audio_media: Path, kind: str
) -> None:
    if kind == "random-bytes":
        name = "corrupt.wav"
        (audio_media / name).write_bytes(b"RIFF" + os.urandom(20000))
    else:
        name = "truncated.mp4"
        data = (TESTDATA / "video/short_hamilton_clip.mp4").read_bytes()
        (audio_media / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_diarize(audio_stub, name)
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert name in info.value.details()


@pytest.mark.parametrize(
    ("path", "fields", "code"),
    [
        ("missing.wav", {}, grpc.StatusCode.NOT_FOUND),
        ("../escape.wav", {}, grpc.StatusCode.INVALID_ARGUMENT),
        (
            "conv_dev_1.wav",
            {"min_speakers": 3, "max_speakers": 2},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ("conv_dev_1.wav", {"num_speakers": -1}, grpc.StatusCode.INVALID_ARGUMENT),
        ("conv_dev_1.wav", {"engine": 7}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_bad_requests_get_precise_codes(
    run_diarize, audio_stub, path: str, fields: dict, code
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await run_diarize(audio_stub, path, **fields)
    assert info.value.code() == code


async def test_cancelling_stops_the_work_promptly(run_diarize, audio_stub) -> None:
    """Cancelling a 20-minute job (about 20 s of work here) as soon as its first progress
    arrives must free the engine at once: a tiny job sent right after, which has to wait for
    the same engine, comes back in a fraction of the time the big job still needed."""
    call = audio_stub.Diarize(audio_pb2.DiarizeRequest(media=common_pb2.MediaRef(path="long.flac")))
    async for reply in call:
        if reply.HasField("progress") and reply.progress.stage == "speech":
            break
    cancelled_at = time.perf_counter()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call.read()
    _, result = await run_diarize(audio_stub, "silence.m4a")
    assert result.has_audio and not result.segments
    assert time.perf_counter() - cancelled_at < 8


async def test_pyannote_engine_runs_a_locally_saved_pipeline(run_diarize, audio_stub) -> None:
    """Wiring only: the tiny pipeline's models are random, so its speakers mean nothing."""
    steps, result = await run_diarize(
        audio_stub, "short_hamilton_clip.mp4", engine=ENGINE.ENGINE_PYANNOTE
    )
    assert result.engine == "pyannote" and result.device == "cpu" and result.has_audio
    assert {"segmentation", "embeddings"} <= {step.stage for step in steps}
    assert result.segments, "the random pipeline still marks speech somewhere"
    for segment in result.segments:
        assert re.fullmatch(r"SPEAKER_\d\d", segment.speaker)
        assert 0 <= segment.start_s < segment.end_s <= result.duration_s + 0.1
    assert sorted(result.speakers) == sorted({s.speaker for s in result.segments})
    assert result.num_speakers == len(result.speakers)


async def test_pyannote_engine_unconfigured_is_unavailable(run_diarize, audio_media: Path) -> None:
    settings = AudioSettings(port=0, metrics_port=-1, media_root=audio_media)
    from services.common.server import start_server

    running = await start_server(settings, build_services(settings))
    try:
        await running.mark_ready()
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = audio_pb2_grpc.AudioServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await run_diarize(stub, "conv_dev_1.wav", engine=ENGINE.ENGINE_PYANNOTE)
    finally:
        await running.stop(0)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "AUDIO_PYANNOTE_MODEL_DIR" in info.value.details()
