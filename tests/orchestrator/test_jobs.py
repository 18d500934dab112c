"""End-to-end jobs against the real services (processes on loopback ports, real models, real
footage): legacy outputs, cache, per-video errors, a service killed mid-job, the orchestrator
killed mid-job, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from orchestrator import legacy
from orchestrator import store as st
from orchestrator.config import OrchestratorSettings
from orchestrator.jobs import Orchestrator
from orchestrator.outputs import leftover_temp_files
from orchestrator.server import open_orchestrator
from orchestrator.stack import free_port
from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

#: Every test runs jobs on the real services.
pytestmark = pytest.mark.slow

HAMILTON = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "testdata"
    / "video"
    / ("short_hamilton_clip.mp4")
)
AUDIO_INFO_KEYS = [
    "is_speech_present",
    "num_distinct_speakers_audio",
    "active_speaker_labels",
    "timecode_sec",
]
SPEAKER = re.compile(r"^SPEAKER_\d{2}$")


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def finished(orchestrator: Orchestrator, job_id: str, timeout_s: float = 180) -> st.JobRow:
    await asyncio.wait_for(orchestrator.wait(job_id), timeout_s)
    job = await orchestrator.store.get_job(job_id)
    assert job is not None
    return job


def check_legacy_outputs(media_root: Path, video: st.VideoRow) -> dict[str, object]:
    """Every output file of one video against the legacy schemas (specs 02, 03, 04)."""
    out = media_root / video.output_dir
    stem = video.stem

    raw = (out / f"{stem}{legacy.SCENES_SUFFIX}").read_bytes()
    assert raw.startswith(b"No,Timecode In,Timecode Out,Frame In,Frame Out\r\n")
    assert raw.count(b"\n") == raw.count(b"\r\n")
    rows = list(csv.reader(io.StringIO(raw.decode())))[1:]
    assert rows, "no scene"
    expected_in = 1
    for number, (no, tc_in, tc_out, frame_in, frame_out) in enumerate(rows, start=1):
        assert int(no) == number and int(frame_in) == expected_in <= int(frame_out)
        assert tc_in == legacy.timecode(int(frame_in) - 1)
        assert tc_out == legacy.timecode(int(frame_out) - 1)
        expected_in = int(frame_out) + 1

    audio_text = (out / f"{stem}{legacy.AUDIO_SUFFIX}").read_text()
    audio = json.loads(audio_text)
    assert list(audio) == ["video_filename", "total_frames", "fps", "frames_analysis"]
    assert audio["video_filename"] == Path(video.path).name
    assert audio["fps"] == 25 and isinstance(audio["fps"], int)
    frame_numbers = [f["frame"] for f in audio["frames_analysis"]]
    assert frame_numbers == list(range(1, audio["total_frames"] + 1))
    for frame in audio["frames_analysis"]:
        info = frame["audio_info"]
        assert list(frame) == ["frame", "audio_info"] and list(info) == AUDIO_INFO_KEYS
        labels = info["active_speaker_labels"]
        assert labels == sorted(labels) and all(SPEAKER.match(label) for label in labels)
        assert info["is_speech_present"] == bool(labels)
        assert info["num_distinct_speakers_audio"] == len(labels)
        assert info["timecode_sec"] == round((frame["frame"] - 1) / 25, 3)
    assert audio_text.splitlines()[5].startswith('{"frame": 1, "audio_info": ')

    tracking = json.loads((out / f"{stem}{legacy.TRACKING_SUFFIX}").read_text())
    assert list(tracking) == ["metadata", "frames"]
    metadata = tracking["metadata"]
    assert list(metadata)[:3] == ["video_path", "total_frames", "fps"]
    assert metadata["video_path"] == video.path and metadata["fps"] == 25.0
    assert [f["frame"] for f in tracking["frames"]] == list(range(1, metadata["total_frames"] + 1))
    assert abs(metadata["total_frames"] - int(rows[-1][4])) <= 2
    objects = [obj for f in tracking["frames"] for obj in f["tracked_objects"]]
    assert objects, "no face tracked"
    for obj in objects:
        assert tuple(obj)[: len(legacy.TRACKED_OBJECT_KEYS)] == legacy.TRACKED_OBJECT_KEYS
        assert re.match(r"^obj_\d+$", obj["id"]) and obj["label"] == "face"
        assert obj["bbox_xmax"] - obj["bbox_xmin"] == obj["bbox_width"]
        assert obj["bbox_ymax"] - obj["bbox_ymin"] == obj["bbox_height"]
        assert isinstance(obj["is_speaking"], bool)
        if obj["speaking_method"] != "visual_only":  # visual_only speaks without a label
            assert obj["is_speaking"] == (obj["speaker_label"] is not None)
        assert set(obj["speaking_sources"]) >= {"audio", "visual", "fusion"}
    by_frame = {f["frame"]: f["audio_info"] for f in audio["frames_analysis"]}
    for frame in tracking["frames"]:
        for obj in frame["tracked_objects"]:
            heard = by_frame.get(frame["frame"], {}).get("active_speaker_labels", [])
            # The tracking file agrees with the audio file frame by frame.
            assert obj["speaking_sources"]["audio"]["active_speakers"] == heard
            if obj["is_speaking"] and obj["speaking_method"] != "visual_only":
                assert obj["speaker_label"] in heard

    docs = out / legacy.DOCS_DIR
    reduced = json.loads((docs / f"{stem}.json").read_text())
    assert list(reduced) == ["frames_analysis"]
    assert len(reduced["frames_analysis"]) == metadata["total_frames"]
    for frame in reduced["frames_analysis"]:
        for obj in frame["tracked_objects"]:
            assert list(obj) in (
                ["id", "centroid_x", "source", "label", "active_speakers"],
                [
                    "id",
                    "centroid_x",
                    "source",
                    "label",
                    "active_speakers",
                    "bbox_width",
                    "bbox_height",
                ],
            )
    reduced_audio = json.loads((docs / f"{stem}{legacy.AUDIO_SUFFIX}").read_text())
    assert list(reduced_audio) == ["frames_analysis"]
    assert all(
        list(f["audio_info"]) == ["is_speech_present", "active_speaker_labels"]
        for f in reduced_audio["frames_analysis"]
    )
    assert legacy.reduce_audio(audio) == reduced_audio  # produced from the full file, which stays
    assert legacy.reduce_tracking(tracking) == reduced
    return tracking


def check_archive(settings: OrchestratorSettings, video: st.VideoRow) -> None:
    entry = settings.media_root / settings.archives_dir / video.project / video.sha256
    metadata = json.loads((entry / legacy.METADATA_NAME).read_text())
    assert metadata["video_hash"] == video.sha256 and metadata["video_stem"] == video.stem
    out = settings.media_root / video.output_dir
    for suffix in (legacy.SCENES_SUFFIX, legacy.AUDIO_SUFFIX, legacy.TRACKING_SUFFIX):
        assert (entry / f"{video.stem}{suffix}").read_bytes() == (
            out / f"{video.stem}{suffix}"
        ).read_bytes()


async def test_a_job_writes_every_legacy_output_and_a_rerun_reuses_them(
    orchestrator: Orchestrator, put: Callable[..., str], job_settings: OrchestratorSettings
) -> None:
    clip = put(HAMILTON, "stage.mp4", start_s=3.5, duration_s=4)
    completed_before = _metric("videoanalysis_orchestrator_jobs_total", state="completed")
    hits_before = _metric("videoanalysis_orchestrator_cache_hits_total")
    job_id = await orchestrator.submit([clip], label="schemas")
    events = [event async for event in orchestrator.watch(job_id)]
    job = await finished(orchestrator, job_id)
    check_events(events)
    assert (job.state, job.error) == (st.COMPLETED, "")
    (video,) = job.videos
    assert video.state == st.SUCCEEDED and not video.from_cache
    assert {name: step.state for name, step in video.steps.items()} == {
        "extract": st.SKIPPED,
        **{n: st.SUCCEEDED for n in st.STEP_NAMES[1:]},
    }
    assert video.output_dir == f"{job_settings.output_dir}/in"
    tracking = check_legacy_outputs(job_settings.media_root, video)
    check_archive(job_settings, video)
    assert leftover_temp_files(job_settings.media_root) == []
    assert not (job_settings.media_root / video.work_dir).exists()
    fused = video.steps["fuse"].result
    speaking = sum(o["is_speaking"] for f in tracking["frames"] for o in f["tracked_objects"])
    assert fused["speaking_face_frames"] == speaking <= fused["legacy_speaking_face_frames"]

    out = job_settings.media_root / video.output_dir
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    again = await finished(orchestrator, await orchestrator.submit([clip]))
    assert again.state == st.COMPLETED and again.videos[0].from_cache
    steps = again.videos[0].steps
    assert [steps[n].state for n in ("normalize", "scene", "audio", "tracking")] == [st.SKIPPED] * 4
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before  # idempotent: the same bytes
    assert _metric("videoanalysis_orchestrator_cache_hits_total") == hits_before + 1
    assert _metric("videoanalysis_orchestrator_jobs_total", state="completed") == (
        completed_before + 2
    )


async def test_a_song_without_speech_is_attributed_by_the_singers_mouth(
    orchestrator: Orchestrator, put: Callable[..., str], music_video: Path
) -> None:
    """The whole 212-s music video (an excerpt may hold a stray speech-like second): the diarizer
    hears no speech in the song, so the legacy rule marks nobody and fusion falls back to mouth
    movement alone (``visual_only``)."""
    clip = put(music_video, "song.mp4")
    job = await finished(orchestrator, await orchestrator.submit([clip], label="song"), 400)
    assert job.state == st.COMPLETED
    (video,) = job.videos
    tracking = check_legacy_outputs(orchestrator.settings.media_root, video)
    fusion = tracking["metadata"]["fusion"]
    assert fusion["method"] == "visual_only" and fusion["speakers"] == {}
    objects = [o for f in tracking["frames"] for o in f["tracked_objects"]]
    assert objects and {o["speaking_method"] for o in objects} == {"visual_only"}
    speaking = [o for o in objects if o["is_speaking"]]
    assert 0 < len(speaking) < len(objects)
    attributed = [a for a in fusion["attributions"] if a["face_id"] is not None]
    assert attributed and all(a["speaker"] == "" for a in attributed)
    fused = video.steps["fuse"].result
    assert fused["speaking_face_frames"] == len(speaking)
    assert fused["legacy_speaking_face_frames"] == 0


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def check_events(events: list[orchestrator_pb2.JobEvent]) -> None:
    """WatchJob: a snapshot first, numbered events, steps with progress, a final snapshot."""
    assert events[0].HasField("snapshot")
    assert events[-1].HasField("snapshot")
    assert events[-1].snapshot.state == orchestrator_pb2.JOB_STATE_COMPLETED
    numbers = [e.sequence for e in events[1:]]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert numbers[0] >= events[0].sequence
    steps = [e.step for e in events if e.HasField("step")]
    for name in ("normalize", "scene", "audio", "tracking", "fuse", "reduce", "finalize"):
        states = [s.step.state for s in steps if s.step.name == name]
        assert states[0] == orchestrator_pb2.STEP_STATE_RUNNING, name
        assert states[-1] == orchestrator_pb2.STEP_STATE_SUCCEEDED, name
    assert any(
        s.step.progress.total > 0 and s.step.progress.unit == "frames"
        for s in steps
        if s.step.state == orchestrator_pb2.STEP_STATE_RUNNING
    )
    assert any(
        e.HasField("state") and e.state == orchestrator_pb2.JOB_STATE_COMPLETED for e in events
    )


async def test_a_corrupt_video_among_good_ones(
    orchestrator: Orchestrator, put: Callable[..., str], job_settings: OrchestratorSettings
) -> None:
    good = put(HAMILTON, "good.mp4", start_s=4, duration_s=2)
    folder = str(Path(good).parent)
    truncated = job_settings.media_root / folder / "truncated.mp4"
    truncated.write_bytes(HAMILTON.read_bytes()[:60_000])
    (job_settings.media_root / folder / "noise.mov").write_bytes(os.urandom(50_000))
    retries_before = _metric(
        "videoanalysis_orchestrator_step_retries_total",
        step="probe",
        grpc_code="FAILED_PRECONDITION",
    )
    job = await finished(orchestrator, await orchestrator.submit([folder]))
    assert job.state == st.COMPLETED_WITH_ERRORS
    states = {Path(v.path).name: v for v in job.videos}
    assert states["good.mp4"].state == st.SUCCEEDED
    check_legacy_outputs(job_settings.media_root, states["good.mp4"])
    for name in ("truncated.mp4", "noise.mov"):
        bad = states[name]
        assert bad.state == st.FAILED
        assert bad.error.startswith("normalize: ") and "FAILED_PRECONDITION" in bad.error
        assert bad.steps["normalize"].state == st.FAILED
        assert bad.steps["normalize"].attempts == 1  # FAILED_PRECONDITION is not retried
        assert bad.steps["finalize"].state == st.PENDING
        assert name in job.error
        out = job_settings.media_root / bad.output_dir
        assert not list(out.glob(f"{Path(name).stem}_*"))
    assert "2 of 3 videos failed" in job.error
    assert (
        _metric(
            "videoanalysis_orchestrator_step_retries_total",
            step="probe",
            grpc_code="FAILED_PRECONDITION",
        )
        == retries_before
    )
    assert leftover_temp_files(job_settings.media_root) == []


async def test_bad_requests_are_refused(
    orchestrator: Orchestrator, put: Callable[..., str]
) -> None:
    from services.common.errors import InvalidArgument, MediaNotFound

    with pytest.raises(InvalidArgument):
        await orchestrator.submit([])
    with pytest.raises(InvalidArgument):
        await orchestrator.submit(["../outside.mp4"])
    with pytest.raises(MediaNotFound):
        await orchestrator.submit(["t/nothing-here.mp4"])
    clip = put(HAMILTON, "x.mp4", duration_s=1)
    with pytest.raises(InvalidArgument):
        await orchestrator.submit(
            [clip], orchestrator_pb2.JobOptions(min_speakers=3, max_speakers=2)
        )
    with pytest.raises(InvalidArgument):
        await orchestrator.submit([clip], orchestrator_pb2.JobOptions(output_dir="/abs"))
    assert await orchestrator.store.list_jobs() == []


@pytest.mark.allow_error_logs
async def test_a_service_killed_mid_job_is_retried(
    stack,
    orchestrator: Orchestrator,
    put: Callable[..., str],
    job_settings: OrchestratorSettings,
) -> None:
    clip = put(HAMILTON, "killed.mp4")
    job_id = await orchestrator.submit([clip], orchestrator_pb2.JobOptions(no_cache=True))

    async def scene_running() -> bool:
        job = await orchestrator.snapshot(job_id)
        assert job is not None
        assert job.state in (orchestrator_pb2.JOB_STATE_QUEUED, orchestrator_pb2.JOB_STATE_RUNNING)
        step = {s.name: s for s in job.videos[0].steps} if job.videos else {}
        return "scene" in step and step["scene"].progress.done > 0

    await eventually(scene_running, 120, "scene detection to make progress")
    retries_before = _metric(
        "videoanalysis_orchestrator_step_retries_total", step="scene", grpc_code="UNAVAILABLE"
    )
    stack.local.kill("scene")
    await asyncio.sleep(0.5)
    stack.restart("scene")
    job = await finished(orchestrator, job_id, 240)
    assert (job.state, job.error) == (st.COMPLETED, "")
    (video,) = job.videos
    assert video.steps["scene"].attempts >= 2
    assert (
        _metric(
            "videoanalysis_orchestrator_step_retries_total", step="scene", grpc_code="UNAVAILABLE"
        )
        >= retries_before + 1
    )
    check_legacy_outputs(job_settings.media_root, video)
    check_archive(job_settings, video)
    scenes = legacy.parse_scenes_csv(
        (job_settings.media_root / video.output_dir / f"{video.stem}_scenes.csv").read_text()
    )
    assert scenes[0][0] == 0 and scenes[-1][1] + 1 >= 248  # whole video: no partial result
    assert leftover_temp_files(job_settings.media_root) == []
    await stack.local.wait_ready("scene", 300)


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its live descendants (worker processes, ffmpeg)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        child = int(stat.parent.name)
        stats[child] = fields
        children.setdefault(int(fields[1]), []).append(child)
    todo = [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            total += (int(stats[current][11]) + int(stats[current][12])) / ticks
        todo.extend(children.get(current, []))
    return total


async def test_cancel_stops_every_stage(
    stack, orchestrator: Orchestrator, job_settings: OrchestratorSettings
) -> None:
    # Three minutes of conversation (LibriSpeech speakers) over the stage footage, small frames:
    # every stage has seconds of work, so all three run at once.
    clip = Path(job_settings.output_dir).parent / "in" / "talk.mp4"
    target = job_settings.media_root / clip
    target.parent.mkdir(parents=True, exist_ok=True)
    audio = HAMILTON.parents[1] / "audio"
    await asyncio.to_thread(
        subprocess.run,
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-stream_loop",
            "-1",
            "-i",
            str(HAMILTON),
            "-i",
            str(audio / "conv_dev_1.wav"),
            "-i",
            str(audio / "conv_dev_2.wav"),
            "-i",
            str(audio / "conv_dev_3.wav"),
            "-filter_complex",
            "[1:a][2:a][3:a]concat=n=3:v=0:a=1[a]",
            "-map",
            "0:v",
            "-map",
            "[a]",
            "-shortest",
            "-vf",
            "scale=320:180,fps=25",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            str(target),
        ],
        check=True,
    )
    job_id = await orchestrator.submit([clip.as_posix()])

    async def analysing() -> bool:
        job = await orchestrator.snapshot(job_id)
        assert job is not None
        assert job.state in (orchestrator_pb2.JOB_STATE_QUEUED, orchestrator_pb2.JOB_STATE_RUNNING)
        steps = {s.name: s for s in job.videos[0].steps} if job.videos else {}
        return (
            all(
                n in steps and steps[n].state == orchestrator_pb2.STEP_STATE_RUNNING
                for n in ("scene", "audio", "tracking")
            )
            and steps["tracking"].progress.done > 0
        )

    await eventually(analysing, 120, "scene, audio and tracking to run together")
    started = time.monotonic()
    cancelled = await orchestrator.cancel(job_id)
    assert cancelled is not None and cancelled.state == orchestrator_pb2.JOB_STATE_CANCELLED
    assert time.monotonic() - started < 15
    steps = {s.name: s for s in cancelled.videos[0].steps}
    for name in ("scene", "audio", "tracking", "fuse", "finalize"):
        assert steps[name].state == orchestrator_pb2.STEP_STATE_CANCELLED, name
    # The services go quiet within seconds (had they gone on, scene detection alone would
    # still have a minute of work): a 2-s window where no service uses 0.4 s of CPU.
    windows = []
    for _ in range(8):
        before = {name: _cpu_seconds(pid) for name, pid in stack.pids().items()}
        await asyncio.sleep(2.0)
        used = {
            name: round(_cpu_seconds(pid) - before[name], 2) for name, pid in stack.pids().items()
        }
        windows.append(used)
        if all(seconds < 0.4 for seconds in used.values()):
            break
    else:
        raise AssertionError(f"the services kept working after the cancel: {windows}")


async def _grpc_wait(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub,
    job_id: str,
    condition: Callable[[orchestrator_pb2.Job], bool],
    timeout_s: float,
) -> orchestrator_pb2.Job:
    deadline = time.monotonic() + timeout_s
    while True:
        job = None
        with contextlib.suppress(grpc.aio.AioRpcError):  # the server may still be starting
            job = await stub.GetJob(orchestrator_pb2.GetJobRequest(job_id=job_id), timeout=5)
        if job is not None and condition(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last state: {job}")
        await asyncio.sleep(0.2)


def _serve(settings: OrchestratorSettings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "ORCH_MEDIA_ROOT": str(settings.media_root),
        "ORCH_DB_PATH": str(settings.db_path),
        "ORCH_OUTPUT_DIR": settings.output_dir,
        "ORCH_ARCHIVES_DIR": settings.archives_dir,
        "ORCH_WORK_DIR": settings.work_dir,
        "ORCH_EXTRACT_DIR": settings.extract_dir,
        "ORCH_METRICS_PORT": "-1",
        **{f"ORCH_{name.upper()}_ADDR": link.addr for name, link in settings.services.items()},
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve", "--port", str(port)],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def test_the_orchestrator_killed_mid_job_resumes_after_a_restart(
    put: Callable[..., str], job_settings: OrchestratorSettings
) -> None:
    clip = put(HAMILTON, "resumed.mp4")
    port = free_port()
    log = job_settings.media_root / Path(clip).parent / "orchestrator.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    server = _serve(job_settings, port, log)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            await channel.channel_ready()
            submitted = await _grpc_wait_submit(stub, clip)
            job_id = submitted.job_id

            events = []

            async def watch() -> None:
                request = orchestrator_pb2.WatchJobsRequest(job_ids=[job_id], snapshot=True)
                async for event in stub.WatchJobs(request):
                    events.append(event)

            watcher = asyncio.create_task(watch())

            def audio_done_scene_running(job: orchestrator_pb2.Job) -> bool:
                steps = {s.name: s for s in job.videos[0].steps} if job.videos else {}
                return (
                    bool(steps)
                    and steps["audio"].state == orchestrator_pb2.STEP_STATE_SUCCEEDED
                    and steps["scene"].state == orchestrator_pb2.STEP_STATE_RUNNING
                )

            before = await _grpc_wait(stub, job_id, audio_done_scene_running, 120)
            server.send_signal(signal.SIGKILL)
            server.wait()
            with pytest.raises(grpc.aio.AioRpcError):
                await watcher
            assert events[0].HasField("snapshot") and any(e.HasField("step") for e in events)

        last_seen = events[-1].sequence
        server = _serve(job_settings, port, log)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
            await channel.channel_ready()
            resumed = []
            request = orchestrator_pb2.WatchJobsRequest(job_ids=[job_id], after_sequence=last_seen)
            async with asyncio.timeout(300):
                async for event in stub.WatchJobs(request):
                    resumed.append(event)
                    if event.HasField("snapshot") and event.snapshot.state not in (
                        orchestrator_pb2.JOB_STATE_QUEUED,
                        orchestrator_pb2.JOB_STATE_RUNNING,
                    ):
                        break
            final = await _grpc_wait(
                stub,
                job_id,
                lambda j: (
                    j.state
                    not in (orchestrator_pb2.JOB_STATE_QUEUED, orchestrator_pb2.JOB_STATE_RUNNING)
                ),
                240,
            )
            assert final.state == orchestrator_pb2.JOB_STATE_COMPLETED, final.error
            listed = await stub.ListJobs(
                orchestrator_pb2.ListJobsRequest(states=[orchestrator_pb2.JOB_STATE_COMPLETED])
            )
            assert [j.job_id for j in listed.jobs] == [job_id]
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await stub.GetJob(orchestrator_pb2.GetJobRequest(job_id="nope"))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    old = {s.name: s for s in before.videos[0].steps}
    new = {s.name: s for s in final.videos[0].steps}
    # Finished before the kill: not repeated. Running at the kill: redone once.
    assert old["audio"].state == orchestrator_pb2.STEP_STATE_SUCCEEDED
    assert old["scene"].state == orchestrator_pb2.STEP_STATE_RUNNING
    for name, step in old.items():
        if step.state == orchestrator_pb2.STEP_STATE_SUCCEEDED:
            assert new[name].attempts == step.attempts == 1, name
            assert new[name].started_at == step.started_at, name
            assert new[name].finished_at == step.finished_at, name
        elif step.state == orchestrator_pb2.STEP_STATE_RUNNING:
            assert new[name].attempts == step.attempts + 1, name
        assert new[name].state in (
            orchestrator_pb2.STEP_STATE_SUCCEEDED,
            orchestrator_pb2.STEP_STATE_SKIPPED,
        ), name
    store = await st.JobStore.open(job_settings.database())
    try:
        job = await store.get_job(job_id)
        stored = await store.events_after(last_seen, [job_id], limit=100_000)
    finally:
        await store.close()
    assert job is not None
    # The watcher that came back with its last sequence got every stored event after it, once
    # and in order (superseded progress may be gone from the store, never an event it missed).
    received = [e.sequence for e in resumed]
    assert received == sorted(set(received)) and received[0] > last_seen
    assert {e.sequence for e in stored} <= set(received)
    assert not {e.sequence for e in events} & set(received)
    assert not any(e.HasField("resync") for e in resumed)
    check_legacy_outputs(job_settings.media_root, job.videos[0])
    check_archive(job_settings, job.videos[0])
    assert leftover_temp_files(job_settings.media_root) == []


async def _grpc_wait_submit(
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, clip: str
) -> orchestrator_pb2.Job:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.SubmitJob(
            orchestrator_pb2.SubmitJobRequest(inputs=[common_pb2.MediaRef(path="/etc/passwd")])
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return await stub.SubmitJob(
        orchestrator_pb2.SubmitJobRequest(
            inputs=[common_pb2.MediaRef(path=clip)],
            options=orchestrator_pb2.JobOptions(no_cache=True),
            label="resume",
        )
    )


async def test_an_archive_is_extracted_and_its_videos_analysed(
    orchestrator: Orchestrator, put: Callable[..., str], job_settings: OrchestratorSettings
) -> None:
    clip = job_settings.media_root / put(HAMILTON, "inside.mp4", start_s=4, duration_s=2)
    archive = clip.parent / "Projet Camille.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.write(clip, "Projet Camille/rushes/inside.mp4")
        bundle.writestr("Projet Camille/notes.txt", "not a video")
    relative = archive.relative_to(job_settings.media_root).as_posix()
    job = await finished(orchestrator, await orchestrator.submit([relative]))
    assert (job.state, job.error) == (st.COMPLETED, "")
    (video,) = job.videos
    assert video.path.startswith(f"{job_settings.extract_dir}/{job.job_id}/0/")
    assert video.path.endswith("/docs/rushes/inside.mp4")
    assert video.steps["extract"].state == st.SUCCEEDED
    assert video.project == "Projet Camille"
    assert video.output_dir == f"{job_settings.output_dir}/Projet Camille"
    check_legacy_outputs(job_settings.media_root, video)
    check_archive(job_settings, video)
    # The same archive again: extracted into its own folder (no "_2" copies), results reused.
    again = await finished(orchestrator, await orchestrator.submit([relative]))
    assert again.state == st.COMPLETED and [v.from_cache for v in again.videos] == [True]
    assert Path(again.videos[0].path).name == "inside.mp4"


def _cli(settings: OrchestratorSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "ORCH_OUTPUT_DIR": settings.output_dir,
        "ORCH_ARCHIVES_DIR": settings.archives_dir,
        "ORCH_WORK_DIR": settings.work_dir,
        "ORCH_DB_PATH": str(settings.db_path),
        **{f"ORCH_{name.upper()}_ADDR": link.addr for name, link in settings.services.items()},
        "COLUMNS": "200",
    }
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "run",
            "--media-root",
            str(settings.media_root),
            *args,
        ],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_the_cli_brings_outside_files_in_and_reports_failures(
    job_settings: OrchestratorSettings, tmp_path: Path, trim: Callable[..., Path]
) -> None:
    outside = tmp_path / "elsewhere" / "cli_clip.mp4"
    trim(HAMILTON, outside, 4, 2)
    done = await asyncio.to_thread(_cli, job_settings, str(outside))
    assert done.returncode == 0, done.stdout + done.stderr
    out = (job_settings.media_root / job_settings.output_dir / "cli_clip").resolve()
    assert f"outputs: {out}" in done.stdout
    assert (job_settings.media_root / "imports" / "cli_clip" / "cli_clip.mp4").is_file()
    for name in (
        "cli_clip_scenes.csv",
        "cli_clip_audio.json",
        "cli_clip_tracking.json",
        "docs/cli_clip.json",
        "docs/cli_clip_audio.json",
    ):
        assert (out / name).is_file(), name

    broken = tmp_path / "elsewhere" / "cli_broken.mp4"
    broken.write_bytes(os.urandom(20_000))
    failed = await asyncio.to_thread(_cli, job_settings, str(broken))
    assert failed.returncode == 1
    assert "cli_broken.mp4" in failed.stdout and "failed" in failed.stdout


async def test_round_robin_uses_the_live_replica_when_another_is_down(
    job_settings: OrchestratorSettings, put: Callable[..., str]
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    settings = job_settings.with_addresses(
        {name: f"{dead},{job_settings.address_of(name)}" for name in ("scene", "audio", "tracking")}
    )
    async with open_orchestrator(settings) as running:
        clip = put(HAMILTON, "replicas.mp4", start_s=4, duration_s=2)
        job = await finished(running, await running.submit([clip]))
        assert (job.state, job.error) == (st.COMPLETED, "")
