//! Responses conversations in a real Postgres (`state_storage: postgres`): two egress
//! replicas (two `plano-egress` processes, and two in-process servers) serve the turns of
//! one conversation, a crash and restart keeps it, Postgres going down
//! answers `previous_response_id` with 503 `state_unavailable` while everything else keeps
//! working, and it recovers without a restart. Plus the in-memory store's size bound.
//!
//! Needs Debian's `postgresql` server binaries (`/usr/lib/postgresql/<v>/bin`). Without them
//! the Postgres tests are skipped with a message, unless `PLANO_REQUIRE_POSTGRES` is set (CI
//! sets it), then they fail. `initdb` refuses to run as root: as root, the throwaway cluster
//! runs as the `postgres` (or `nobody`) user via `runuser`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::harness::Egress;
use integration_tests::mock::MockProvider;
use serde_json::{Value, json};

use crate::support::{Plano, eventually, http_client, port_candidates};

const MODEL: &str = "anthropic/claude-sonnet-4-5";

/// A throwaway Postgres cluster in a temp dir, on a free port; stopped when dropped.
struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    run_as: Option<&'static str>,
    _dir: tempfile::TempDir,
}

fn postgres_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PLANO_POSTGRES_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop()
}

/// The cluster, or `None` (test skipped) when the server is not installed.
fn postgres_or_skip(test: &str) -> Option<Postgres> {
    match postgres_bin() {
        Some(bin) => Some(Postgres::start(bin)),
        None => {
            assert!(
                std::env::var_os("PLANO_REQUIRE_POSTGRES").is_none(),
                "PLANO_REQUIRE_POSTGRES is set but no Postgres server binaries were found (apt-get install postgresql)"
            );
            eprintln!(
                "SKIPPED {test}: no /usr/lib/postgresql/<version>/bin/initdb \
                 (apt-get install postgresql; set PLANO_REQUIRE_POSTGRES=1 to make this a failure)"
            );
            None
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    fn start(bin: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let run_as = is_root().then(|| {
            let has_postgres = Command::new("id")
                .arg("postgres")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if has_postgres { "postgres" } else { "nobody" }
        });
        if let Some(user) = run_as {
            let ok = Command::new("chown")
                .arg(user)
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "cannot chown the cluster dir to {user}");
        }
        let pg = Postgres {
            data: dir.path().join("data"),
            bin,
            port: 0,
            run_as,
            _dir: dir,
        };
        let data = pg.data.to_string_lossy().to_string();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "plano",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        // Postgres must be told its port: try ports until `pg_ctl start -w` succeeds (it
        // fails when the port is taken), never a port released for someone else to take.
        let mut pg = pg;
        for port in port_candidates() {
            pg.port = port;
            if pg.try_up() {
                return pg;
            }
        }
        panic!("Postgres could not bind any of 20 ports");
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .command(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start the server and wait until it accepts connections.
    fn up(&self) {
        assert!(self.try_up(), "pg_ctl start failed: {}", self.log_tail());
    }

    /// The end of the server log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Start the server on `self.port`; whether it came up.
    fn try_up(&self) -> bool {
        let data = self.data.to_string_lossy().to_string();
        let socket_dir = self.data.parent().unwrap_or(Path::new("/tmp"));
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            socket_dir.display()
        );
        let log = self.data.join("server.log").to_string_lossy().to_string();
        self.command("pg_ctl")
            .args([
                "start", "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stop it the way a crash or a pulled plug would: no shutdown checkpoint, sessions cut.
    fn kill(&self) {
        let data = self.data.to_string_lossy().to_string();
        self.run("pg_ctl", &["stop", "-D", &data, "-m", "immediate", "-w"]);
    }

    fn url(&self) -> String {
        format!("postgresql://plano@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().to_string();
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-D", &data, "-m", "immediate"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn config(mock: &MockProvider, state_storage: &str) -> String {
    format!(
        r#"
version: v0.4.0
model_providers:
  - model: {MODEL}
    access_key: sk-ant
    base_url: {}
    default: true
listeners:
  - type: model
    name: models
    port: 12000
    timeout: 10s
    max_retries: 0
{state_storage}
"#,
        mock.url()
    )
}

fn postgres_config(mock: &MockProvider, pg: &Postgres, extra: &str) -> String {
    config(
        mock,
        &format!(
            "state_storage:\n  type: postgres\n  connection_string: {}\n  timeout: 1s\n{extra}",
            pg.url()
        ),
    )
}

/// One Responses turn; returns (status, body).
async fn turn(egress: &Egress, input: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"model": MODEL, "input": input});
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    let r = http_client()
        .post(egress.url("/v1/responses"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A streamed turn: the id from `response.completed`.
async fn streamed_turn(egress: &Egress, input: &str, previous: &str) -> String {
    let text = http_client()
        .post(egress.url("/v1/responses"))
        .json(&json!({"model": MODEL, "input": input, "stream": true, "previous_response_id": previous}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let completed: Value = text
        .split("\n\n")
        .find(|e| e.starts_with("event: response.completed"))
        .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .unwrap_or_else(|| panic!("no response.completed in {text}"));
    completed["response"]["id"].as_str().unwrap().to_string()
}

/// The user texts the provider received in its last request, in order.
fn user_texts(mock: &MockProvider) -> Vec<String> {
    let sent = mock.requests();
    let last = sent.last().unwrap();
    last.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            blocks => blocks[0]["text"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// A `plano-egress` process (the built binary) on OS-chosen ports, with a config file of
/// its own; killed when dropped.
struct Replica {
    plano: Plano,
    base: String,
}

impl Replica {
    /// Start the binary with its listener and admin port on port 0 (read back from its
    /// log) and wait until it answers.
    async fn start(dir: &Path, name: &str, mock: &MockProvider, pg: &Postgres) -> Self {
        let yaml = format!(
            r#"version: v0.4.0
model_providers:
  - model: {MODEL}
    access_key: sk-ant
    base_url: {}
    default: true
listeners:
  - type: model
    name: models
    address: 127.0.0.1
    port: 0
    timeout: 10s
    max_retries: 0
admin:
  egress: "127.0.0.1:0"
state_storage:
  type: postgres
  connection_string: {}
  timeout: 1s
"#,
            mock.url(),
            pg.url()
        );
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let plano = Plano::start("plano-egress", &path, &[], 1).await;
        let base = format!("http://{}", plano.addr("model"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http_client().get(format!("{base}/v1/models")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(Instant::now() < deadline, "replica {name} not serving");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { plano, base }
    }

    /// SIGKILL: a crash, nothing flushed or closed cleanly.
    async fn kill(mut self) {
        self.plano.child.kill().await.unwrap();
    }
}

/// One Responses turn on a replica process; returns (status, body).
async fn turn_at(base: &str, input: &str, extra: Value) -> (u16, Value) {
    let mut body = json!({"model": MODEL, "input": input});
    if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
        b.extend(extra);
    }
    let r = http_client()
        .post(format!("{base}/v1/responses"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Two real `plano-egress` processes on one Postgres: turn 1 on A, turn 2 on B, A killed
/// and started again, turn 3 on the new A sees the whole conversation.
#[tokio::test]
async fn two_replica_processes_on_one_postgres_share_conversations_across_a_crash() {
    let Some(pg) = postgres_or_skip("two_replica_processes_on_one_postgres") else {
        return;
    };
    let mock = MockProvider::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Both start together: the migration runs once, under its lock.
    let (a, b) = tokio::join!(
        Replica::start(dir.path(), "a", &mock, &pg),
        Replica::start(dir.path(), "b", &mock, &pg)
    );

    let (status, first) = turn_at(&a.base, "turn one", json!({})).await;
    assert_eq!(status, 200, "{first}");
    let id1 = first["id"].as_str().unwrap().to_string();

    let (status, second) = turn_at(&b.base, "turn two", json!({"previous_response_id": id1})).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(user_texts(&mock), ["turn one", "turn two"]);
    let id2 = second["id"].as_str().unwrap().to_string();

    a.kill().await;
    let a = Replica::start(dir.path(), "a-restarted", &mock, &pg).await;
    let (status, third) =
        turn_at(&a.base, "turn three", json!({"previous_response_id": id2})).await;
    assert_eq!(status, 200, "{third}");
    assert_eq!(user_texts(&mock), ["turn one", "turn two", "turn three"]);

    // An id neither replica stored is a 409, not a 503.
    let (status, body) = turn_at(&b.base, "x", json!({"previous_response_id": "resp_nope"})).await;
    assert_eq!(status, 409, "{body}");
    a.kill().await;
    b.kill().await;
}

/// The same across in-process replicas, with a streamed turn (stored before its end
/// reaches the client) and a graceful restart.
#[tokio::test]
async fn two_replicas_on_one_postgres_continue_each_others_conversations_across_a_restart() {
    let Some(pg) = postgres_or_skip("two_replicas_on_one_postgres") else {
        return;
    };
    let mock = MockProvider::start().await.unwrap();
    let yaml = postgres_config(&mock, &pg, "");
    // Both start together: the migration runs once, under its lock.
    let (a, b) = tokio::join!(Egress::start(&yaml, &[]), Egress::start(&yaml, &[]));
    let (a, b) = (a.unwrap(), b.unwrap());

    let (status, first) = turn(&a, "turn one", json!({})).await;
    assert_eq!(status, 200, "{first}");
    let id1 = first["id"].as_str().unwrap().to_string();

    // The second turn lands on the other replica.
    let (status, second) = turn(&b, "turn two", json!({"previous_response_id": id1})).await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(user_texts(&mock), ["turn one", "turn two"]);
    let id2 = second["id"].as_str().unwrap().to_string();

    // A streamed third turn back on the first replica, stored before its end reaches us.
    let id3 = streamed_turn(&a, "turn three", &id2).await;
    assert_eq!(user_texts(&mock), ["turn one", "turn two", "turn three"]);

    // Restart the replica that stored it: the conversation is still there.
    a.stop().await.unwrap();
    let a = Egress::start(&yaml, &[]).await.unwrap();
    let (status, fourth) = turn(&a, "turn four", json!({"previous_response_id": id3})).await;
    assert_eq!(status, 200, "{fourth}");
    assert_eq!(
        user_texts(&mock),
        ["turn one", "turn two", "turn three", "turn four"]
    );

    // Unknown ids are still a 409, not a 503.
    let (status, body) = turn(&b, "x", json!({"previous_response_id": "resp_nope"})).await;
    assert_eq!(status, 409, "{body}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

#[tokio::test]
async fn postgres_down_is_a_503_for_follow_ups_only_and_recovers_without_a_restart() {
    let Some(pg) = postgres_or_skip("postgres_down_is_a_503") else {
        return;
    };
    let mock = MockProvider::start().await.unwrap();
    let egress = Egress::start(&postgres_config(&mock, &pg, ""), &[])
        .await
        .unwrap();
    let (status, first) = turn(&egress, "before the outage", json!({})).await;
    assert_eq!(status, 200, "{first}");
    let id = first["id"].as_str().unwrap().to_string();

    pg.kill();

    // A follow-up cannot be answered: a clear 503 in the Responses (OpenAI) error shape,
    // within the configured timeout, and the provider is not called.
    let calls = mock.requests().len();
    let started = Instant::now();
    let (status, body) = turn(&egress, "during", json!({"previous_response_id": id})).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "state_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("previous_response_id"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(mock.requests().len(), calls);

    // New conversations still work: `store: false`, and even a stored one (the answer is
    // sent; the failed store is logged and counted).
    let (status, body) = turn(&egress, "unstored", json!({"store": false})).await;
    assert_eq!(status, 200, "{body}");
    let (status, lost) = turn(&egress, "stored while down", json!({})).await;
    assert_eq!(status, 200, "{lost}");
    let metrics = egress.metrics().render();
    assert!(
        metrics.contains(
            r#"plano_conversations_not_stored_total{backend="postgres",reason="unavailable"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"plano_state_storage_errors_total{backend="postgres",operation="get"}"#),
        "{metrics}"
    );

    // Postgres is back: the same egress continues the conversation stored before.
    pg.up();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = turn(&egress, "after", json!({"previous_response_id": id})).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "no recovery within 15s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(user_texts(&mock), ["before the outage", "after"]);
    // The answer sent while it was down was never stored.
    let lost_id = lost["id"].as_str().unwrap();
    let (status, _) = turn(&egress, "y", json!({"previous_response_id": lost_id})).await;
    assert_eq!(status, 409);
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn an_egress_started_before_postgres_applies_the_schema_when_it_arrives() {
    let Some(pg) = postgres_or_skip("an_egress_started_before_postgres") else {
        return;
    };
    pg.kill();
    let mock = MockProvider::start().await.unwrap();
    let egress = Egress::start(&postgres_config(&mock, &pg, ""), &[])
        .await
        .unwrap();
    // Serving without its database.
    let (status, _) = turn(&egress, "no db", json!({"store": false})).await;
    assert_eq!(status, 200);
    pg.up();
    let (status, first) = turn(&egress, "db now", json!({})).await;
    assert_eq!(status, 200, "{first}");
    let id = first["id"].as_str().unwrap();
    let (status, body) = turn(&egress, "again", json!({"previous_response_id": id})).await;
    assert_eq!(status, 200, "{body}");
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn postgres_rows_expire_after_the_ttl_and_are_cleaned_up() {
    let Some(pg) = postgres_or_skip("postgres_rows_expire") else {
        return;
    };
    let mock = MockProvider::start().await.unwrap();
    let egress = Egress::start(&postgres_config(&mock, &pg, "  ttl: 1s\n"), &[])
        .await
        .unwrap();
    let (_, first) = turn(&egress, "short-lived", json!({})).await;
    let id = first["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = turn(&egress, "late", json!({"previous_response_id": id})).await;
    assert_eq!(status, 409, "expired: {body}");
    // The cleanup task (every second for this TTL) deleted the row.
    eventually(Duration::from_secs(10), || async {
        egress
            .metrics()
            .render()
            .contains(r#"plano_conversations_evicted_total{backend="postgres",reason="expired"}"#)
    })
    .await;
    egress.stop().await.unwrap();
}

#[tokio::test]
async fn a_conversation_over_the_size_limit_is_not_stored_and_the_answer_still_sent() {
    let mock = MockProvider::start().await.unwrap();
    let egress = Egress::start(
        &config(
            &mock,
            "state_storage:\n  type: memory\n  max_conversation_bytes: 2000\n",
        ),
        &[],
    )
    .await
    .unwrap();
    let (status, small) = turn(&egress, "short", json!({})).await;
    assert_eq!(status, 200);
    let (status, big) = turn(&egress, &"long ".repeat(1000), json!({})).await;
    assert_eq!(
        status, 200,
        "the answer is sent even though it is not stored"
    );
    for (id, want) in [(&small["id"], 200), (&big["id"], 409)] {
        let (status, body) = turn(&egress, "next", json!({"previous_response_id": id})).await;
        assert_eq!(status, want, "{body}");
    }
    let metrics = egress.metrics().render();
    assert!(
        metrics.contains(
            r#"plano_conversations_not_stored_total{backend="memory",reason="too_large"}"#
        ),
        "{metrics}"
    );
    egress.stop().await.unwrap();
}
