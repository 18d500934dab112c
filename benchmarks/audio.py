"""Diarization quality and speed of the audio service against an RTTM reference.

``python -m benchmarks.audio --audio conv.wav --rttm conv.rttm [--engine embedded]``

Starts the real service (``python -m services.audio``) on a loopback port, waits for readiness,
sends one ``Diarize`` over gRPC and scores the answer with pyannote.metrics
(DiarizationErrorRate, collar 0.25 s, overlapped speech scored). In the same invocation it runs
the naive baseline the embedded engine replaced (Silero VAD segments, fixed 1.5 s windows,
Resemblyzer embeddings, average-linkage clustering with a distance threshold) and scores it the
same way. Prints one JSON line; ``rtf`` is the median wall time of a call (decode included)
over the audio duration, so compare it only with figures from the same run on the same
machine; ``cpu_rtf`` (CPU seconds per audio second) does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")

import grpc
import numpy as np

from orchestrator.stack import LocalStack
from protos.videoanalysis.v1 import audio_pb2, audio_pb2_grpc, common_pb2

ENGINES = {
    "embedded": audio_pb2.DiarizeRequest.ENGINE_EMBEDDED,
    "pyannote": audio_pb2.DiarizeRequest.ENGINE_PYANNOTE,
}


def score(
    segments: list[tuple[float, float, str]], rttm: Path, duration: float
) -> dict[str, float]:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference, hypothesis = Annotation(), Annotation()
    for line in rttm.read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == "SPEAKER":
            start, length = float(fields[3]), float(fields[4])
            reference[Segment(start, start + length)] = fields[7]
    for start, end, speaker in segments:
        hypothesis[Segment(start, end)] = speaker
    metric = DiarizationErrorRate(collar=0.25, skip_overlap=False)
    detail = metric(reference, hypothesis, uem=Segment(0, duration), detailed=True)
    total = detail["total"] or 1.0
    return {
        "der": round(detail["diarization error rate"], 4),
        "missed": round(detail["missed detection"] / total, 4),
        "false_alarm": round(detail["false alarm"] / total, 4),
        "confusion": round(detail["confusion"] / total, 4),
        "speakers": len(hypothesis.labels()),
        "reference_speakers": len(reference.labels()),
    }


# --------------------------------------------------------------------------- the service


async def run_service(
    audio: Path, engine: str, extra_env: dict[str, str], repeat: int
) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as media:
        shutil.copy2(audio, Path(media) / audio.name)
        stack = LocalStack(Path(media), Path(media) / "logs")
        started = time.perf_counter()
        try:
            address = (await stack.start(["audio"], timeout_s=300, env=extra_env))["audio"]
            ready_s = time.perf_counter() - started
            pid = stack.services["audio"].process.pid
            async with grpc.aio.insecure_channel(address) as channel:
                stub = audio_pb2_grpc.AudioServiceStub(channel)
                request = audio_pb2.DiarizeRequest(
                    media=common_pb2.MediaRef(path=audio.name), engine=ENGINES[engine]
                )
                walls, cpus = [], []
                result = None
                for _ in range(repeat):
                    cpu_before = _process_cpu_s(pid)
                    begin = time.perf_counter()
                    async for reply in stub.Diarize(request):
                        if reply.HasField("result"):
                            result = reply.result
                    walls.append(time.perf_counter() - begin)
                    cpus.append(_process_cpu_s(pid) - cpu_before)
        finally:
            await stack.stop(30)
    assert result is not None
    segments = [(s.start_s, s.end_s, s.speaker) for s in result.segments]
    return {
        "segments": segments,
        "duration_s": result.duration_s,
        "walls": walls,
        "cpus": cpus,
        "ready_s": ready_s,
    }


# --------------------------------------------------------------------------- the naive baseline


class NaiveBaseline:
    """Silero VAD segments -> fixed 1.5 s windows -> Resemblyzer -> average-linkage clustering."""

    def __init__(
        self, window_s: float = 1.5, distance_threshold: float = 0.3, threads: int = 1
    ) -> None:
        import torch
        from resemblyzer import VoiceEncoder
        from silero_vad import load_silero_vad

        if threads:
            torch.set_num_threads(threads)
        self.window_s = window_s
        self.distance_threshold = distance_threshold
        self.vad = load_silero_vad()
        self.encoder = VoiceEncoder("cpu", verbose=False)
        self.run(np.zeros(16000 * 3, dtype=np.float32) + 0.01)  # warm-up

    def run(self, waveform: np.ndarray) -> list[tuple[float, float, str]]:
        import torch
        from silero_vad import get_speech_timestamps
        from sklearn.cluster import AgglomerativeClustering

        speech = get_speech_timestamps(torch.from_numpy(waveform), self.vad, sampling_rate=16000)
        step = int(self.window_s * 16000)
        windows: list[tuple[int, int]] = []
        for region in speech:
            for start in range(region["start"], region["end"], step):
                end = min(start + step, region["end"])
                if end - start >= 8000 or not windows:
                    windows.append((start, end))
                else:
                    windows[-1] = (windows[-1][0], end)
        if not windows:
            return []
        embeddings = np.stack([self.encoder.embed_utterance(waveform[a:b]) for a, b in windows])
        if len(windows) == 1:
            labels = np.zeros(1, dtype=int)
        else:
            labels = AgglomerativeClustering(
                n_clusters=None,
                metric="cosine",
                linkage="average",
                distance_threshold=self.distance_threshold,
            ).fit_predict(embeddings)
        return [
            (a / 16000, b / 16000, f"S{label}")
            for (a, b), label in zip(windows, labels, strict=True)
        ]


def run_baseline(audio: Path, threads: int, repeat: int) -> dict[str, object]:
    from services.common.ffmpeg import read_audio

    baseline = NaiveBaseline(threads=threads)
    walls, cpus = [], []
    for _ in range(repeat):
        cpu_before = _own_cpu_s()
        begin = time.perf_counter()
        waveform = read_audio(audio)
        segments = baseline.run(waveform)
        walls.append(time.perf_counter() - begin)
        cpus.append(_own_cpu_s() - cpu_before)
    duration = len(waveform) / 16000
    return {"segments": segments, "duration_s": duration, "walls": walls, "cpus": cpus}


# --------------------------------------------------------------------------- main


def _speed(walls: list[float], cpus: list[float], duration: float) -> dict[str, float]:
    """Median real-time factor over the repeats (and the first call's, which pays cold caches).

    ``cpu_rtf`` is CPU time (user + system, ffmpeg children included) over audio duration: it
    does not depend on what else the machine runs, unlike the wall-clock ``rtf``.
    """
    return {
        "rtf": round(float(np.median(walls)) / duration, 4),
        "rtf_first": round(walls[0] / duration, 4),
        "cpu_rtf": round(float(np.median(cpus)) / duration, 4),
        "wall_s": round(float(np.median(walls)), 2),
    }


def _process_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its reaped children (``/proc/<pid>/stat`` utime..cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, required=True)
    parser.add_argument("--rttm", type=Path, required=True)
    parser.add_argument("--engine", choices=sorted(ENGINES), default="embedded")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and BLAS threads (service and baseline)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="calls per system; RTF is the median")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)

    service = asyncio.run(
        run_service(
            args.audio.resolve(), args.engine, {"AUDIO_THREADS": str(args.threads)}, args.repeat
        )
    )
    duration = float(service["duration_s"])  # type: ignore[arg-type]
    report: dict[str, object] = {
        "audio": args.audio.name,
        "duration_s": round(duration, 2),
        "engine": args.engine,
        "threads": args.threads,
        "repeat": args.repeat,
        "service": {
            **score(service["segments"], args.rttm, duration),  # type: ignore[arg-type]
            **_speed(service["walls"], service["cpus"], duration),  # type: ignore[arg-type]
            "startup_s": round(float(service["ready_s"]), 2),  # type: ignore[arg-type]
        },
    }
    if not args.no_baseline:
        baseline = run_baseline(args.audio.resolve(), args.threads, args.repeat)
        report["baseline"] = {
            **score(baseline["segments"], args.rttm, duration),  # type: ignore[arg-type]
            **_speed(baseline["walls"], baseline["cpus"], duration),  # type: ignore[arg-type]
        }
    report["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
