#!/usr/bin/env bash
# The long chaos run: 2,000 joiners and leavers, 15 rounds of blows (CI runs 400 and 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
export MAILBOXD_CHAOS_EVENTS="${MAILBOXD_CHAOS_EVENTS:-2000}"
export MAILBOXD_CHAOS_ROUNDS="${MAILBOXD_CHAOS_ROUNDS:-15}"
exec cargo test --test chaos -- --nocapture "$@"
