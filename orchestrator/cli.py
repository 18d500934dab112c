"""``python -m orchestrator run PATH...`` and ``python -m orchestrator serve``.

``run`` is the embedded default in one command: it starts the services locally (child processes
on loopback ports), runs one job with live progress bars per video and step, prints a summary
table and where the outputs are, and exits non-zero when anything failed. Interrupting it (Ctrl-C)
leaves the job resumable: running it again with the same inputs continues where it stopped.

Paths outside the media root are brought in first: ``<media_root>/imports/<stem>/<name>`` for a
file, ``<media_root>/imports/<folder>/...`` for the videos of a folder (hard links when the file
system allows, else copies; an identical file already there is reused). The services only ever
see the media root, as they would in a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator import rows as st
from orchestrator.config import SERVICES, OrchestratorSettings
from orchestrator.console import ProgressView, follow, summary_table
from orchestrator.inputs import is_archive, is_video
from orchestrator.jobs import Orchestrator
from orchestrator.server import running_orchestrator
from orchestrator.stack import LocalStack
from orchestrator.views import options_dict
from protos.videoanalysis.v1 import orchestrator_pb2, scene_pb2
from services.common import files
from services.common.config import load_settings
from services.common.logs import configure_logging
from services.common.server import stop_on_signals

log = logging.getLogger(__name__)

IMPORTS_DIR = "imports"


# Inputs.


def import_inputs(paths: Sequence[str], media_root: Path) -> list[str]:
    """Media-root-relative paths for ``paths``; files outside the root are linked/copied in."""
    root = media_root.resolve()
    relative = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {raw}")
        if path == root or root in path.parents:
            relative.append(path.relative_to(root).as_posix() or ".")
            continue
        if path.is_dir():
            target = root / IMPORTS_DIR / path.name
            for video in sorted(path.rglob("*")):
                if video.is_file() and (is_video(video) or is_archive(video)):
                    _bring_in(video, target / video.relative_to(path))
        else:
            target = root / IMPORTS_DIR / path.stem / path.name
            _bring_in(path, target)
        relative.append(target.relative_to(root).as_posix())
    return relative


def _bring_in(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        same = target.stat().st_size == source.stat().st_size and (
            target.stat().st_ino == source.stat().st_ino
            or int(target.stat().st_mtime) == int(source.stat().st_mtime)
        )
        if same:
            return
    # A hard link when the media root is on the same file system, a copy otherwise; either way it
    # replaces an older import in one rename (never deleted first).
    link = target.with_name(f"{files.TEMP_PREFIX}{target.name}.{os.getpid()}")
    try:
        os.link(source, link)
    except OSError:
        with files.replacing(target) as temp:
            shutil.copy2(source, temp)
    else:
        os.replace(link, target)


# Commands.


def _settings(args: argparse.Namespace) -> OrchestratorSettings:
    overrides: dict[str, Any] = {}
    if args.media_root:
        overrides["media_root"] = Path(args.media_root)
    settings = load_settings(OrchestratorSettings, [], **overrides)
    return settings


def _options(args: argparse.Namespace) -> orchestrator_pb2.JobOptions:
    modes = {
        "merged": scene_pb2.DetectScenesRequest.MODE_MERGED,
        "legacy": scene_pb2.DetectScenesRequest.MODE_LEGACY,
    }
    return orchestrator_pb2.JobOptions(
        scene_mode=modes.get(args.scene_mode, scene_pb2.DetectScenesRequest.MODE_UNSPECIFIED),
        num_speakers=args.num_speakers,
        max_faces=args.max_faces,
        output_dir=args.output or "",
        no_cache=args.no_cache,
    )


async def _local_stack(
    settings: OrchestratorSettings, console: Console | None
) -> tuple[OrchestratorSettings, LocalStack]:
    """Starts every service without a configured address; returns settings pointing at them."""
    missing = [name for name in SERVICES if not settings.address_of(name)]
    stack = LocalStack(
        settings.media_root.resolve(), settings.media_root.resolve() / ".orchestrator" / "logs"
    )
    if missing:
        started = time.perf_counter()
        if console is not None:
            with console.status(f"starting {', '.join(missing)} (loading models)..."):
                addresses = await stack.start(missing)
            console.print(
                f"services ready in {time.perf_counter() - started:.1f} s (logs in {stack.log_dir})"
            )
        else:
            addresses = await stack.start(missing)
        settings = settings.with_addresses(addresses)
    return settings, stack


async def run_command(args: argparse.Namespace) -> int:
    console = Console()
    if not console.is_terminal:
        console = Console(width=max(console.width, 160))
    settings = _settings(args)
    settings.media_root.mkdir(parents=True, exist_ok=True)
    _log_to_file(settings, "orchestrator")
    inputs = import_inputs(args.paths, settings.media_root)
    options = _options(args)
    console.print(f"media root: {settings.media_root.resolve()}")
    settings, stack = await _local_stack(settings, console)
    settings = settings.model_copy(update={"port": 0, "metrics_port": -1})
    try:
        async with running_orchestrator(settings) as (orchestrator, server):
            if not args.no_dashboard:
                url = await _start_front(stack, settings, server.port, ("gateway",))
                console.print(f"dashboard: [bold]{url}[/bold]")
            job_id = await _resume_or_submit(orchestrator, inputs, options, args.label)
            view = ProgressView(console)
            follower = asyncio.create_task(follow(orchestrator, job_id, view))
            with view.progress:
                await orchestrator.wait(job_id)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(follower, 5)
            follower.cancel()
            job = await orchestrator.get_job_row(job_id)
            assert job is not None
            console.print(summary_table(job))
            if job.error:
                console.print(f"[red]{job.error}", soft_wrap=True)
            folders = sorted({v.output_dir for v in job.videos if v.state == st.SUCCEEDED})
            for folder in folders or [job.output_dir]:
                out = (settings.media_root / folder).resolve()
                console.print(f"outputs: [bold]{out}[/bold]", soft_wrap=True)
            console.print(
                f"archive: {(settings.media_root / settings.archives_dir).resolve()}",
                soft_wrap=True,
            )
            return 0 if job.state == st.COMPLETED else 1
    finally:
        await stack.stop()


async def _resume_or_submit(
    orchestrator: Orchestrator,
    inputs: list[str],
    options: orchestrator_pb2.JobOptions,
    label: str,
) -> str:
    """An unfinished job with the same inputs and options continues; else a new job."""
    wanted = options_dict(options)
    for job in await orchestrator.unfinished_job_rows():
        if [i.path for i in job.inputs] == inputs and job.options == wanted:
            await orchestrator.resume(job.job_id)
            return job.job_id
    return await orchestrator.submit(inputs, options, label)


async def _start_front(
    stack: LocalStack, settings: OrchestratorSettings, orchestrator_port: int, names: Sequence[str]
) -> str:
    """Starts the processes in front of the orchestrator (``downloads``, ``gateway``) and
    returns the dashboard's URL. The gateway runs without auth on loopback unless
    GATEWAY_TOKENS is set."""
    orchestrator = f"127.0.0.1:{orchestrator_port}"
    gateway_env = {
        "GATEWAY_ORCHESTRATOR_ADDR": orchestrator,
        "GATEWAY_ARCHIVES_DIR": settings.archives_dir,
        **{f"GATEWAY_{n.upper()}_ADDR": settings.address_of(n) for n in SERVICES},
    }
    if not os.environ.get("GATEWAY_TOKENS"):
        gateway_env["GATEWAY_NO_AUTH"] = "true"
    envs = {
        "downloads": {"DOWNLOADS_ORCHESTRATOR_ADDR": orchestrator},
        "gateway": gateway_env,
    }
    port = {"gateway": int(os.environ.get("GATEWAY_PORT", "8080"))}
    for name in names:
        if name == "gateway" and "downloads" in stack.services:  # its downloads panel
            gateway_env["GATEWAY_DOWNLOADS_ADDR"] = stack.services["downloads"].address
        stack.spawn(name, port=port.get(name), env=envs[name])
    await asyncio.gather(*(stack.wait_ready(name, 120) for name in names))
    return f"http://127.0.0.1:{stack.services['gateway'].port}/" if "gateway" in names else ""


async def serve_command(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.port is not None:
        settings = settings.model_copy(update={"port": args.port})
    configure_logging("orchestrator", settings.log_level)
    settings, stack = await _local_stack(settings, None)
    try:
        stop = stop_on_signals()
        async with running_orchestrator(settings) as (_orchestrator, server):
            if stack.services:  # the embedded stack; in a cluster they are Deployments of their own
                url = await _start_front(stack, settings, server.port, ("downloads", "gateway"))
                print(f"dashboard: {url}", flush=True)
            await stop.wait()
    finally:
        await stack.stop()
    return 0


def _log_to_file(settings: OrchestratorSettings, name: str) -> None:
    """The CLI's terminal shows progress bars; its JSON logs go to a file."""
    folder = settings.media_root / ".orchestrator" / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    configure_logging(name, settings.log_level)
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(folder / f"{name}.log", "a", encoding="utf-8"))  # noqa: SIM115


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python -m orchestrator", description="Video analysis jobs on the local stack."
    )
    commands = main.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="analyse videos, archives or folders now")
    run.add_argument("paths", nargs="+", help="videos, archives or folders")
    run.add_argument(
        "--media-root",
        help="work folder shared with the services (default: ORCH_MEDIA_ROOT or ./media)",
    )
    run.add_argument("--output", help="output folder relative to the media root (default: output)")
    run.add_argument("--label", default="", help="free text shown in job lists")
    run.add_argument("--no-cache", action="store_true", help="analyse again even when cached")
    run.add_argument("--scene-mode", choices=("merged", "legacy"), default="")
    run.add_argument("--num-speakers", type=int, default=0)
    run.add_argument("--max-faces", type=int, default=0)
    run.add_argument(
        "--no-dashboard", action="store_true", help="do not start the gateway and its dashboard"
    )
    serve_parser = commands.add_parser("serve", help="run the services and the orchestrator")
    serve_parser.add_argument("--media-root")
    serve_parser.add_argument("--port", type=int)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    command = run_command if args.command == "run" else serve_command
    try:
        return asyncio.run(command(args))
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume the job", file=sys.stderr)
        return 130
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
