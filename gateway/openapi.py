"""The OpenAPI 3 description of every route (a test keeps it equal to the router's routes)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aiohttp import web

from gateway.convert import EVENT_KINDS, JOB_STATES, STEP_STATES
from gateway.downloads import STATES as DOWNLOAD_STATES

_JSON = "application/json"
_ERROR = {"$ref": "#/components/schemas/Error"}
_NULL_STR = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    names = {
        400: "bad request",
        401: "missing or wrong bearer token",
        404: "not found",
        409: "conflict",
        413: "upload too large",
        415: "not media / unsupported body",
        503: "the orchestrator (or the download monitor) is unavailable or not configured",
    }
    return {str(s): _json(_ERROR, names[s]) for s in statuses}


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_JOB_ID = _path_param("job_id", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"})
_INDEX = _path_param("index", {"type": "integer", "minimum": 0, "maximum": 999999})
_VIDEO_PARAMS = [_JOB_ID, _INDEX]


def _get(
    summary: str, ok: dict[str, Any], *errors: int, params: list[Any] | None = None
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {"200": ok, **_errors(*errors)},
        "security": [{}, {"bearer": []}],
    }
    if params:
        operation["parameters"] = params
    return {"get": operation}


def _download_action(summary: str) -> dict[str, Any]:
    download_id = _path_param("download_id", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"})
    return {
        "post": {
            "summary": summary,
            "security": [{"bearer": []}],
            "parameters": [download_id],
            "responses": {"200": _json(_ref("Download")), **_errors(400, 401, 404, 409, 503)},
        }
    }


def _file(content_type: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {content_type: {"schema": {"type": "string", "format": "binary"}}},
    }


def _schemas() -> dict[str, Any]:
    progress = {
        "type": "object",
        "properties": {
            "done": {"type": "integer"},
            "total": {"type": "integer"},
            "unit": {"type": "string"},
            "stage": {"type": "string"},
            "message": {"type": "string"},
        },
    }
    step_state = {"type": "string", "enum": list(STEP_STATES.values())}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["status", "message"],
                    "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
                }
            },
        },
        "ErrorDetail": {
            "type": "object",
            "properties": {
                "reason": {"type": "string"},
                "message": {"type": "string"},
                "subject": {"type": "string"},
            },
        },
        "Step": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "state": step_state,
                "progress": progress,
                "eta_s": {"type": ["number", "null"]},
                "attempts": {"type": "integer"},
                "error": _NULL_STR,
                "started_at": _NULL_STR,
                "finished_at": _NULL_STR,
            },
        },
        "Video": {
            "type": "object",
            "properties": {
                "index": {"type": "integer"},
                "path": {"type": "string"},
                "sha256": _NULL_STR,
                "state": step_state,
                "error": _NULL_STR,
                "output_dir": _NULL_STR,
                "from_cache": {"type": "boolean"},
                "normalized_path": _NULL_STR,
                "steps": {"type": "array", "items": _ref("Step")},
            },
        },
        "Download": {
            "type": "object",
            "required": ["download_id", "state"],
            "properties": {
                "download_id": {"type": "string"},
                "filename": _NULL_STR,
                "provider": _NULL_STR,
                "url_type": _NULL_STR,
                "state": {"type": "string", "enum": DOWNLOAD_STATES},
                "progress": {
                    "type": "object",
                    "properties": {"done": {"type": "integer"}, "total": {"type": "integer"}},
                },
                "outcome": _NULL_STR,
                "error": _NULL_STR,
                "size_bytes": {"type": "integer"},
                "attempts": {"type": "integer"},
                "job_id": _NULL_STR,
                "webhook_timestamp": _NULL_STR,
                "created_at": _NULL_STR,
                "updated_at": _NULL_STR,
            },
        },
        "Job": {
            "type": "object",
            "required": ["job_id", "state"],
            "properties": {
                "job_id": {"type": "string"},
                "state": {"type": "string", "enum": list(JOB_STATES.values())},
                "label": {"type": "string"},
                "inputs": {"type": "array", "items": {"type": "string"}},
                "options": {"type": "object"},
                "output_dir": _NULL_STR,
                "error": _NULL_STR,
                "errors": {"type": "array", "items": _ref("ErrorDetail")},
                "created_at": _NULL_STR,
                "updated_at": _NULL_STR,
                "finished_at": _NULL_STR,
                "videos": {"type": "array", "items": _ref("Video")},
            },
        },
        "Event": {
            "type": "object",
            "required": ["seq", "job_id", "kind"],
            "properties": {
                "seq": {"type": "integer"},
                "job_id": {"type": "string"},
                "time": _NULL_STR,
                "kind": {"type": "string", "enum": list(EVENT_KINDS)},
                "job": _ref("Job"),
                "step": {"type": "object"},
                "log": {"type": "object"},
                "error": _ref("ErrorDetail"),
                "state": {"type": "string"},
                "resync": {"type": "object"},
                "synced": {"type": "object"},
            },
        },
        "JobOptions": {
            "type": "object",
            "description": "videoanalysis.v1.JobOptions as JSON (proto field names)",
            "properties": {
                "scene_threshold": {"type": "number"},
                "num_speakers": {"type": "integer", "minimum": 0, "maximum": 100},
                "min_speakers": {"type": "integer", "minimum": 0, "maximum": 100},
                "max_speakers": {"type": "integer", "minimum": 0, "maximum": 100},
                "max_faces": {"type": "integer", "minimum": 0, "maximum": 100},
                "delete_archives": {"type": "boolean"},
                "output_dir": {"type": "string"},
                "no_cache": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
    }


@cache
def describe() -> dict[str, Any]:
    job = _json(_ref("Job"))
    submit = {
        "post": {
            "summary": "Submit a job: upload files (multipart) or name media-root paths (JSON)",
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {
                    _JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["inputs"],
                            "properties": {
                                "inputs": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {"type": "string"},
                                },
                                "label": {"type": "string"},
                                "options": _ref("JobOptions"),
                            },
                        }
                    },
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "label": {"type": "string"},
                                "options": {"type": "string", "description": "JobOptions as JSON"},
                            },
                        }
                    },
                },
            },
            "responses": {
                "201": _json(_ref("Job"), "created"),
                **_errors(400, 401, 404, 413, 415, 503),
            },
        },
        **_get(
            "List jobs (newest first)",
            _json(
                {"type": "object", "properties": {"jobs": {"type": "array", "items": _ref("Job")}}}
            ),
            400,
            params=[
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}),
                _query(
                    "state",
                    {"type": "string", "enum": list(JOB_STATES.values())},
                    "only jobs in this state",
                ),
            ],
        ),
    }
    video = "/api/v1/jobs/{job_id}/videos/{index}"
    paths: dict[str, Any] = {
        "/api/v1/jobs": submit,
        "/api/v1/jobs/{job_id}": _get("One job", job, 404, params=[_JOB_ID]),
        "/api/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a job",
                "security": [{"bearer": []}],
                "parameters": [_JOB_ID],
                "responses": {"200": job, **_errors(401, 404, 503)},
            }
        },
        "/api/v1/session": {
            "post": {
                "summary": "Set the read cookie (media and thumbnails when reads need auth)",
                "security": [{"bearer": []}],
                "responses": {"204": {"description": "cookie set"}, **_errors(401)},
            },
            "delete": {
                "summary": "Forget the read cookie",
                "responses": {"204": {"description": "cookie cleared"}},
            },
        },
        "/api/v1/jobs/{job_id}/logs": _get(
            "The job's stored log lines",
            _json(
                {
                    "type": "object",
                    "properties": {"lines": {"type": "array", "items": _ref("Event")}},
                }
            ),
            400,
            404,
            params=[
                _JOB_ID,
                _query(
                    "after", {"type": "integer", "minimum": 0}, "only lines after this sequence"
                ),
                _query("limit", {"type": "integer", "minimum": 1, "maximum": 10000}),
            ],
        ),
        f"{video}/scenes": _get(
            "Shots of a video (from <stem>_scenes.csv)",
            _json({"type": "object"}),
            404,
            params=_VIDEO_PARAMS,
        ),
        f"{video}/speakers": _get(
            "Speaker turns of a video (from <stem>_audio.json)",
            _json({"type": "object"}),
            404,
            params=_VIDEO_PARAMS,
        ),
        f"{video}/faces": _get(
            "The face tracks document (<stem>_tracking.json) as written",
            _json({"type": "object"}),
            404,
            params=_VIDEO_PARAMS,
        ),
        f"{video}/media": _get(
            "The normalised video (else the source); Range requests work",
            _file("video/mp4", "the video"),
            404,
            params=_VIDEO_PARAMS,
        ),
        f"{video}/thumbnails/{{frame}}.jpg": _get(
            "A small JPEG of one 1-based 25 fps frame",
            _file("image/jpeg", "the frame"),
            404,
            params=[*_VIDEO_PARAMS, _path_param("frame", {"type": "integer", "minimum": 1})],
        ),
        f"{video}/artifacts/{{kind}}": _get(
            "Download an output file, or the video's archive folder as a zip",
            _file("application/octet-stream", "the file"),
            404,
            params=[
                *_VIDEO_PARAMS,
                _path_param(
                    "kind",
                    {
                        "type": "string",
                        "enum": [
                            "scenes",
                            "audio",
                            "tracking",
                            "docs_tracking",
                            "docs_audio",
                            "archive",
                        ],
                    },
                ),
            ],
        ),
        "/api/v1/downloads": _get(
            "The download monitor's status and its downloads, newest first (URLs are not shown)",
            _json(
                {
                    "type": "object",
                    "properties": {
                        "monitor": {"type": "object"},
                        "downloads": {"type": "array", "items": _ref("Download")},
                    },
                }
            ),
            400,
            503,
            params=[_query("limit", {"type": "integer", "minimum": 1, "maximum": 1000})],
        ),
        "/api/v1/downloads/poll": {
            "post": {
                "summary": "Ask the download monitor to read the webhook now",
                "security": [{"bearer": []}],
                "responses": {"200": _json({"type": "object"}), **_errors(401, 503)},
            }
        },
        "/api/v1/downloads/{download_id}/confirm": _download_action(
            "Turn a download awaiting confirmation into a job"
        ),
        "/api/v1/downloads/{download_id}/retry": _download_action("Download a failed one again"),
        "/api/v1/services": _get(
            "gRPC health of the orchestrator and the services", _json({"type": "object"})
        ),
        "/api/v1/system": _get(
            "CPU, memory, disk (of the media root) and GPUs", _json({"type": "object"})
        ),
        "/api/v1/openapi.json": _get("This description", _json({"type": "object"})),
        "/healthz": _get("Liveness", _json({"type": "object"})),
        "/metrics": _get("Prometheus metrics", _file("text/plain", "metrics")),
        "/ws": _get(
            "Websocket of live events (upgrade; see the gateway contract for the messages)",
            {"description": "not a websocket upgrade"},
        ),
        "/": _get("The dashboard", _file("text/html", "the page"), 404),
        "/static/{filename}": _get(
            "The dashboard's files",
            _file("application/octet-stream", "a file"),
            404,
            params=[_path_param("filename", {"type": "string"})],
        ),
        "/reports/jobs/{job_id}/videos/{index}": _get(
            "HTML report of one video", _file("text/html", "the report"), 404, params=_VIDEO_PARAMS
        ),
        "/reports/projects/{project}": _get(
            "HTML report of a project",
            _file("text/html", "the report"),
            404,
            params=[_path_param("project", {"type": "string"})],
        ),
        "/reports/monthly/{month}": _get(
            "HTML report of a month",
            _file("text/html", "the report"),
            400,
            404,
            params=[_path_param("month", {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"})],
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "videoanalysis gateway", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def handler(_request: web.Request) -> web.Response:
    return web.json_response(describe())
