"""Generates the Python gRPC code from ``protos/videoanalysis/v1/*.proto`` (pinned grpcio-tools).

``python -m protos.generate`` writes next to the sources; ``--if-stale`` skips the work when the
generated files are newer than every .proto; ``--out DIR`` writes elsewhere (the staleness test
compares such a fresh copy with the committed one).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = REPO_ROOT / "protos" / "videoanalysis" / "v1"


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generated_files(out: Path = REPO_ROOT) -> list[Path]:
    files = []
    for proto in proto_files():
        base = out / proto.relative_to(REPO_ROOT).with_suffix("")
        files += [
            base.with_name(base.name + suffix) for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
        ]
    return files


def is_stale() -> bool:
    outputs = generated_files()
    if not all(p.exists() for p in outputs):
        return True
    newest_source = max(p.stat().st_mtime for p in [*proto_files(), Path(__file__)])
    return min(p.stat().st_mtime for p in outputs) < newest_source


def generate(out: Path = REPO_ROOT) -> None:
    out.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{REPO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(p) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--if-stale", action="store_true", help="do nothing when the code is current"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT)
    args = parser.parse_args(argv)
    if args.if_stale and args.out == REPO_ROOT and not is_stale():
        return 0
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
