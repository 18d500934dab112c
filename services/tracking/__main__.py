"""``python -m services.tracking --port 50054 --metrics-port 9104``"""

import sys

from services.common.config import load_settings
from services.common.server import run
from services.tracking.config import TrackingSettings
from services.tracking.server import build_services

if __name__ == "__main__":
    run("tracking", load_settings(TrackingSettings, sys.argv[1:]), build_services)
