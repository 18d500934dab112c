#!/usr/bin/env bash
# deploy/venv.sh PROCESS: the virtual environment of one image at /opt/venv, from that process's
# share of the lock (deploy/requirements/PROCESS.in names, constraints.txt pins).
set -euo pipefail
process="$1"
python -m venv /opt/venv
/opt/venv/bin/pip install "pip==$(grep -E '^pip==' constraints.txt | cut -d= -f3)"
/opt/venv/bin/pip install -r "deploy/requirements/${process}.in" -c constraints.txt
