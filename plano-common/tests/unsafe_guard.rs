//! The workspace has exactly one `unsafe` block: the FFI call to mimalloc's `mi_collect` in
//! plano-common/src/memory.rs (ARCHITECTURE.md, "unsafe"). The workspace lint is `deny`
//! rather than `forbid` so that one function can `allow` it; this test keeps it at one. It
//! scans every `.rs` file of the repository (outside `target/` and dot-directories) and fails
//! on any other `unsafe` block, function, impl, trait, extern block or attribute, on any other
//! mention of the `unsafe_code` lint (an `allow`, `expect` or `warn` of it), and if a crate
//! leaves the workspace lints or the workspace lint is weakened. It runs with the README's
//! test command (`cargo test --workspace`).

use std::path::{Path, PathBuf};

/// The one file allowed an `unsafe` block and the `allow` for it, relative to the root.
const ALLOWED_FILE: &str = "plano-common/src/memory.rs";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name.starts_with('.') || name == "target" || name == "node_modules" {
                continue;
            }
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

/// Lines of every `unsafe` keyword that opens unsafe code: followed by `{`, or by `fn`,
/// `impl`, `trait` or `extern`, or directly by `(` (an unsafe attribute such as
/// `#[unsafe(no_mangle)]`). Comments are not told apart: prose written like code fails too.
fn unsafe_uses(text: &str) -> Vec<usize> {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices("unsafe")
        .filter(|(at, keyword)| {
            if text[..*at].chars().next_back().is_some_and(is_ident) {
                return false;
            }
            let rest = &text[at + keyword.len()..];
            let trimmed = rest.trim_start();
            trimmed.starts_with('{')
                || rest.starts_with('(')
                || (rest.starts_with(char::is_whitespace)
                    && ["fn", "impl", "trait", "extern"].iter().any(|w| {
                        trimmed
                            .strip_prefix(w)
                            .is_some_and(|r| !r.starts_with(is_ident))
                    }))
        })
        .map(|(at, _)| line_of(text, at))
        .collect()
}

fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

fn lint_mentions(text: &str) -> Vec<usize> {
    text.match_indices("unsafe_code")
        .map(|(at, _)| line_of(text, at))
        .collect()
}

#[test]
fn the_only_unsafe_code_is_the_mimalloc_collect() {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 50,
        "found only {} .rs files under {}",
        files.len(),
        root.display()
    );
    let me = Path::new(file!())
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let mut problems = Vec::new();
    let mut allowed_seen = (0, 0);
    for path in &files {
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        // This file names what it looks for.
        if rel.ends_with("tests/unsafe_guard.rs") && me.as_deref() == Some("unsafe_guard.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        let uses = unsafe_uses(&text);
        let mentions = lint_mentions(&text);
        if rel == ALLOWED_FILE {
            allowed_seen = (uses.len(), mentions.len());
            if uses.len() != 1 || mentions.len() != 1 {
                problems.push(format!(
                    "{rel}: expected one unsafe block (lines {uses:?}) and one allow(unsafe_code) (lines {mentions:?})"
                ));
            }
            continue;
        }
        for line in uses {
            problems.push(format!("{rel}:{line}: unsafe code"));
        }
        for line in mentions {
            problems.push(format!("{rel}:{line}: the unsafe_code lint is named"));
        }
    }
    assert_eq!(
        allowed_seen,
        (1, 1),
        "{ALLOWED_FILE}: the mi_collect call or its allow moved; update this guard"
    );
    assert!(
        problems.is_empty(),
        "unsafe code outside the one allowed call (ARCHITECTURE.md, \"unsafe\"):\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_workspace_denies_unsafe_code_in_every_crate() {
    let root = root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
    assert!(
        manifest.contains("unsafe_code = \"deny\"")
            || manifest.contains("unsafe_code = \"forbid\""),
        "the workspace lint unsafe_code must stay deny (or forbid)"
    );
    let members = [
        "plano-config",
        "plano-common",
        "plano-egress",
        "plano-edge",
        "integration-tests",
    ];
    for member in members {
        let text =
            std::fs::read_to_string(root.join(member).join("Cargo.toml")).unwrap_or_default();
        assert!(
            text.contains("[lints]\nworkspace = true"),
            "{member}/Cargo.toml must keep `[lints] workspace = true`"
        );
    }
    assert!(
        members
            .iter()
            .all(|m| manifest.contains(&format!("\"{m}\""))),
        "the workspace members changed; update this guard"
    );
}

#[test]
fn the_scanner_finds_what_it_must() {
    let u = "unsafe";
    assert_eq!(unsafe_uses(&format!("fn a() {{ {u} {{ x() }} }}")), vec![1]);
    assert_eq!(unsafe_uses(&format!("\n{u} fn b() {{}}")), vec![2]);
    assert_eq!(unsafe_uses(&format!("{u} impl Send for X {{}}")), vec![1]);
    assert_eq!(unsafe_uses(&format!("{u} extern \"C\" {{}}")), vec![1]);
    assert_eq!(unsafe_uses(&format!("#[{u}(no_mangle)]")), vec![1]);
    assert_eq!(unsafe_uses(&format!("{u}{{}}")), vec![1]);
    assert!(unsafe_uses(&format!("// not `{u}` here; {u}_code; not_{u} fnord")).is_empty());
    assert_eq!(lint_mentions(&format!("#![allow({u}_code)]")), vec![1]);
}
