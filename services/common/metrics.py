"""Every Prometheus metric of the platform, defined once and shared by all processes.

Names follow ``videoanalysis_<subsystem>_<thing>_<unit>``; labels stay low-cardinality (never a
video name, path or job id).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

DURATION_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800)
_RPC_BUCKETS = (0.005, 0.05, *DURATION_BUCKETS)

# gRPC servers (every service and the orchestrator).
GRPC_SERVER_STARTED = Counter(
    "videoanalysis_grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_service", "grpc_method", "grpc_type"],
)
GRPC_SERVER_HANDLED = Counter(
    "videoanalysis_grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_SERVER_HANDLING_SECONDS = Histogram(
    "videoanalysis_grpc_server_handling_seconds",
    "Time from the start of an RPC to its last response.",
    ["grpc_service", "grpc_method"],
    buckets=_RPC_BUCKETS,
)
GRPC_SERVER_MSG_SENT = Counter(
    "videoanalysis_grpc_server_msg_sent_total",
    "Stream messages sent by the server.",
    ["grpc_service", "grpc_method"],
)
GRPC_SERVER_IN_FLIGHT = Gauge(
    "videoanalysis_grpc_server_in_flight",
    "RPCs being served now (the autoscaling signal).",
    ["grpc_service"],
)

# Work done by the analysis services.
FRAMES_PROCESSED = Counter(
    "videoanalysis_media_frames_processed_total",
    "Video frames analysed.",
    ["service"],
)
AUDIO_SECONDS_PROCESSED = Counter(
    "videoanalysis_media_audio_seconds_processed_total",
    "Seconds of audio analysed.",
    ["service", "engine"],
)
MODEL_LOAD_SECONDS = Histogram(
    "videoanalysis_model_load_seconds",
    "Time to load a model.",
    ["service", "model"],
    buckets=DURATION_BUCKETS,
)
ARCHIVE_MEMBERS = Counter(
    "videoanalysis_ingest_archive_members_total",
    "Archive members by outcome.",
    ["outcome"],
)

# Orchestrator.
JOBS = Counter(
    "videoanalysis_orchestrator_jobs_total",
    "Jobs finished, by final state.",
    ["state"],
)
JOBS_RUNNING = Gauge("videoanalysis_orchestrator_jobs_running", "Jobs running now.")
STEP_SECONDS = Histogram(
    "videoanalysis_orchestrator_step_seconds",
    "Duration of one step of one video.",
    ["step", "outcome"],
    buckets=DURATION_BUCKETS,
)
STEP_RETRIES = Counter(
    "videoanalysis_orchestrator_step_retries_total",
    "Retried downstream calls.",
    ["step", "grpc_code"],
)
CACHE_HITS = Counter(
    "videoanalysis_orchestrator_cache_hits_total",
    "Videos whose results came from the content-hash archive.",
)

# Download monitor.
DOWNLOADS = Counter(
    "videoanalysis_downloads_total",
    "Downloads finished, by outcome (completed, dry_run, or the failure reason).",
    ["outcome"],
)
DOWNLOADS_BYTES = Counter(
    "videoanalysis_downloads_bytes_total",
    "Bytes received by downloads (failed attempts included).",
)
DOWNLOADS_SECONDS = Histogram(
    "videoanalysis_downloads_duration_seconds",
    "Time from the start of a download to its outcome (every attempt included).",
    ["outcome"],
    buckets=DURATION_BUCKETS,
)
DOWNLOADS_ACTIVE = Gauge("videoanalysis_downloads_active", "Downloads running now.")
DOWNLOADS_WEBHOOK_POLL_ERRORS = Counter(
    "videoanalysis_downloads_webhook_poll_errors_total",
    "Failed webhook requests, by reason (http_error, timeout, network_error, bad_json).",
    ["reason"],
)
DOWNLOADS_JOBS_SUBMITTED = Counter(
    "videoanalysis_downloads_jobs_submitted_total",
    "Downloads handed to the orchestrator as jobs, by outcome (submitted, failed).",
    ["outcome"],
)

# Gateway.
WS_CONNECTIONS = Gauge("videoanalysis_gateway_websocket_connections", "Open websockets.")
HTTP_REQUESTS = Counter(
    "videoanalysis_gateway_http_requests_total",
    "HTTP requests by route and status.",
    ["route", "status"],
)
WS_MESSAGES_SENT = Counter(
    "videoanalysis_gateway_websocket_messages_sent_total",
    "Websocket messages sent (events, hello, heartbeats).",
)
WS_EVENTS_DROPPED = Counter(
    "videoanalysis_gateway_websocket_events_dropped_total",
    "Events not sent to a websocket: progress replaced by newer progress (coalesced) or queued "
    "for a client that was dropped for lagging.",
    ["reason"],
)
WS_CLIENTS_DROPPED = Counter(
    "videoanalysis_gateway_websocket_clients_dropped_total",
    "Websockets closed because they could not keep up.",
)
GATEWAY_ORCHESTRATOR_CONNECTED = Gauge(
    "videoanalysis_gateway_orchestrator_connected",
    "1 while the gateway's event stream from the orchestrator is up.",
)


def serve_metrics(port: int) -> int:
    """Serves ``/metrics`` on ``port`` (0 picks a free port) from a daemon thread; returns the port.

    A negative port disables the endpoint and returns -1.
    """
    if port < 0:
        return -1
    server, _thread = start_http_server(port)
    return int(server.server_port)
