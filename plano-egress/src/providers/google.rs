//! Google Cloud access tokens for Vertex AI providers without an `access_key`: a service
//! account key file (`GOOGLE_APPLICATION_CREDENTIALS`: an RS256-signed JWT, signed with
//! ring, exchanged at the key's `token_uri`), else the metadata server of the workload
//! (GCE, GKE workload identity, Cloud Run; `GCE_METADATA_HOST` overrides its address).
//! A token is cached until five minutes before it expires; one refresh at a time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use tokio::sync::Mutex;

/// The OAuth scope Vertex AI accepts.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TOKEN_BODY: usize = 64 * 1024;

/// Where tokens come from.
#[derive(Debug, Clone)]
enum Source {
    ServiceAccount(Arc<ServiceAccount>),
    Metadata { host: String },
}

/// The fields of a service account key file we use.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: String,
    private_key: String,
    token_uri: Option<String>,
}

struct ServiceAccount {
    email: String,
    token_uri: String,
    key: ring::signature::RsaKeyPair,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("email", &self.email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

type Client = plano_common::http_client::HttpsClient<Full<Bytes>>;

/// One provider's token source and its cached token.
pub struct GoogleAuth {
    source: Source,
    client: Client,
    cached: ArcSwapOption<(HeaderValue, SystemTime)>,
    refreshing: Mutex<()>,
}

impl std::fmt::Debug for GoogleAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GoogleAuth")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl GoogleAuth {
    /// From the environment: `GOOGLE_APPLICATION_CREDENTIALS` (a service account key file,
    /// read and parsed now so a bad one stops the config), else the metadata server.
    pub fn from_env() -> Result<Arc<Self>, String> {
        let source = match std::env::var("GOOGLE_APPLICATION_CREDENTIALS") {
            Ok(path) if !path.is_empty() => {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    format!("GOOGLE_APPLICATION_CREDENTIALS `{path}` cannot be read: {e}")
                })?;
                Source::ServiceAccount(Arc::new(
                    service_account(&text)
                        .map_err(|e| format!("GOOGLE_APPLICATION_CREDENTIALS `{path}`: {e}"))?,
                ))
            }
            _ => Source::Metadata {
                host: std::env::var("GCE_METADATA_HOST")
                    .ok()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "metadata.google.internal".to_string()),
            },
        };
        let client = plano_common::http_client::HttpClientBuilder::new(Duration::from_secs(5))
            .build::<Full<Bytes>>()
            .map_err(|e| format!("token client: {e}"))?;
        Ok(Arc::new(GoogleAuth {
            source,
            client,
            cached: ArcSwapOption::empty(),
            refreshing: Mutex::new(()),
        }))
    }

    /// `Authorization: Bearer <token>`, cached until shortly before it expires.
    pub async fn authorization(&self) -> Result<HeaderValue, String> {
        if let Some(v) = self.fresh() {
            return Ok(v);
        }
        let _one = self.refreshing.lock().await;
        if let Some(v) = self.fresh() {
            return Ok(v);
        }
        let answer = tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .map_err(|_| "Google token: no answer within 10s".to_string())??;
        let mut value = HeaderValue::from_str(&format!("Bearer {}", answer.access_token))
            .map_err(|_| "Google token: not a valid header value".to_string())?;
        value.set_sensitive(true);
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600));
        let until = SystemTime::now() + lifetime.saturating_sub(REFRESH_BEFORE_EXPIRY);
        self.cached.store(Some(Arc::new((value.clone(), until))));
        Ok(value)
    }

    fn fresh(&self) -> Option<HeaderValue> {
        let cached = self.cached.load();
        let (v, until) = cached.as_deref()?;
        (SystemTime::now() < *until).then(|| v.clone())
    }

    async fn fetch(&self) -> Result<TokenAnswer, String> {
        let req = match &self.source {
            Source::ServiceAccount(sa) => {
                let assertion = jwt(sa, SystemTime::now())?;
                let form = format!(
                    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
                );
                Request::builder()
                    .method(Method::POST)
                    .uri(&sa.token_uri)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(form)))
            }
            Source::Metadata { host } => Request::builder()
                .method(Method::GET)
                .uri(format!(
                    "http://{host}/computeMetadata/v1/instance/service-accounts/default/token"
                ))
                .header("metadata-flavor", "Google")
                .body(Full::new(Bytes::new())),
        }
        .map_err(|e| format!("Google token request: {e}"))?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("Google token endpoint unreachable: {e}"))?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_TOKEN_BODY)
            .collect()
            .await
            .map_err(|e| format!("Google token answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            // The error body names the problem (invalid_grant, …) and holds no token.
            let text = String::from_utf8_lossy(&body);
            let text: String = text.chars().take(300).collect();
            return Err(format!("Google token endpoint answered {status}: {text}"));
        }
        serde_json::from_slice(&body).map_err(|e| format!("Google token answer: {e}"))
    }
}

fn service_account(text: &str) -> Result<ServiceAccount, String> {
    let file: KeyFile =
        serde_json::from_str(text).map_err(|e| format!("not a service account key: {e}"))?;
    if file.kind.as_deref().is_some_and(|k| k != "service_account") {
        return Err("only `service_account` key files are supported".into());
    }
    let mut pem = file.private_key.as_bytes();
    let der = match rustls_pemfile::read_one(&mut pem) {
        Ok(Some(rustls_pemfile::Item::Pkcs8Key(k))) => k.secret_pkcs8_der().to_vec(),
        _ => return Err("private_key is not a PKCS#8 PEM key".into()),
    };
    let key = ring::signature::RsaKeyPair::from_pkcs8(&der)
        .map_err(|e| format!("private_key is not a usable RSA key: {e}"))?;
    Ok(ServiceAccount {
        email: file.client_email,
        token_uri: file
            .token_uri
            .unwrap_or_else(|| "https://oauth2.googleapis.com/token".into()),
        key,
    })
}

/// The RS256 JWT a service account exchanges for an access token (valid one hour).
fn jwt(sa: &ServiceAccount, now: SystemTime) -> Result<String, String> {
    let iat = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "clock before 1970".to_string())?
        .as_secs();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": sa.email,
        "scope": SCOPE,
        "aud": sa.token_uri,
        "iat": iat,
        "exp": iat + 3600,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let mut sig = vec![0u8; sa.key.public().modulus_len()];
    sa.key
        .sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .map_err(|_| "RS256 signing failed".to_string())?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}
