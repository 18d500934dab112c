"""The committed generated code matches what the pinned grpcio-tools makes from the .proto files."""

from __future__ import annotations

from pathlib import Path

from protos import generate


def test_generated_code_is_current(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    stale = []
    for committed in generate.generated_files():
        fresh = tmp_path / committed.relative_to(generate.REPO_ROOT)
        if not committed.exists() or committed.read_bytes() != fresh.read_bytes():
            stale.append(committed.name)
    assert not stale, f"regenerate with `python -m protos.generate`: stale {stale}"


def test_every_service_streams_progress() -> None:
    """Long work is server-streaming and its response carries Progress."""
    from protos.videoanalysis.v1 import audio_pb2, ingest_pb2, scene_pb2, tracking_pb2

    for module, service, method in [
        (scene_pb2, "SceneService", "DetectScenes"),
        (audio_pb2, "AudioService", "Diarize"),
        (tracking_pb2, "TrackingService", "Track"),
        (ingest_pb2, "IngestService", "ExtractArchive"),
        (ingest_pb2, "IngestService", "NormalizeVideo"),
    ]:
        rpc = module.DESCRIPTOR.services_by_name[service].methods_by_name[method]
        assert rpc.server_streaming and not rpc.client_streaming
        assert "progress" in rpc.output_type.fields_by_name
