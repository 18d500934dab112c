"""One readiness check for every servicer whose RPCs need something loaded first.

The boot path calls :meth:`WarmUp.load` in a thread before health turns SERVING; every RPC that
needs the models calls :meth:`WarmUp.require_ready` first and gets UNAVAILABLE with one wording
while warm-up has not finished (or has failed), so clients retry instead of failing a job.
"""

from __future__ import annotations

from services.common.errors import Unavailable


class WarmUp:
    """Mixin for servicers: subclasses implement :meth:`warm_up` and name what they load."""

    #: What warm-up loads, for the UNAVAILABLE message ("the TransNetV2 model").
    loading: str = "the service"
    _ready: bool = False

    def warm_up(self) -> None:
        """Blocking: loads models, checks binaries. Raises when the service cannot serve."""
        raise NotImplementedError

    def load(self) -> None:
        """The boot path's hook (``ServiceDefinition.load``)."""
        self._ready = False
        self.warm_up()
        self._ready = True

    def not_ready_reason(self) -> str:
        """Why RPCs are refused; subclasses may report a warm-up failure instead."""
        return f"{self.loading} is still loading; retry shortly"

    def require_ready(self) -> None:
        if not self._ready:
            raise Unavailable(self.not_ready_reason())
