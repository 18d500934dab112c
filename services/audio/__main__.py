"""``python -m services.audio --port 50053 --metrics-port 9103``"""

import sys

from services.audio.config import AudioSettings
from services.audio.server import build_services
from services.common.config import load_settings
from services.common.server import run

if __name__ == "__main__":
    run("audio", load_settings(AudioSettings, sys.argv[1:]), build_services)
