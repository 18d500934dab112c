"""The job store's event log under a steady load: is it bounded by its retention?

Synthetic jobs (a new one every few seconds, each with videos and steps) write events through the
job store exactly as the recorder does: a step's progress (coalesced), its state changes with the
row update in the same transaction, log lines (bounded per job), job states. The orchestrator's
pruning runs on its interval. Reported: events written and the rate reached, write latency
(p50/p99/max of one transaction), the largest number of rows seen against the retention bound,
and the database size (with its WAL).

    python -m benchmarks.events --rate 1000 --seconds 600 --retention-rows 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from orchestrator import rows
from orchestrator.events import job_event
from orchestrator.rows import VideoRow
from orchestrator.store import JobStore
from orchestrator.transaction import progress_key
from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2

_STEPS = ("normalize", "scene", "audio", "tracking")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


async def _new_job(store: JobStore, number: int) -> str:
    job_id = f"bench{number:06d}"
    await store.create_job(job_id, [f"in/{number}.mp4"], {}, "bench", "output")
    videos = [
        VideoRow(
            idx=i,
            input_idx=0,
            path=f"in/{number}-{i}.mp4",
            project="p",
            stem=f"v{i}",
            output_dir="output/p",
            work_dir=f".work/{job_id}/{i}",
        )
        for i in range(2)
    ]
    await store.add_videos(job_id, videos)
    return job_id


async def _one_event(store: JobStore, job_id: str, rng: random.Random, done: int) -> None:
    video, step = rng.randrange(2), rng.choice(_STEPS)
    path = f"in/{job_id}-{video}.mp4"
    roll = rng.random()
    async with store.transaction() as tx:
        if roll < 0.7:  # progress of a running step (replaces the previous one)
            progress = common_pb2.Progress(done=done, total=10_000, unit="frames")
            step_message = orchestrator_pb2.Step(
                name=step, state=orchestrator_pb2.STEP_STATE_RUNNING, progress=progress
            )
            event = job_event(
                job_id, step=orchestrator_pb2.StepEvent(video=path, step=step_message)
            )
            await tx.emit(event, progress_of=progress_key(path, step))
        elif roll < 0.9:
            line = orchestrator_pb2.LogLine(severity="INFO", message=f"line {done}", video=path)
            await tx.emit(job_event(job_id, log=line))
        else:  # a state change, stored with its event
            await tx.update_step(job_id, video, step, state=rows.RUNNING, add_attempt=True)
            step_message = orchestrator_pb2.Step(
                name=step, state=orchestrator_pb2.STEP_STATE_RUNNING
            )
            await tx.emit(
                job_event(job_id, step=orchestrator_pb2.StepEvent(video=path, step=step_message))
            )


async def run(args: argparse.Namespace) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="events-bench-"))
    database = folder / "jobs.sqlite3"
    store = await JobStore.open(database, log_lines_per_job=args.log_lines)
    rng = random.Random(7)
    latencies: list[float] = []
    max_rows = 0
    pruned = 0
    written = 0
    started = time.perf_counter()
    next_prune = started + args.prune_interval
    job_id = await _new_job(store, 0)
    jobs = 1
    try:
        while (now := time.perf_counter()) - started < args.seconds:
            due = int((now - started) * args.rate)
            while written < due:
                begin = time.perf_counter()
                await _one_event(store, job_id, rng, written)
                latencies.append(time.perf_counter() - begin)
                written += 1
                if written % args.events_per_job == 0:
                    job_id = await _new_job(store, jobs)
                    jobs += 1
            if time.perf_counter() >= next_prune:
                max_rows = max(max_rows, (await store.event_stats()).rows)
                pruned += await store.prune_events(
                    max_rows=args.retention_rows, max_age_s=args.retention_s
                )
                next_prune += args.prune_interval
            await asyncio.sleep(0.002)
        elapsed = time.perf_counter() - started
        stats = await store.event_stats()
        max_rows = max(max_rows, stats.rows)
    finally:
        await store.close()
    size = await asyncio.to_thread(
        lambda: sum(p.stat().st_size for p in folder.glob("jobs.sqlite3*"))
    )
    return {
        "benchmark": "event_log",
        "seconds": round(elapsed, 1),
        "events_written": written,
        "events_per_s": round(written / elapsed, 1),
        "target_events_per_s": args.rate,
        "jobs": jobs,
        "write_latency_ms": {
            "p50": round(_percentile(latencies, 0.5) * 1000, 3),
            "p99": round(_percentile(latencies, 0.99) * 1000, 3),
            "max": round(max(latencies, default=0) * 1000, 3),
        },
        "retention_rows": args.retention_rows,
        "rows_max_seen": max_rows,
        "rows_at_end": stats.rows,
        "rows_max_vs_retention": round(max_rows / args.retention_rows, 3),
        "pruned": pruned,
        "database_bytes": size,
        "database_mib": round(size / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--retention-rows", type=int, default=50_000)
    parser.add_argument("--retention-s", type=float, default=30 * 86_400)
    parser.add_argument("--log-lines", type=int, default=2_000, help="per job")
    parser.add_argument("--prune-interval", type=float, default=10.0)
    parser.add_argument("--events-per-job", type=int, default=5_000)
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
