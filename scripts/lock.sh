#!/usr/bin/env bash
# Re-resolves requirements.in in a scratch environment and rewrites constraints.txt from it.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install --quiet --upgrade pip
"$scratch/venv/bin/pip" install --quiet -r requirements.in
{
  echo "# The one lock: every package of the environment, pinned. Regenerate with scripts/lock.sh after changing requirements.in."
  echo "pip==$("$scratch/venv/bin/pip" --version | cut -d' ' -f2)"
  "$scratch/venv/bin/pip" freeze
} > constraints.txt
