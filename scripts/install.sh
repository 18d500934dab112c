#!/usr/bin/env bash
# One idempotent install: Debian packages when missing, the pinned Python environment, generated gRPC code.
#
# The virtual environment is keyed by the hash of the lock (constraints.txt + requirements.in + the
# Python version) and kept under ~/.cache/videoanalysis, so a second install, or a fresh clone on the
# same machine, only re-links .venv; a changed lock builds a new one beside it.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
CACHE_ROOT="${VIDEOANALYSIS_CACHE:-$HOME/.cache/videoanalysis}"

log() { printf '[install] %s\n' "$*" >&2; }

# 1. Debian packages: ffmpeg (decode/encode/probe) and libarchive (every archive format); with
#    --test also Chromium, which the dashboard's browser test drives through Playwright.
missing=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || missing+=(ffmpeg)
ldconfig -p 2>/dev/null | grep -q 'libarchive\.so\.13' || missing+=(libarchive13)
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null || missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. The pinned Python environment.
key=$( { cat constraints.txt requirements.in; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-16)
venv="$CACHE_ROOT/venv-$key"
if [ ! -f "$venv/.complete" ]; then
  log "building the Python environment in $venv (first time: several minutes, ~8 GB)"
  rm -rf "$venv"
  mkdir -p "$CACHE_ROOT"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade "pip==$(grep -E '^pip==' constraints.txt | cut -d= -f3)"
  "$venv/bin/pip" install --quiet -r requirements.in -c constraints.txt
  touch "$venv/.complete"
fi
if [ "$(readlink .venv 2>/dev/null)" != "$venv" ]; then
  rm -rf .venv
  ln -s "$venv" .venv
fi

# 3. Generated gRPC code (only when a .proto changed).
.venv/bin/python -m protos.generate --if-stale

# 4. The scene service's Winograd convolution, compiled once per machine and torch version (cached
#    beside the environment). Without a C++ compiler the service uses the direct convolution.
.venv/bin/python -m services.scene.winograd >/dev/null 2>&1 \
  || log "warning: the Winograd convolution did not build (no C++ compiler?); scenes will run slower"
log "ready: .venv -> $venv"
