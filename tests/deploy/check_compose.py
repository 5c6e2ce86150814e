#!/usr/bin/env python3
"""Structural checks of deploy/compose.yaml (run by tests/it/deploy_artifacts.rs, beside the real
`docker compose config` when one is installed): the services, their health checks, start order
with conditions, every secret a file, no password in an environment value, every mounted file
present. Usage: check_compose.py COMPOSE_FILE; prints the problems and exits 1 if any."""
import pathlib, re, sys
import yaml

path = pathlib.Path(sys.argv[1]).resolve()
base = path.parent
doc = yaml.safe_load(path.read_text())  # resolves the x-mailboxd anchor and merge keys
errors = []
services = doc.get("services", {})
secrets = doc.get("secrets", {})

expected = {"postgres", "rabbitmq", "mailpit", "lab", "migrate", "mailboxd-1", "mailboxd-2"}
for name in sorted(expected - services.keys()):
    errors.append(f"service {name} is missing")

one_shot = {"migrate"}
for name, svc in services.items():
    hc = svc.get("healthcheck", {})
    if name in one_shot:
        continue
    if hc.get("disable") or not hc.get("test"):
        errors.append(f"{name}: no healthcheck")
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        errors.append(f"{name}: depends_on without conditions")
        deps = {}
    for dep, cond in deps.items():
        if dep not in services:
            errors.append(f"{name}: depends on unknown service {dep}")
        want = "service_completed_successfully" if dep in one_shot else "service_healthy"
        if (cond or {}).get("condition") != want:
            errors.append(f"{name}: depends_on {dep} should have condition {want}, has {cond}")

for replica in ("mailboxd-1", "mailboxd-2"):
    svc = services.get(replica, {})
    deps = svc.get("depends_on") or {}
    for dep in ("migrate", "rabbitmq", "lab", "mailpit"):
        if dep not in deps:
            errors.append(f"{replica}: does not wait for {dep}")
    if not svc.get("read_only"):
        errors.append(f"{replica}: root filesystem not read-only")
    if "ALL" not in (svc.get("cap_drop") or []):
        errors.append(f"{replica}: capabilities not dropped")
    cmd = svc.get("command") or []
    if "run" not in cmd or "--config" not in cmd:
        errors.append(f"{replica}: command {cmd} is not `mailboxd --config … run`")
if services.get("migrate", {}).get("command", [])[-1:] != ["migrate"]:
    errors.append("migrate: does not run `mailboxd migrate`")
if (services.get("migrate", {}).get("depends_on") or {}).get("postgres", {}).get("condition") != "service_healthy":
    errors.append("migrate: does not wait for a healthy postgres")

lab = services.get("lab", {})
cmd = [str(c) for c in lab.get("command", [])]
if cmd[:1] != ["lab"] or "--listen" not in cmd or cmd[cmd.index("--listen") + 1] != "0.0.0.0:5985":
    errors.append(f"lab: command {cmd} is not `mailboxd lab --listen 0.0.0.0:5985 …`")

rabbit_mounts = " ".join(str(v) for v in services.get("rabbitmq", {}).get("volumes", []))
if "rabbitmq/definitions.json:" not in rabbit_mounts:
    errors.append("rabbitmq: deploy/rabbitmq/definitions.json is not mounted")
if "mailpit" not in str(services.get("mailpit", {}).get("image", "")):
    errors.append("mailpit: not the mailpit image")

# Secrets: all declared as files, all used ones declared, none inline.
for name, spec in secrets.items():
    if set(spec) != {"file"}:
        errors.append(f"secret {name}: must be `file:` only, is {spec}")
for name, svc in services.items():
    for s in svc.get("secrets", []):
        src = s["source"] if isinstance(s, dict) else s
        if src not in secrets:
            errors.append(f"{name}: secret {src} is not declared")
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    for key, value in env.items():
        value = str(value)
        if re.search(r"PASS|TOKEN|SECRET|KEY", key, re.I) and not key.endswith("_FILE"):
            errors.append(f"{name}: {key} holds a secret inline; use a *_FILE variable and a secret")
        if key.endswith("_FILE") and not value.startswith("/run/secrets/"):
            errors.append(f"{name}: {key}={value} is not a mounted secret")
        if re.search(r"://[^/@\s:]+:[^@\s/]+@", value):
            errors.append(f"{name}: {key} has a password in a URL")
    # Bind mounts point at files that exist in the checkout.
    for v in svc.get("volumes", []):
        src = str(v).split(":")[0]
        if src.startswith("."):
            if not (base / src).exists():
                errors.append(f"{name}: mounted {src} does not exist")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"compose: {len(services)} services, {len(secrets)} file secrets, health checks and start order as expected")
