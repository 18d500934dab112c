"""Domain errors and the one map from them to gRPC status codes.

Domain modules raise these (they never import grpc); servicers and the last-resort interceptor turn
them into statuses with :func:`status_code_for`.
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """Base of every error a service reports on purpose; the message is safe to show a client."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(ServiceError):
    """The request itself is wrong (bad field, path outside the media root)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class MediaNotFound(ServiceError):
    """The media the request names does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class UndecodableMedia(ServiceError):
    """The media exists but cannot be decoded (corrupt, not a video, no frames)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServiceError):
    """A model is not loaded or a dependency is down: retrying later may work."""

    code = grpc.StatusCode.UNAVAILABLE


class Busy(ServiceError):
    """This replica is at capacity: retry elsewhere."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Cancelled(ServiceError):
    """The work was cancelled (the client went away or asked to stop)."""

    code = grpc.StatusCode.CANCELLED


GENERIC_INTERNAL_MESSAGE = "internal error (see the server log for details)"

#: Longest message sent to a client. It travels percent-encoded in a trailer (up to 12 bytes a
#: character), and a client refuses trailers over 16 KiB with RESOURCE_EXHAUSTED instead of
#: showing the message: one that quotes a huge request field is cut.
MAX_MESSAGE_CHARS = 500


def status_code_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-facing message for an exception.

    Anything that is not a :class:`ServiceError` is a bug: INTERNAL with a generic message
    (the traceback goes to the log, not to the client).
    """
    if isinstance(exc, ServiceError):
        message = str(exc) or exc.__class__.__name__
        if len(message) > MAX_MESSAGE_CHARS:
            message = f"{message[: MAX_MESSAGE_CHARS - 40]}... ({len(message)} characters)"
        return exc.code, message
    return grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE
