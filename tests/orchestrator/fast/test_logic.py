"""The orchestrator's logic against in-process fake services: the DAG, retries, cancel, resume,
the event log (order, resume after a sequence, retention, a lagging watcher) and WatchJobs over
gRPC. Milliseconds per test; the real services are exercised in ../test_jobs.py."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from orchestrator import rows as st
from orchestrator.config import OrchestratorSettings
from orchestrator.jobs import Orchestrator
from orchestrator.server import open_orchestrator, running_orchestrator
from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc


async def finished(orch: Orchestrator, job_id: str) -> st.JobRow:
    await asyncio.wait_for(orch.wait(job_id), 20)
    job = await orch.get_job_row(job_id)
    assert job is not None
    return job


async def until(check: Callable[[], bool], timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not check():  # noqa: ASYNC110 (the fakes count in plain attributes)
            await asyncio.sleep(0.01)


async def take(
    stream: AsyncIterator[orchestrator_pb2.JobEvent],
    until: Callable[[orchestrator_pb2.JobEvent], bool],
) -> list[orchestrator_pb2.JobEvent]:
    events = []
    async with asyncio.timeout(20):
        async for event in stream:
            events.append(event)
            if until(event):
                return events
    return events


def final_snapshot(event: orchestrator_pb2.JobEvent) -> bool:
    return (
        event.HasField("snapshot") and event.snapshot.state == orchestrator_pb2.JOB_STATE_COMPLETED
    )


async def test_the_dag_runs_every_step_once_in_dependency_order(orch, clip, fakes) -> None:
    job = await finished(orch, await orch.submit([clip("a.mp4")]))
    assert (job.state, job.error) == (st.COMPLETED, "")
    steps = job.videos[0].steps
    assert {n: s.state for n, s in steps.items()} == {
        "extract": st.SKIPPED,
        **{n: st.SUCCEEDED for n in st.STEP_NAMES[1:]},
    }
    assert steps["tracking"].started_at >= steps["normalize"].finished_at
    assert steps["fuse"].started_at >= max(
        steps[n].finished_at for n in ("scene", "audio", "tracking")
    )
    assert steps["finalize"].started_at >= steps["reduce"].finished_at
    assert dict(fakes.behaviour.calls) == {
        "Probe": 1,
        "NormalizeVideo": 1,
        "DetectScenes": 1,
        "Diarize": 1,
        "Track": 1,
    }
    assert (
        steps["fuse"].result["shots"] == 2 and steps["fuse"].result["faces"] >= 2
    )  # split at the cut
    # The same content again: a cache hit, no analysis call.
    again = await finished(orch, await orch.submit([clip("a.mp4")]))
    assert again.videos[0].from_cache and again.state == st.COMPLETED
    assert [
        again.videos[0].steps[n].state for n in ("normalize", "scene", "audio", "tracking")
    ] == [st.SKIPPED] * 4
    assert fakes.behaviour.calls["DetectScenes"] == 1


async def test_unavailable_is_retried_and_the_retries_are_logged(orch, clip, fakes) -> None:
    fakes.behaviour.failures["DetectScenes"] = [grpc.StatusCode.UNAVAILABLE] * 2
    job_id = await orch.submit([clip("r.mp4")])
    job = await finished(orch, job_id)
    assert job.state == st.COMPLETED
    assert job.videos[0].steps["scene"].attempts == 3
    lines = [e.log.message for e in await orch.logs(job_id)]
    assert sum("scene of in/r.mp4: UNAVAILABLE" in line for line in lines) == 2


async def test_a_failure_that_is_not_retryable_fails_the_video_only(orch, clip, fakes) -> None:
    fakes.behaviour.failures["Diarize"] = [grpc.StatusCode.INVALID_ARGUMENT]
    job = await finished(orch, await orch.submit([clip("x.mp4"), clip("y.mp4")]))
    assert job.state == st.COMPLETED_WITH_ERRORS
    failed = [v for v in job.videos if v.state == st.FAILED]
    assert len(failed) == 1 and failed[0].error.startswith("audio: audio INVALID_ARGUMENT")
    assert failed[0].steps["audio"].attempts == 1
    assert failed[0].steps["fuse"].state == st.PENDING  # never started, so never cancelled


async def test_cancel_stops_the_held_calls_and_records_every_step(orch, clip, fakes) -> None:
    held = {"DetectScenes", "Diarize", "NormalizeVideo"}
    fakes.behaviour.hold = held
    job_id = await orch.submit([clip("c.mp4")])
    await until(lambda: all(fakes.behaviour.calls[rpc] for rpc in held))
    await asyncio.sleep(0.1)  # each held call has streamed its first progress message
    job = await orch.cancel(job_id)
    assert job is not None and job.state == orchestrator_pb2.JOB_STATE_CANCELLED
    await until(lambda: sum(fakes.behaviour.cancelled.values()) == 3)
    row = await orch.get_job_row(job_id)
    assert row is not None and row.state == st.CANCELLED
    assert {
        row.videos[0].steps[n].state for n in ("normalize", "scene", "audio", "tracking", "fuse")
    } == {st.CANCELLED}


async def test_a_restart_resumes_without_repeating_finished_steps(
    fast_settings, clip, fakes
) -> None:
    fakes.behaviour.hold = {"DetectScenes"}
    async with open_orchestrator(fast_settings) as first:
        job_id = await first.submit([clip("resume.mp4")])
        async with asyncio.timeout(10):
            while True:
                row = await first.get_job_row(job_id)
                if (
                    row
                    and row.videos
                    and row.videos[0].steps["tracking"].state == st.SUCCEEDED
                    and row.videos[0].steps["audio"].state == st.SUCCEEDED
                ):
                    break
                await asyncio.sleep(0.01)
    fakes.behaviour.hold = set()
    async with open_orchestrator(fast_settings) as second:
        assert await second.start() == [job_id]
        job = await finished(second, job_id)
    assert job.state == st.COMPLETED
    calls = fakes.behaviour.calls
    assert (calls["DetectScenes"], calls["Diarize"], calls["Track"], calls["NormalizeVideo"]) == (
        2,
        1,
        1,
        1,
    )
    assert job.videos[0].steps["scene"].attempts == 2


async def test_events_are_stored_in_order_and_a_resumed_watcher_gets_exactly_the_rest(
    orch, clip
) -> None:
    job_id = await orch.submit([clip("e.mp4")])
    first = await take(orch.watch_jobs([job_id], snapshot=True), final_snapshot)
    sequences = [e.sequence for e in first if not (e.HasField("snapshot") or e.HasField("synced"))]
    assert sequences == sorted(set(sequences))
    assert first[0].HasField("snapshot") and first[1].HasField("synced")
    stored = await orch.store.events_after(0, [job_id], limit=10_000)
    middle = stored[len(stored) // 2].sequence
    resumed = await take(orch.watch_jobs([job_id], after_sequence=middle), final_snapshot)
    assert [e.sequence for e in resumed] == [e.sequence for e in stored if e.sequence > middle]
    kinds = {e.WhichOneof("event") for e in stored}
    assert {"state", "step", "snapshot"} <= kinds
    # Progress was coalesced: one progress event per step survives at most.
    running_scene = [
        e
        for e in stored
        if e.HasField("step")
        and e.step.step.name == "scene"
        and e.step.step.state == orchestrator_pb2.STEP_STATE_RUNNING
    ]
    assert len(running_scene) == 1


async def test_watching_all_jobs_includes_jobs_submitted_later(orch, clip) -> None:
    stream = orch.watch_jobs([], snapshot=True)
    synced = await take(stream, lambda e: e.HasField("synced"))
    assert synced[-1].synced.jobs == 0
    ids = [await orch.submit([clip(f"all{n}.mp4")]) for n in range(2)]
    done: set[str] = set()
    async with asyncio.timeout(20):
        async for event in stream:
            if final_snapshot(event):
                done.add(event.job_id)
            if done == set(ids):
                break


async def test_a_lagging_watcher_is_told_to_resync(fast_settings, clip) -> None:
    settings = fast_settings.model_copy(update={"watcher_queue": 10})
    async with open_orchestrator(settings) as orch:
        stream = orch.watch_jobs([])
        waiting = asyncio.create_task(anext(stream))  # subscribed, then reads one event only
        await asyncio.sleep(0)
        job = await finished(orch, await orch.submit([clip("lag.mp4")]))
        assert job.state == st.COMPLETED
        await asyncio.wait_for(waiting, 5)  # the first event; the rest piled up unread
        lagged = await asyncio.wait_for(anext(stream), 5)
        assert lagged.HasField("resync") and "fell behind" in lagged.resync.reason
        rest = await take(stream, lambda e: e.HasField("synced"))
        assert (
            rest[0].HasField("snapshot")
            and rest[0].snapshot.state == orchestrator_pb2.JOB_STATE_COMPLETED
        )


async def test_retention_prunes_and_a_watcher_from_before_it_resyncs(orch, clip) -> None:
    for n in range(3):
        await finished(
            orch, await orch.submit([clip(f"p{n}.mp4")], orchestrator_pb2.JobOptions(no_cache=True))
        )
    before = await orch.store.event_stats()
    removed = await orch.store.prune_events(max_rows=10, max_age_s=3600)
    after = await orch.store.event_stats()
    assert after.rows == 10 and removed == before.rows - 10
    assert 0 < after.floor < after.first_sequence  # (a gap: coalesced progress)
    events = await take(
        orch.watch_jobs([], after_sequence=1, snapshot_limit=2), lambda e: e.HasField("synced")
    )
    assert events[0].HasField("resync") and events[0].resync.oldest_sequence == after.floor + 1
    assert [e.HasField("snapshot") for e in events[1:-1]] == [True, True]


async def test_log_lines_are_bounded_per_job(fast_settings, clip, fakes) -> None:
    fakes.behaviour.failures["DetectScenes"] = [grpc.StatusCode.UNAVAILABLE] * 30
    settings = fast_settings.model_copy(update={"log_lines_per_job": 10, "retry_attempts": 40})
    async with open_orchestrator(settings) as orch:
        job_id = await orch.submit([clip("logs.mp4")])
        await finished(orch, job_id)
        lines = await orch.logs(job_id)
    assert len(lines) == 10 and "retry 30" in lines[-2].log.message
    assert lines[-1].log.message == "job completed"


async def test_watch_jobs_over_grpc_with_resume_and_bad_requests(fast_settings, clip) -> None:
    async with (
        running_orchestrator(fast_settings) as (_orch, server),
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        job = await stub.SubmitJob(
            orchestrator_pb2.SubmitJobRequest(inputs=[common_pb2.MediaRef(path=clip("g.mp4"))])
        )
        call = stub.WatchJobs(
            orchestrator_pb2.WatchJobsRequest(job_ids=[job.job_id], snapshot=True)
        )
        seen = []
        async for event in call:
            seen.append(event)
            if final_snapshot(event):
                break
        call.cancel()
        old = await take(
            stub.WatchJob(orchestrator_pb2.WatchJobRequest(job_id=job.job_id)), final_snapshot
        )
        assert len(old) == 1 and final_snapshot(old[0])  # a finished job: its snapshot only
        logs = await stub.GetJobLogs(orchestrator_pb2.GetJobLogsRequest(job_id=job.job_id))
        assert all(line.HasField("log") for line in logs.lines)
        for bad in (
            orchestrator_pb2.WatchJobsRequest(after_sequence=-1),
            orchestrator_pb2.WatchJobsRequest(job_ids=[""]),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                async for _ in stub.WatchJobs(bad):
                    pass
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.GetJobLogs(orchestrator_pb2.GetJobLogsRequest(job_id="nope"))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    steps = [e for e in seen if e.HasField("step")]
    assert steps and all(a.sequence < b.sequence for a, b in itertools.pairwise(seen[2:]))


async def test_settings_read_service_addresses_from_the_registry(monkeypatch) -> None:
    monkeypatch.setenv("ORCH_SCENE_ADDR", "10.0.0.1:1,10.0.0.2:1")
    monkeypatch.setenv("ORCH_AUDIO_CONCURRENCY", "5")
    settings = OrchestratorSettings(tracking_addr="t:1")
    assert settings.address_of("scene") == "10.0.0.1:1,10.0.0.2:1"
    assert settings.link("audio").concurrency == 5
    assert settings.with_addresses({"ingest": "i:1"}).address_of("ingest") == "i:1"
    assert set(settings.services) == {"ingest", "scene", "audio", "tracking"}


async def test_a_submit_key_makes_submission_idempotent_across_a_restart(
    fast_settings, clip
) -> None:
    """What the download monitor relies on: submitting again after a lost reply or a crash
    (the orchestrator restarted in between) returns the first job, never a second one."""
    request = orchestrator_pb2.SubmitJobRequest(
        inputs=[common_pb2.MediaRef(path=clip("k.mp4"))], submit_key="download:csv_0000abcd"
    )
    async with (
        running_orchestrator(fast_settings) as (_orch, server),
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        first = await orchestrator_pb2_grpc.OrchestratorServiceStub(channel).SubmitJob(request)
    async with (
        running_orchestrator(fast_settings) as (orch, server),
        grpc.aio.insecure_channel(server.address) as channel,
    ):
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        again = await stub.SubmitJob(request)
        assert again.job_id == first.job_id
        assert [job.job_id for job in await orch.list_jobs(0, ())] == [first.job_id]
        # Without a key, or with another one, the same inputs make new jobs.
        assert await stub.SubmitJob(orchestrator_pb2.SubmitJobRequest(inputs=request.inputs))
        other = orchestrator_pb2.SubmitJobRequest(inputs=request.inputs, submit_key="other")
        assert (await stub.SubmitJob(other)).job_id != first.job_id
        for bad, message in (
            (
                orchestrator_pb2.SubmitJobRequest(
                    inputs=[common_pb2.MediaRef(path=clip("l.mp4"))],
                    submit_key="download:csv_0000abcd",
                ),
                "with other inputs",
            ),
            (
                orchestrator_pb2.SubmitJobRequest(inputs=request.inputs, submit_key="x" * 201),
                "at most 200 printable",
            ),
            (
                orchestrator_pb2.SubmitJobRequest(inputs=request.inputs, submit_key="a\nb"),
                "at most 200 printable",
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.SubmitJob(bad)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in (refused.value.details() or "")
        assert len(await orch.list_jobs(0, ())) == 3
