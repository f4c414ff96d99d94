//! A load generator for a running `chump serve` on this machine.
//!
//! ```text
//! cargo run --release --example load -- --url http://127.0.0.1:8000 \
//!     --requests 20000 --concurrency 32 --setup-sources 200
//! ```
//!
//! It sends a bounded number of requests (a mix of reads, manual checks and
//! create/patch/delete of throwaway sources), then prints throughput, latency
//! percentiles per kind of route and the errors, and exits: non-zero when any
//! request failed. With `--setup-sources N` it first creates N sources whose
//! git URL points at a closed port on 127.0.0.1, so the pipeline keeps
//! checking (and failing) them while the load runs; they are deleted at the
//! end. It only ever talks to loopback addresses.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(about = "Drive a local chump API with a bounded load and report latencies")]
struct Args {
    /// Base URL of the chump API; must be a loopback address.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// How many requests to send in all (setup and cleanup not counted).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// How many requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Create this many sources first (unreachable git URL on 127.0.0.1),
    /// so the scheduler and workers cycle while the load runs.
    #[arg(long, default_value_t = 0)]
    setup_sources: usize,
    /// Per-source check interval for the setup sources (seconds, >= 5).
    #[arg(long, default_value_t = 5)]
    setup_interval: u32,
    /// Keep the setup sources when done (default: delete them).
    #[arg(long)]
    keep_sources: bool,
    /// Bearer token, if the server has one (default: $CHUMP_API_TOKEN).
    #[arg(long, env = "CHUMP_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Stop issuing new requests after this many seconds, even if fewer
    /// than --requests were sent.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Timeout of one request, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Seed for the request mix.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The kinds of request, each reported on its own line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    List,
    Get,
    Status,
    History,
    Check,
    Create,
    Patch,
    Delete,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::List => "GET /api/sources",
            Kind::Get => "GET /api/sources/{id}",
            Kind::Status => "GET /api/sources/{id}/status",
            Kind::History => "GET /api/history",
            Kind::Check => "POST /api/sources/{id}/check",
            Kind::Create => "POST /api/sources",
            Kind::Patch => "PATCH /api/sources/{id}",
            Kind::Delete => "DELETE /api/sources/{id}",
        }
    }
}

#[derive(Default)]
struct Stats {
    latencies: BTreeMap<Kind, Vec<Duration>>,
    errors: BTreeMap<(Kind, String), usize>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        for (k, mut v) in other.latencies {
            self.latencies.entry(k).or_default().append(&mut v);
        }
        for (k, n) in other.errors {
            *self.errors.entry(k).or_default() += n;
        }
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// Sends one request; `Ok` with the body when the status is `expected`,
    /// `Err` with a short reason otherwise.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                "timeout".to_string()
            } else if e.is_connect() {
                "connect error".to_string()
            } else {
                "transport error".to_string()
            }
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|_| "body read error".to_string())?;
        if status != expected {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

/// Only loopback targets: `localhost`, 127.0.0.0/8 and `[::1]`.
fn check_loopback(raw: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(raw).with_context(|| format!("--url {raw:?} is not a URL"))?;
    if url.scheme() != "http" {
        bail!(
            "--url must be http:// (a local chump), not {}",
            url.scheme()
        );
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    };
    if !loopback {
        bail!("refusing to load {raw}: only 127.0.0.1, localhost or [::1] may be targeted");
    }
    if url.path() != "/" || url.query().is_some() {
        bail!("--url must be the server's base URL, e.g. http://127.0.0.1:8000");
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn source_body(name: &str, git_url: &str, interval: Option<u32>) -> Value {
    json!({
        "namespace": "load",
        "deployment_name": name,
        "git_url": git_url,
        "branch": "main",
        "deploy_path": "deploy",
        "container_name": "app",
        "image_version_file": "deploy/deployment.yaml",
        "interval_seconds": interval,
    })
}

/// An address where nothing listens: checks fail fast at the fetch.
fn unreachable_git_url(i: usize) -> String {
    format!("http://127.0.0.1:9/load/repo-{i}.git")
}

fn created_id(body: &Value) -> Option<i64> {
    body.get("source")?.get("id")?.as_i64()
}

async fn timed(
    client: &Client,
    stats: &mut Stats,
    kind: Kind,
    method: Method,
    path: &str,
    body: Option<&Value>,
    expected: StatusCode,
) -> Option<Value> {
    let start = Instant::now();
    let result = client.send(method, path, body, expected).await;
    stats
        .latencies
        .entry(kind)
        .or_default()
        .push(start.elapsed());
    match result {
        Ok(v) => Some(v),
        Err(reason) => {
            *stats.errors.entry((kind, reason)).or_default() += 1;
            None
        }
    }
}

/// One worker: takes request numbers from `next` until `total` (or the
/// deadline), and runs the request kind each number picks.
async fn worker(
    client: Arc<Client>,
    ids: Arc<Vec<i64>>,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    total: usize,
    seed: u64,
    worker_no: usize,
) -> Stats {
    let mut stats = Stats::default();
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(worker_no as u64));
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // A create/patch/delete round counts as three requests.
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            break;
        }
        let id = ids[rng.usize(..ids.len())];
        let roll = rng.u32(..100);
        match roll {
            0..=14 => {
                timed(
                    &client,
                    &mut stats,
                    Kind::List,
                    Method::GET,
                    "/api/sources",
                    None,
                    StatusCode::OK,
                )
                .await;
            }
            15..=39 => {
                let path = format!("/api/sources/{id}");
                timed(
                    &client,
                    &mut stats,
                    Kind::Get,
                    Method::GET,
                    &path,
                    None,
                    StatusCode::OK,
                )
                .await;
            }
            40..=64 => {
                let path = format!("/api/sources/{id}/status");
                timed(
                    &client,
                    &mut stats,
                    Kind::Status,
                    Method::GET,
                    &path,
                    None,
                    StatusCode::OK,
                )
                .await;
            }
            65..=79 => {
                timed(
                    &client,
                    &mut stats,
                    Kind::History,
                    Method::GET,
                    "/api/history?limit=50",
                    None,
                    StatusCode::OK,
                )
                .await;
            }
            80..=89 => {
                let path = format!("/api/sources/{id}/check");
                timed(
                    &client,
                    &mut stats,
                    Kind::Check,
                    Method::POST,
                    &path,
                    None,
                    StatusCode::ACCEPTED,
                )
                .await;
            }
            _ => {
                // Throwaway source, suspended so it never reaches a worker.
                next.fetch_add(2, Ordering::Relaxed);
                let name = format!("throwaway-{worker_no}-{n}");
                let mut body = source_body(&name, &unreachable_git_url(n), None);
                body["suspended"] = json!(true);
                let created = timed(
                    &client,
                    &mut stats,
                    Kind::Create,
                    Method::POST,
                    "/api/sources",
                    Some(&body),
                    StatusCode::CREATED,
                )
                .await;
                if let Some(new_id) = created.as_ref().and_then(created_id) {
                    let path = format!("/api/sources/{new_id}");
                    let patch = json!({ "branch": "load-test", "interval_seconds": 60 });
                    timed(
                        &client,
                        &mut stats,
                        Kind::Patch,
                        Method::PATCH,
                        &path,
                        Some(&patch),
                        StatusCode::OK,
                    )
                    .await;
                    timed(
                        &client,
                        &mut stats,
                        Kind::Delete,
                        Method::DELETE,
                        &path,
                        None,
                        StatusCode::OK,
                    )
                    .await;
                }
            }
        }
    }
    stats
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn report(stats: &mut Stats, elapsed: Duration) -> usize {
    let total: usize = stats.latencies.values().map(Vec::len).sum();
    let errors: usize = stats.errors.values().sum();
    println!();
    println!(
        "{total} requests in {:.2} s: {:.0} requests/s, {errors} errors",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    println!();
    println!(
        "{:<30} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "route", "count", "errors", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let mut all: Vec<Duration> = Vec::with_capacity(total);
    for (kind, lat) in stats.latencies.iter_mut() {
        lat.sort_unstable();
        all.extend_from_slice(lat);
        let errs: usize = stats
            .errors
            .iter()
            .filter(|((k, _), _)| k == kind)
            .map(|(_, n)| n)
            .sum();
        println!(
            "{:<30} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9}",
            kind.label(),
            lat.len(),
            errs,
            ms(percentile(lat, 50.0)),
            ms(percentile(lat, 90.0)),
            ms(percentile(lat, 99.0)),
            ms(lat.last().copied().unwrap_or_default()),
        );
    }
    all.sort_unstable();
    println!(
        "{:<30} {:>7} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "all",
        all.len(),
        errors,
        ms(percentile(&all, 50.0)),
        ms(percentile(&all, 90.0)),
        ms(percentile(&all, 99.0)),
        ms(all.last().copied().unwrap_or_default()),
    );
    if errors > 0 {
        println!();
        println!("errors:");
        for ((kind, reason), n) in &stats.errors {
            println!("  {n:>6}  {}: {reason}", kind.label());
        }
    }
    errors
}

/// The id of the newest history entry (0 when there is none): the
/// difference before and after the run is how many checks were recorded.
async fn newest_history_id(client: &Client) -> Option<i64> {
    let v = client
        .send(Method::GET, "/api/history?limit=1", None, StatusCode::OK)
        .await
        .ok()?;
    let entries = v.get("history")?.as_array()?;
    Some(
        entries
            .first()
            .and_then(|e| e.get("id")?.as_i64())
            .unwrap_or(0),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let base = check_loopback(&args.url)?;
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if args.setup_interval < 5 {
        bail!("--setup-interval must be at least 5");
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout))
        .pool_max_idle_per_host(args.concurrency)
        .no_proxy()
        .build()?;
    let client = Arc::new(Client {
        http,
        base: base.clone(),
        token: args.token.clone(),
    });

    client
        .send(Method::GET, "/healthz", None, StatusCode::OK)
        .await
        .map_err(|e| anyhow::anyhow!("{base}/healthz: {e}; is chump serve running?"))?;

    // Setup: sources that cycle while the load runs.
    let mut setup_ids = Vec::with_capacity(args.setup_sources);
    if args.setup_sources > 0 {
        let start = Instant::now();
        for i in 0..args.setup_sources {
            let body = source_body(
                &format!("cycle-{i}"),
                &unreachable_git_url(i),
                Some(args.setup_interval),
            );
            let created = client
                .send(
                    Method::POST,
                    "/api/sources",
                    Some(&body),
                    StatusCode::CREATED,
                )
                .await
                .map_err(|e| anyhow::anyhow!("creating setup source {i}: {e}"))?;
            setup_ids.push(created_id(&created).context("create answered without an id")?);
        }
        println!(
            "created {} sources (git URL on a closed port of 127.0.0.1, interval {} s) in {:.1} s",
            setup_ids.len(),
            args.setup_interval,
            start.elapsed().as_secs_f64()
        );
    }

    // The ids the reads and checks use: the setup sources, else what exists.
    let mut ids = setup_ids.clone();
    if ids.is_empty() {
        let list = client
            .send(Method::GET, "/api/sources", None, StatusCode::OK)
            .await
            .map_err(|e| anyhow::anyhow!("listing sources: {e}"))?;
        ids = list
            .get("sources")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.get("id")?.as_i64()).collect())
            .unwrap_or_default();
    }
    let mut own_ids = Vec::new();
    if ids.is_empty() {
        // Nothing to read: make a few suspended sources of our own.
        for i in 0..10 {
            let mut body = source_body(&format!("read-{i}"), &unreachable_git_url(i), None);
            body["suspended"] = json!(true);
            let created = client
                .send(
                    Method::POST,
                    "/api/sources",
                    Some(&body),
                    StatusCode::CREATED,
                )
                .await
                .map_err(|e| anyhow::anyhow!("creating a source to read: {e}"))?;
            own_ids.push(created_id(&created).context("create answered without an id")?);
        }
        ids = own_ids.clone();
    }
    let history_before = newest_history_id(&client).await;

    println!(
        "sending {} requests to {base} with {} in flight ({} sources to read and check)",
        args.requests,
        args.concurrency,
        ids.len()
    );
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.concurrency);
    for w in 0..args.concurrency {
        tasks.push(tokio::spawn(worker(
            client.clone(),
            ids.clone(),
            next.clone(),
            stop.clone(),
            args.requests,
            args.seed,
            w,
        )));
    }
    let deadline = {
        let stop = stop.clone();
        let max = Duration::from_secs(args.max_seconds);
        tokio::spawn(async move {
            tokio::time::sleep(max).await;
            stop.store(true, Ordering::Relaxed);
        })
    };
    let mut stats = Stats::default();
    for task in tasks {
        stats.merge(task.await?);
    }
    let elapsed = start.elapsed();
    deadline.abort();
    if stop.load(Ordering::Relaxed) {
        println!("stopped at the --max-seconds deadline");
    }
    let errors = report(&mut stats, elapsed);

    if let (Some(before), Some(after)) = (history_before, newest_history_id(&client).await) {
        println!();
        println!(
            "{} checks recorded in history during the run ({:.1} per second)",
            after - before,
            (after - before) as f64 / elapsed.as_secs_f64().max(1e-9)
        );
    }

    // Cleanup.
    let cleanup: Vec<i64> = if args.keep_sources {
        own_ids
    } else {
        setup_ids.into_iter().chain(own_ids).collect()
    };
    let mut cleanup_failed = 0;
    for id in &cleanup {
        if client
            .send(
                Method::DELETE,
                &format!("/api/sources/{id}"),
                None,
                StatusCode::OK,
            )
            .await
            .is_err()
        {
            cleanup_failed += 1;
        }
    }
    if !cleanup.is_empty() {
        println!(
            "deleted {} sources made for the run{}",
            cleanup.len() - cleanup_failed,
            if cleanup_failed > 0 {
                format!(" ({cleanup_failed} could not be deleted)")
            } else {
                String::new()
            }
        );
    }

    if errors > 0 {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_loopback;

    #[test]
    fn only_loopback_targets() {
        for ok in [
            "http://127.0.0.1:8000",
            "http://127.0.0.1:8000/",
            "http://localhost:1",
            "http://127.1.2.3:80",
            "http://[::1]:8000",
        ] {
            assert!(check_loopback(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:8000",
            "http://192.168.1.1",
            "http://example.com",
            "http://0.0.0.0:8000",
            "https://127.0.0.1:8000",
            "http://localhost.example.com",
            "http://127.0.0.1:8000/api",
            "not a url",
        ] {
            assert!(check_loopback(bad).is_err(), "{bad}");
        }
    }
}
