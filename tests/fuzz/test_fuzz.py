"""Bounded gRPC fuzzing of every RPC of every service, against the real servers of the fleet.

Each RPC gets a fixed number of examples, drawn from three kinds of request bytes:

- valid messages with random field values (built from the proto descriptors: strings from the
  fleet's real media paths and hostile paths, extreme numbers, NaN, enum values out of range),
- such messages serialized and then mutated (bytes flipped, cut, inserted, removed),
- raw garbage bytes,

sent through a generic channel call with identity serializers. Whatever comes in, the status is
never INTERNAL or UNKNOWN (a bug, or an error the edge failed to name), a call that is not a watch
ends before its deadline, and every server still answers health SERVING afterwards.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.options import check_job_options
from protos.videoanalysis.v1 import (  # noqa: F401 (ingest_pb2 registers its descriptors)
    audio_pb2,
    common_pb2,
    ingest_pb2,
    orchestrator_pb2,
    scene_pb2,
    tracking_pb2,
)
from services.common.errors import InvalidArgument

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="package")]

#: Examples per RPC (each a real call; valid ones run the real models on the tiny media).
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
#: Codes that mean the server did not name what was wrong with the request.
NEVER = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
#: Streams that run until the client leaves (a deadline is how a watcher stops).
ENDLESS = {"WatchJob", "WatchJobs"}

SERVERS = {
    "videoanalysis.v1.IngestService": "ingest",
    "videoanalysis.v1.SceneService": "scene",
    "videoanalysis.v1.AudioService": "audio",
    "videoanalysis.v1.TrackingService": "tracking",
    "videoanalysis.v1.OrchestratorService": "orchestrator",
}


def _rpcs() -> list[tuple[str, str, Descriptor, bool]]:
    """(server, ``Service/Method``, request descriptor, response streams) for every RPC."""
    pool = descriptor_pool.Default()
    found = []
    for full_name, server in SERVERS.items():
        service = pool.FindServiceByName(full_name)
        for method in service.methods:
            assert not method.client_streaming, "add client streaming to the fuzzer"
            name = f"{service.name}/{method.name}"
            found.append((server, name, method.input_type, method.server_streaming))
    return found


RPCS = _rpcs()

# -- strategies --

#: Paths that exist in the fleet, paths that do not, and paths that try to leave the root or
#: break the file system's limits.
PATHS = [
    "in/clip.mp4", "in/short.mp4", "in/project.zip", "in/notes.txt", "in", ".",
    "in/missing.mp4", "in/clip.mp4/inside", "in//clip.mp4", "./in/clip.mp4", "in/",
    "../outside.mp4", "in/../../outside", "/etc/passwd", "\\\\host\\share", "C:clip.mp4",
    "in/" + "x" * 300, "/".join(["d" * 200] * 25), "in/clip.mp4\x00", " ", "\n", "-v",
]  # fmt: skip
#: Paths of the fleet's real media, weighted up so that many requests get past the path checks
#: and reach the models.
REAL = st.sampled_from(["in/clip.mp4", "in/short.mp4", "in/project.zip", "in"])
STRINGS = st.one_of(
    REAL,
    REAL,
    st.sampled_from(PATHS),
    st.text(max_size=30),
    st.text(min_size=3000, max_size=6000),
)
FLOATS32 = st.one_of(
    st.sampled_from([0.0, 0.5, 0.999, 1.0, -1.0, math.nan, math.inf, -math.inf, 1e-30]),
    st.floats(width=32),
)
FLOATS64 = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 25.0, -1.0, 1e12, math.nan, math.inf, -math.inf]),
    st.floats(),
)


def _integers(bits: int, signed: bool = True) -> st.SearchStrategy[int]:
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return st.one_of(
        st.integers(max(low, -3), 60), st.sampled_from([low, high]), st.integers(low, high)
    )


_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    FieldDescriptor.TYPE_STRING: STRINGS,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=30),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_FLOAT: FLOATS32,
    FieldDescriptor.TYPE_DOUBLE: FLOATS64,
    FieldDescriptor.TYPE_INT32: _integers(32),
    FieldDescriptor.TYPE_SINT32: _integers(32),
    FieldDescriptor.TYPE_SFIXED32: _integers(32),
    FieldDescriptor.TYPE_INT64: _integers(64),
    FieldDescriptor.TYPE_SINT64: _integers(64),
    FieldDescriptor.TYPE_SFIXED64: _integers(64),
    FieldDescriptor.TYPE_UINT32: _integers(32, signed=False),
    FieldDescriptor.TYPE_FIXED32: _integers(32, signed=False),
    FieldDescriptor.TYPE_UINT64: _integers(64, signed=False),
    FieldDescriptor.TYPE_FIXED64: _integers(64, signed=False),
}


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    if field.type == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        # Proto3 enums are open: any int32 goes over the wire.
        return st.one_of(st.sampled_from(known), st.integers(-3, 50))
    if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return _SCALARS[field.type]
    # Numbers are often the default (0 = "the server's default"), so that requests with a real
    # media path often are valid throughout and run the models.
    return st.one_of(st.just(field.default_value), _SCALARS[field.type])


def messages(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of ``descriptor`` whose fields are each a random value or unset."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth > 3:
        return st.just(cls())
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        value = _value(field, depth)
        if field.label == FieldDescriptor.LABEL_REPEATED:
            value = st.lists(value, max_size=3)
        fields[field.name] = st.one_of(value, value, st.none())  # mostly set: deeper checks run

    def build(values: dict[str, Any]) -> Message:
        return cls(**{name: value for name, value in values.items() if value is not None})

    return st.fixed_dictionaries(fields).map(build)


@st.composite
def mutated(draw: st.DrawFn, descriptor: Descriptor) -> bytes:
    """A valid message's bytes with a few random edits."""
    data = bytearray(draw(messages(descriptor)).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "cut", "insert", "remove"]))
        if edit == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif edit == "cut":
            del data[at:]
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


def payloads(descriptor: Descriptor) -> st.SearchStrategy[bytes]:
    valid = messages(descriptor).map(lambda m: m.SerializeToString())
    return st.one_of(
        valid,
        valid,
        mutated(descriptor),
        st.binary(max_size=64),
    )


# -- the fleet's media stays what the examples expect --


def _pristine(fleet: Any) -> Callable[[], None]:
    """A function that puts back the fleet's media a request deleted or replaced (an extraction
    with ``delete_source_on_success``, a normalisation whose output is one of them)."""
    root: Path = fleet.media_root
    keep = root.parent / f"{root.name}-pristine"
    if not keep.exists():
        shutil.copytree(root / "in", keep)
    originals = {p.relative_to(keep): p.stat().st_size for p in keep.rglob("*") if p.is_file()}

    def restore() -> None:
        for relative, size in originals.items():
            target = root / "in" / relative
            if target.is_file() and target.stat().st_size == size:
                continue
            if target.is_dir():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            temporary = target.with_name(f".{target.name}.restore")
            shutil.copy2(keep / relative, temporary)
            os.replace(temporary, target)  # jobs reading it never see half a file

    return restore


@pytest.mark.parametrize(
    ("server", "method", "descriptor", "streaming"), RPCS, ids=[rpc[1] for rpc in RPCS]
)
async def test_no_request_gets_internal_or_unknown(
    fleet: Any, server: str, method: str, descriptor: Descriptor, streaming: bool
) -> None:
    restore = _pristine(fleet)
    loop = asyncio.get_running_loop()
    endless = method.split("/")[1] in ENDLESS
    seen: dict[str, list[str]] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(payload=payloads(descriptor))
    def fuzz(payload: bytes) -> None:
        # Hypothesis drives the examples from a worker thread; the calls run on the test's loop,
        # which also serves the fleet.
        restore()
        call = fleet.call(server, method, payload, streaming, deadline_s=2 if endless else 120)
        code, details = asyncio.run_coroutine_threadsafe(call, loop).result()
        seen.setdefault(code.name, []).append(details[:120])
        assert code not in NEVER, f"{method} answered {code.name} ({details}) to {payload!r}"
        if not endless:
            assert code != grpc.StatusCode.DEADLINE_EXCEEDED, f"{method} hung on {payload!r}"

    await asyncio.to_thread(fuzz)
    for code, details in sorted(seen.items()):
        print(f"{method}: {code} x{len(details)}, e.g. {details[0]!r}")
    assert sum(map(len, seen.values())) >= EXAMPLES
    statuses = await fleet.health()
    serving = health_pb2.HealthCheckResponse.SERVING
    assert statuses == dict.fromkeys(statuses, serving), statuses


async def test_options_the_orchestrator_accepts_every_service_accepts(fleet: Any) -> None:
    """Random job options: the submit check refuses them, or the requests the job's steps would
    send (built as ``orchestrator/steps.py`` builds them) are all accepted by the real services,
    so that no accepted job fails later on a bad option."""
    loop = asyncio.get_running_loop()
    accepted = 0
    # Values around every boundary the services draw (speakers 0..20, faces 0..50, enums).
    near = st.integers(-2, 55)
    job_options = st.builds(
        orchestrator_pb2.JobOptions,
        scene_mode=st.integers(-1, 3),
        scene_threshold=st.sampled_from([0.0, 0.3, 0.999, 1.0, -0.1, math.nan, math.inf]),
        audio_engine=st.integers(-1, 3),
        num_speakers=near,
        min_speakers=near,
        max_speakers=near,
        max_faces=near,
    )

    def step_requests(options: Any) -> list[tuple[str, str, Message]]:
        clip = common_pb2.MediaRef(path="in/clip.mp4")
        return [
            ("scene", "SceneService/DetectScenes", scene_pb2.DetectScenesRequest(
                media=clip, mode=options.scene_mode, threshold=options.scene_threshold)),
            ("audio", "AudioService/Diarize", audio_pb2.DiarizeRequest(
                media=clip, engine=options.audio_engine, num_speakers=options.num_speakers,
                min_speakers=options.min_speakers, max_speakers=options.max_speakers)),
            ("tracking", "TrackingService/Track",
             tracking_pb2.TrackRequest(media=clip, max_faces=options.max_faces)),
        ]  # fmt: skip

    def run(call: Any) -> tuple[grpc.StatusCode, str]:
        result: tuple[grpc.StatusCode, str] = asyncio.run_coroutine_threadsafe(call, loop).result()
        return result

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(options=st.one_of(job_options, messages(orchestrator_pb2.JobOptions.DESCRIPTOR)))
    def fuzz(options: Any) -> None:
        nonlocal accepted
        options.output_dir = ""  # the output folder is not the services' business
        try:
            check_job_options(options)  # what SubmitJob checks
        except InvalidArgument:
            return
        accepted += 1
        for server, method, request in step_requests(options):
            code, details = run(fleet.call(server, method, request.SerializeToString(), True))
            assert code != grpc.StatusCode.INVALID_ARGUMENT, (
                f"SubmitJob accepted {options} but {method} refuses it: {details}"
            )
            assert code not in NEVER, details

    await asyncio.to_thread(fuzz)
    print(f"options accepted at submit: {accepted} of {EXAMPLES}")
    assert accepted > 0
