"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against a real gateway.

Fast tier: a small fake orchestrator that runs a quick synthetic pipeline for each submitted job
and leaves real-format output files (the orchestrator's own writers). Slow tier: the real stack
(service processes with their models, the real orchestrator) analysing short_hamilton_clip.mp4.

Both upload the clip through the UI (after the token prompt the websocket asked for), watch the
progress reach completion over the websocket, open the results view and check that face boxes
and a speaker label are drawn over the video, with no console error. Screenshots go to
``$DASHBOARD_SCREENSHOTS`` (default: the test's tmp folder).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).parent))
from fake_orchestrator import FakeOrchestrator
from outputs import write_outputs

from gateway.app import create_app
from gateway.config import GatewaySettings
from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2

pytestmark = pytest.mark.slow

TOKEN = "browser-token-0123456789"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
CLIP = REPO.parent / "shared" / "testdata" / "video" / "short_hamilton_clip.mp4"


class PipelineFake(FakeOrchestrator):
    """Runs each submitted job through a quick synthetic pipeline, then writes its outputs."""

    def __init__(self, media_root: Path) -> None:
        super().__init__()
        self.media_root = media_root

    async def SubmitJob(
        self, request: orchestrator_pb2.SubmitJobRequest, context: grpc.aio.ServicerContext
    ) -> orchestrator_pb2.Job:
        job = self.add_job(
            [ref.path for ref in request.inputs], request.label, options=request.options
        )
        task = asyncio.create_task(self._run(job.job_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job_id: str) -> None:
        job = self.jobs[job_id]
        for video in job.videos:
            folder = self.media_root / video.output_dir
            folder.mkdir(parents=True, exist_ok=True)
            write_outputs(folder, video.path, Path(video.path).stem)
        await self.run_job(job_id, ticks=5, tick_s=0.04)


def chromium_present() -> None:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does)")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    chromium_present()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DASHBOARD_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Session:
    """One page with its console errors and the websocket frames it received."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        self.events: list[dict[str, Any]] = []
        #: Refused requests (status >= 400), to tell which one a console error is about.
        self.refused: list[str] = []
        page.on("console", self._console)
        page.on(
            "response",
            lambda r: r.status >= 400 and self.refused.append(f"{r.status} {r.url}"),
        )
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("websocket", self._websocket)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _websocket(self, ws: Any) -> None:
        def received(payload: str | bytes) -> None:
            envelope = json.loads(payload)
            if envelope.get("type") == "event":
                self.events.append(envelope["payload"])

        ws.on("framereceived", received)


async def open_dashboard(browser: Any, base: str, path: str = "/") -> Session:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(20_000)
    session = Session(page, base)
    await page.goto(base + path)
    return session


async def give_token(session: Session) -> None:
    """The websocket was refused (4401): the dashboard asks for the token."""
    page = session.page
    await page.wait_for_selector("#token-dialog[open]")
    assert await page.evaluate("document.activeElement.id") == "token-input"
    await page.fill("#token-input", TOKEN)
    await page.press("#token-input", "Enter")
    await page.wait_for_selector("#live-status[data-state=ok]")
    assert await page.evaluate("sessionStorage.getItem('gateway.token')") == TOKEN


async def upload_and_watch(session: Session, shots: Path, prefix: str, timeout_s: float) -> str:
    """Uploads the clip through the form; returns the job id once the job page shows it done."""
    page = session.page
    await page.click("#nav a[data-nav=submit]")
    await page.wait_for_selector("#upload-files")
    assert await page.evaluate("document.activeElement.tagName") == "H1"
    await page.set_input_files("#upload-files", str(CLIP))
    await page.fill("#upload-label", "hamilton <b>clip</b>")
    await page.click("#upload-form button[type=submit]")
    await page.wait_for_url("**/#/jobs/*")
    job_id = page.url.rsplit("/", 1)[-1]
    # Focus moved to the new view's heading; the label is text, not markup.
    await page.wait_for_function("document.activeElement.tagName === 'H1'")
    await page.wait_for_selector(".video-card .step")
    await page.wait_for_selector(".title-row .chip[data-state=completed]", timeout=timeout_s * 1000)
    assert await page.text_content("h1") == "hamilton <b>clip</b>"
    await page.wait_for_selector(".video-links a.button")
    # Progress and completion arrived over the websocket.
    mine = [e for e in session.events if e.get("job_id") == job_id]
    running = [
        e
        for e in mine
        if e["kind"] == "step"
        and e["step"]["step"]["state"] == "running"
        and e["step"]["step"]["progress"]["total"] > 0
    ]
    assert running, "no step progress came over the websocket"
    finished = [e for e in mine if e["kind"] == "state" and e["state"] == "completed"]
    finished += [e for e in mine if e["kind"] == "snapshot" and e["job"]["state"] == "completed"]
    assert finished, "the completion did not come over the websocket"
    steps = await page.eval_on_selector_all(
        ".video-card .step", "items => items.map(i => [i.dataset.step, i.dataset.state])"
    )
    assert steps and all(state in ("succeeded", "skipped") for _, state in steps), steps
    bars = await page.eval_on_selector_all(".step progress", "bars => bars.map(b => b.value)")
    assert all(value == 1 for value in bars), bars
    await page.screenshot(path=str(shots / f"{prefix}-job.png"), full_page=True)
    return job_id


async def check_results(session: Session, shots: Path, prefix: str, speaker: str) -> None:
    """Opens the results view; seeks to a frame where the speaker's face speaks, and checks the
    overlay drew its box and label (state mirrored on the canvas, and real pixels)."""
    page = session.page
    await page.click(".video-links a.button")
    await page.wait_for_selector("canvas.overlay[data-ready=true]")
    assert await page.evaluate("document.activeElement.tagName") == "H1"
    await page.wait_for_function("document.querySelector('video').readyState >= 2")
    hit = await page.evaluate(
        """async (speaker) => {
            const response = await fetch('/api/v1' + location.hash.slice(1) + '/faces');
            const doc = await response.json();
            for (const f of doc.frames) {
              const face = f.tracked_objects.find(
                o => o.is_speaking && o.speaker_label === speaker);
              if (face) return {frame: f.frame, face};
            }
            return null;
        }""",
        speaker,
    )
    assert hit is not None, f"no frame where {speaker} speaks on screen"
    frame, face = hit["frame"], hit["face"]
    await page.evaluate(
        "(frame) => { document.querySelector('video').currentTime = (frame - 1) / 25 + 0.02; }",
        frame,
    )
    await page.wait_for_function(
        "(frame) => document.querySelector('canvas.overlay').dataset.frame === String(frame)",
        arg=frame,
    )
    overlay = await page.eval_on_selector("canvas.overlay", "c => ({...c.dataset})")
    assert int(overlay["boxes"]) >= 1 and int(overlay["speaking"]) >= 1, overlay
    assert f"{speaker} · speaking" in overlay["labels"].split("|"), overlay
    # The pixels: the box's left edge is painted where the analysed frame's bbox lands on the
    # displayed picture (scaled, letterbox offset included); its inside stays clear.
    pixels = await page.evaluate(
        """(face) => {
            const video = document.querySelector('video');
            const c = document.querySelector('canvas.overlay');
            const scale = Math.min(video.clientWidth / video.videoWidth,
                                   video.clientHeight / video.videoHeight);
            const ox = (video.clientWidth - video.videoWidth * scale) / 2;
            const oy = (video.clientHeight - video.videoHeight * scale) / 2;
            const ratio = c.width / video.clientWidth;
            const alpha = (x, y) => c.getContext('2d').getImageData(
              Math.round(x * ratio), Math.round(y * ratio), 1, 1).data[3];
            const left = ox + face.bbox_xmin * scale;
            const right = ox + face.bbox_xmax * scale;
            const middleY = oy + (face.bbox_ymin + face.bbox_ymax) / 2 * scale;
            let painted = 0;
            const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
            return {edge: alpha(left, middleY), inside: alpha((left + right) / 2, middleY),
                    painted};
        }""",
        face,
    )
    assert pixels["edge"] > 0 and pixels["inside"] == 0, pixels
    assert pixels["painted"] > 500, pixels
    # The shot strip's thumbnails are real JPEGs; the speaker timeline has the speaker's turns.
    await page.wait_for_function(
        "[...document.querySelectorAll('.shot img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert await page.locator(".shot").count() >= 2
    names = await page.eval_on_selector_all(".speaker-name", "n => n.map(x => x.textContent)")
    assert speaker in names
    assert await page.locator(".segment").count() >= 1
    await page.screenshot(path=str(shots / f"{prefix}-results.png"), full_page=True)
    # Playing moves the overlay along (muted autoplay is allowed).
    await page.evaluate("document.querySelector('video').play()")
    await page.wait_for_function(
        "(frame) => Number(document.querySelector('canvas.overlay').dataset.frame) > frame + 5",
        arg=frame,
    )
    await page.evaluate("document.querySelector('video').pause()")


async def check_theme_and_keyboard(session: Session, shots: Path, prefix: str) -> None:
    page = session.page
    before = await page.evaluate("document.documentElement.dataset.theme")
    await page.focus("#theme-toggle")
    await page.keyboard.press("Enter")
    after = await page.evaluate("document.documentElement.dataset.theme")
    assert {before, after} == {"dark", "light"}
    assert await page.evaluate("localStorage.getItem('gateway.theme')") == after
    # Keyboard: from the skip link, Tab reaches the navigation with a visible focus ring, and
    # Enter on a section moves focus to the new view's heading.
    await page.focus(".skip-link")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    focused = await page.evaluate(
        "({text: document.activeElement.textContent,"
        " outline: getComputedStyle(document.activeElement).outlineStyle})"
    )
    assert focused["text"] == "Jobs" and focused["outline"] != "none", focused
    await page.screenshot(path=str(shots / f"{prefix}-focus-{after}.png"))
    await page.keyboard.press("Tab")
    await page.keyboard.press("Enter")
    await page.wait_for_function("location.hash === '#/submit'")
    # The link is also labelled "Submit": wait for the heading itself to take focus.
    await page.wait_for_function(
        "document.activeElement.tagName === 'H1' && document.activeElement.textContent === 'Submit'"
    )
    await page.go_back()
    await page.wait_for_selector("canvas.overlay[data-ready=true]")
    await page.screenshot(path=str(shots / f"{prefix}-results-{after}.png"), full_page=True)


async def check_system_and_reports(session: Session, shots: Path, prefix: str) -> None:
    page = session.page
    await page.click("#nav a[data-nav=jobs]")
    await page.wait_for_selector("table.jobs tbody tr .chip[data-state=completed]")
    await page.screenshot(path=str(shots / f"{prefix}-jobs.png"), full_page=True)
    await page.click("#nav a[data-nav=system]")
    await page.wait_for_selector("tr[data-service=orchestrator] .chip[data-state=serving]")
    assert await page.text_content("tr[data-service=orchestrator] .chip") == "Serving"
    await page.wait_for_selector(".meter-row meter")
    assert await page.locator(".meter-row").count() >= 3  # CPU, memory, disk
    await page.screenshot(path=str(shots / f"{prefix}-system.png"), full_page=True)
    await page.click("#nav a[data-nav=reports]")
    link = page.locator(".report-links a").first
    href = await link.get_attribute("href")
    assert href is not None and href.startswith("/reports/projects/")
    # A report opens in the sandboxed preview (fetched with the token), with a download.
    await link.click()
    await page.wait_for_selector("#report-dialog[open]")
    await page.wait_for_function(
        "document.querySelector('#report-dialog iframe').srcdoc.includes('Rapport de projet')"
    )
    download = await page.get_attribute("#report-dialog a.download", "download")
    assert download is not None and download.startswith("rapport_projects_")
    await page.screenshot(path=str(shots / f"{prefix}-report-preview.png"))
    await page.keyboard.press("Escape")
    await page.wait_for_selector("#report-dialog", state="hidden")
    assert await page.evaluate("document.activeElement.getAttribute('href')") == href
    await page.click(".inline-form button[type=submit]")
    await page.wait_for_function(
        "document.querySelector('#report-dialog iframe').srcdoc"
        ".includes('Répartition des Durées par Projet')"
    )
    await page.keyboard.press("Escape")


# Fast tier: the fake orchestrator.


@pytest.fixture
async def fake_pipeline(media_root: Path) -> AsyncIterator[PipelineFake]:
    fake = PipelineFake(media_root)
    await fake.start(0)
    yield fake
    await fake.stop()


@pytest.fixture
async def gateway_url(
    fake_pipeline: PipelineFake, media_root: Path
) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    servers: list[TestServer] = []

    async def start(**overrides: Any) -> str:
        values: dict[str, Any] = {
            "orchestrator_addr": fake_pipeline.address,
            "media_root": media_root,
            "tokens": TOKEN,
            **overrides,
        }
        settings = GatewaySettings(**values)
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield start
    for server in servers:
        await server.close()


@pytest.mark.slow
async def test_upload_watch_and_results(
    browser: Any, gateway_url: Callable[..., Awaitable[str]], shots: Path
) -> None:
    base = await gateway_url()
    session = await open_dashboard(browser, base)
    await give_token(session)
    await upload_and_watch(session, shots, "fake", timeout_s=30)
    await check_results(session, shots, "fake", "SPEAKER_00")
    await check_theme_and_keyboard(session, shots, "fake")
    await check_system_and_reports(session, shots, "fake")
    assert session.errors == [], session.refused


async def test_names_and_log_lines_stay_text(
    browser: Any,
    gateway_url: Callable[..., Awaitable[str]],
    fake_pipeline: PipelineFake,
    shots: Path,
) -> None:
    hostile = '<img src=x onerror="window.__xss = 1">'
    job = fake_pipeline.add_job([f"in/{hostile}.mp4"], label=f"<b>{hostile}</b>")
    base = await gateway_url(no_auth=True, tokens="")
    session = await open_dashboard(browser, base, f"/#/jobs/{job.job_id}")
    page = session.page
    await page.wait_for_selector(".video-card")
    # Live first: a line emitted before the websocket is up would only come with the job's logs.
    await page.wait_for_selector("#live-status[data-state=ok]")
    fake_pipeline.emit(
        job.job_id,
        log=orchestrator_pb2.LogLine(severity="WARNING", message=f"odd file {hostile} &amp;"),
    )
    await page.wait_for_selector(".log-lines .sev-warning")
    assert await page.text_content("h1") == f"<b>{hostile}</b>"
    assert await page.text_content(".video-card h3") == f"{hostile}.mp4"
    line = await page.text_content(".log-lines .sev-warning .msg")
    assert line == f"odd file {hostile} &amp;"  # shown as sent, escaped once by the DOM only
    assert await page.locator("main img").count() == 0
    assert await page.evaluate("window.__xss") is None
    await page.screenshot(path=str(shots / "xss-job.png"), full_page=True)
    assert session.errors == [], session.refused


async def test_orchestrator_loss_is_shown_and_resumed(
    browser: Any,
    gateway_url: Callable[..., Awaitable[str]],
    fake_pipeline: PipelineFake,
) -> None:
    job = fake_pipeline.add_job(["in/a.mp4"], label="resume")
    base = await gateway_url(no_auth=True, tokens="", reconnect_initial_s=0.05, reconnect_max_s=0.2)
    session = await open_dashboard(browser, base, f"/#/jobs/{job.job_id}")
    page = session.page
    await page.wait_for_selector("#live-status[data-state=ok]")
    await fake_pipeline.stop()
    await page.wait_for_selector("#banner:not([hidden])")
    assert "orchestrator" in (await page.text_content("#banner") or "").lower()
    # Events stored while the gateway was away still arrive once it is back.
    step = orchestrator_pb2.Step(
        name="scene",
        state=orchestrator_pb2.STEP_STATE_RUNNING,
        progress=common_pb2.Progress(done=3, total=10, unit="frames", stage="boundaries"),
        eta_s=42,
    )
    fake_pipeline.emit(job.job_id, step=orchestrator_pb2.StepEvent(video="in/a.mp4", step=step))
    await fake_pipeline.start()
    await page.wait_for_selector("#banner", state="hidden")
    await page.wait_for_function(
        "document.querySelector('.step[data-step=scene] progress').value > 0.29"
    )
    detail = await page.text_content(".step[data-step=scene] .step-detail")
    assert detail == "3/10 frames · boundaries · ETA 42 s"
    assert session.errors == [], session.refused


async def test_websocket_resumes_after_the_last_event(
    browser: Any,
    gateway_url: Callable[..., Awaitable[str]],
    fake_pipeline: PipelineFake,
) -> None:
    job = fake_pipeline.add_job(["in/a.mp4"], label="resume")
    base = await gateway_url(no_auth=True, tokens="")
    session = await open_dashboard(browser, base, f"/#/jobs/{job.job_id}")
    page = session.page
    subscriptions: list[dict[str, Any]] = []
    page.on(
        "websocket",
        lambda ws: ws.on(
            "framesent",
            lambda payload: subscriptions.append(json.loads(payload)),
        ),
    )
    await page.wait_for_selector("#live-status[data-state=ok]")
    fake_pipeline.emit_step(job.job_id, "in/a.mp4", "extract", done=1, total=4)
    await page.wait_for_function(
        "document.querySelector('.step[data-step=extract] progress').value > 0"
    )
    last = await page.evaluate("window.dashboard.live.lastSeq")
    assert last > 0
    # The connection breaks; what happens meanwhile arrives after the reconnect.
    await page.evaluate("window.dashboard.live.socket.close()")
    fake_pipeline.emit_step(
        job.job_id,
        "in/a.mp4",
        "extract",
        state=orchestrator_pb2.STEP_STATE_SUCCEEDED,
        done=4,
        total=4,
    )
    await page.wait_for_selector(".step[data-step=extract][data-state=succeeded]")
    resumed = [m for m in subscriptions if m["type"] == "subscribe"]
    assert resumed and resumed[-1]["payload"]["after"] >= last, subscriptions
    assert session.errors == [], session.refused


async def test_submit_by_path_and_cancel(
    browser: Any,
    gateway_url: Callable[..., Awaitable[str]],
    fake_pipeline: PipelineFake,
    media_root: Path,
) -> None:
    waiting = fake_pipeline.add_job(["in/waiting.mp4"], label="waiting")
    base = await gateway_url()
    session = await open_dashboard(browser, base, "/#/submit")
    page = session.page
    await give_token(session)
    (media_root / "in").mkdir()
    (media_root / "in" / "clip.mp4").write_bytes(CLIP.read_bytes())
    await page.fill("#path-inputs", "in/clip.mp4")
    await page.fill("#path-label", "by path")
    await page.click("#path-form button[type=submit]")
    await page.wait_for_url("**/#/jobs/*")
    await page.wait_for_selector(".title-row .chip[data-state=completed]")
    assert await page.text_content("h1") == "by path"
    # A path outside the media root is refused with the gateway's message.
    await page.goto(f"{base}/#/submit")
    await page.fill("#path-inputs", "../etc/passwd")
    await page.click("#path-form button[type=submit]")
    await page.wait_for_selector("main .error-item:not([hidden])")
    assert "Submission refused" in (await page.text_content("main .error-item") or "")
    # Cancel, after confirming.
    await page.goto(f"{base}/#/jobs/{waiting.job_id}")
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("text=Cancel job")
    await page.wait_for_selector(".title-row .chip[data-state=cancelled]")
    assert await page.locator("text=Cancel job").is_hidden()
    unexpected = [e for e in session.errors if "status of 400" not in e]
    assert unexpected == []


async def test_token_prompt_when_reads_need_auth(
    browser: Any,
    gateway_url: Callable[..., Awaitable[str]],
    fake_pipeline: PipelineFake,
) -> None:
    job = fake_pipeline.add_job(["in/a.mp4"], label="private")
    base = await gateway_url(auth_reads=True)
    session = await open_dashboard(browser, base)
    page = session.page
    await give_token(session)
    await page.wait_for_selector(f"tr[data-job-id='{job.job_id}']")
    assert await page.text_content(f"tr[data-job-id='{job.job_id}'] a") == "private"
    # The only errors are the browser's notes about the refused requests before the token.
    unexpected = [e for e in session.errors if "status of 401" not in e]
    assert unexpected == []
    assert session.errors, "the reads were not refused without a token"

    # The token was traded for the read cookie that <video> and <img> need.
    async def session_cookies() -> list[Any]:
        return [c for c in await page.context.cookies() if c["name"] == "gateway_session"]

    for _ in range(50):
        if await session_cookies():
            break
        await asyncio.sleep(0.1)
    assert [c["httpOnly"] for c in await session_cookies()] == [True]
    # Forgetting the token (after confirming) asks again on the next refusal.
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("#token-button")
    assert await page.evaluate("sessionStorage.getItem('gateway.token')") is None
    for _ in range(50):
        if not await session_cookies():
            break
        await asyncio.sleep(0.1)
    assert await session_cookies() == []
    await page.wait_for_selector("#token-dialog[open]")


async def test_downloads_panel_confirms_a_download(
    browser: Any,
    gateway_url: Callable[..., Awaitable[str]],
    fake_pipeline: PipelineFake,
    media_root: Path,
    tmp_path: Path,
    shots: Path,
) -> None:
    """The real download monitor behind the panel: a webhook row (served on loopback, with the
    Dropbox host pointed there) is downloaded on "Check the webhook now", waits for confirmation,
    and becomes a job on "Confirm"."""
    import io
    import zipfile

    from aiohttp import web

    from services.downloads.config import DownloadsSettings
    from services.downloads.server import running_monitor

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("Projet Soleil/clip.bin", os.urandom(50_000))
    row = {
        "source_url": "https://www.dropbox.com/s/k/Projet%20Soleil.zip?dl=0",
        "original_filename": "Projet Soleil.zip",
        "provider": "dropbox",
        "created_at": "2026-12-01T09:30:00Z",
    }
    remote = web.Application()
    remote.router.add_get("/webhook", lambda _r: web.json_response([row]))
    remote.router.add_get(
        "/s/k/Projet Soleil.zip",
        lambda _r: web.Response(
            body=archive.getvalue(),
            content_type="application/zip",
            headers={"Content-Disposition": 'attachment; filename="Projet Soleil.zip"'},
        ),
    )
    remote_server = TestServer(remote, host="127.0.0.1")
    await remote_server.start_server()
    settings = DownloadsSettings(
        port=0,
        metrics_port=-1,
        media_root=media_root,
        db_path=tmp_path / "downloads.sqlite3",
        webhook_url=str(remote_server.make_url("/webhook")),
        webhook_cache_ttl_s=0,
        dropbox_base_url=str(remote_server.make_url("/")).rstrip("/"),
        dropbox_direct_base_url=str(remote_server.make_url("/direct")),
        poll_interval_s=3600,
        auto_submit=False,
        orchestrator_addr=fake_pipeline.address,
    )
    try:
        async with running_monitor(settings) as (_monitor, monitor_server):
            base = await gateway_url(downloads_addr=monitor_server.address)
            session = await open_dashboard(browser, base, "/#/downloads")
            page = session.page
            await give_token(session)
            await page.wait_for_selector(".downloads-summary[data-webhook]")
            await page.click("text=Check the webhook now")
            waiting = "tr[data-state=awaiting_confirmation]"
            await page.wait_for_selector(waiting)
            assert await page.text_content(f"{waiting} td") == "Projet Soleil.zip"
            await page.screenshot(path=str(shots / "downloads-waiting.png"), full_page=True)
            await page.click(f"{waiting} button")
            await page.wait_for_selector("tr[data-state=submitted] a[href^='#/jobs/']")
            [job] = fake_pipeline.jobs.values()
            assert [v.path for v in job.videos] == ["downloads/Projet Soleil.zip"]
            await page.screenshot(path=str(shots / "downloads-submitted.png"), full_page=True)
            unexpected = [e for e in session.errors if "status of 401" not in e]
            assert unexpected == [], session.errors
    finally:
        await remote_server.close()


# Slow tier: the real stack.


def _orchestrator_conftest() -> Any:
    path = REPO / "tests" / "orchestrator" / "conftest.py"
    spec = importlib.util.spec_from_file_location("orchestrator_stack_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The orchestrator tests' fixtures: the shared service processes and one test's settings.
_stack_fixtures = _orchestrator_conftest()
stack = _stack_fixtures.stack
job_settings = _stack_fixtures.job_settings


@pytest.mark.slow
async def test_real_stack_upload_watch_and_results(
    browser: Any, stack: Any, job_settings: Any, shots: Path
) -> None:
    from orchestrator.server import running_orchestrator

    uploads = Path(job_settings.output_dir).parent / "uploads"
    async with running_orchestrator(job_settings) as (_orchestrator, running):
        gateway = GatewaySettings(
            orchestrator_addr=f"127.0.0.1:{running.port}",
            media_root=stack.media_root,
            tokens=TOKEN,
            uploads_dir=uploads.as_posix(),
            **stack.addresses(),
        )
        server = TestServer(create_app(gateway), host="127.0.0.1")
        await server.start_server()
        try:
            session = await open_dashboard(browser, str(server.make_url("")).rstrip("/"))
            await give_token(session)
            job_id = await upload_and_watch(session, shots, "real", timeout_s=600)
            await check_results(session, shots, "real", "SPEAKER_00")
            base = session.base
            report = await session.page.request.get(f"{base}/reports/jobs/{job_id}/videos/0")
            assert report.ok
            page = await report.text()
            assert "Rapport d'analyse : short_hamilton_clip.mp4" in page
            assert ">Scènes</h2>" in page and ">Visages</h2>" in page
            await session.page.goto(f"{base}/reports/jobs/{job_id}/videos/0")
            await session.page.screenshot(path=str(shots / "real-report.png"), full_page=True)
            await session.page.goto(f"{base}/#/system")
            await session.page.wait_for_selector("tr[data-service=scene] .chip[data-state=serving]")
            await session.page.wait_for_selector(".meter-row")
            await session.page.screenshot(path=str(shots / "real-system.png"), full_page=True)
            assert session.errors == [], session.refused
        finally:
            await server.close()
