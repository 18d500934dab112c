"""Fixtures of the audio tests: one real audio server per module, tiny pyannote pipelines."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from protos.videoanalysis.v1 import audio_pb2, audio_pb2_grpc, common_pb2
from services.audio.config import AudioSettings
from services.audio.embedded import EmbeddedEngine
from services.audio.server import build_services
from services.common.server import RunningServer, start_server

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"


def testdata(relative: str) -> Path:
    path = TESTDATA / relative
    if not path.exists():
        pytest.fail(f"test media missing: {path}")
    return path


def build_tiny_pyannote_pipeline(folder: Path) -> Path:
    """Saves a pyannote ``SpeakerDiarization`` pipeline made of small, randomly initialised
    models (a debug segmentation LSTM and an MFCC x-vector) into ``folder``.

    Its output is meaningless; it exists to run the service's real pyannote code path (load a
    local folder with relative checkpoint paths, apply the TV hyper-parameters, run, map the
    annotation) because the production weights are gated downloads. It proves wiring, not quality.
    """
    import pytorch_lightning as pl
    import torch
    import yaml
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import XVectorMFCC
    from pyannote.audio.models.segmentation.debug import SimpleSegmentationModel

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    def save(model, specifications: Specifications, name: str) -> None:  # type: ignore[no-untyped-def]
        model.specifications = specifications
        model.build()
        checkpoint = {
            "state_dict": model.state_dict(),
            "pytorch-lightning_version": pl.__version__,
            "hyper_parameters": dict(model.hparams),
        }
        model.on_save_checkpoint(checkpoint)
        torch.save(checkpoint, folder / name)

    save(
        SimpleSegmentationModel(),
        Specifications(
            problem=Problem.MONO_LABEL_CLASSIFICATION,
            resolution=Resolution.FRAME,
            duration=5.0,
            classes=["speaker#1", "speaker#2", "speaker#3"],
            powerset_max_classes=2,
            permutation_invariant=True,
        ),
        "segmentation.ckpt",
    )
    save(
        XVectorMFCC(),
        Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=3.0),
        "embedding.ckpt",
    )
    config = {
        "version": "3.1.0",
        "pipeline": {
            "name": "pyannote.audio.pipelines.SpeakerDiarization",
            "params": {
                # relative to the folder, as an operator's mounted model folder would have them
                "segmentation": "segmentation.ckpt",
                "embedding": "embedding.ckpt",
                "clustering": "AgglomerativeClustering",
                "embedding_exclude_overlap": True,
                "segmentation_batch_size": 8,
                "embedding_batch_size": 8,
            },
        },
        "params": {
            "clustering": {"method": "centroid", "min_cluster_size": 12, "threshold": 0.7},
            "segmentation": {"min_duration_off": 0.0},
        },
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def engine() -> EmbeddedEngine:
    """The embedded engine, loaded once per test module."""
    loaded = EmbeddedEngine()
    loaded.load()
    return loaded


@pytest.fixture(scope="module")
def tiny_pyannote(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pyannote_pipeline(tmp_path_factory.mktemp("pyannote-model"))


@pytest.fixture(scope="module")
def audio_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    for relative in (
        "audio/conv_dev_1.wav",
        "audio/conv_dev_2.wav",
        "audio/conv_dev_3.wav",
        "video/testvideo.mp4",
        "video/short_hamilton_clip.mp4",
    ):
        shutil.copy2(testdata(relative), root / Path(relative).name)
    ffmpeg = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    # 4 s of digital silence in AAC: an audio stream with no speech
    subprocess.run(
        [*ffmpeg, "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo", "-t", "4", "-c:a", "aac",
         str(root / "silence.m4a")],
        check=True,
    )  # fmt: skip
    # 20 minutes of conversation, for cancellation
    subprocess.run(
        [*ffmpeg, "-stream_loop", "20", "-i", str(root / "conv_dev_3.wav"), "-t", "1200",
         "-c:a", "flac", str(root / "long.flac")],
        check=True,
    )  # fmt: skip
    return root


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def audio_server(audio_media: Path, tiny_pyannote: Path) -> AsyncIterator[RunningServer]:
    """A real audio server (embedded models and the tiny pyannote pipeline loaded)."""
    settings = AudioSettings(
        port=0, metrics_port=-1, media_root=audio_media, pyannote_model_dir=tiny_pyannote
    )
    running = await start_server(settings, build_services(settings))
    await running.mark_ready()
    yield running
    await running.stop(0)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def audio_stub(audio_server: RunningServer) -> AsyncIterator[audio_pb2_grpc.AudioServiceStub]:
    async with grpc.aio.insecure_channel(audio_server.address) as channel:
        yield audio_pb2_grpc.AudioServiceStub(channel)


async def diarize(
    stub: audio_pb2_grpc.AudioServiceStub, path: str, **fields: object
) -> tuple[list[common_pb2.Progress], audio_pb2.DiarizeResult]:
    """One Diarize call run to the end: its progress messages and its one, last result."""
    steps: list[common_pb2.Progress] = []
    results: list[audio_pb2.DiarizeResult] = []
    request = audio_pb2.DiarizeRequest(media=common_pb2.MediaRef(path=path), **fields)
    async for reply in stub.Diarize(request):
        assert not results, "nothing may follow the result"
        if reply.HasField("progress"):
            steps.append(reply.progress)
        else:
            results.append(reply.result)
    assert len(results) == 1
    return steps, results[0]


@pytest.fixture(scope="module")
def run_diarize():  # type: ignore[no-untyped-def]
    """The :func:`diarize` helper, as a fixture (test modules cannot import conftest)."""
    return diarize


@pytest.fixture(scope="module", autouse=True)
def _restore_thread_pools():  # type: ignore[no-untyped-def]
    """The engine sets process-wide torch/BLAS thread counts (as the service process should);
    give other test modules running in the same process their defaults back."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    torch_threads = torch.get_num_threads()
    blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    yield
    torch.set_num_threads(torch_threads)
    if blas:
        threadpool_limits(limits=max(blas), user_api="blas")
