"""End-to-end job time against the slowest stage.

``python -m benchmarks.e2e --video PATH [--isolated]`` starts the local stack (services as
processes on loopback ports, models loaded before timing starts), runs one job on the video with
the cache off, and prints one JSON line:

- ``wall_s``: submit → job finished (hashing, probing, normalising, the three analyses, fusion,
  reductions, archive and outputs);
- ``stages_s``: each step's own time inside that job (the analyses run concurrently, so on a
  small machine they slow each other down);
- ``wall_over_slowest_stage``: ``wall_s`` / the slowest stage (1.0 = everything else is hidden
  behind it; the sum of the stages over the slowest is what running them one after the other
  would cost);
- ``real_time_factor``: ``wall_s`` / video duration (below 1 is faster than real time);
- with ``--isolated``: each analysis run alone on the idle stack, and ``sequential_s``, their sum
  plus the rest of the job (what a one-stage-after-the-other pipeline would take).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from orchestrator.cli import import_inputs
from orchestrator.config import SERVICES, OrchestratorSettings
from orchestrator.server import open_orchestrator
from orchestrator.stack import LocalStack
from orchestrator.store import STEP_NAMES
from protos.videoanalysis.v1 import (
    audio_pb2,
    common_pb2,
    orchestrator_pb2,
    scene_pb2,
    tracking_pb2,
)
from services.common.ffmpeg import probe

ANALYSES = ("scene", "audio", "tracking")


async def run(video: Path, media_root: Path, isolated: bool) -> dict[str, object]:
    stack = LocalStack(media_root, media_root / "logs")
    started = time.perf_counter()
    addresses = await stack.start(list(SERVICES))
    startup_s = time.perf_counter() - started
    settings = OrchestratorSettings(
        media_root=media_root,
        metrics_port=-1,
        keep_work=isolated,
        **{f"{name}_addr": address for name, address in addresses.items()},
    )
    try:
        async with open_orchestrator(settings) as orchestrator:
            (relative,) = import_inputs([str(video)], media_root)
            started = time.perf_counter()
            job_id = await orchestrator.submit(
                [relative], orchestrator_pb2.JobOptions(no_cache=True), label="benchmark"
            )
            await orchestrator.wait(job_id)
            wall_s = time.perf_counter() - started
            job = await orchestrator.get_job_row(job_id)
            assert job is not None
            (row,) = job.videos
            stages = {
                name: round(step.finished_at - step.started_at, 3)
                for name, step in row.steps.items()
                if step.started_at and step.finished_at and name in STEP_NAMES
            }
            slowest = max(stages, key=lambda name: stages[name] if name in ANALYSES else 0)
            duration = probe(media_root / relative).duration_s
            result: dict[str, object] = {
                "video": video.name,
                "duration_s": round(duration, 3),
                "job_state": job.state,
                "wall_s": round(wall_s, 3),
                "stages_s": stages,
                "slowest_stage": slowest,
                "wall_over_slowest_stage": round(wall_s / stages[slowest], 3),
                "sum_of_analyses_over_slowest": round(
                    sum(stages[n] for n in ANALYSES) / stages[slowest], 3
                ),
                "real_time_factor": round(wall_s / duration, 3) if duration else None,
                "fusion": {
                    key: row.steps["fuse"].result.get(key)
                    for key in (
                        "faces",
                        "face_frames",
                        "speaking_face_frames",
                        "legacy_speaking_face_frames",
                        "speakers_on_screen",
                    )
                },
                "speakers": row.steps["audio"].result.get("speakers"),
                "shots": row.steps["scene"].result.get("scenes"),
                "stack_startup_s": round(startup_s, 1),
                "cpus": os.cpu_count(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
            }
            if isolated:
                normalized = row.steps["normalize"].result.get("path") or relative
                alone = await _isolated(orchestrator, relative, str(normalized))
                result["isolated_s"] = alone
                rest = wall_s - max(stages[n] for n in ANALYSES) - stages.get("normalize", 0)
                result["sequential_s"] = round(
                    stages.get("normalize", 0) + sum(alone.values()) + max(rest, 0), 3
                )
            return result
    finally:
        await stack.stop()


async def _isolated(orchestrator: object, source: str, normalized: str) -> dict[str, float]:
    """Each analysis alone on the idle stack (same requests as the job)."""
    clients = orchestrator.clients  # type: ignore[attr-defined]
    deadline = 3600.0
    times: dict[str, float] = {}
    started = time.perf_counter()
    await clients.scene.detect(
        scene_pb2.DetectScenesRequest(media=common_pb2.MediaRef(path=source)), deadline_s=deadline
    )
    times["scene"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    await clients.audio.diarize(
        audio_pb2.DiarizeRequest(media=common_pb2.MediaRef(path=source)), deadline_s=deadline
    )
    times["audio"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    await clients.tracking.track(
        tracking_pb2.TrackRequest(media=common_pb2.MediaRef(path=normalized)), deadline_s=deadline
    )
    times["tracking"] = round(time.perf_counter() - started, 3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", required=True, type=Path)
    parser.add_argument("--media-root", type=Path, help="default: a temporary folder")
    parser.add_argument(
        "--isolated",
        action="store_true",
        help="also time each analysis alone (sequential baseline)",
    )
    args = parser.parse_args()
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    if not args.video.is_file():
        sys.exit(f"no such video: {args.video}")
    with tempfile.TemporaryDirectory(prefix="e2e-") as temp:
        media_root = (args.media_root or Path(temp)).resolve()
        media_root.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run(args.video.resolve(), media_root, args.isolated))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
