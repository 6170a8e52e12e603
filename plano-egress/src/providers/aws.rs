//! AWS Signature Version 4 for Bedrock providers without an `access_key`: credentials from
//! the standard AWS chain (environment, shared config/credentials profile, EKS web
//! identity, ECS container and EC2 instance metadata), cached and refreshed before they
//! expire, and each upstream request signed with `aws-sigv4` just before it is sent.
//!
//! The chain comes from `aws-config` without its default features (whose HTTPS client
//! is built on aws-lc): its HTTP client (for STS, SSO-less web identity and the metadata
//! endpoints) is `aws-smithy-http-client` on rustls with the ring provider.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use tokio::sync::{Mutex, OnceCell};

/// Signing name of the Bedrock runtime API.
pub const BEDROCK_SERVICE: &str = "bedrock";

/// Credentials are refreshed this long before they expire (like the AWS SDKs' lazy cache).
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
/// Credentials without an expiry (environment, static profile keys) are looked up again
/// after this long, so a rotated profile file is picked up without a reload.
const STATIC_CREDENTIALS_TTL: Duration = Duration::from_secs(60 * 60);
/// Bound on one trip through the chain (metadata endpoints, STS), so a request never
/// waits on an unreachable credential source for long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// One provider's SigV4 signer: its region, and credentials from the default chain.
pub struct SigV4 {
    region: String,
    service: &'static str,
    chain: OnceCell<SharedCredentialsProvider>,
    /// The credentials in use and when to look them up again.
    cached: ArcSwapOption<(Credentials, SystemTime)>,
    /// Held while the chain is asked, so concurrent requests wait for one lookup.
    refreshing: Mutex<()>,
}

impl std::fmt::Debug for SigV4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl SigV4 {
    /// A signer whose credentials come from the default chain (built on first use).
    pub fn new(region: &str, service: &'static str) -> Arc<Self> {
        Arc::new(SigV4 {
            region: region.to_string(),
            service,
            chain: OnceCell::new(),
            cached: ArcSwapOption::empty(),
            refreshing: Mutex::new(()),
        })
    }

    /// A signer with fixed credentials (tests, and the test vectors).
    pub fn with_credentials(
        region: &str,
        service: &'static str,
        credentials: Credentials,
    ) -> Arc<Self> {
        let signer = SigV4::new(region, service);
        let _ = signer
            .chain
            .set(SharedCredentialsProvider::new(credentials));
        signer
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    async fn chain(&self) -> &SharedCredentialsProvider {
        self.chain
            .get_or_init(|| async {
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https();
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(self.region.clone()))
                    .http_client(http)
                    .load()
                    .await;
                match sdk.credentials_provider() {
                    Some(p) => p,
                    // `defaults()` always installs the default chain; keep a provider that
                    // explains itself if that ever changes.
                    None => SharedCredentialsProvider::new(NoChain),
                }
            })
            .await
    }

    /// Current credentials: cached until shortly before they expire, else from the chain.
    pub async fn credentials(&self) -> Result<Credentials, String> {
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        let _one = self.refreshing.lock().await;
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        let chain = self.chain().await;
        let got = tokio::time::timeout(FETCH_TIMEOUT, chain.provide_credentials())
            .await
            .map_err(|_| {
                format!(
                    "AWS credentials: no answer from the credential chain within {}s",
                    FETCH_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("AWS credentials: {}", error_chain(&e)))?;
        let now = SystemTime::now();
        let until = match got.expiry() {
            Some(exp) => exp
                .checked_sub(REFRESH_BEFORE_EXPIRY)
                .filter(|t| *t > now)
                // Credentials that expire within the margin are used once, then refreshed.
                .unwrap_or(now),
            None => now + STATIC_CREDENTIALS_TTL,
        };
        self.cached.store(Some(Arc::new((got.clone(), until))));
        Ok(got)
    }

    fn fresh(&self) -> Option<Credentials> {
        let cached = self.cached.load();
        let (c, until) = cached.as_deref()?;
        (SystemTime::now() < *until).then(|| c.clone())
    }

    /// Sign `req` (after every other header is set) with the current credentials.
    pub async fn sign_request(
        &self,
        req: &mut Request<http_body_util::Full<Bytes>>,
        body: &[u8],
    ) -> Result<(), String> {
        let credentials = self.credentials().await?;
        sign_with(
            req,
            body,
            &credentials,
            &self.region,
            self.service,
            SystemTime::now(),
        )
    }
}

/// Walk an error's sources into one line (credential errors wrap the real cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

#[derive(Debug)]
struct NoChain;

impl ProvideCredentials for NoChain {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "no AWS credential chain is configured",
            ),
        ))
    }
}

/// Sign `req` with SigV4 in headers (`Authorization`, `X-Amz-Date`, and
/// `X-Amz-Security-Token` for temporary credentials): every header present is signed,
/// except those the SigV4 rules leave out (`user-agent`, …). The payload hash is computed
/// from `body` and not sent as a header (Bedrock does not ask for one).
pub fn sign_with<B>(
    req: &mut Request<B>,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), String> {
    let identity: Identity = credentials.clone().into();
    let settings = SigningSettings::default();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| format!("SigV4 parameters: {e}"))?
        .into();
    let uri = req.uri().to_string();
    let mut headers = Vec::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        let value = value
            .to_str()
            .map_err(|_| format!("SigV4: header `{name}` is not visible ASCII"))?;
        headers.push((name.as_str(), value));
    }
    let signable = SignableRequest::new(
        req.method().as_str(),
        uri,
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("SigV4: {e}"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| format!("SigV4: {e}"))?
        .into_parts();
    let (new_headers, new_query) = instructions.into_parts();
    if !new_query.is_empty() {
        return Err("SigV4: signing asked for query parameters".into());
    }
    for h in new_headers {
        let name = HeaderName::from_static(h.name());
        let mut value = HeaderValue::from_str(h.value())
            .map_err(|_| format!("SigV4: `{}` is not a valid header value", h.name()))?;
        // Never printed in a debug log: the signature and a session token are credentials.
        value.set_sensitive(
            h.sensitive() || name == http::header::AUTHORIZATION || name == "x-amz-security-token",
        );
        req.headers_mut().insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! AWS's published SigV4 test suite (`aws-sig-v4-test-suite`, the `v4/*` cases with
    //! `sign_body: false`): same credentials, time, region and service; the expected
    //! `Authorization` headers are the suite's.
    use super::*;

    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    fn suite_time() -> SystemTime {
        // 2015-08-30T12:36:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn authorization(
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        token: Option<&str>,
    ) -> (String, http::HeaderMap) {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("https://example.amazonaws.com{path_and_query}"));
        req = req.header("host", "example.amazonaws.com");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(()).unwrap();
        let creds = Credentials::new(AKID, SECRET, token.map(str::to_string), None, "test");
        sign_with(&mut req, b"", &creds, "us-east-1", "service", suite_time()).unwrap();
        let auth = req.headers()["authorization"].to_str().unwrap().to_string();
        (auth, req.headers().clone())
    }

    fn expected(signed_headers: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders={signed_headers}, Signature={signature}"
        )
    }

    #[test]
    fn get_vanilla() {
        let (auth, h) = authorization("GET", "/", &[], None);
        assert_eq!(
            auth,
            expected(
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
        assert_eq!(h["x-amz-date"], "20150830T123600Z");
        assert!(h["authorization"].is_sensitive());
    }

    #[test]
    fn post_vanilla() {
        let (auth, _) = authorization("POST", "/", &[], None);
        assert_eq!(
            auth,
            expected(
                "host;x-amz-date",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
            )
        );
    }

    #[test]
    fn get_vanilla_query_order_key_case() {
        let (auth, _) = authorization("GET", "/?Param2=value2&Param1=value1", &[], None);
        assert_eq!(
            auth,
            expected(
                "host;x-amz-date",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            )
        );
    }

    #[test]
    fn post_header_key_sort() {
        let (auth, _) = authorization("POST", "/", &[("My-Header1", "value1")], None);
        assert_eq!(
            auth,
            expected(
                "host;my-header1;x-amz-date",
                "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"
            )
        );
    }

    #[test]
    fn get_vanilla_with_session_token() {
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let (auth, h) = authorization("GET", "/", &[], Some(token));
        assert_eq!(
            auth,
            expected(
                "host;x-amz-date;x-amz-security-token",
                "07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
            )
        );
        assert_eq!(h["x-amz-security-token"], token);
    }

    #[test]
    fn wrong_secret_changes_the_signature() {
        let mut req = Request::builder()
            .method("GET")
            .uri("https://example.amazonaws.com/")
            .header("host", "example.amazonaws.com")
            .body(())
            .unwrap();
        let creds = Credentials::new(AKID, "not-the-secret", None, None, "test");
        sign_with(&mut req, b"", &creds, "us-east-1", "service", suite_time()).unwrap();
        assert!(
            !req.headers()["authorization"]
                .to_str()
                .unwrap()
                .contains("5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        );
    }

    #[tokio::test]
    async fn credentials_are_cached_until_near_expiry() {
        let soon = SystemTime::now() + Duration::from_secs(60);
        let later = SystemTime::now() + Duration::from_secs(3600);
        let s = SigV4::with_credentials(
            "us-east-1",
            BEDROCK_SERVICE,
            Credentials::new("A", "S", None, Some(later), "test"),
        );
        s.credentials().await.unwrap();
        assert!(s.fresh().is_some(), "an hour-long credential is reused");
        let s = SigV4::with_credentials(
            "us-east-1",
            BEDROCK_SERVICE,
            Credentials::new("A", "S", None, Some(soon), "test"),
        );
        s.credentials().await.unwrap();
        assert!(
            s.fresh().is_none(),
            "a credential within the refresh margin is looked up again"
        );
    }
}
