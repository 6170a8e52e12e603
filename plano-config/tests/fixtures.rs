#![allow(
    clippy::unwrap_used,
    reason = "test helpers may panic on broken fixtures"
)]

//! Every valid fixture loads and its normalised form is snapshotted; every invalid fixture
//! reports exactly the problems in its `.errors` file (all of them, with key paths).
//! Regenerate expectations with `UPDATE_EXPECT=1 cargo test -p plano-config` and review.

use std::path::{Path, PathBuf};

fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" | "ANTHROPIC_API_KEY" | "GROQ_API_KEY" | "MISTRAL_API_KEY"
        | "CUSTOM_API_KEY" | "AZURE_KEY" | "GEMINI_KEY" | "BEDROCK_KEY" | "EDGE_KEY_WEB"
        | "EDGE_KEY_BATCH" => Some(format!("secret-{}", name.to_lowercase())),
        _ => None,
    }
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn valid_fixtures_load_and_match_snapshots() {
    let files = fixtures("valid");
    assert!(files.len() >= 9);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let config = plano_config::load_str(&text, None, &env)
            .unwrap_or_else(|e| panic!("{} should load:\n{e}", file.display()));
        let serialized = serde_json::to_string(&config).unwrap();
        assert!(
            !serialized.contains("secret-"),
            "a secret leaked into {}",
            file.display()
        );
        let name = file.file_stem().unwrap().to_string_lossy().to_string();
        insta::assert_yaml_snapshot!(name, config);
    }
}

#[test]
fn invalid_fixtures_report_every_problem() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let files = fixtures("invalid");
    assert!(files.len() >= 21);
    let mut failures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let errors = match plano_config::load_str(&text, None, &env) {
            Ok(_) => {
                failures.push(format!("{} loaded but should not", file.display()));
                continue;
            }
            Err(e) => e,
        };
        let got: String = errors.0.iter().map(|e| format!("{e}\n")).collect();
        let expected_file = file.with_extension("errors");
        if update {
            std::fs::write(&expected_file, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_default();
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn seed_fixture_needs_its_key() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/valid/seed_listeners.yaml"),
    )
    .unwrap();
    let err = plano_config::load_str(&text, None, &|_| None).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("OPENAI_API_KEY"), "{shown}");
    assert!(shown.contains("model_providers[0].access_key"), "{shown}");

    let ok = plano_config::load_str(&text, None, &|k| {
        (k == "OPENAI_API_KEY").then(|| "sk".into())
    })
    .unwrap();
    let model = &ok.model_listener;
    assert_eq!(model.addr.to_string(), "127.0.0.1:12000");
    assert_eq!(ok.default_provider().unwrap().name, "openai/gpt-4o");
}
