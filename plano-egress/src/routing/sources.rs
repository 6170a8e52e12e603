//! Model metrics for `selection_policy.prefer` (`model_metrics_sources`):
//! - `type: cost`: a price list fetched from a URL, in models.dev's shape
//!   (`{provider: {models: {id: {cost: {input, output}}}}}`, USD per million tokens) or
//!   DigitalOcean's GenAI catalog (`{data: [{model_id, pricing: {input_price_per_million,
//!   output_price_per_million}}]}`, which despite the names is USD per token); a model's
//!   cost is input + output per million tokens;
//! - `type: latency`: a Prometheus instant query (`GET {url}/api/v1/query?query=…`) whose
//!   series carry a `model_name` (or `model`) label; a model's latency is the value.
//!
//! Each source is fetched when routing starts and then every `refresh_interval`; a failed
//! fetch keeps the last good table (a price list that is briefly unreachable should not
//! reorder every route) and is counted. Tables are swapped whole, so a request reads one
//! consistent table without locking.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use metrics::counter;
use plano_common::metrics as m;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::upstream::HttpClient;

pub const MODELS_DEV_URL: &str = "https://models.dev/api.json";
pub const DIGITALOCEAN_URL: &str = "https://api.digitalocean.com/v2/gen-ai/models/catalog";
/// Without a `refresh_interval` a source is fetched once; until that succeeds it is retried
/// this often.
const RETRY_UNTIL_FIRST: Duration = Duration::from_secs(60);
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// models.dev's whole catalogue is a few MB; anything far larger is not a price list.
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostFormat {
    ModelsDev,
    DigitalOcean,
}

impl CostFormat {
    pub fn default_url(self) -> &'static str {
        match self {
            CostFormat::ModelsDev => MODELS_DEV_URL,
            CostFormat::DigitalOcean => DIGITALOCEAN_URL,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct CostSource {
    pub format: CostFormat,
    pub url: String,
    pub refresh: Option<Duration>,
    /// Catalogue key → the model name used in `routing_preferences`.
    pub aliases: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LatencySource {
    /// The Prometheus server's base URL.
    pub url: String,
    pub query: String,
    pub refresh: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceSettings {
    Cost(CostSource),
    Latency(LatencySource),
}

impl SourceSettings {
    fn kind(&self) -> &'static str {
        match self {
            SourceSettings::Cost(_) => "cost",
            SourceSettings::Latency(_) => "latency",
        }
    }

    fn refresh(&self) -> Option<Duration> {
        match self {
            SourceSettings::Cost(c) => c.refresh,
            SourceSettings::Latency(l) => l.refresh,
        }
    }
}

/// `selection_policy.prefer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prefer {
    Cheapest,
    Fastest,
    #[default]
    None,
}

type Table = HashMap<String, f64>;

/// The current metric tables, one slot per configured source.
pub struct ModelMetrics {
    cost: Vec<ArcSwap<Table>>,
    latency: Vec<ArcSwap<Table>>,
}

impl ModelMetrics {
    pub fn new(cost_sources: usize, latency_sources: usize) -> Self {
        Self {
            cost: (0..cost_sources).map(|_| ArcSwap::default()).collect(),
            latency: (0..latency_sources).map(|_| ArcSwap::default()).collect(),
        }
    }

    /// Blended cost (input + output, USD per million tokens), from the first source that
    /// prices the model (by its full name, else its id without the provider prefix).
    pub fn cost_of(&self, model: &str) -> Option<f64> {
        lookup(&self.cost, model)
    }

    pub fn latency_of(&self, model: &str) -> Option<f64> {
        lookup(&self.latency, model)
    }

    pub fn set_cost(&self, slot: usize, table: Table) {
        if let Some(s) = self.cost.get(slot) {
            s.store(Arc::new(table));
        }
    }

    pub fn set_latency(&self, slot: usize, table: Table) {
        if let Some(s) = self.latency.get(slot) {
            s.store(Arc::new(table));
        }
    }

    /// `models` in the order `prefer` asks for: ascending cost or latency; models without a
    /// number keep their configured order after the ones with. `None` keeps the order.
    pub fn rank(&self, models: &[String], prefer: Prefer) -> Vec<String> {
        let metric = |m: &str| match prefer {
            Prefer::Cheapest => self.cost_of(m),
            Prefer::Fastest => self.latency_of(m),
            Prefer::None => None,
        };
        if prefer == Prefer::None {
            return models.to_vec();
        }
        let mut known: Vec<(f64, usize)> = Vec::new();
        let mut unknown: Vec<usize> = Vec::new();
        for (i, m) in models.iter().enumerate() {
            match metric(m).filter(|v| v.is_finite()) {
                Some(v) => known.push((v, i)),
                None => unknown.push(i),
            }
        }
        // Stable: equal numbers keep the configured order.
        known.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        known
            .into_iter()
            .map(|(_, i)| i)
            .chain(unknown)
            .filter_map(|i| models.get(i).cloned())
            .collect()
    }
}

fn lookup(slots: &[ArcSwap<Table>], model: &str) -> Option<f64> {
    let bare = model.split_once('/').map(|(_, b)| b);
    slots.iter().find_map(|s| {
        let t = s.load();
        t.get(model)
            .or_else(|| bare.and_then(|b| t.get(b)))
            .copied()
    })
}

/// Fetch every source now and then on its interval, until `cancel`.
pub fn spawn(
    sources: &[SourceSettings],
    client: HttpClient,
    metrics: Arc<ModelMetrics>,
    cancel: CancellationToken,
) {
    let (mut cost_slot, mut latency_slot) = (0, 0);
    for source in sources {
        let slot = match source {
            SourceSettings::Cost(_) => {
                cost_slot += 1;
                cost_slot - 1
            }
            SourceSettings::Latency(_) => {
                latency_slot += 1;
                latency_slot - 1
            }
        };
        let source = source.clone();
        let client = client.clone();
        let metrics = metrics.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let mut fetched_once = false;
            loop {
                let ok = refresh(&client, &source, slot, &metrics).await;
                fetched_once |= ok;
                let pause = match source.refresh() {
                    Some(every) => every,
                    None if fetched_once => return,
                    None => RETRY_UNTIL_FIRST,
                };
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        });
    }
}

/// Fetch one source into its slot; a failure keeps the old table. True on success.
pub async fn refresh(
    client: &HttpClient,
    source: &SourceSettings,
    slot: usize,
    metrics: &ModelMetrics,
) -> bool {
    let result = match source {
        SourceSettings::Cost(c) => fetch_cost(client, c).await.map(|t| {
            tracing::debug!(models = t.len(), url = %c.url, "price list refreshed");
            metrics.set_cost(slot, t);
        }),
        SourceSettings::Latency(l) => fetch_latency(client, l).await.map(|t| {
            tracing::debug!(models = t.len(), url = %l.url, "latencies refreshed");
            metrics.set_latency(slot, t);
        }),
    };
    let outcome = if result.is_ok() { "ok" } else { "error" };
    counter!(m::ROUTING_METRICS_REFRESHES_TOTAL, "type" => source.kind(), "outcome" => outcome)
        .increment(1);
    if let Err(e) = &result {
        tracing::warn!(source = source.kind(), error = %e, "model metrics source not refreshed; keeping the last values");
    }
    result.is_ok()
}

pub async fn fetch_cost(client: &HttpClient, source: &CostSource) -> Result<Table, String> {
    let body = get(client, &source.url).await?;
    match source.format {
        CostFormat::ModelsDev => parse_models_dev(&body, &source.aliases),
        CostFormat::DigitalOcean => parse_digitalocean(&body, &source.aliases),
    }
}

pub async fn fetch_latency(client: &HttpClient, source: &LatencySource) -> Result<Table, String> {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("query", &source.query)
        .finish();
    let url = format!("{}/api/v1/query?{query}", source.url.trim_end_matches('/'));
    parse_prometheus(&get(client, &url).await?)
}

async fn get(client: &HttpClient, url: &str) -> Result<Bytes, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL `{url}`: {e}"))?;
    let req = Request::get(uri)
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let work = async {
        let res = client.request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let body = Limited::new(res.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!("{url} answered {status}"));
        }
        Ok(body)
    };
    tokio::time::timeout(FETCH_TIMEOUT, work)
        .await
        .map_err(|_| format!("{url} did not answer within {FETCH_TIMEOUT:?}"))?
}

fn keyed(aliases: &HashMap<String, String>, key: String) -> String {
    aliases.get(&key).cloned().unwrap_or(key)
}

/// models.dev: keyed `provider/model` (plus the bare model id, when no other provider
/// claimed it, so `openai/gpt-4o` finds `gpt-4o` served by any catalogue provider).
pub fn parse_models_dev(body: &[u8], aliases: &HashMap<String, String>) -> Result<Table, String> {
    #[derive(Deserialize)]
    struct Provider {
        #[serde(default)]
        models: HashMap<String, Model>,
    }
    #[derive(Deserialize)]
    struct Model {
        cost: Option<Cost>,
    }
    #[derive(Deserialize)]
    struct Cost {
        input: Option<f64>,
        output: Option<f64>,
    }
    let providers: HashMap<String, Value> =
        serde_json::from_slice(body).map_err(|e| format!("not a models.dev catalogue: {e}"))?;
    let mut out = Table::new();
    let mut bare = Table::new();
    // Sorted, so which provider's price a bare id gets does not depend on hash order.
    let mut names: Vec<&String> = providers.keys().collect();
    names.sort();
    for name in names {
        // One odd provider entry must not void the whole catalogue.
        let Some(provider) = providers
            .get(name)
            .and_then(|v| Provider::deserialize(v).ok())
        else {
            continue;
        };
        let mut models: Vec<(String, Model)> = provider.models.into_iter().collect();
        models.sort_by(|a, b| a.0.cmp(&b.0));
        for (id, model) in models {
            let Some(Cost {
                input: Some(input),
                output: Some(output),
            }) = model.cost
            else {
                continue;
            };
            let price = input + output;
            out.insert(keyed(aliases, format!("{name}/{id}")), price);
            bare.entry(id).or_insert(price);
        }
    }
    for (id, price) in bare {
        out.entry(id).or_insert(price);
    }
    Ok(out)
}

/// DigitalOcean's catalogue prices per token; scaled to per million like models.dev.
pub fn parse_digitalocean(body: &[u8], aliases: &HashMap<String, String>) -> Result<Table, String> {
    #[derive(Deserialize)]
    struct List {
        data: Vec<Model>,
    }
    #[derive(Deserialize)]
    struct Model {
        model_id: String,
        pricing: Option<Pricing>,
    }
    #[derive(Deserialize)]
    struct Pricing {
        input_price_per_million: Option<f64>,
        output_price_per_million: Option<f64>,
    }
    let list: List = serde_json::from_slice(body)
        .map_err(|e| format!("not a DigitalOcean model catalogue: {e}"))?;
    Ok(list
        .data
        .into_iter()
        .filter_map(|m| {
            let p = m.pricing?;
            let per_token = p.input_price_per_million.unwrap_or(0.0)
                + p.output_price_per_million.unwrap_or(0.0);
            Some((keyed(aliases, m.model_id), per_token * 1_000_000.0))
        })
        .collect())
}

/// A Prometheus instant-query answer (`resultType: vector`).
pub fn parse_prometheus(body: &[u8]) -> Result<Table, String> {
    #[derive(Deserialize)]
    struct Answer {
        status: String,
        data: Option<Data>,
        error: Option<String>,
    }
    #[derive(Deserialize)]
    struct Data {
        result: Vec<Series>,
    }
    #[derive(Deserialize)]
    struct Series {
        metric: HashMap<String, String>,
        value: (Value, String),
    }
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus query answer: {e}"))?;
    if a.status != "success" {
        return Err(format!(
            "Prometheus query failed: {}",
            a.error.unwrap_or_default()
        ));
    }
    Ok(a.data
        .map(|d| d.result)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| {
            let model = s
                .metric
                .get("model_name")
                .or_else(|| s.metric.get("model"))?
                .clone();
            let v: f64 = s.value.1.parse().ok()?;
            v.is_finite().then_some((model, v))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn models_dev_prices_by_provider_and_bare_id() {
        let body = json!({
            "openai": {"id": "openai", "models": {
                "gpt-4o": {"cost": {"input": 2.5, "output": 10.0, "cache_read": 1.25}},
                "gpt-4o-mini": {"cost": {"input": 0.15, "output": 0.6}},
                "free-thing": {}
            }},
            "azure": {"models": {"gpt-4o": {"cost": {"input": 9.0, "output": 9.0}}}},
            "weird": 5
        });
        let aliases = HashMap::from([("openai/gpt-4o-mini".to_string(), "mini".to_string())]);
        let t = parse_models_dev(body.to_string().as_bytes(), &aliases).unwrap();
        assert_eq!(t.get("openai/gpt-4o"), Some(&12.5));
        assert_eq!(t.get("azure/gpt-4o"), Some(&18.0));
        assert_eq!(t.get("mini"), Some(&0.75));
        assert_eq!(t.get("gpt-4o"), Some(&18.0), "first provider by name wins");
        assert!(!t.contains_key("openai/free-thing"));
        assert!(parse_models_dev(b"[1,2]", &HashMap::new()).is_err());
    }

    #[test]
    fn digitalocean_prices_are_per_token() {
        let body = json!({"data": [
            {"model_id": "openai-gpt-4o", "pricing": {"input_price_per_million": 2.5e-6, "output_price_per_million": 1.0e-5}},
            {"model_id": "no-price"}
        ]});
        let aliases = HashMap::from([("openai-gpt-4o".to_string(), "openai/gpt-4o".to_string())]);
        let t = parse_digitalocean(body.to_string().as_bytes(), &aliases).unwrap();
        assert!((t["openai/gpt-4o"] - 12.5).abs() < 1e-9);
        assert_eq!(t.len(), 1);
        assert!(parse_digitalocean(b"{}", &HashMap::new()).is_err());
    }

    #[test]
    fn prometheus_vectors() {
        let body = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"model_name": "openai/gpt-4o"}, "value": [1.7e9, "0.8"]},
            {"metric": {"model": "anthropic/claude"}, "value": [1.7e9, "0.3"]},
            {"metric": {"model_name": "x"}, "value": [1.7e9, "NaN"]},
            {"metric": {"job": "nomodel"}, "value": [1.7e9, "1"]}
        ]}});
        let t = parse_prometheus(body.to_string().as_bytes()).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t["openai/gpt-4o"], 0.8);
        assert_eq!(t["anthropic/claude"], 0.3);
        let err = json!({"status": "error", "errorType": "bad_data", "error": "parse error"});
        assert!(
            parse_prometheus(err.to_string().as_bytes())
                .unwrap_err()
                .contains("parse error")
        );
    }

    #[test]
    fn ranking_puts_unknown_models_last_in_their_order() {
        let m = ModelMetrics::new(1, 1);
        m.set_cost(
            0,
            HashMap::from([("b".into(), 1.0), ("c".into(), 0.5), ("gpt-4o".into(), 3.0)]),
        );
        m.set_latency(0, HashMap::from([("a".into(), 0.1), ("b".into(), 0.2)]));
        let models = names(&["a", "b", "c", "d", "openai/gpt-4o"]);
        assert_eq!(
            m.rank(&models, Prefer::Cheapest),
            names(&["c", "b", "openai/gpt-4o", "a", "d"])
        );
        assert_eq!(
            m.rank(&models, Prefer::Fastest),
            names(&["a", "b", "c", "d", "openai/gpt-4o"])
        );
        assert_eq!(m.rank(&models, Prefer::None), models);
        // A new table changes the order at once.
        m.set_cost(0, HashMap::from([("a".into(), 0.01)]));
        assert_eq!(m.rank(&models, Prefer::Cheapest)[0], "a");
    }

    #[test]
    fn the_first_source_that_prices_a_model_wins() {
        let m = ModelMetrics::new(2, 0);
        m.set_cost(1, HashMap::from([("a".into(), 5.0), ("b".into(), 1.0)]));
        m.set_cost(0, HashMap::from([("a".into(), 2.0)]));
        assert_eq!(m.cost_of("a"), Some(2.0));
        assert_eq!(m.cost_of("x/b"), Some(1.0));
        assert_eq!(m.cost_of("z"), None);
    }

    /// A local price list server whose answer the test changes.
    async fn price_server(body: Arc<std::sync::Mutex<(u16, String)>>) -> String {
        let app = axum::Router::new().route(
            "/prices.json",
            axum::routing::get(move || {
                let body = body.clone();
                async move {
                    let (status, text) = body.lock().unwrap().clone();
                    (StatusCode::from_u16(status).unwrap(), text)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/prices.json")
    }

    fn client() -> HttpClient {
        let config = plano_config::load_str(
            "version: v0.4.0\nmodel_providers:\n  - model: openai/gpt-4o\n",
            None,
            &|_| None,
        )
        .unwrap();
        crate::upstream::client(&config, &Default::default()).unwrap()
    }

    fn models_dev(a: f64, b: f64) -> String {
        json!({"openai": {"models": {
            "gpt-4o": {"cost": {"input": a, "output": 0.0}},
            "gpt-4o-mini": {"cost": {"input": b, "output": 0.0}}
        }}})
        .to_string()
    }

    #[tokio::test]
    async fn a_changed_price_list_reorders_on_the_next_refresh_and_a_failure_keeps_the_last() {
        let body = Arc::new(std::sync::Mutex::new((200, models_dev(5.0, 1.0))));
        let url = price_server(body.clone()).await;
        let sources = vec![SourceSettings::Cost(CostSource {
            format: CostFormat::ModelsDev,
            url,
            refresh: Some(Duration::from_millis(50)),
            aliases: HashMap::new(),
        })];
        let metrics = Arc::new(ModelMetrics::new(1, 0));
        let cancel = CancellationToken::new();
        spawn(&sources, client(), metrics.clone(), cancel.clone());
        let models = names(&["openai/gpt-4o", "openai/gpt-4o-mini"]);
        let wait_for = |first: &'static str| {
            let metrics = metrics.clone();
            let models = models.clone();
            async move {
                for _ in 0..200 {
                    if metrics.rank(&models, Prefer::Cheapest)[0] == first {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                panic!("ranking never put {first} first");
            }
        };
        wait_for("openai/gpt-4o-mini").await;
        *body.lock().unwrap() = (200, models_dev(0.5, 1.0));
        wait_for("openai/gpt-4o").await;
        // The list breaks: the last prices stay.
        *body.lock().unwrap() = (500, "oops".into());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(metrics.cost_of("openai/gpt-4o"), Some(0.5));
        *body.lock().unwrap() = (200, "{\"not\": \"a catalogue\"".into());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(metrics.cost_of("openai/gpt-4o"), Some(0.5));
        // Cancelled: changes are no longer picked up.
        cancel.cancel();
        tokio::time::sleep(Duration::from_millis(20)).await;
        *body.lock().unwrap() = (200, models_dev(9.0, 1.0));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(metrics.cost_of("openai/gpt-4o"), Some(0.5));
    }

    #[tokio::test]
    async fn fetch_errors_name_the_problem() {
        let body = Arc::new(std::sync::Mutex::new((404, "no".to_string())));
        let url = price_server(body.clone()).await;
        let source = CostSource {
            format: CostFormat::DigitalOcean,
            url: url.clone(),
            refresh: None,
            aliases: HashMap::new(),
        };
        let err = fetch_cost(&client(), &source).await.unwrap_err();
        assert!(err.contains("404"), "{err}");
        *body.lock().unwrap() = (
            200,
            json!({"data": [{"model_id": "m", "pricing": {"input_price_per_million": 1e-6}}]})
                .to_string(),
        );
        let t = fetch_cost(&client(), &source).await.unwrap();
        assert!((t["m"] - 1.0).abs() < 1e-9);
        let gone = CostSource {
            url: "http://127.0.0.1:1/prices.json".into(),
            ..source
        };
        assert!(fetch_cost(&client(), &gone).await.is_err());
    }
}
