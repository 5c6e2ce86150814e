#!/usr/bin/env python3
"""Validates documents against a JSON Schema (draft 2020-12, with format checks) for
tests/docs.rs. Reads {"schema": PATH, "documents": [BASE64, ...]} on stdin; writes one result
per document on stdout, in order: {"json": parsed as JSON?, "valid": valid?, "errors": [...]}.
(Python's jsonschema rather than the Rust crate: the crate added about 100 s of compile time
to every clean build on the 2-core CI machine.)"""
import base64, json, sys
import jsonschema

request = json.load(sys.stdin)
with open(request["schema"], encoding="utf-8") as f:
    schema = json.load(f)
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(
    schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
results = []
for encoded in request["documents"]:
    raw = base64.b64decode(encoded)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        results.append({"json": False, "valid": False, "errors": [f"not JSON: {e}"]})
        continue
    errors = [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
              for e in validator.iter_errors(doc)]
    results.append({"json": True, "valid": not errors, "errors": errors})
json.dump(results, sys.stdout)
