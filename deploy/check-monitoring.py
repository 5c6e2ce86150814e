#!/usr/bin/env python3
"""Checks deploy/prometheus/alerts.yml and deploy/grafana/mailboxd.json against the metrics
mailboxd exports (the table at the top of src/metrics.rs): well-formed, every rule has a
summary and a description, and every metric they use exists. Run by tests/run.sh."""
import json, re, sys, pathlib, yaml

root = pathlib.Path(__file__).resolve().parent.parent
known = set(re.findall(r"`(mailboxd_[a-z_]+)`", (root / "src/metrics.rs").read_text()))
def used(expr):
    names = set(re.findall(r"\b(mailboxd_[a-z_]+)", expr))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
errors = []
rules = yaml.safe_load((root / "deploy/prometheus/alerts.yml").read_text())
n = 0
for g in rules["groups"]:
    for r in g["rules"]:
        n += 1
        for k in ("alert", "expr"):
            if k not in r: errors.append(f"rule without {k}: {r}")
        for k in ("summary", "description"):
            if k not in r.get("annotations", {}): errors.append(f"{r.get('alert')}: no {k}")
        for m in used(r["expr"]) - known: errors.append(f"{r['alert']}: unknown metric {m}")
dash = json.loads((root / "deploy/grafana/mailboxd.json").read_text())
for p in dash["panels"]:
    for t in p["targets"]:
        for m in used(t["expr"]) - known: errors.append(f"panel {p['title']!r}: unknown metric {m}")
if errors:
    print("\n".join(errors)); sys.exit(1)
print(f"monitoring: {n} alert rules and {len(dash['panels'])} dashboard panels use only known metrics ({len(known)})")
