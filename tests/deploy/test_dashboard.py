"""Every metric the Grafana dashboard queries is exported by a running stack after a real job.

The stack: the four services as processes (real models, metrics ports on), the orchestrator
serving gRPC with its own metrics port; ``short_hamilton_clip.mp4`` goes in through
``SubmitJob`` like a gateway would send it; then every ``/metrics`` is scraped and each panel
expression's metric names must be among the samples.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.config import SERVICES, OrchestratorSettings
from orchestrator.server import running_orchestrator
from orchestrator.stack import LocalStack, free_port
from protos.videoanalysis.v1 import common_pb2, orchestrator_pb2, orchestrator_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy/k8s/components/monitoring/dashboards/videoanalysis.json"
#: Metrics of other exporters, named in the dashboard's description.
EXTERNAL = {"DCGM_FI_DEV_FB_USED"}  # NVIDIA dcgm-exporter (GPU pools only)
#: Only the gateway exports these: its boot test (test_boot.py) checks them on its /metrics.
GATEWAY_PREFIX = "videoanalysis_gateway_"
FINISHED = {
    orchestrator_pb2.JOB_STATE_COMPLETED,
    orchestrator_pb2.JOB_STATE_COMPLETED_WITH_ERRORS,
    orchestrator_pb2.JOB_STATE_FAILED,
    orchestrator_pb2.JOB_STATE_CANCELLED,
}

_PROMQL_WORDS = {
    "sum", "rate", "increase", "by", "without", "histogram_quantile", "clamp_min", "max",
    "min", "avg", "count", "le", "on", "ignoring", "group_left", "group_right", "and", "or",
    "unless", "offset", "bool", "topk", "irate", "label_values",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, grouping labels, ranges,
    strings and functions removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        after = text[match.end() :].lstrip()
        if word in _PROMQL_WORDS or after.startswith("(") or word.startswith("$"):
            continue
        if text[max(0, match.start() - 1)] == "$":
            continue
        names.add(word)
    return names


def dashboard_metrics() -> dict[str, set[str]]:
    """``{panel title: metric names}`` of every panel's queries."""
    dashboard = json.loads(DASHBOARD.read_text())
    found = {}
    for panel in dashboard["panels"]:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        if exprs:
            found[panel["title"]] = set().union(*(metric_names(e) for e in exprs))
    return found


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, step) (rate(videoanalysis_orchestrator_step_"
        'seconds_bucket{namespace="$namespace",step!~"a|b"}[15m]))) / 25 + on (pod) '
        "process_resident_memory_bytes"
    )
    assert metric_names(expr) == {
        "videoanalysis_orchestrator_step_seconds_bucket",
        "process_resident_memory_bytes",
    }
    panels = dashboard_metrics()
    for title in (
        "Jobs by state", "Queue depth", "Step duration by stage (p50, p95)",
        "Real-time factor per service", "Frames per second", "Requests per method",
        "Errors per method and code", "Latency per method (p50, p95)",
        "In-flight RPCs per replica", "Process memory (RSS) per replica", "GPU memory used",
    ):  # fmt: skip
        assert panels.get(title), f"the dashboard has no '{title}' panel with a query"


def _scrape(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.slow
async def test_every_dashboard_metric_is_exported_after_a_real_job(
    tmp_path: Path, testdata
) -> None:
    media_root = tmp_path / "media"
    (media_root / "in").mkdir(parents=True)
    shutil.copy(testdata("video/short_hamilton_clip.mp4"), media_root / "in" / "clip.mp4")
    stack = LocalStack(media_root, tmp_path / "logs")
    metrics_ports = {name: free_port() for name in SERVICES}
    try:
        for name in SERVICES:
            stack.spawn(name, metrics_port=metrics_ports[name])
        await asyncio.gather(*(stack.wait_ready(name, 900) for name in SERVICES))
        settings = OrchestratorSettings(
            port=0,
            host="127.0.0.1",
            metrics_port=0,
            media_root=media_root,
            db_path=tmp_path / "jobs.sqlite3",
            **{f"{name}_addr": s.address for name, s in stack.services.items()},
        )
        async with running_orchestrator(settings) as (_orchestrator, running):
            import grpc

            async with grpc.aio.insecure_channel(running.address) as channel:
                stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
                job = await stub.SubmitJob(
                    orchestrator_pb2.SubmitJobRequest(
                        inputs=[common_pb2.MediaRef(path="in/clip.mp4")],
                        options=orchestrator_pb2.JobOptions(no_cache=True),
                    )
                )
                deadline = time.monotonic() + 900
                while job.state not in FINISHED:
                    assert time.monotonic() < deadline, "the job did not finish"
                    await asyncio.sleep(0.5)
                    job = await stub.GetJob(orchestrator_pb2.GetJobRequest(job_id=job.job_id))
                assert job.state == orchestrator_pb2.JOB_STATE_COMPLETED, job
            exported = await asyncio.to_thread(_scrape, running.metrics_port)
            for port in metrics_ports.values():
                exported |= await asyncio.to_thread(_scrape, port)
    finally:
        await stack.stop()
    missing = {
        title: sorted(n for n in names - exported - EXTERNAL if not n.startswith(GATEWAY_PREFIX))
        for title, names in dashboard_metrics().items()
    }
    missing = {title: names for title, names in missing.items() if names}
    assert not missing, f"dashboard metrics nobody exports: {missing}"
