"""``python -m services.scene --port 50052 --metrics-port 9102``"""

import sys

from services.common.config import load_settings
from services.common.server import run
from services.scene.config import SceneSettings
from services.scene.server import build_services

if __name__ == "__main__":
    run("scene", load_settings(SceneSettings, sys.argv[1:]), build_services)
