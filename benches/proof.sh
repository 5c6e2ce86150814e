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

FAILED=""
bench() {
    echo "== mailboxd bench $*" >&2
    "$BIN" bench "$@" --proof-dir "$OUT" || FAILED="$FAILED $1"
}

bench lab --cmdlets 200 --cmdlet-latency 20ms --concurrency 4
bench queue --jobs 20000 --workers 1,4 --min-ratio 0.3
bench ingest --events 10000
bench burst --accounts 2000 --session 3s --cmdlet 50ms --concurrency 8 --naive-sample 2
bench latency --events 50
# An initial load of 100,000 joiners through `mailboxd run` as its own process (issue 35):
# the goals (>= 90 % of a fast lab's limit, memory under 64 MiB throughout, the dashboard within
# 250 ms) are rows of the summary, not floors: the pace is not met yet (docs/performance.md). ~4 min.
bench load --accounts 100000 --session 1s --cmdlet 5ms --concurrency 4
bench memory --jobs 10000
bench reconcile --accounts 10000
# A month of history in the table: what /metrics and the overview read, every page and API
# list, and the drain of new work (issue 35). 200,000 jobs keep the run short; the figures
# in docs/performance.md are the 1,000,000-job runs of the same commands.
bench scrape --jobs 200000 --scrapes 10
bench history --history 200000 --joiners 500 --requests 10

# Which code the figures are of: the commit, "+dirty" when the tree had changes.
COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then COMMIT="$COMMIT+dirty"; fi

python3 - "$OUT" "$PROFILE" "$COMMIT" <<'PY'
import datetime, json, os, platform, sys
out, profile, commit = sys.argv[1], sys.argv[2], sys.argv[3]
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

# Every figure keeps the commit it was measured on: in its own JSON file, and appended to
# target/proof-history.jsonl (one line per bench and run) so that a regression can be dated.
for name in sorted(os.listdir(out)):
    if not name.endswith(".json"):
        continue
    path = os.path.join(out, name)
    with open(path) as f:
        data = json.load(f)
    data["commit"], data["measured_at"], data["profile"] = commit, when, profile
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    with open(os.path.join(os.path.dirname(out.rstrip("/")), "proof-history.jsonl"), "a") as f:
        f.write(json.dumps({"bench": name[:-5], **data}) + "\n")

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
ld = load("load")
if ld:
    peak = max(ld['rss_max_sampled_mib'], ld.get('rss_peak_mib') or 0)
    rows.append(("load", f"{ld['accounts']} joiners through `mailboxd run` in {ld['elapsed_s']:.0f} s = {ld['throughput_per_s']:.0f}/s; "
                 f"lab limit {ld['limit_per_s']:.0f}/s", "≥ 90 % of the lab limit", f"{ld['ratio_to_limit']*100:.0f} %",
                 ok(ld['ratio_to_limit'] >= 0.9)))
    rows.append(("load", "`mailboxd run` resident memory throughout (sampled every 250 ms, and VmHWM)",
                 "< 64 MiB", f"{peak:.1f} MiB", ok(peak < 64)))
    slowest = max(ld['dashboard'].values(), key=lambda p: p['p95_ms'])
    rows.append(("load", f"dashboard during the load: slowest p95 {slowest['path']}",
                 "≤ 250 ms p95", f"{slowest['p95_ms']:.0f} ms", ok(slowest['p95_ms'] <= 250)))
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
        target = "≥ 0.5× plain (CI floor 0.3×)" + (", ≥ 10,000/s" if r['workers'] >= 4 else "")
        met = r['ratio'] >= 0.5 and (r['workers'] < 4 or r['mailboxd_jobs_per_s'] >= 10000)
        rows.append(("queue", f"{q['jobs']} empty jobs, {r['workers']} worker(s): {r['mailboxd_jobs_per_s']:.0f} jobs/s; "
                     f"plain UPDATE…SKIP LOCKED {r['plain_jobs_per_s']:.0f}/s", target, f"{r['ratio']:.2f}× plain", ok(met)))
r = load("reconcile")
if r:
    rows.append(("reconcile", f"{r['scanned']} accounts dry run, {r['differences']} differences, {r['accounts_per_s']:.0f}/s",
                 "—", f"peak RSS {r['peak_rss_mib']:.0f} MiB", ""))
h = load("history")
if h:
    worst = max(h["pages"], key=lambda p: p["ratio_p95"]) if h["pages"] else None
    slowest = max((p["history_p95_ms"] for p in h["pages"]), default=0)
    rows.append(("history", f"{h['history_jobs']} finished jobs in the table: {len(h['pages'])} pages, slowest p95 {slowest:.0f} ms"
                 + (f"; worst against empty: {worst['page']} ×{worst['ratio_p95']:.1f}" if worst else ""),
                 "every page ≤ 250 ms p95 and ≤ 3× empty", "within" if h["all_within_goal"] else "outside", ok(h["all_within_goal"])))
    rows.append(("history", f"drain of {h['joiners']} joiners: {h['drain_empty_s']:.2f} s empty, {h['drain_history_s']:.2f} s with history",
                 "≤ 1.1× empty", f"×{h['drain_ratio']:.2f}", ok(h['drain_ratio'] <= 1.1)))
sc = load("scrape")
if sc:
    for r in sc["rows"]:
        rows.append(("scrape", f"{r['jobs']} jobs of history: /metrics reads p50 {r['metrics_p50_ms']:.1f} ms, overview p50 {r['overview_p50_ms']:.1f} ms",
                     "—", f"p95 {r['metrics_p95_ms']:.1f} / {r['overview_p95_ms']:.1f} ms", ""))
lab = load("lab")
if lab:
    rows.append(("lab", f"{lab['cmdlets']} cmdlets at {lab['cmdlet_latency_ms']:.0f} ms, {lab['concurrency']} at a time",
                 "—", f"overhead {lab['overhead_pct']:.1f} %", ""))

with open(os.path.join(out, "SUMMARY.md"), "w") as f:
    f.write(f"# mailboxd proof figures\n\nCommit {commit}, measured {when}; "
            f"{os.cpu_count()} CPUs, {platform.machine()}, {profile} build. "
            "Reproduce: `bash benches/proof.sh`; raw results in `target/proof/*.json`.\n\n")
    f.write("| bench | what | target | measured | met |\n|---|---|---|---|---|\n")
    for row in rows:
        f.write("| " + " | ".join(row) + " |\n")
print(open(os.path.join(out, "SUMMARY.md")).read())
PY
if [ -n "$FAILED" ]; then
    echo "below its floor:$FAILED" >&2
    exit 1
fi
