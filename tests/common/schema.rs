//! JSON Schema verdicts from Python's jsonschema (tests/tools/validate_json.py), for the
//! documented contracts: the event schema and the outcome schema.

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;

#[derive(serde::Deserialize, Debug)]
pub struct SchemaVerdict {
    pub json: bool,
    pub valid: bool,
    pub errors: Vec<String>,
}

/// Runs every document through `docs/<schema>` in one process.
pub fn verdicts(schema: &str, documents: &[Vec<u8>]) -> Vec<SchemaVerdict> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let request = serde_json::json!({
        "schema": format!("{}/docs/{schema}", env!("CARGO_MANIFEST_DIR")),
        "documents": documents.iter().map(|d| b64.encode(d)).collect::<Vec<_>>(),
    });
    let mut child = Command::new("python3")
        .arg(format!(
            "{}/tests/tools/validate_json.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(request.to_string().as_bytes())
        .expect("write the request");
    let out = child.wait_with_output().expect("validate_json.py finishes");
    assert!(
        out.status.success(),
        "tests/tools/validate_json.py (needs jsonschema: bash deploy/dev/services.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<SchemaVerdict> =
        serde_json::from_slice(&out.stdout).expect("validate_json.py answers JSON");
    assert_eq!(verdicts.len(), documents.len());
    verdicts
}
