"""Each process's CPU and memory while a real job runs: the figures behind the Kubernetes
requests and limits (deploy/k8s/base).

``python -m benchmarks.profile [--video PATH]`` starts the local stack (every service its own
process, as in a pod), waits until the models are loaded, then runs one job (cache off) with an
in-process orchestrator and samples every process with psutil every 0.2 s. Each service counts with
its whole process tree (tracking's workers, ffmpeg children), as a container's cgroup would. One
JSON line:

- ``idle_rss_mb``: resident memory once ready, before the job (what a replica costs at rest);
- ``peak_rss_mb``: the highest total resident memory during the job (the memory limit's floor);
- ``cpu_cores_mean`` / ``cpu_cores_p95``: cores used while the process was busy (samples above
  0.05 cores), mean and 95th percentile; ``busy_s``: how long it was busy;
- ``wall_s``: the job's time, ``video_s``: the video's duration, ``cores``: CPUs on this machine.

The orchestrator is measured as this benchmark process itself (it hosts the orchestrator, so
its RSS includes the benchmark's few MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from orchestrator.cli import import_inputs
from orchestrator.config import SERVICES, OrchestratorSettings
from orchestrator.server import open_orchestrator
from orchestrator.stack import LocalStack
from protos.videoanalysis.v1 import orchestrator_pb2
from services.common.ffmpeg import probe

DEFAULT_VIDEO = Path(__file__).resolve().parent.parent.parent / "shared/testdata/video"
DEFAULT_VIDEO = DEFAULT_VIDEO / "short_hamilton_clip.mp4"
INTERVAL_S = 0.2
BUSY_CORES = 0.05


def _tree(root: psutil.Process, skip: set[int]) -> list[psutil.Process]:
    """``root`` and its descendants, without the subtrees rooted at a pid in ``skip``."""
    tree = [root]
    try:
        for child in root.children():
            if child.pid not in skip:
                tree += _tree(child, skip)
    except psutil.NoSuchProcess:
        pass
    return tree


class Sampler:
    """Samples the CPU time and RSS of process trees from a thread."""

    def __init__(self, roots: dict[str, psutil.Process]) -> None:
        self.roots = roots
        # The benchmark process hosts the orchestrator and is the parent of the services: its
        # tree stops at them.
        self._skip = {root.pid for root in roots.values()}
        self.rss: dict[str, list[float]] = {name: [] for name in roots}
        self.cores: dict[str, list[float]] = {name: [] for name in roots}
        self._cpu: dict[str, dict[int, float]] = {name: {} for name in roots}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def snapshot(self, name: str) -> tuple[float, float]:
        """(RSS in MB, CPU seconds so far) of one tree; remembers each process's CPU time, so
        a child that exited keeps counting."""
        rss = 0.0
        root = self.roots[name]
        tree = _tree(root, self._skip - {root.pid})
        alive = {p.pid for p in tree}
        # A child that exited is counted in its parent's children_* times once reaped: forget
        # its own figure then, or it would count twice.
        for pid in list(self._cpu[name]):
            if pid not in alive:
                del self._cpu[name][pid]
        for process in tree:
            try:
                with process.oneshot():
                    rss += process.memory_info().rss
                    times = process.cpu_times()
                    self._cpu[name][process.pid] = (
                        times.user + times.system + times.children_user + times.children_system
                    )
            except psutil.NoSuchProcess:
                continue
        return rss / 2**20, sum(self._cpu[name].values())

    def _run(self) -> None:
        last = {name: self.snapshot(name)[1] for name in self.roots}
        last_t = time.perf_counter()
        while not self._stop.wait(INTERVAL_S):
            now = time.perf_counter()
            for name in self.roots:
                rss, cpu = self.snapshot(name)
                self.rss[name].append(rss)
                self.cores[name].append(max(0.0, cpu - last[name]) / (now - last_t))
                last[name] = cpu
            last_t = now

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(video: Path, media_root: Path) -> dict[str, object]:
    stack = LocalStack(media_root, media_root / "logs")
    addresses = await stack.start(list(SERVICES))
    settings = OrchestratorSettings(
        media_root=media_root,
        metrics_port=-1,
        **{f"{name}_addr": address for name, address in addresses.items()},
    )
    roots = {name: psutil.Process(s.process.pid) for name, s in stack.services.items()}
    roots["orchestrator"] = psutil.Process(os.getpid())
    try:
        async with open_orchestrator(settings) as orchestrator:
            await orchestrator.start()
            sampler = Sampler(roots)
            idle = {name: round(sampler.snapshot(name)[0]) for name in roots}
            (relative,) = import_inputs([str(video)], media_root)
            started = time.perf_counter()
            with sampler:
                job_id = await orchestrator.submit(
                    [relative], orchestrator_pb2.JobOptions(no_cache=True), label="profile"
                )
                await orchestrator.wait(job_id)
            wall_s = time.perf_counter() - started
            job = await orchestrator.get_job_row(job_id)
            assert job is not None
            if job.error:
                raise RuntimeError(f"the job failed: {job.error}")
    finally:
        await stack.stop()
    processes = {}
    for name in roots:
        busy = [c for c in sampler.cores[name] if c > BUSY_CORES]
        processes[name] = {
            "idle_rss_mb": idle[name],
            "peak_rss_mb": round(max(sampler.rss[name], default=0.0)),
            "cpu_cores_mean": round(sum(busy) / len(busy), 2) if busy else 0.0,
            "cpu_cores_p95": round(_percentile(busy, 0.95), 2),
            "busy_s": round(len(busy) * INTERVAL_S, 1),
        }
    return {
        "benchmark": "profile",
        "video": video.name,
        "video_s": round(probe(video).duration_s, 1),
        "wall_s": round(wall_s, 1),
        "cores": psutil.cpu_count(),
        "processes": processes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO)
    args = parser.parse_args()
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    with tempfile.TemporaryDirectory(prefix="profile-") as folder:
        result = asyncio.run(run(args.video.resolve(), Path(folder)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
