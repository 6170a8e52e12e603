//! Cloud credentials, end to end through the real `plano-egress` binary: a Bedrock
//! provider without `access_key` signs its requests with AWS SigV4, with credentials from
//! the standard AWS chain (environment, shared profile in `$HOME/.aws`). A mock Bedrock
//! records each request and the test recomputes the signature itself (HMAC-SHA256 with
//! ring, independently of the `aws-sigv4` crate the egress uses) from the same
//! credentials. The binary runs with a cleared environment so the chain sees only what
//! the test gives it (instance metadata is disabled).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use serde_json::{Value, json};

use crate::support::{Plano, http_client};

const REGION: &str = "us-west-2";
const MODEL_ID: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn converse(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    log.lock().unwrap().push(Seen {
        method,
        uri,
        headers,
        body,
    });
    axum::Json(json!({
        "output": {"message": {"role": "assistant", "content": [{"text": "signed hello"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}
    }))
}

/// A Bedrock runtime stand-in answering Converse on any model path.
async fn mock_bedrock() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let app = axum::Router::new()
        .fallback(axum::routing::post(converse))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, log)
}

/// The egress binary with one default provider `model` on `mock` and no `access_key`,
/// its environment cleared to PATH, HOME and `env` (so credentials come only from there),
/// ports chosen by the OS.
async fn keyless_egress(home: &Path, model: &str, mock: SocketAddr, env: &[(&str, &str)]) -> Plano {
    let yaml = format!(
        r#"version: v0.4.0
listeners:
  - name: model_listener
    type: model
    address: 127.0.0.1
    port: 0
model_providers:
  - model: {model}
    base_url: http://{mock}
    default: true
admin:
  egress: "127.0.0.1:0"
"#
    );
    let path = home.join("plano_config.yaml");
    std::fs::write(&path, yaml).unwrap();
    Plano::start_with("plano-egress", &path, &[], 1, |cmd| {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home)
            .envs(env.iter().copied());
    })
    .await
}

/// Start the egress binary with exactly `env` (plus PATH), a Bedrock provider on `mock`
/// without `access_key`, and send one chat request through it.
async fn one_request_through_egress(
    home: &Path,
    mock: SocketAddr,
    env: &[(&str, &str)],
) -> (u16, Value, String) {
    let mut env: Vec<(&str, &str)> = env.to_vec();
    env.extend([
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("AWS_REGION", REGION),
    ]);
    let mut egress = keyless_egress(home, &format!("amazon_bedrock/{MODEL_ID}"), mock, &env).await;
    let url = format!("http://{}/v1/chat/completions", egress.addr("model"));
    let body = json!({
        "model": format!("amazon_bedrock/{MODEL_ID}"),
        "messages": [{"role": "user", "content": "hello"}]
    });
    let res = http_client().post(&url).json(&body).send().await.unwrap();
    let status = res.status().as_u16();
    let value = res.json::<Value>().await.unwrap_or(Value::Null);
    egress.child.kill().await.unwrap();
    let logs = serde_json::to_string(&egress.log()).unwrap();
    (status, value, logs)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    ring::hmac::sign(&key, data).as_ref().to_vec()
}

/// RFC 3986 encoding as SigV4 wants it: everything but unreserved characters (and `/`
/// in a path) as `%XX`.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
struct Authorization {
    access_key: String,
    date: String,
    region: String,
    service: String,
    signed_headers: Vec<String>,
    signature: String,
}

fn parse_authorization(value: &str) -> Authorization {
    let rest = value
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .unwrap_or_else(|| panic!("not SigV4: {value}"));
    let mut credential = "";
    let mut signed = "";
    let mut signature = "";
    for part in rest.split(", ") {
        let (k, v) = part.split_once('=').unwrap();
        match k {
            "Credential" => credential = v,
            "SignedHeaders" => signed = v,
            "Signature" => signature = v,
            other => panic!("unexpected {other}"),
        }
    }
    let scope: Vec<&str> = credential.split('/').collect();
    assert_eq!(scope.len(), 5, "{credential}");
    assert_eq!(scope[4], "aws4_request");
    Authorization {
        access_key: scope[0].to_string(),
        date: scope[1].to_string(),
        region: scope[2].to_string(),
        service: scope[3].to_string(),
        signed_headers: signed.split(';').map(str::to_string).collect(),
        signature: signature.to_string(),
    }
}

/// Recompute the SigV4 signature of a received request with `secret` (non-S3 rules: the
/// path's segments encoded once more, the query sorted, the payload hashed) and compare.
fn signature_is_valid(seen: &Seen, secret: &str) -> bool {
    let auth = parse_authorization(seen.headers["authorization"].to_str().unwrap());
    let amz_date = seen.headers["x-amz-date"].to_str().unwrap();
    assert!(amz_date.starts_with(&auth.date));
    let path = uri_encode(seen.uri.path(), true);
    let mut query: Vec<(String, String)> = seen
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(k, false), uri_encode(v, false))
        })
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let values: Vec<String> = seen
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| {
                v.to_str()
                    .unwrap()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        assert!(!values.is_empty(), "signed header {name} was not received");
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let canonical = format!(
        "{}\n{path}\n{query}\n{canonical_headers}\n{}\n{}",
        seen.method,
        auth.signed_headers.join(";"),
        sha256_hex(&seen.body)
    );
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical.as_bytes())
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    let k_region = hmac(&k_date, auth.region.as_bytes());
    let k_service = hmac(&k_region, auth.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex(&hmac(&k_signing, to_sign.as_bytes())) == auth.signature
}

fn only_request(log: &Log) -> Seen {
    let seen = log.lock().unwrap();
    assert_eq!(seen.len(), 1, "one upstream request");
    seen[0].clone()
}

#[tokio::test]
async fn bedrock_signs_with_credentials_from_the_environment() {
    let home = tempfile::tempdir().unwrap();
    let (mock, log) = mock_bedrock().await;
    let secret = "env/Secret+Key/EXAMPLE";
    let token = "FwoGZXIvYXdzEXAMPLEsessiontoken";
    let (status, body, logs) = one_request_through_egress(
        home.path(),
        mock,
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAENVEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", secret),
            ("AWS_SESSION_TOKEN", token),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Not the secret, the session token, nor the key ID (the AWS SDK logs it at INFO).
    assert!(!logs.is_empty(), "the egress logged something");
    for never in [secret, token, "AKIAENVEXAMPLE"] {
        assert!(!logs.contains(never), "{never} in the egress log");
    }
    assert_eq!(body["choices"][0]["message"]["content"], "signed hello");

    let seen = only_request(&log);
    assert_eq!(
        seen.uri.path(),
        "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    );
    let auth = parse_authorization(seen.headers["authorization"].to_str().unwrap());
    assert_eq!(auth.access_key, "AKIAENVEXAMPLE");
    assert_eq!(auth.region, REGION);
    assert_eq!(auth.service, "bedrock");
    for h in ["host", "x-amz-date", "x-amz-security-token", "content-type"] {
        assert!(auth.signed_headers.iter().any(|s| s == h), "{h} signed");
    }
    assert_eq!(seen.headers["x-amz-security-token"], token);
    assert!(signature_is_valid(&seen, secret), "signature matches");

    // The check can fail: another secret, or a body changed after signing, does not verify.
    assert!(!signature_is_valid(&seen, "another-secret"));
    let mut tampered = seen.clone();
    tampered.body = Bytes::from_static(b"{}");
    assert!(!signature_is_valid(&tampered, secret));
}

#[tokio::test]
async fn bedrock_signs_with_credentials_from_a_shared_profile() {
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        "[default]\naws_access_key_id = AKIADEFAULTEXAMPLE\naws_secret_access_key = default-secret\n\n\
         [plano-test]\naws_access_key_id = AKIAPROFILEEXAMPLE\naws_secret_access_key = profile/secret+EXAMPLE\n",
    )
    .unwrap();
    let (mock, log) = mock_bedrock().await;
    let (status, body, logs) =
        one_request_through_egress(home.path(), mock, &[("AWS_PROFILE", "plano-test")]).await;
    assert_eq!(status, 200, "{body}");
    for never in ["profile/secret+EXAMPLE", "AKIAPROFILEEXAMPLE"] {
        assert!(!logs.contains(never), "{never} in the egress log");
    }

    let seen = only_request(&log);
    let auth = parse_authorization(seen.headers["authorization"].to_str().unwrap());
    assert_eq!(auth.access_key, "AKIAPROFILEEXAMPLE");
    assert_eq!(auth.region, REGION);
    assert!(!seen.headers.contains_key("x-amz-security-token"));
    assert!(signature_is_valid(&seen, "profile/secret+EXAMPLE"));
    assert!(!signature_is_valid(&seen, "default-secret"));
}

#[tokio::test]
async fn bedrock_without_any_credentials_fails_without_sending() {
    let home = tempfile::tempdir().unwrap();
    let (mock, log) = mock_bedrock().await;
    let (status, body, _) = one_request_through_egress(home.path(), mock, &[]).await;
    assert_eq!(status, 502, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("no credentials for it"),
        "the client is told credentials are missing, not that a connection failed: {body}"
    );
    assert!(
        log.lock().unwrap().is_empty(),
        "nothing unsigned reached Bedrock"
    );
}

/// Not about credentials, but about the same provider: a request Bedrock's API cannot
/// express (an image by URL) is not sent, and with no other provider left the client gets
/// 400 `untranslatable_request` in its own API's shape.
#[tokio::test]
async fn a_request_no_provider_can_express_is_400_untranslatable_request() {
    let (mock, log) = mock_bedrock().await;
    let yaml = format!(
        r#"version: v0.4.0
listeners:
  - name: model_listener
    type: model
    address: 127.0.0.1
    port: 12000
model_providers:
  - model: amazon_bedrock/{MODEL_ID}
    base_url: http://{mock}
    access_key: bedrock-api-key
    default: true
"#
    );
    let egress = integration_tests::harness::Egress::start(&yaml, &[])
        .await
        .unwrap();
    let res = http_client()
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({
            "model": format!("amazon_bedrock/{MODEL_ID}"),
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
            ]}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "untranslatable_request", "{body}");
    assert!(
        log.lock().unwrap().is_empty(),
        "nothing was sent to Bedrock"
    );

    // The same provider still serves what it can express, with its bearer key.
    let res = http_client()
        .post(egress.url("/v1/chat/completions"))
        .json(&json!({
            "model": format!("amazon_bedrock/{MODEL_ID}"),
            "messages": [{"role": "user", "content": "hello"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        only_request(&log).headers["authorization"],
        "Bearer bedrock-api-key"
    );
    egress.stop().await.unwrap();
}

// ---- Vertex AI: Google service account and metadata server tokens ----

/// A throwaway RSA key made for this test only (`openssl genpkey -algorithm RSA`).
const TEST_RSA_KEY: &str = include_str!("fixtures/vertex-test-only-rsa-key.pem");

#[derive(Default)]
struct Google {
    token_calls: Mutex<Vec<HeaderMap>>,
    assertions: Mutex<Vec<String>>,
    vertex: Mutex<Vec<Seen>>,
}

async fn google_token(
    State(g): State<Arc<Google>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    let form = String::from_utf8(body.to_vec()).unwrap();
    if let Some(a) = form.split('&').find_map(|kv| kv.strip_prefix("assertion=")) {
        g.assertions.lock().unwrap().push(a.to_string());
    }
    g.token_calls.lock().unwrap().push(headers);
    axum::Json(
        json!({"access_token": "ya29.test-token", "expires_in": 3600, "token_type": "Bearer"}),
    )
}

async fn vertex_chat(
    State(g): State<Arc<Google>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::Json<Value> {
    let anthropic = uri.path().ends_with(":rawPredict");
    g.vertex.lock().unwrap().push(Seen {
        method,
        uri,
        headers,
        body,
    });
    if anthropic {
        return axum::Json(json!({
            "id": "msg_v", "type": "message", "role": "assistant", "model": "claude-sonnet-4",
            "content": [{"type": "text", "text": "vertex hello"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 3, "output_tokens": 2}
        }));
    }
    axum::Json(json!({
        "id": "chatcmpl-v", "object": "chat.completion", "created": 1, "model": "google/gemini-2.0-flash",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "vertex hello"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    }))
}

async fn mock_google() -> (SocketAddr, Arc<Google>) {
    let g = Arc::new(Google::default());
    let app = axum::Router::new()
        .route("/token", axum::routing::post(google_token))
        .route(
            "/computeMetadata/v1/instance/service-accounts/default/token",
            axum::routing::get(google_token),
        )
        .fallback(axum::routing::post(vertex_chat))
        .with_state(g.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, g)
}

/// Start the egress binary with `env` and a keyless `vertex_ai` provider whose `base_url`
/// (no path) is the mock; send `n` chat requests.
async fn vertex_requests(home: &Path, mock: SocketAddr, env: &[(&str, String)], n: usize) {
    vertex_requests_to(home, mock, env, n, "gemini-2.0-flash").await;
}

async fn vertex_requests_to(
    home: &Path,
    mock: SocketAddr,
    env: &[(&str, String)],
    n: usize,
    model: &str,
) {
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.extend([
        ("GOOGLE_CLOUD_PROJECT", "my-project"),
        ("GOOGLE_CLOUD_LOCATION", "europe-west4"),
    ]);
    let mut egress = keyless_egress(home, &format!("vertex_ai/{model}"), mock, &env).await;
    let url = format!("http://{}/v1/chat/completions", egress.addr("model"));
    let body = json!({"model": format!("vertex_ai/{model}"), "messages": [{"role": "user", "content": "hi"}]});
    let client = http_client();
    for _ in 0..n {
        let res = client.post(&url).json(&body).send().await.unwrap();
        let status = res.status().as_u16();
        let answer: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["choices"][0]["message"]["content"], "vertex hello");
    }
    egress.child.kill().await.unwrap();
}

fn check_vertex_requests(g: &Google, n: usize) {
    let seen = g.vertex.lock().unwrap();
    assert_eq!(seen.len(), n);
    for s in seen.iter() {
        assert_eq!(
            s.uri.path(),
            "/v1/projects/my-project/locations/europe-west4/endpoints/openapi/chat/completions"
        );
        assert_eq!(s.headers["authorization"], "Bearer ya29.test-token");
        let body: Value = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(body["model"], "google/gemini-2.0-flash");
    }
}

#[tokio::test]
async fn vertex_gemini_with_a_service_account_key() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let home = tempfile::tempdir().unwrap();
    let (mock, g) = mock_google().await;
    let key_file = home.path().join("sa.json");
    std::fs::write(
        &key_file,
        json!({
            "type": "service_account",
            "project_id": "my-project",
            "client_email": "plano@my-project.iam.gserviceaccount.com",
            "private_key": TEST_RSA_KEY,
            "token_uri": format!("http://{mock}/token"),
        })
        .to_string(),
    )
    .unwrap();
    vertex_requests(
        home.path(),
        mock,
        &[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            key_file.display().to_string(),
        )],
        2,
    )
    .await;
    check_vertex_requests(&g, 2);

    // One token exchange for both requests (cached), with a JWT signed by the key.
    let assertions = g.assertions.lock().unwrap().clone();
    assert_eq!(assertions.len(), 1, "the token is cached");
    let parts: Vec<&str> = assertions[0].split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(claims["iss"], "plano@my-project.iam.gserviceaccount.com");
    assert_eq!(claims["aud"], format!("http://{mock}/token"));
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/cloud-platform"
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
    let mut pem = TEST_RSA_KEY.as_bytes();
    let Some(rustls_pemfile::Item::Pkcs8Key(der)) = rustls_pemfile::read_one(&mut pem).unwrap()
    else {
        panic!("test key is PKCS#8")
    };
    let pair = ring::signature::RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).unwrap();
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        ring::signature::KeyPair::public_key(&pair)
            .as_ref()
            .to_vec(),
    );
    let signed = format!("{}.{}", parts[0], parts[1]);
    let signature = b64.decode(parts[2]).unwrap();
    assert!(
        public.verify(signed.as_bytes(), &signature).is_ok(),
        "RS256 signature verifies"
    );
    assert!(public.verify(b"something else", &signature).is_err());
}

#[tokio::test]
async fn vertex_gemini_with_the_metadata_server() {
    let home = tempfile::tempdir().unwrap();
    let (mock, g) = mock_google().await;
    vertex_requests(
        home.path(),
        mock,
        &[("GCE_METADATA_HOST", mock.to_string())],
        2,
    )
    .await;
    check_vertex_requests(&g, 2);
    let calls = g.token_calls.lock().unwrap();
    assert_eq!(calls.len(), 1, "the token is cached");
    assert_eq!(calls[0]["metadata-flavor"], "Google");
}

#[tokio::test]
async fn vertex_anthropic_models_use_raw_predict() {
    let home = tempfile::tempdir().unwrap();
    let (mock, g) = mock_google().await;
    vertex_requests_to(
        home.path(),
        mock,
        &[("GCE_METADATA_HOST", mock.to_string())],
        1,
        "claude-sonnet-4@20250514",
    )
    .await;
    let seen = g.vertex.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].uri.path(),
        "/v1/projects/my-project/locations/europe-west4/publishers/anthropic/models/claude-sonnet-4%4020250514:rawPredict"
    );
    assert_eq!(seen[0].headers["authorization"], "Bearer ya29.test-token");
    assert!(!seen[0].headers.contains_key("x-api-key"));
    let body: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(body["anthropic_version"], "vertex-2023-10-16");
    assert!(body.get("model").is_none(), "{body}");
    assert_eq!(body["messages"][0]["role"], "user");
}
