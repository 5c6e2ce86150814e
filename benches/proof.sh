#!/usr/bin/env bash
# The "prove it" figures: runs the short version of every `mailboxd bench` subcommand against
# the local PostgreSQL and RabbitMQ (deploy/dev/services.sh) and the embedded lab, writes each
# result to target/proof/<bench>.json and a table of them to target/proof/SUMMARY.md.
#
#   bash benches/proof.sh            # release build (the figures in docs/performance.md)
#   PROFILE=debug bash benches/proof.sh
#
# Each bench uses its own database (mailboxd_bench) and broker names; nothing touches the
# configured queue. Set MAILBOXD__DATABASE__URL / MAILBOXD__AMQP__URL to point elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-release}"
TARGET="${CARGO_TARGET_DIR:-target}"
OUT="target/proof"
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT/SUMMARY.md"

if [ "$PROFILE" = release ]; then
    cargo build --release --bin mailboxd
else
    cargo build --bin mailboxd
fi
BIN="$TARGET/$PROFILE/mailboxd"

bench() {
    echo "== mailboxd bench $*" >&2
    "$BIN" bench "$@" --proof-dir "$OUT"
}

bench lab --cmdlets 200 --cmdlet-latency 20ms --concurrency 4
bench queue --jobs 5000 --workers 1,4
bench ingest --events 10000
bench burst --accounts 2000 --session 3s --cmdlet 50ms --concurrency 8 --naive-sample 2
bench latency --events 50
bench memory --jobs 10000
bench reconcile --accounts 10000

python3 - "$OUT" "$PROFILE" <<'PY'
import json, os, platform, sys
out, profile = sys.argv[1], sys.argv[2]

def load(name):
    try:
        with open(os.path.join(out, name + ".json")) as f:
            return json.load(f)
    except FileNotFoundError:
        return None

def ok(cond):
    return "yes" if cond else "**no**"

rows = []
b = load("burst")
if b:
    rows.append(("burst", f"{b['accounts']} joiners in {b['elapsed_s']:.1f} s = {b['throughput_per_s']:.1f}/s; "
                 f"event→done p50 {b['p50_ms']:.0f} ms, p99 {b['p99_ms']:.0f} ms",
                 "≥ 85 % of the lab limit", f"{b['ratio_to_limit']*100:.0f} %", ok(b['ratio_to_limit'] >= 0.85)))
    rows.append(("burst", f"naive (session per account, one at a time) {b['naive_per_s']:.2f}/s",
                 "≥ 20× naive", f"×{b['ratio_to_naive']:.0f}", ok(b['ratio_to_naive'] >= 20)))
l = load("latency")
if l:
    rows.append(("latency", f"{l['events']} joiners one at a time, lab latency 0; p95 {l['p95_ms']:.0f} ms, p99 {l['p99_ms']:.0f} ms",
                 "p50 < 200 ms", f"{l['p50_ms']:.0f} ms", ok(l['p50_ms'] < 200)))
m = load("memory")
if m:
    drained = m.get("rss_drained_mib")
    rows.append(("memory", f"`mailboxd run` VmRSS idle {m['rss_idle_mib']:.1f} MiB, "
                 f"after draining {drained:.1f} MiB" if drained is not None else
                 f"`mailboxd run` VmRSS idle {m['rss_idle_mib']:.1f} MiB",
                 f"< 150 MB with {m['jobs']} jobs queued", f"{m['rss_loaded_mib']:.1f} MiB", ok(m['rss_loaded_mib'] < 150)))
i = load("ingest")
if i:
    rows.append(("ingest", f"{i['events']} events queue → jobs {i['ingest_per_s']:.0f}/s; raw batched INSERT {i['raw_insert_per_s']:.0f}/s",
                 "—", f"{i['ratio']*100:.0f} % of raw INSERT", ""))
q = load("queue")
if q:
    for r in q["rows"]:
        rows.append(("queue", f"{q['jobs']} empty jobs, {r['workers']} worker(s): {r['mailboxd_jobs_per_s']:.0f} jobs/s; "
                     f"plain UPDATE…SKIP LOCKED {r['plain_jobs_per_s']:.0f}/s", "—", f"{r['ratio']:.2f}× plain", ""))
r = load("reconcile")
if r:
    rows.append(("reconcile", f"{r['scanned']} accounts dry run, {r['differences']} differences, {r['accounts_per_s']:.0f}/s",
                 "—", f"peak RSS {r['peak_rss_mib']:.0f} MiB", ""))
lab = load("lab")
if lab:
    rows.append(("lab", f"{lab['cmdlets']} cmdlets at {lab['cmdlet_latency_ms']:.0f} ms, {lab['concurrency']} at a time",
                 "—", f"overhead {lab['overhead_pct']:.1f} %", ""))

with open(os.path.join(out, "SUMMARY.md"), "w") as f:
    f.write(f"# mailboxd proof figures\n\n{os.cpu_count()} CPUs, {platform.machine()}, {profile} build. "
            "Reproduce: `bash benches/proof.sh`; raw results in `target/proof/*.json`.\n\n")
    f.write("| bench | what | target | measured | met |\n|---|---|---|---|---|\n")
    for row in rows:
        f.write("| " + " | ".join(row) + " |\n")
print(open(os.path.join(out, "SUMMARY.md")).read())
PY
