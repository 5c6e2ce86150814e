//! The fuzz targets' committed corpus (`fuzz/corpus/<target>/`) replayed through the same
//! entry points the fuzzer calls (`mailboxd::fuzzing`), so `cargo test` catches a panic on a
//! known input (the seeds and every crash the fuzzers found) without the fuzzer installed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use mailboxd::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| {
            let path = f.expect("a directory entry").path();
            let bytes = std::fs::read(&path).expect("a corpus file");
            (path.display().to_string(), bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_file_goes_through_its_target_without_a_panic() {
    for (target, run) in TARGETS {
        let files = corpus(target);
        assert!(files.len() >= 3, "{target}: only {} seeds", files.len());
        for (name, bytes) in files {
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "{target} panicked on {name}");
        }
    }
}

#[test]
fn every_fuzz_target_has_an_entry_point_and_a_corpus() {
    let sources: BTreeSet<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .expect("fuzz/fuzz_targets")
        .map(|f| {
            let name = f
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned();
            name.trim_end_matches(".rs").to_owned()
        })
        .collect();
    let entries: BTreeSet<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(
        sources, entries,
        "fuzz/fuzz_targets/*.rs and fuzzing::TARGETS differ"
    );
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("Cargo.toml");
    for name in &entries {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
    }
}

/// The binary seeds are what the fuzzer starts from: they must reach the daemon's code, not
/// stop at the wire format (a wrong encoding would leave the fuzzer guessing from nothing).
#[test]
fn the_binary_seeds_reach_the_daemons_readers() {
    let seed = |target: &str, name: &str| {
        std::fs::read(fuzz_dir().join("corpus").join(target).join(name)).expect("a seed")
    };
    let delivery = seed("amqp_delivery", "json-with-headers");
    let (body, props) =
        lapin::protocol::basic::parse_properties(delivery.as_slice()).expect("AMQP properties");
    let rules = mailboxd::event::IntakeRules::default();
    let amqp = mailboxd::config::Amqp::default();
    let read = |props: &lapin::BasicProperties, body: &[u8]| {
        mailboxd::intake::read_delivery(props, "iam.events", "ad.user.created", body, &rules, &amqp)
    };
    match read(&props, body) {
        mailboxd::intake::Stored::Events { events, reply_to } => {
            assert_eq!(events[0].account.name(), "jdoe");
            assert_eq!(reply_to.as_deref(), Some("amq.gen-Xa2"));
        }
        other => panic!("the seed's event was refused: {other:?}"),
    }
    let refused = seed("amqp_delivery", "refused-with-headers");
    let (body, props) = lapin::protocol::basic::parse_properties(refused.as_slice()).expect("AMQP");
    match read(&props, body) {
        mailboxd::intake::Stored::Poison(row) => {
            assert_eq!(row.headers["x-trace"]["span"], "a1");
            assert_eq!(row.message_id.as_deref(), Some("m-2"));
        }
        other => panic!("the seed was not refused: {other:?}"),
    }
    let user = seed("ldap_entry", "user.ber");
    let (_, tag) = ldap3::asn1::parse_tag(&user).expect("BER");
    let entry = mailboxd::directory::search_entry(ldap3::ResultEntry::new(tag)).expect("entry");
    let account = mailboxd::directory::account_from_entry(
        &entry,
        mailboxd::config::SyncRule::ConsistencyGuid,
    );
    assert_eq!(account.sam_account_name, "jdoe");
    assert!(account.disabled && account.cloud_synced && account.object_guid.is_some());
}

/// The AMQP 1.0 seeds open to midPoint's requests and become the events they stand for.
#[test]
fn the_amqp10_seeds_open_to_midpoints_requests() {
    let rules = mailboxd::event::IntakeRules::default();
    for (name, kind) in [("full-add", "joiner"), ("value-modify-disable", "leaver")] {
        let body = std::fs::read(fuzz_dir().join("corpus/amqp10_body").join(name)).expect("seed");
        let delivery = mailboxd::event::Delivery {
            body: &body,
            content_type: None,
            message_id: None,
            routing_key: "midpoint",
            message_type: Some(mailboxd::event::amqp10::MESSAGE_TYPE),
        };
        let decoded = mailboxd::event::decode(&delivery, &rules).expect(name);
        assert_eq!(decoded.events[0].kind.as_str(), kind, "{name}");
    }
}
