"""gRPC adapter of the audio service: protos in, domain calls, protos out."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import grpc

from protos.videoanalysis.v1 import audio_pb2, audio_pb2_grpc
from services.audio.config import AudioSettings
from services.audio.diarizer import DiarizationResult, Engine, SpeakerCount, Step, diarize_media
from services.audio.embedded import EmbeddedEngine
from services.audio.pyannote_engine import PyannoteEngine
from services.common import ffmpeg, metrics
from services.common.blocking import run_in_thread
from services.common.errors import InvalidArgument, Unavailable
from services.common.media import MediaRoot
from services.common.readiness import WarmUp
from services.common.rpc import cancel_token, mapped_errors, progress

log = logging.getLogger(__name__)

_ENGINES = {
    audio_pb2.DiarizeRequest.ENGINE_EMBEDDED: "embedded",
    audio_pb2.DiarizeRequest.ENGINE_PYANNOTE: "pyannote",
}


def result_proto(result: DiarizationResult) -> audio_pb2.DiarizeResult:
    return audio_pb2.DiarizeResult(
        has_audio=result.has_audio,
        segments=[
            audio_pb2.SpeechSegment(start_s=t.start_s, end_s=t.end_s, speaker=t.speaker)
            for t in result.turns
        ],
        num_speakers=len(result.speakers),
        speakers=result.speakers,
        speech_coverage=result.speech_coverage,
        duration_s=result.duration_s,
        engine=result.engine,
        device=result.device,
    )


class AudioServicer(WarmUp, audio_pb2_grpc.AudioServiceServicer):
    loading = "the diarization models"

    def __init__(self, settings: AudioSettings) -> None:
        self._settings = settings
        self._media = MediaRoot(settings.media_root)
        self._engines: dict[str, Engine] = {}
        self._embedded = EmbeddedEngine(threads=settings.threads)
        self._pyannote: PyannoteEngine | None = None
        if settings.pyannote_model_dir is not None or settings.pyannote_model_id:
            self._pyannote = PyannoteEngine(
                model_dir=settings.pyannote_model_dir,
                model_id=settings.pyannote_model_id,
                hf_token=settings.hf_token,
                min_duration_off=settings.pyannote_min_duration_off,
                min_cluster_size=settings.pyannote_min_cluster_size,
                device=settings.device,
                disable_gpu=settings.disable_gpu,
                enable_amp=settings.enable_amp,
                batch_size=settings.pyannote_batch_size,
            )

    def warm_up(self) -> None:
        """Readiness: ffmpeg, the embedded models, and the pyannote pipeline when configured."""
        ffmpeg.require_binary("ffmpeg")
        ffmpeg.require_binary("ffprobe")
        self._embedded.load()
        self._engines["embedded"] = self._embedded
        if self._pyannote is not None:
            self._pyannote.load()
            self._engines["pyannote"] = self._pyannote

    def _engine(self, request: audio_pb2.DiarizeRequest) -> Engine:
        if request.engine == audio_pb2.DiarizeRequest.ENGINE_UNSPECIFIED:
            name = self._settings.default_engine
        elif request.engine in _ENGINES:
            name = _ENGINES[request.engine]
        else:
            raise InvalidArgument(f"unknown engine {request.engine}")
        if name == "pyannote" and self._pyannote is None:
            raise Unavailable(
                "the pyannote engine is not configured (set AUDIO_PYANNOTE_MODEL_DIR)"
            )
        self.require_ready()
        return self._engines[name]

    async def Diarize(
        self, request: audio_pb2.DiarizeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[audio_pb2.DiarizeResponse]:
        async with mapped_errors(context):
            path = self._media.resolve(request.media.path)
            count = SpeakerCount(request.num_speakers, request.min_speakers, request.max_speakers)
            engine = self._engine(request)
            token = cancel_token(context)

            loop = asyncio.get_running_loop()
            steps: asyncio.Queue[Step | None] = asyncio.Queue()  # None: the work has ended

            def report(step: Step) -> None:  # called on the worker thread
                with contextlib.suppress(RuntimeError):  # loop closed: nobody is listening
                    loop.call_soon_threadsafe(steps.put_nowait, step)

            started = time.perf_counter()
            work = asyncio.ensure_future(
                run_in_thread(lambda tok: diarize_media(path, engine, count, tok, report), token)
            )
            # The thread's reports were queued before its result reached the loop, so the end
            # marker comes after every step.
            work.add_done_callback(lambda _work: steps.put_nowait(None))
            try:
                while (step := await steps.get()) is not None:
                    yield audio_pb2.DiarizeResponse(
                        progress=progress(step.done, step.total, step.unit, step.stage)
                    )
                result = work.result()
            finally:
                if not work.done():
                    token.cancel()
                    work.cancel()
                    with contextlib.suppress(BaseException):
                        await work
            elapsed = time.perf_counter() - started
            metrics.AUDIO_SECONDS_PROCESSED.labels("audio", result.engine).inc(result.duration_s)
            log.info(
                "diarized %s with %s: %.1f s of audio in %.1f s, %d speakers",
                request.media.path, result.engine, result.duration_s, elapsed, len(result.speakers),
            )  # fmt: skip
            yield audio_pb2.DiarizeResponse(result=result_proto(result))
