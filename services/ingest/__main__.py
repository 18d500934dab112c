"""``python -m services.ingest --port 50051 --metrics-port 9101``"""

import sys

from services.common.config import load_settings
from services.common.server import run
from services.ingest.config import IngestSettings
from services.ingest.server import build_services

if __name__ == "__main__":
    run("ingest", load_settings(IngestSettings, sys.argv[1:]), build_services)
