#!/usr/bin/env python3
"""Checks the Kubernetes manifests in a directory (deploy/k8s; run by tests/it/deploy_artifacts.rs):

1. every built-in kind against the Kubernetes OpenAPI schemas, strictly (unknown fields are
   errors), for the oldest and the newest version the team supports, with kubernetes-validate
   (PyPI; the schemas ship inside the wheel, nothing is fetched);
2. the ServiceMonitor (a CRD, which no built-in schema covers) against the part of the
   Prometheus Operator's schema it uses, and that it selects the Service and its port by name;
3. what the schemas cannot see: kustomization.yaml lists every manifest, no namespace is
   hard-coded, the pods run non-root with a read-only root filesystem and probes on the admin
   port, every *_file of the ConfigMap's mailboxd.toml is a mounted key of the Secret, the
   Secret example holds only placeholders, the Service and PDB select the pods.

Usage: check_k8s.py DIR; prints the problems and exits 1 if any."""
import pathlib, sys, tomllib
import jsonschema, kubernetes_validate, yaml

K8S_VERSIONS = ["1.29.0", "1.37.0"]
d = pathlib.Path(sys.argv[1])
errors = []
docs = {}  # file name -> [resources]
for f in sorted(d.glob("*.yaml")):
    try:
        docs[f.name] = [r for r in yaml.safe_load_all(f.read_text()) if r]
    except yaml.YAMLError as e:
        errors.append(f"{f.name}: not YAML: {e}")

def kind(k):
    return [r for rs in docs.values() for r in rs if r.get("kind") == k]

# 1. Built-in kinds, strictly.
for name, rs in docs.items():
    for r in rs:
        if r.get("kind") in ("Kustomization", "ServiceMonitor"):
            continue
        for v in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(r, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{name}: {r.get('kind')} invalid for Kubernetes {v} at {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{name}: no Kubernetes {v} schema for {r.get('apiVersion')} {r.get('kind')}")
        if "namespace" in r.get("metadata", {}):
            errors.append(f"{name}: metadata.namespace is set; the manifests are namespace-agnostic")

# 3a. kustomization.yaml lists every manifest but the example Secret.
kust = (kind("Kustomization") or [{}])[0]
listed = set(kust.get("resources", []))
for name in docs:
    if name not in ("kustomization.yaml", "secret.example.yaml") and name not in listed:
        errors.append(f"kustomization.yaml does not list {name}")
for name in listed - docs.keys():
    errors.append(f"kustomization.yaml lists {name}, which does not exist")
if "secret.example.yaml" in listed:
    errors.append("kustomization.yaml must not apply the placeholder Secret")
if "namespace" in kust:
    errors.append("kustomization.yaml sets a namespace")

# 3b. The Deployment.
deps = kind("Deployment")
services = kind("Service")
secret = (kind("Secret") or [{}])[0]
secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
for v in {**secret.get("stringData", {})}.values():
    if "CHANGE-ME" not in str(v):
        errors.append(f"secret.example.yaml: a value without the CHANGE-ME placeholder: {v!r}")
if len(deps) != 1:
    errors.append(f"expected one Deployment, found {len(deps)}")
dep = deps[0] if deps else {}
spec = dep.get("spec", {})
pod = spec.get("template", {}).get("spec", {})
pod_labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
if spec.get("replicas") != 2:
    errors.append(f"Deployment: replicas is {spec.get('replicas')}, not 2")
psc = pod.get("securityContext", {})
if psc.get("runAsNonRoot") is not True or not psc.get("runAsUser"):
    errors.append("Deployment: the pod must run as a non-root user (runAsNonRoot, runAsUser)")
if pod.get("automountServiceAccountToken") is not False:
    errors.append("Deployment: the service account token must not be mounted")
containers = pod.get("containers", [])
init = pod.get("initContainers", [])
for c in containers + init:
    sc = c.get("securityContext", {})
    if sc.get("readOnlyRootFilesystem") is not True:
        errors.append(f"container {c.get('name')}: root filesystem not read-only")
    if sc.get("allowPrivilegeEscalation") is not False:
        errors.append(f"container {c.get('name')}: allowPrivilegeEscalation is not false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        errors.append(f"container {c.get('name')}: capabilities not dropped")
    res = c.get("resources", {})
    if not res.get("requests") or not res.get("limits"):
        errors.append(f"container {c.get('name')}: resources need requests and limits")
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if "value" in e and any(w in e["name"].upper() for w in ("PASS", "TOKEN", "URL")):
            errors.append(f"container {c.get('name')}: {e['name']} is inline; take it from the Secret")
        if ref and (ref.get("name") != secret.get("metadata", {}).get("name") or ref.get("key") not in secret_keys):
            errors.append(f"container {c.get('name')}: {e['name']} refers to {ref}, not a key of the Secret example")
jobs = kind("Job")
migrates = [c for c in init if "migrate" in c.get("args", [])] + [
    c for j in jobs for c in j["spec"]["template"]["spec"]["containers"] if "migrate" in c.get("args", [])]
if not migrates:
    errors.append("no init container or Job runs `mailboxd migrate`")
main = next((c for c in containers if c.get("name") == "mailboxd"), {})
ports = {p.get("name"): p.get("containerPort") for p in main.get("ports", [])}
if ports.get("admin") != 8080:
    errors.append(f"container mailboxd: no port named admin on 8080 ({ports})")
for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
    get = main.get(probe, {}).get("httpGet", {})
    if get.get("path") != path or get.get("port") not in ("admin", 8080):
        errors.append(f"container mailboxd: {probe} must GET {path} on the admin port, is {get}")

# 3c. The ConfigMap's mailboxd.toml: every *_file is a mounted key of the Secret.
mounts = {m["name"]: m for m in main.get("volumeMounts", [])}
volumes = {v["name"]: v for v in pod.get("volumes", [])}
cms = kind("ConfigMap")
toml_text = (cms[0].get("data", {}) if cms else {}).get("mailboxd.toml")
if toml_text is None:
    errors.append("no ConfigMap with mailboxd.toml")
else:
    cfg = tomllib.loads(toml_text)
    secret_dirs = {}
    for name, v in volumes.items():
        if "secret" in v and name in mounts:
            items = v["secret"].get("items")
            files = {i["path"]: i["key"] for i in items} if items else {k: k for k in secret_keys}
            secret_dirs[mounts[name]["mountPath"].rstrip("/")] = files
    if cfg.get("admin", {}).get("listen", "").rsplit(":", 1)[-1] != "8080":
        errors.append("mailboxd.toml: admin.listen is not on port 8080 (the probes' port)")
    for section, values in cfg.items():
        for key, value in values.items() if isinstance(values, dict) else []:
            if key.endswith("_file") and key != "ca_file":
                folder, _, file = str(value).rpartition("/")
                files = secret_dirs.get(folder)
                if files is None or file not in files:
                    errors.append(f"mailboxd.toml: {section}.{key} = {value} is not a file of the mounted Secret")
                elif files[file] not in secret_keys:
                    errors.append(f"mailboxd.toml: {section}.{key}: key {files[file]} is not in the Secret example")
            if "password" in key and not key.endswith("_file"):
                errors.append(f"mailboxd.toml: {section}.{key} is a secret inline")
    for m in ("config",):
        if m not in mounts:
            errors.append(f"container mailboxd: volume {m} not mounted")

# 3d. Service and PDB select the pods; 2. the ServiceMonitor selects the Service.
def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
svc = services[0] if services else {}
if not selects(svc.get("spec", {}).get("selector", {}), pod_labels):
    errors.append("Service: its selector does not match the pods' labels")
svc_ports = {p.get("name"): p for p in svc.get("spec", {}).get("ports", [])}
if svc_ports.get("admin", {}).get("targetPort") not in ("admin", 8080):
    errors.append("Service: no port admin targeting the container's admin port")
for pdb in kind("PodDisruptionBudget"):
    if not selects(pdb["spec"].get("selector", {}).get("matchLabels", {}), pod_labels):
        errors.append("PodDisruptionBudget: its selector does not match the pods")
    if pdb["spec"].get("minAvailable", 0) >= spec.get("replicas", 0):
        errors.append("PodDisruptionBudget: minAvailable leaves no room for a drain")

SERVICE_MONITOR = {  # the part of monitoring.coreos.com/v1 ServiceMonitor used here
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"],
                     "properties": {"name": {"type": "string"}, "labels": {"type": "object"}}},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {"type": "object"},
                "selector": {"type": "object", "additionalProperties": False,
                             "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                                            "matchExpressions": {"type": "array"}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"}, "targetPort": {}, "path": {"type": "string"},
                        "scheme": {"enum": ["http", "https"]},
                        "interval": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        "scrapeTimeout": {"type": "string", "pattern": "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
                        "honorLabels": {"type": "boolean"}, "tlsConfig": {"type": "object"},
                        "bearerTokenSecret": {"type": "object"}, "authorization": {"type": "object"},
                        "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"},
                    }}},
            }},
    },
}
monitors = kind("ServiceMonitor")
if not monitors:
    errors.append("no ServiceMonitor")
for sm in monitors:
    for e in jsonschema.Draft202012Validator(SERVICE_MONITOR).iter_errors(sm):
        errors.append(f"ServiceMonitor: {'.'.join(str(p) for p in e.path)}: {e.message}")
    sel = sm.get("spec", {}).get("selector", {}).get("matchLabels", {})
    if not selects(sel, svc.get("metadata", {}).get("labels", {})):
        errors.append("ServiceMonitor: its selector does not match the Service's labels")
    for ep in sm.get("spec", {}).get("endpoints", []):
        if ep.get("port") not in svc_ports:
            errors.append(f"ServiceMonitor: endpoint port {ep.get('port')!r} is not a port name of the Service")
        if ep.get("path", "/metrics") != "/metrics":
            errors.append("ServiceMonitor: mailboxd serves its metrics at /metrics")

if errors:
    print("\n".join(errors))
    sys.exit(1)
n = sum(len(rs) for rs in docs.values())
print(f"k8s: {n} resources in {len(docs)} files valid for Kubernetes {' and '.join(K8S_VERSIONS)}; references consistent")
