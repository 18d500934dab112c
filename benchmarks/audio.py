"""Diarization quality and speed of the audio service against RTTM references.

``python -m benchmarks.audio --audio conv.wav --rttm conv.rttm [--engine embedded]``
``python -m benchmarks.audio --set DEVSET_FOLDER_OR_INDEX [--half tuning]``

Starts the real service (``python -m services.audio``) on a loopback port, waits for readiness,
sends one ``Diarize`` per file over gRPC and scores the answer with pyannote.metrics
(DiarizationErrorRate, collar 0.25 s, overlapped speech scored). Right after each service call
it runs the naive baseline the embedded engine replaced (Silero VAD segments, fixed 1.5 s
windows, Resemblyzer embeddings, average-linkage clustering with a distance threshold) on the
same file and scores it the same way. Prints one JSON line per file (DER and its parts,
speakers found and true, RTF, the baseline's DER, speakers and RTF), then one closing line
with a summary per half of the set (``tuning``/``checking`` for a composed set, see
``benchmarks.devsets.conversations``): mean and worst DER, speaker-count accuracy, files at or
below the baseline. ``rtf`` is the median wall time of a call (decode included) over the audio
duration, so compare it only with figures from the same run on the same machine; ``cpu_rtf``
(CPU seconds per audio second) does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Case:
    """One file of a set: its audio, its reference and the half of the set it belongs to."""

    name: str
    audio: Path
    rttm: Path
    half: str


def load_set(path: Path) -> list[Case]:
    """The files of a set: a folder holding ``index.json``, or the index itself.

    An index is a JSON list of files or an object with ``files`` (as
    ``benchmarks.devsets.conversations`` writes it); each file has a ``name`` and optionally
    ``wav``, ``rttm`` (default ``<name>.wav`` / ``<name>.rttm`` next to the index) and ``half``.
    """
    index = path / "index.json" if path.is_dir() else path
    body = json.loads(index.read_text())
    files = body["files"] if isinstance(body, dict) else body
    return [
        Case(
            name=item["name"],
            audio=index.parent / item.get("wav", f"{item['name']}.wav"),
            rttm=index.parent / item.get("rttm", f"{item['name']}.rttm"),
            half=item.get("half", "all"),
        )
        for item in files
    ]


async def run_cases(
    cases: list[Case],
    engine: str,
    extra_env: dict[str, str],
    repeat: int,
    baseline: NaiveBaseline | None,
) -> tuple[float, list[dict[str, object]]]:
    """Startup seconds, and per case the service's and (same moment) the baseline's answer.

    The service runs as its own process; the baseline runs in this one right after each
    service call, so both see the same load on a shared machine.
    """
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as media:
        for i, case in enumerate(cases):
            shutil.copy2(case.audio, Path(media) / f"{i:04d}{case.audio.suffix}")
        stack = LocalStack(Path(media), Path(media) / "logs")
        started = time.perf_counter()
        outcomes = []
        try:
            address = (await stack.start(["audio"], timeout_s=300, env=extra_env))["audio"]
            ready_s = time.perf_counter() - started
            pid = stack.services["audio"].process.pid
            async with grpc.aio.insecure_channel(address) as channel:
                stub = audio_pb2_grpc.AudioServiceStub(channel)
                for i, case in enumerate(cases):
                    request = audio_pb2.DiarizeRequest(
                        media=common_pb2.MediaRef(path=f"{i:04d}{case.audio.suffix}"),
                        engine=ENGINES[engine],
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
                    assert result is not None
                    outcome: dict[str, object] = {
                        "segments": [(s.start_s, s.end_s, s.speaker) for s in result.segments],
                        "duration_s": result.duration_s,
                        "walls": walls,
                        "cpus": cpus,
                    }
                    if baseline is not None:
                        outcome["baseline"] = run_baseline(baseline, case.audio, repeat)
                    outcomes.append(outcome)
        finally:
            await stack.stop(30)
    return ready_s, outcomes


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


def run_baseline(baseline: NaiveBaseline, audio: Path, repeat: int) -> dict[str, object]:
    from services.common.ffmpeg import read_audio

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


def _file_report(case: Case, outcome: dict[str, object]) -> dict[str, object]:
    duration = float(outcome["duration_s"])  # type: ignore[arg-type]
    service = score(outcome["segments"], case.rttm, duration)  # type: ignore[arg-type]
    report: dict[str, object] = {
        "file": case.name,
        "half": case.half,
        "duration_s": round(duration, 2),
        **service,
        **_speed(outcome["walls"], outcome["cpus"], duration),  # type: ignore[arg-type]
    }
    if "baseline" in outcome:
        naive = outcome["baseline"]
        naive_score = score(naive["segments"], case.rttm, duration)  # type: ignore[index]
        naive_speed = _speed(naive["walls"], naive["cpus"], duration)  # type: ignore[index]
        report["naive_der"] = naive_score["der"]
        report["naive_speakers"] = naive_score["speakers"]
        report["naive_rtf"] = naive_speed["rtf"]
    return report


def summarise(reports: list[dict[str, object]]) -> dict[str, object]:
    """Mean and worst DER, speaker-count accuracy and the comparison with the baseline."""
    ders = [float(r["der"]) for r in reports]  # type: ignore[arg-type]
    worst = int(np.argmax(ders))
    summary: dict[str, object] = {
        "files": len(reports),
        "mean_der": round(float(np.mean(ders)), 4),
        "worst_der": round(ders[worst], 4),
        "worst_file": reports[worst]["file"],
        "files_above_0.15": sum(d > 0.15 for d in ders),
        "count_right": sum(r["speakers"] == r["reference_speakers"] for r in reports),
        "count_accuracy": round(
            float(np.mean([r["speakers"] == r["reference_speakers"] for r in reports])), 3
        ),
        "median_rtf": round(float(np.median([r["rtf"] for r in reports])), 4),
        "max_rtf": round(float(np.max([r["rtf"] for r in reports])), 4),
    }
    if all("naive_der" in r for r in reports):
        naive = [float(r["naive_der"]) for r in reports]  # type: ignore[arg-type]
        summary["naive_mean_der"] = round(float(np.mean(naive)), 4)
        summary["naive_worst_der"] = round(max(naive), 4)
        summary["naive_count_right"] = sum(
            r["naive_speakers"] == r["reference_speakers"] for r in reports
        )
        summary["files_at_or_below_naive"] = sum(d <= n for d, n in zip(ders, naive, strict=True))
        summary["naive_median_rtf"] = round(float(np.median([r["naive_rtf"] for r in reports])), 4)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio", type=Path, help="one file (with --rttm)")
    source.add_argument(
        "--set", type=Path, help="a set: a folder with index.json, or the index itself"
    )
    parser.add_argument("--rttm", type=Path)
    parser.add_argument("--engine", choices=sorted(ENGINES), default="embedded")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and BLAS threads (service and baseline)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="calls per file and system; RTF is the median (default 3 for one file, 1 for a set)",
    )
    parser.add_argument("--half", help="only the files of this half of the set")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args(argv)
    if args.audio is not None:
        if args.rttm is None:
            parser.error("--audio needs --rttm")
        cases = [Case(args.audio.stem, args.audio.resolve(), args.rttm, "all")]
    else:
        cases = [c for c in load_set(args.set.resolve()) if args.half in (None, c.half)]
        if not cases:
            parser.error(f"no files in {args.set}" + (f" of half {args.half}" if args.half else ""))
    repeat = args.repeat or (3 if args.audio is not None else 1)
    baseline = None if args.no_baseline else NaiveBaseline(threads=args.threads)
    ready_s, outcomes = asyncio.run(
        run_cases(cases, args.engine, {"AUDIO_THREADS": str(args.threads)}, repeat, baseline)
    )
    reports = []
    for case, outcome in zip(cases, outcomes, strict=True):
        reports.append(_file_report(case, outcome))
        print(json.dumps(reports[-1]), flush=True)
    halves = list(dict.fromkeys(c.half for c in cases))
    closing: dict[str, object] = {
        "summary": {half: summarise([r for r in reports if r["half"] == half]) for half in halves},
        "engine": args.engine,
        "threads": args.threads,
        "repeat": repeat,
        "startup_s": round(ready_s, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(closing))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
