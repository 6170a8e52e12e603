//! `scripts/quickstart.sh` refuses to go on when one of its ports is taken: it would
//! otherwise talk to whatever listens there and report success.

use std::path::PathBuf;
use std::time::Duration;

#[tokio::test]
async fn quickstart_fails_loudly_when_its_port_is_taken() {
    // Hold the mock's port; if something else already does, the script must fail all the same.
    let _held = std::net::TcpListener::bind("127.0.0.1:18080");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let run = tokio::process::Command::new("bash")
        .arg(root.join("scripts/quickstart.sh"))
        .arg("--smoke")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("quickstart did not stop within 60s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("port 18080 on 127.0.0.1 is already in use"),
        "{stderr}"
    );
    // It stopped before building or starting anything.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
