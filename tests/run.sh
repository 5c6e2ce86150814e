#!/usr/bin/env bash
# The whole test suite: makes sure the real services are there, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/dev/services.sh
python3 deploy/check-monitoring.py
exec cargo test --workspace --all-targets "$@"
