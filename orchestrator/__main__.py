"""``python -m orchestrator run PATH...`` / ``python -m orchestrator serve``"""

import signal
import sys

from orchestrator.cli import main

if __name__ == "__main__":
    # SIGTERM behaves like Ctrl-C in ``run`` (the job stays resumable); ``serve`` installs its own.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
