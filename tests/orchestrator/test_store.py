"""The job database: schema migrations, persistence across reopen, crash recovery."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from orchestrator import store as st


async def _job(db: st.JobStore) -> None:
    await db.create_job("j1", ["a/one.mp4", "b"], {"no_cache": True}, "label", "output")
    await db.add_videos(
        "j1",
        [
            st.VideoRow(
                idx=i,
                input_idx=0,
                path=f"a/{n}.mp4",
                project="a",
                stem=n,
                output_dir="output/a",
                work_dir=f".work/j1/{i}-{n}",
            )
            for i, n in enumerate(["one", "two"])
        ],
    )


async def test_schema_is_created_and_migrated_once(tmp_path: Path) -> None:
    path = tmp_path / "state" / "jobs.sqlite3"
    db = await st.JobStore.open(path)
    assert await db.schema_version() == st.SCHEMA_VERSION
    await db.close()
    db = await st.JobStore.open(path)  # a second open must not re-run the migrations
    assert await db.schema_version() == st.SCHEMA_VERSION
    await db.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version={st.SCHEMA_VERSION + 1}")
    try:
        await st.JobStore.open(path)
    except RuntimeError as exc:
        assert "newer" in str(exc)
    else:
        raise AssertionError("opened a database of a newer schema")


async def test_jobs_videos_and_steps_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    db = await st.JobStore.open(path)
    await _job(db)
    await db.set_job_state("j1", st.RUNNING)
    await db.update_step("j1", 0, "scene", state=st.RUNNING, add_attempt=True, started=True)
    await db.update_step(
        "j1", 0, "scene", state=st.SUCCEEDED, result={"file": "x.pb"}, finished=True
    )
    await db.update_step("j1", 1, "audio", state=st.RUNNING, add_attempt=True, started=True)
    await db.add_job_error("j1", "not_found", "gone", "b")
    await db.add_job_error("j1", "not_found", "gone", "b")
    await db.close()

    db = await st.JobStore.open(path)
    job = await db.get_job("j1")
    assert job is not None
    assert (job.state, job.label, job.options, job.output_dir) == (
        st.RUNNING,
        "label",
        {"no_cache": True},
        "output",
    )
    assert [i.path for i in job.inputs] == ["a/one.mp4", "b"]
    assert job.errors == [{"reason": "not_found", "message": "gone", "subject": "b"}]
    assert [v.stem for v in job.videos] == ["one", "two"]
    assert list(job.videos[0].steps) == list(st.STEP_NAMES)
    scene = job.videos[0].steps["scene"]
    assert (scene.state, scene.attempts, scene.result) == (st.SUCCEEDED, 1, {"file": "x.pb"})
    assert scene.started_at is not None and scene.finished_at >= scene.started_at
    assert await db.unfinished_jobs() == ["j1"]

    # A crash left audio RUNNING: it goes back to PENDING, the finished step stays finished.
    await db.reset_interrupted("j1")
    job = await db.get_job("j1")
    assert job is not None
    assert job.videos[1].steps["audio"].state == st.PENDING
    assert job.videos[1].steps["audio"].attempts == 1
    assert job.videos[0].steps["scene"].state == st.SUCCEEDED
    await db.close()


async def test_adding_the_same_videos_again_keeps_their_progress(tmp_path: Path) -> None:
    db = await st.JobStore.open(tmp_path / "jobs.sqlite3")
    await _job(db)
    await db.update_step("j1", 0, "normalize", state=st.SUCCEEDED, result={"path": "n.mp4"})
    await _job_videos_again(db)
    job = await db.get_job("j1")
    assert job is not None and len(job.videos) == 2
    assert job.videos[0].steps["normalize"].result == {"path": "n.mp4"}
    await db.close()


async def _job_videos_again(db: st.JobStore) -> None:
    await db.add_videos(
        "j1",
        [
            st.VideoRow(
                idx=0,
                input_idx=0,
                path="a/one.mp4",
                project="a",
                stem="one",
                output_dir="output/a",
                work_dir="w",
            )
        ],
    )


async def test_cancel_marks_only_unfinished_work(tmp_path: Path) -> None:
    db = await st.JobStore.open(tmp_path / "jobs.sqlite3")
    await _job(db)
    await db.update_step("j1", 0, "normalize", state=st.SUCCEEDED)
    await db.update_step("j1", 0, "scene", state=st.RUNNING, started=True)
    await db.cancel_unfinished("j1", "cancelled")
    job = await db.get_job("j1")
    assert job is not None
    steps = job.videos[0].steps
    assert steps["normalize"].state == st.SUCCEEDED
    assert (steps["scene"].state, steps["scene"].error) == (st.CANCELLED, "cancelled")
    assert steps["finalize"].state == st.CANCELLED
    assert {v.state for v in job.videos} == {st.CANCELLED}
    await db.set_job_state("j1", st.CANCELLED, finished=True)
    assert await db.unfinished_jobs() == []
    listed = await db.list_jobs(10, [st.CANCELLED])
    assert [j.job_id for j in listed] == ["j1"] and listed[0].finished_at is not None
    assert await db.list_jobs(10, [st.COMPLETED]) == []
    await db.close()


async def test_listing_many_jobs_returns_each_job_whole(tmp_path: Path) -> None:
    """More jobs than one query may name: every job comes back whole, newest first."""
    db = await st.JobStore.open(tmp_path / "jobs.sqlite3")
    count = 620
    for number in range(count):
        job_id = f"job{number:04d}"
        await db.create_job(job_id, [f"{job_id}/in.mp4"], {}, job_id, "output")
        video = st.VideoRow(
            idx=0, input_idx=0, path=f"{job_id}/v.mp4", project=job_id, stem="v",
            output_dir=f"output/{job_id}", work_dir=f".work/{job_id}/0-v",
        )  # fmt: skip
        await db.add_videos(job_id, [video])
        await db.update_step(job_id, 0, "scene", state=st.SUCCEEDED if number % 2 else st.FAILED)
    listed = await db.list_jobs(count)
    assert len(listed) == count
    newest_first = sorted(listed, key=lambda job: (-job.created_at, job.job_id))
    assert [job.job_id for job in listed] == [job.job_id for job in newest_first]
    for job in listed:
        number = int(job.job_id[3:])
        assert [i.path for i in job.inputs] == [f"{job.job_id}/in.mp4"]
        assert [v.project for v in job.videos] == [job.job_id]
        assert job.videos[0].steps["scene"].state == (st.SUCCEEDED if number % 2 else st.FAILED)
        assert list(job.videos[0].steps) == list(st.STEP_NAMES)
    assert await db.get_job("no-such-job") is None
    await db.close()
