//! The documentation held to the code:
//!
//! - `docs/configuration.md` lists exactly the configuration keys the structs in
//!   `src/config.rs` accept (found by walking them with a recording serde deserializer), with
//!   their types and environment variables, and its defaults loaded as a file give exactly
//!   `Settings::default()`;
//! - every fenced `json` example in `docs/events.md` is accepted both by
//!   `docs/event.schema.json` and by `mailboxd::event::parse`;
//! - every fenced `json outcome` example there is accepted by `docs/outcome.schema.json`
//!   (tests/it/outcomes.rs holds that schema to what the daemon publishes);
//! - every poison JSON in `tests/data/poison/` that the code refuses for a reason the schema
//!   can express is refused by the schema too, and a table of edge cases gets the same verdict
//!   from both.
//!
//! Schema validation runs Python's jsonschema (tests/tools/validate_json.py; installed by
//! deploy/dev/services.sh).

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use common::schema::SchemaVerdict;
use mailboxd::config::Settings;
use mailboxd::event::{self, EventError};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

fn repo(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The configuration keys, from the code.

/// One key the configuration accepts: its type as the doc names it, and whether it is optional.
#[derive(Debug, Clone)]
struct Key {
    kind: String,
    optional: bool,
}

type Keys = Rc<RefCell<BTreeMap<String, Key>>>;

/// A serde deserializer that answers every request with a placeholder value and records, per
/// dotted path, what the type asked for: the field lists of structs (serde passes them to
/// `deserialize_struct`), enums with their variants, lists, tables, and durations (the
/// configuration's only untagged type, so the only `deserialize_any`).
struct Tracer {
    path: String,
    optional: bool,
    keys: Keys,
}

impl Tracer {
    fn record(&self, kind: impl Into<String>) {
        self.keys.borrow_mut().insert(
            self.path.clone(),
            Key {
                kind: kind.into(),
                optional: self.optional,
            },
        );
    }
    fn child(&self, name: &str) -> Tracer {
        Tracer {
            path: if self.path.is_empty() {
                name.to_owned()
            } else {
                format!("{}.{name}", self.path)
            },
            optional: false,
            keys: self.keys.clone(),
        }
    }
}

type DeError = de::value::Error;

impl<'de> de::Deserializer<'de> for Tracer {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.record("duration");
        v.visit_u64(1)
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.record("bool");
        v.visit_bool(false)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.record("integer");
        v.visit_u64(1)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i8(v)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i8(v)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i8(v)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i8(v)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i8(v)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i8(v)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_i8(v)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.record("float");
        v.visit_f64(1.0)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_f32(v)
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.record("string");
        v.visit_str("x")
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_some(Tracer {
            optional: true,
            ..self
        })
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        // One element, traced under `path[]`; its type names the list.
        let element = Tracer {
            path: format!("{}[]", self.path),
            optional: false,
            keys: self.keys.clone(),
        };
        let value = v.visit_seq(OneElement(Some(element)))?;
        let element_key = format!("{}[]", self.path);
        let element_kind = self.keys.borrow_mut().remove(&element_key).map(|k| k.kind);
        self.record(match element_kind {
            Some(k) => format!("list of {k}"),
            None => "list of tables".to_owned(),
        });
        Ok(value)
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.record("table");
        v.visit_map(Fields {
            fields: &[],
            next: 0,
            parent: self,
        })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        v.visit_map(Fields {
            fields,
            next: 0,
            parent: self,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, DeError> {
        self.record(format!("enum {}", variants.join(" | ")));
        v.visit_enum(variants[0].into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i128 u128 char bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any
    }
}

struct OneElement(Option<Tracer>);

impl<'de> SeqAccess<'de> for OneElement {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        self.0.take().map(|t| seed.deserialize(t)).transpose()
    }
}

struct Fields {
    fields: &'static [&'static str],
    next: usize,
    parent: Tracer,
}

impl<'de> MapAccess<'de> for Fields {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.fields.get(self.next) {
            Some(f) => seed.deserialize(f.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let name = self.fields[self.next];
        self.next += 1;
        seed.deserialize(self.parent.child(name))
    }
}

/// Every key `Settings` accepts (`section.key`, list items as `section.key[].field`).
fn config_keys() -> BTreeMap<String, Key> {
    let keys: Keys = Rc::default();
    Settings::deserialize(Tracer {
        path: String::new(),
        optional: false,
        keys: keys.clone(),
    })
    .expect("the tracer walks the configuration structs");
    keys.borrow().clone()
}

// ---------------------------------------------------------------------------------------------
// The configuration keys, from docs/configuration.md.

struct DocRow {
    kind: String,
    default: String,
    env: String,
}

fn cells(line: &str) -> Vec<String> {
    // Split on `|` that is not escaped as `\|` (used inside enum types).
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.trim().trim_matches('|').chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cur.push('|');
                chars.next();
            }
            '|' => out.push(std::mem::take(&mut cur).trim().to_owned()),
            _ => cur.push(c),
        }
    }
    out.push(cur.trim().to_owned());
    out
}

fn documented_keys() -> BTreeMap<String, DocRow> {
    let doc = repo("docs/configuration.md");
    let mut out = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let c = cells(line);
        assert_eq!(
            c.len(),
            5,
            "docs/configuration.md: a row needs 5 cells: {line}"
        );
        let key = c[0].trim_matches('`').to_owned();
        let row = DocRow {
            kind: c[1].clone(),
            default: c[2].clone(),
            env: c[3].clone(),
        };
        assert!(
            out.insert(key.clone(), row).is_none(),
            "docs/configuration.md documents {key} twice"
        );
    }
    out
}

#[test]
fn the_configuration_reference_lists_exactly_the_keys_the_code_accepts() {
    let code = config_keys();
    let doc = documented_keys();
    assert!(code.len() > 60, "the tracer found only {} keys", code.len());
    let code_names: BTreeSet<&String> = code.keys().collect();
    let doc_names: BTreeSet<&String> = doc.keys().collect();
    let missing: Vec<_> = code_names.difference(&doc_names).collect();
    let stale: Vec<_> = doc_names.difference(&code_names).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/configuration.md is out of date.\n  in src/config but not documented: {missing:?}\n  documented but not in src/config: {stale:?}"
    );
    for (name, key) in &code {
        let row = &doc[name];
        // The type: "duration", "list of string", "enum a | b", "path (optional)", …
        let kind = if key.kind == "string" && (name.ends_with("_file")) {
            "path".to_owned()
        } else {
            key.kind.clone()
        };
        assert!(
            row.kind.replace('`', "").starts_with(&kind),
            "docs/configuration.md: {name} has type {:?}; the code says {kind:?}",
            row.kind
        );
        assert_eq!(
            row.kind.contains("(optional)"),
            key.optional,
            "docs/configuration.md: {name}: \"(optional)\" in the type exactly when the key is an Option"
        );
        // The environment variable that overrides it (tables and list items have none).
        let (section, field) = name.split_once('.').expect("section.key");
        let env = format!(
            "MAILBOXD__{}__{}",
            section.to_uppercase(),
            // A key of a table within a section (`amqp.midpoint.…`): `__` between the parts.
            field.to_uppercase().replace('.', "__")
        );
        let structured = name.contains("[]") || kind == "table" || kind == "list of tables";
        if structured {
            assert!(
                row.env.starts_with('—'),
                "docs/configuration.md: {name} cannot be set from the environment"
            );
        } else {
            assert!(
                row.env.contains(&format!("`{env}`")),
                "docs/configuration.md: {name} is overridden by {env}, the row says {:?}",
                row.env
            );
        }
        if name.ends_with("password_file") || name.ends_with("token_file") {
            assert!(
                row.env.contains("`MAILBOXD_"),
                "docs/configuration.md: {name}: name the secret's environment variable"
            );
        }
    }
}

#[test]
fn the_documented_defaults_are_the_defaults() {
    let doc = documented_keys();
    let mut sections: BTreeMap<&str, String> = BTreeMap::new();
    for (name, row) in &doc {
        if name.contains("[]") {
            continue;
        }
        let (section, key) = name.split_once('.').expect("section.key");
        let text = sections.entry(section).or_default();
        if row.default.starts_with('—') {
            continue;
        }
        let value = row
            .default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .unwrap_or_else(|| {
                panic!(
                    "docs/configuration.md: {name}: the default must be `toml` or —, is {:?}",
                    row.default
                )
            });
        text.push_str(&format!("{key} = {value}\n"));
    }
    let toml: String = sections
        .iter()
        .map(|(s, body)| format!("[{s}]\n{body}\n"))
        .collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("defaults.toml");
    std::fs::write(&path, &toml).expect("write");
    let loaded = Settings::load(Some(&path))
        .unwrap_or_else(|e| panic!("the documented defaults do not load: {e}\n{toml}"));
    let (loaded, builtin) = (
        format!("{loaded:#?}"),
        format!("{:#?}", Settings::default()),
    );
    let differences: Vec<String> = loaded
        .lines()
        .zip(builtin.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("documented {} / code {}", a.trim(), b.trim()))
        .collect();
    assert!(
        differences.is_empty() && loaded.lines().count() == builtin.lines().count(),
        "docs/configuration.md: documented defaults differ from the code's: {differences:#?}"
    );
    // The one default inside a list item.
    let filter = &doc["reconcile.scopes[].filter"].default;
    assert_eq!(
        filter,
        &format!("`\"{}\"`", mailboxd::config::DEFAULT_RECONCILE_FILTER)
    );
}

// ---------------------------------------------------------------------------------------------
// The event contract.

/// Runs every document through docs/event.schema.json (Python's jsonschema), in one process.
fn schema_verdicts(documents: &[Vec<u8>]) -> Vec<SchemaVerdict> {
    common::schema::verdicts("event.schema.json", documents)
}

/// The routing key that goes with a document's `type` (the code checks they agree).
fn routing_key(body: &[u8]) -> &'static str {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match v["type"].as_str() {
        Some("leaver") => event::ROUTING_KEY_LEAVER,
        Some("mover") => event::ROUTING_KEY_MOVER,
        _ => event::ROUTING_KEY_JOINER,
    }
}

fn code_accepts(body: &[u8]) -> Result<event::Event, EventError> {
    event::parse(body, Some("application/json"), None, routing_key(body))
}

/// midPoint's requests on docs/events.md (fenced ```json midpoint) are the samples the
/// decoder's tests and tests/it/midpoint.rs use (tests/data/midpoint), byte for byte.
#[test]
fn every_midpoint_example_in_the_event_docs_is_a_tested_sample() {
    let shown = examples_are_samples("```json midpoint", "tests/data/midpoint");
    assert!(shown >= 2, "midPoint examples on docs/events.md");
}

/// The Identity Security Cloud payloads docs/events.md shows (fenced ```json isc) are the
/// samples the decoder's tests read (tests/data/isc).
#[test]
fn every_isc_example_in_the_event_docs_is_a_tested_sample() {
    let shown = examples_are_samples("```json isc", "tests/data/isc");
    assert!(shown >= 1, "an ISC example on docs/events.md");
}

/// Checks that every block of docs/events.md fenced with `opening` is, trimmed, one of the
/// files in `dir`; returns how many blocks there are.
fn examples_are_samples(opening: &str, dir: &str) -> usize {
    let blocks = fenced_blocks(&repo("docs/events.md"), opening);
    let samples: Vec<String> = std::fs::read_dir(format!("{}/{dir}", env!("CARGO_MANIFEST_DIR")))
        .expect(dir)
        .map(|f| std::fs::read_to_string(f.expect("entry").path()).expect("a sample"))
        .collect();
    for block in &blocks {
        assert!(
            samples.iter().any(|s| s.trim() == block.trim()),
            "docs/events.md shows an example ({opening}) that is not in {dir}:\n{block}"
        );
    }
    blocks.len()
}

/// The fenced ```json blocks of a Markdown file (events).
fn json_blocks(markdown: &str) -> Vec<String> {
    fenced_blocks(markdown, "```json")
}

/// The blocks of a Markdown file fenced with exactly `opening` (e.g. ```json outcome).
fn fenced_blocks(markdown: &str, opening: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.trim() == opening => current = Some(String::new()),
            Some(block) if line.trim() == "```" => {
                out.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed {opening} block");
    out
}

/// The outcome messages on docs/events.md (fenced ```json outcome, so that the event checks
/// above leave them alone) are what docs/outcome.schema.json accepts; tests/it/outcomes.rs holds
/// the schema to what the daemon really publishes.
#[test]
fn every_outcome_example_in_the_event_docs_is_accepted_by_the_outcome_schema() {
    let blocks = fenced_blocks(&repo("docs/events.md"), "```json outcome");
    let docs: Vec<Vec<u8>> = blocks.iter().map(|b| b.as_bytes().to_vec()).collect();
    let mut results = BTreeSet::new();
    for (block, verdict) in blocks
        .iter()
        .zip(common::schema::verdicts("outcome.schema.json", &docs))
    {
        assert!(
            verdict.valid,
            "docs/events.md outcome rejected by docs/outcome.schema.json: {:?}\n{block}",
            verdict.errors
        );
        let v: serde_json::Value = serde_json::from_str(block).expect("JSON");
        results.insert(v["result"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        results,
        BTreeSet::from(
            [
                "failed",
                "succeeded",
                "cloud_confirmed",
                "cloud_failed",
                "visible"
            ]
            .map(String::from)
        ),
        "a success and a failure are shown, on premises and in the cloud, and a start date's day"
    );
    // And the schema refuses what breaks the contract.
    let broken = [
        r#"{"schema":"mailboxd.outcome/v1","id":"x","event_id":"e","job_id":"649e2282-c0c4-4fde-8ced-d010b0154975","type":"joiner","result":"succeeded","outcome":"enabled","at":"2026-11-22T10:00:03Z","attempts":1,"account":{"sam_account_name":"j"}}"#,
        r#"{"schema":"mailboxd.outcome/v1","id":"649e2282-c0c4-4fde-8ced-d010b0154975","event_id":"e","job_id":"649e2282-c0c4-4fde-8ced-d010b0154975","type":"joiner","result":"failed","at":"2026-11-22T10:00:03Z","attempts":1,"account":{"sam_account_name":"j"}}"#,
    ];
    let docs: Vec<Vec<u8>> = broken.iter().map(|b| b.as_bytes().to_vec()).collect();
    for (b, v) in broken
        .iter()
        .zip(common::schema::verdicts("outcome.schema.json", &docs))
    {
        assert!(!v.valid, "accepted: {b}");
    }
}

#[test]
fn every_json_example_in_the_event_docs_is_accepted_by_the_schema_and_the_code() {
    let blocks = json_blocks(&repo("docs/events.md"));
    assert!(
        blocks.len() >= 2,
        "docs/events.md should show at least a joiner and a leaver"
    );
    let docs: Vec<Vec<u8>> = blocks.iter().map(|b| b.as_bytes().to_vec()).collect();
    let verdicts = schema_verdicts(&docs);
    let mut kinds = BTreeSet::new();
    for (block, verdict) in blocks.iter().zip(&verdicts) {
        assert!(
            verdict.valid,
            "docs/events.md example rejected by docs/event.schema.json: {:?}\n{block}",
            verdict.errors
        );
        let e = code_accepts(block.as_bytes()).unwrap_or_else(|err| {
            panic!("docs/events.md example rejected by mailboxd::event::parse: {err}\n{block}")
        });
        kinds.insert(e.kind.as_str());
    }
    assert_eq!(
        kinds,
        BTreeSet::from(["joiner", "leaver", "mover"]),
        "examples of every kind"
    );
}

/// Refusals the schema can express; the others depend on the message around the body (its
/// size, content type, routing key) or on configuration (the routing-domain allow-list).
fn schema_level(err: &EventError) -> bool {
    match err {
        EventError::Json(_) | EventError::Schema(_) | EventError::Missing(_) => true,
        EventError::Invalid { reason, .. } => {
            !reason.contains("routing key") && !reason.contains("allowed routing domains")
        }
        EventError::TooLarge(_)
        | EventError::ContentType(_)
        | EventError::Xml(_)
        | EventError::Midpoint(_)
        | EventError::Amqp10(_) => false,
    }
}

#[test]
fn poison_the_code_refuses_for_a_schema_reason_the_schema_refuses_too() {
    let dir = format!("{}/tests/data/poison", env!("CARGO_MANIFEST_DIR"));
    let mut bodies = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("tests/data/poison") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let body = std::fs::read(&path).expect("read");
            bodies.push((path, body));
        }
    }
    bodies.sort();
    assert!(bodies.len() >= 10);
    let verdicts = schema_verdicts(&bodies.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>());
    let mut checked = 0;
    for ((path, body), verdict) in bodies.iter().zip(&verdicts) {
        let err = match code_accepts(body) {
            Ok(e) => panic!("{} is poison but parses: {e:?}", path.display()),
            Err(err) => err,
        };
        if !schema_level(&err) {
            continue;
        }
        checked += 1;
        assert!(
            !verdict.valid,
            "{}: the code refuses it ({err}), the schema accepts it",
            path.display()
        );
        if matches!(err, EventError::Json(_)) {
            // Not a JSON document at all, or one serde refuses (nesting): never a valid event.
            assert!(!verdict.json || !verdict.valid, "{}", path.display());
        }
    }
    assert!(checked >= 10, "only {checked} poison files were compared");
}

/// A `mailboxd.event/v1` joiner with this `account` object and extra top-level fields.
fn joiner(account: &str, extra: &str) -> String {
    format!(
        r#"{{"schema":"mailboxd.event/v1","id":"e-1","type":"joiner","occurred_at":"2026-11-22T10:00:00Z","account":{account}{extra}}}"#
    )
}

fn sam(s: &str) -> String {
    joiner(
        &format!(r#"{{"sam_account_name":{}}}"#, serde_json::json!(s)),
        "",
    )
}

fn mailbox(m: &str) -> String {
    joiner(
        r#"{"sam_account_name":"jdoe"}"#,
        &format!(r#","mailbox":{m}"#),
    )
}

fn account(a: &str) -> String {
    joiner(a, "")
}

/// Edge cases that the schema and the code must judge alike: (accepted?, body).
fn assert_schema_and_code_agree(cases: &[(bool, String)]) {
    let verdicts = schema_verdicts(
        &cases
            .iter()
            .map(|(_, b)| b.as_bytes().to_vec())
            .collect::<Vec<_>>(),
    );
    for ((want, body), verdict) in cases.iter().zip(&verdicts) {
        let code = code_accepts(body.as_bytes());
        assert_eq!(
            code.is_ok(),
            *want,
            "the code: {body}\n{:?}",
            code.as_ref().err()
        );
        assert_eq!(
            verdict.valid, *want,
            "the schema: {body}\n{:?}",
            verdict.errors
        );
    }
}

/// sAMAccountName: what AD allows, its length, and what it refuses.
#[test]
fn the_schema_and_the_code_agree_on_account_names() {
    assert_schema_and_code_agree(&[
        (true, sam("o'brien")),
        (true, sam("svc$")),
        (true, sam("jürgen")),
        (true, sam("a`b")),
        (true, sam("x y")),
        (true, sam("twenty-characters-ok")),
        (false, sam("twenty-one-characters")),
        (false, sam("ends.")),
        (false, sam("..")),
        (false, sam(" . ")),
        (false, sam("a@b")),
        (false, sam("a\tb")),
        (false, sam("a\u{85}b")),
        (false, sam("")),
    ]);
}

/// objectGUID forms, the DC name, the UPN and the DN.
#[test]
fn the_schema_and_the_code_agree_on_the_other_account_fields() {
    assert_schema_and_code_agree(&[
        // One name at least, any of the four (issue 34); a null one is none.
        (
            true,
            account(r#"{"distinguished_name":"CN=J Doe,OU=Staff,DC=corp,DC=example"}"#),
        ),
        (
            true,
            account(r#"{"object_guid":"b1f0a2c3-d4e5-f607-1829-3a4b5c6d7e8f"}"#),
        ),
        (
            true,
            account(r#"{"user_principal_name":"jdoe@corp.example"}"#),
        ),
        (false, account(r#"{}"#)),
        (
            false,
            account(r#"{"object_guid":null,"user_principal_name":null}"#),
        ),
        (
            false,
            account(r#"{"created_on_server":"dc01.corp.example"}"#),
        ),
        (
            true,
            account(
                r#"{"sam_account_name":"jdoe","object_guid":"{B1F0A2C3-D4E5-F607-1829-3A4B5C6D7E8F}"}"#,
            ),
        ),
        (
            true,
            account(
                r#"{"sam_account_name":"jdoe","object_guid":"b1f0a2c3d4e5f60718293a4b5c6d7e8f"}"#,
            ),
        ),
        (
            false,
            account(r#"{"sam_account_name":"jdoe","object_guid":"b1f0a2c3-d4e5-f607-1829"}"#),
        ),
        (
            true,
            account(r#"{"sam_account_name":"jdoe","created_on_server":"dc01.corp.example"}"#),
        ),
        (
            false,
            account(r#"{"sam_account_name":"jdoe","created_on_server":"dc01_corp"}"#),
        ),
        (
            false,
            account(r#"{"sam_account_name":"jdoe","created_on_server":"-dc.corp"}"#),
        ),
        (
            true,
            account(r#"{"sam_account_name":"jdoe","user_principal_name":null}"#),
        ),
        (
            false,
            account(r#"{"sam_account_name":"jdoe","user_principal_name":"jdoe@corp..example"}"#),
        ),
        (
            false,
            account(r#"{"sam_account_name":"jdoe","user_principal_name":".jdoe@corp.example"}"#),
        ),
        (
            false,
            account(r#"{"sam_account_name":"jdoe","distinguished_name":""}"#),
        ),
        (false, account(r#"{"sam_account_name":null}"#)),
        (false, account("null")),
    ]);
}

/// Alias, archive and the addresses of the optional `mailbox` object.
#[test]
fn the_schema_and_the_code_agree_on_the_mailbox_fields() {
    assert_schema_and_code_agree(&[
        (true, mailbox("null")),
        (true, mailbox("{}")),
        (true, mailbox(r#"{"alias":"john.doe","archive":true}"#)),
        (true, mailbox(r#"{"alias":"j..d"}"#)),
        (false, mailbox(r#"{"alias":".jd"}"#)),
        (false, mailbox(r#"{"alias":"j d"}"#)),
        (false, mailbox(r#"{"archive":"yes"}"#)),
        (
            true,
            mailbox(r#"{"primary_smtp_address":"o'brien+x@corp.example"}"#),
        ),
        (
            false,
            mailbox(r#"{"primary_smtp_address":"a@b@corp.example"}"#),
        ),
        (
            false,
            mailbox(&format!(
                r#"{{"remote_routing_address":"{}@tenant.mail.onmicrosoft.com"}}"#,
                "x".repeat(65)
            )),
        ),
    ]);
}

fn mover(rest: &str) -> String {
    format!(
        r#"{{"schema":"mailboxd.event/v1","id":"m-1","type":"mover","occurred_at":"2026-11-22T10:00:00Z","account":{{"sam_account_name":"jsmith"}}{rest}}}"#
    )
}

/// A mover's `rename`: required there (at least one value), refused elsewhere, no `mailbox`.
#[test]
fn the_schema_and_the_code_agree_on_a_movers_rename() {
    assert_schema_and_code_agree(&[
        (true, mover(r#","rename":{"alias":"jdoe"}"#)),
        (
            true,
            mover(r#","rename":{"user_principal_name":"j@corp.example","alias":null}"#),
        ),
        (
            true,
            mover(r#","rename":{"primary_smtp_address":"o'brien$x@corp.example"}"#),
        ),
        (true, mover(r#","rename":{"alias":"jdoe"},"mailbox":null"#)),
        (false, mover("")),
        (false, mover(r#","rename":null"#)),
        (false, mover(r#","rename":{}"#)),
        (false, mover(r#","rename":{"alias":null}"#)),
        (false, mover(r#","rename":{"alias":"j doe"}"#)),
        (
            false,
            mover(r#","rename":{"primary_smtp_address":"nodomain"}"#),
        ),
        (false, mover(r#","rename":{"alias":"jdoe"},"mailbox":{}"#)),
        (
            true,
            joiner(r#"{"sam_account_name":"jdoe"}"#, r#","rename":null"#),
        ),
        (
            false,
            joiner(
                r#"{"sam_account_name":"jdoe"}"#,
                r#","rename":{"alias":"x"}"#,
            ),
        ),
    ]);
}

/// Unknown fields, `source`, timestamps, the type and the id, and a body that is no object.
#[test]
fn the_schema_and_the_code_agree_on_the_envelope() {
    assert_schema_and_code_agree(&[
        (
            true,
            joiner(
                r#"{"sam_account_name":"jdoe"}"#,
                r#","source":"midpoint","unknown_field":1"#,
            ),
        ),
        (
            false,
            joiner(r#"{"sam_account_name":"jdoe"}"#, r#","source":"""#),
        ),
        (
            true,
            joiner(r#"{"sam_account_name":"jdoe"}"#, "").replace("10:00:00Z", "10:00:00.123+01:00"),
        ),
        (
            false,
            joiner(r#"{"sam_account_name":"jdoe"}"#, "").replace("10:00:00Z", "10:00:00"),
        ),
        (
            false,
            joiner(r#"{"sam_account_name":"jdoe"}"#, "").replace("2026-11-22T", "2026-11-22T25:"),
        ),
        (
            false,
            joiner(r#"{"sam_account_name":"jdoe"}"#, "")
                .replace(r#""type":"joiner""#, r#""type":"Joiner""#),
        ),
        (
            false,
            joiner(r#"{"sam_account_name":"jdoe"}"#, "").replace(r#""id":"e-1""#, r#""id":"""#),
        ),
        (
            false,
            joiner(r#"{"sam_account_name":"jdoe"}"#, "").replace(r#""id":"e-1""#, r#""id":7"#),
        ),
        (false, "[]".to_owned()),
    ]);
}

/// Relative links in the README, ARCHITECTURE.md and docs/ point at files that exist.
#[test]
fn relative_links_in_the_docs_resolve() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) == Some("md") {
            files.push(path);
        }
    }
    let mut checked = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = rest[..end].split('#').next().unwrap_or("");
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let dir = file.parent().expect("a parent directory");
            assert!(
                dir.join(target).exists(),
                "{}: link to {target} does not resolve",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} links checked");
}
