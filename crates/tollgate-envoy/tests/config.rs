//! Config loading: upstream's validation errors (with the file in every message), the YAML
//! leniencies upstream has, and domain merging.

use std::sync::Arc;

use tollgate::MemoryStore;
use tollgate_envoy::{EnvoyConfigError, EnvoyOptions, EnvoyService};

/// Load `files` into a fresh directory; the error message if the config is invalid.
fn load_with(files: &[(&str, &str)], options: EnvoyOptions) -> Result<usize, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    EnvoyService::new(Arc::new(MemoryStore::new()), dir.path(), options)
        .map(|service| service.config().domains.len())
        .map_err(|e| e.to_string())
}

fn load(files: &[(&str, &str)]) -> Result<usize, String> {
    load_with(files, EnvoyOptions::default())
}

#[track_caller]
fn rejects(text: &str, expected: &str) {
    let error = load(&[("bad.yaml", text)]).expect_err("an invalid config");
    assert!(error.contains("bad.yaml"), "names the file: {error}");
    assert!(
        error.contains(expected),
        "expected {expected:?} in {error:?}"
    );
}

#[test]
fn upstream_validation_errors() {
    rejects("descriptors: []\n", "config file cannot have empty domain");
    rejects(
        "domain: d\ndescriptors:\n  - value: x\n",
        "descriptor has empty key",
    );
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    value: v\n  - key: k\n    value: v\n",
        "duplicate descriptor composite key 'd.k_v'",
    );
    rejects(
        "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n      - key: b\n",
        "duplicate descriptor composite key 'd.a.b'",
    );
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unlimited: true, unit: second }\n",
        "should not specify rate limit unit when unlimited",
    );
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: fortnight, requests_per_unit: 1 }\n",
        "invalid rate limit unit 'fortnight'",
    );
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { requests_per_unit: 1 }\n",
        "invalid rate limit unit ''",
    );
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 1, name: a, replaces: [{ name: a }] }\n",
        "replaces should not contain name of same descriptor",
    );
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 1, replaces: [{ name: '' }] }\n",
        "should not have an empty replaces entry",
    );
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n",
        "share_threshold can only be used with wildcard values",
    );
}

#[test]
fn unknown_fields_and_bad_types_name_the_line() {
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limt: {}\n",
        "rate_limt",
    );
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 1, per: 2 }\n",
        "per",
    );
    rejects("domain: d\nextra: 1\n", "extra");
    let error = load(&[(
        "bad.yaml",
        "domain: d\ndescriptors:\n  - key: k\n    rate_limt: {}\n",
    )])
    .unwrap_err();
    assert!(error.contains("bad.yaml:4:"), "{error}");
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: -1 }\n",
        "bad.yaml:4:",
    );
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    metadata: [a, b]\n",
        "metadata must be a map",
    );
    rejects("domain: [\n", "bad.yaml");
    rejects("", "bad.yaml");
}

#[test]
fn tollgate_extension_is_checked() {
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 1, algorithm: leaky }\n",
        "unknown algorithm `leaky`",
    );
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unit: second, requests_per_unit: 1, burst: 5 }\n",
        "burst applies only to token-bucket and gcra",
    );
    rejects(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: { unlimited: true, algorithm: gcra }\n",
        "should not specify algorithm or burst when unlimited",
    );
    for algorithm in [
        "fixed-window",
        "sliding-log",
        "sliding-window",
        "token-bucket",
        "gcra",
        "leaky-bucket",
    ] {
        let text = format!(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {{ unit: minute, requests_per_unit: 10, algorithm: {algorithm} }}\n"
        );
        assert_eq!(load(&[("ok.yaml", &text)]), Ok(1), "{algorithm}");
    }
}

#[test]
fn domains_are_unique_unless_merged() {
    let a = ("a.yaml", "domain: d\ndescriptors:\n  - key: x\n");
    let b = ("b.yaml", "domain: d\ndescriptors:\n  - key: y\n");
    let error = load(&[a, b]).unwrap_err();
    assert!(
        error.contains("b.yaml") && error.contains("duplicate domain 'd' in config file"),
        "{error}"
    );
    let merge = EnvoyOptions {
        merge_domains: true,
        ..EnvoyOptions::default()
    };
    assert_eq!(load_with(&[a, b], merge.clone()), Ok(1));
    // Merged files still may not define the same rule twice.
    let error = load_with(
        &[a, ("c.yaml", "domain: d\ndescriptors:\n  - key: x\n")],
        merge,
    )
    .unwrap_err();
    assert!(
        error.contains("c.yaml") && error.contains("duplicate descriptor composite key 'd.x'"),
        "{error}"
    );
}

#[test]
fn upstream_leniencies_are_kept() {
    // Units in any case, scalar values that are not strings, null lists, rpu without a unit
    // when unlimited, metadata of any shape, comments, dotfiles and other extensions ignored.
    let text = r#"
# comment
domain: d
descriptors:
  - key: code
    value: 429
    rate_limit: { unit: MINUTE, requests_per_unit: 1 }
    metadata: { team: { name: edge, zones: [a, 2, 1.5, true, null] } }
  - key: flag
    metadata:
    value: true
    descriptors:
  - key: internal
    rate_limit: { unlimited: true, requests_per_unit: 5 }
  - key: path
    value: /files/*
    share_threshold: true
    value_to_metric: true
    detailed_metric: true
    quota_mode: true
    rate_limit: { unit: Week, requests_per_unit: 1 }
"#;
    assert_eq!(
        load(&[
            ("ok.yml", text),
            (".hidden.yaml", "not: valid"),
            ("notes.txt", "x: [")
        ]),
        Ok(1)
    );
    // An empty directory is a valid config with no domains.
    assert_eq!(load(&[]), Ok(0));
}

#[test]
fn a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let error = EnvoyService::new(
        Arc::new(MemoryStore::new()),
        &missing,
        EnvoyOptions::default(),
    )
    .expect_err("missing directory");
    assert!(matches!(error, EnvoyConfigError::ReadDir { .. }));
    assert!(error.to_string().contains("nope"), "{error}");
}
