"""What ``orchestrator run`` shows in the terminal: one progress bar per video and step, fed by the
job's events, and the summary table at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Table
from rich.text import Text

from orchestrator import rows as st
from orchestrator.jobs import Orchestrator
from orchestrator.views import STEP_STATE
from protos.videoanalysis.v1 import orchestrator_pb2

SHOWN_STEPS = ("normalize", "scene", "audio", "tracking", "fuse", "reduce", "finalize")
_STEP_STATE_NAME = {value: key for key, value in STEP_STATE.items()}
_STATE_STYLE = {
    st.PENDING: "dim",
    st.RUNNING: "cyan",
    st.SUCCEEDED: "green",
    st.SKIPPED: "green",
    st.FAILED: "red",
    st.CANCELLED: "yellow",
}


class _EtaColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta", 0.0)
        state = task.fields.get("state", "")
        if state == st.RUNNING and eta:
            return Text(f"eta {int(eta) // 60}:{int(eta) % 60:02d}", style="cyan")
        return Text("")


class _StateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        state = task.fields.get("state", st.PENDING)
        detail = task.fields.get("detail", "")
        return Text(f"{state} {detail}".strip(), style=_STATE_STYLE.get(state, ""))


class ProgressView:
    """One bar per video and step, fed by the job's events."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}", style="bold"),
            BarColumn(bar_width=30),
            TextColumn("{task.fields[counts]}"),
            _EtaColumn(),
            _StateColumn(),
            console=console,
            refresh_per_second=8,
        )
        self._tasks: dict[tuple[str, str], Any] = {}

    def _task(self, video: str, step: str) -> Any:
        key = (video, step)
        if key not in self._tasks:
            self._tasks[key] = self.progress.add_task(
                f"{Path(video).name[:28]:28} {step:9}",
                total=None,
                counts="",
                eta=0.0,
                state=st.PENDING,
                detail="",
            )
        return self._tasks[key]

    def show_job(self, job: orchestrator_pb2.Job) -> None:
        for video in job.videos:
            for step in video.steps:
                if step.name in SHOWN_STEPS:
                    self.show_step(video.path, step)

    def show_step(self, video: str, step: orchestrator_pb2.Step) -> None:
        if step.name not in SHOWN_STEPS:
            return
        task = self._task(video, step.name)
        state = _STEP_STATE_NAME.get(step.state, st.PENDING)
        progress = step.progress
        total = progress.total or None
        done = progress.done
        if state in (st.SUCCEEDED, st.SKIPPED):
            total = total or 1
            done = total
        counts = f"{done}/{progress.total} {progress.unit}" if progress.total else ""
        detail = step.error if state == st.FAILED else ("retry" if step.attempts > 1 else "")
        if state == st.SKIPPED:
            detail = "cached"
        self.progress.update(
            task,
            total=total,
            completed=done,
            counts=counts,
            eta=step.eta_s,
            state=state,
            detail=detail[:60],
        )


async def follow(orchestrator: Orchestrator, job_id: str, view: ProgressView) -> None:
    async for event in orchestrator.watch(job_id):
        if event.HasField("snapshot"):
            view.show_job(event.snapshot)
        elif event.HasField("step"):
            view.show_step(event.step.video, event.step.step)
        elif event.HasField("log") and event.log.severity in ("WARNING", "ERROR"):
            view.progress.console.print(f"[yellow]{event.log.message}")
        elif event.HasField("error"):
            view.progress.console.print(f"[red]{event.error.subject}: {event.error.message}")


def summary_table(job: st.JobRow) -> Table:
    table = Table(title=f"job {job.job_id}: {job.state}", show_lines=False)
    for column in (
        "video",
        "state",
        "time",
        "shots",
        "speakers",
        "faces",
        "speaking face-frames\n(fused / legacy rule)",
        "outputs",
    ):
        table.add_column(column)
    for video in job.videos:
        steps = video.steps
        times = [s for s in steps.values() if s.started_at and s.finished_at]
        elapsed = (
            max(s.finished_at for s in times) - min(s.started_at for s in times)  # type: ignore[type-var,operator]
            if times
            else 0.0
        )
        fused = steps["fuse"].result
        speakers = steps["audio"].result.get("speakers") or list(
            fused.get("speakers_on_screen", {})
        )
        state = video.state + (" (cache)" if video.from_cache else "")
        table.add_row(
            video.path,
            Text(state, style=_STATE_STYLE.get(video.state, "")),
            f"{elapsed:.1f} s",
            str(fused.get("shots", "")),
            str(len(speakers)) if fused else "",
            str(fused.get("faces", "")),
            f"{fused['speaking_face_frames']} / {fused['legacy_speaking_face_frames']}"
            if "speaking_face_frames" in fused
            else "",
            video.output_dir if video.state == st.SUCCEEDED else Text(video.error, style="red"),
        )
    return table
