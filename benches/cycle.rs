//! The check-cycle benchmark (issue #8): chump against the floor and against
//! the original tool's approach, in one run.
//!
//! ```sh
//! cargo bench --bench cycle -- [--sources N] [--repos R] [--quick] [--reps K]
//!     [--workers 1,4,16] [--change-workers 4,16] [--no-original] [--steady-only]
//! ```
//!
//! Sets up on 127.0.0.1 N kustomize apps (one Deployment each) spread over R
//! bare repositories (default R = N) served by `git daemon`, and the
//! Kubernetes API stand-in with the N Deployments already at the declared
//! image. Then measures, each repeated and reported as median and min–max:
//!
//! - **floor**: per repository one connection to git daemon that asks for the
//!   refs and reads the answer (a minimal pkt-line client, protocol v0 ref
//!   advertisement and v2 `ls-refs`), plus one GET of each Deployment, at
//!   the concurrency of chump's workers;
//! - `git ls-remote` per repository, sequential, on a sample (not the floor);
//! - **original approach**: per source `git clone` + read the image + one
//!   GET, sequential, on a sample, extrapolated to N;
//! - **chump steady state**: one cycle of N checks where nothing changed, per
//!   `CHUMP_WORKERS`, with the per-stage breakdown from chump's log; and the
//!   same with `CHUMP_SELF_HEAL=false` (no drift observation: the Deployment
//!   is read for its image only, as before drift detection), same run;
//! - **chump no-op commit**: every repository got a commit that renders the
//!   same objects (a README): fetch, build, compare the digests, nothing
//!   applied — the cost of deciding by the rendered output;
//! - **chump change**: every repository got a new image tag: fetch, build,
//!   apply, rollout; and the same with `CHUMP_KUSTOMIZE_IN_PROCESS=false`
//!   (every build a kustomize process, as before in-process rendering), same
//!   run;
//! - **latency** from the push to the server-side apply at the API server,
//!   with a webhook and with polling (`CHUMP_INTERVAL=2`);
//! - **peak RSS** (VmHWM) of `chump serve`, and the SQLite store's size on
//!   disk (database, WAL and shared-memory files) after the cycles.
//!
//! `--steady-only` measures the floor, the first (cold) cycle, the steady
//! cycles, the API and the memory, and skips the rest: for large N, where
//! change cycles are mostly `kubectl kustomize` start-ups.
//!
//! Every ratio the goals are stated in is also a field of `goals` in the
//! JSON (measured value beside its target), to compare run to run.
//!
//! Prints a table and writes the figures as JSON to
//! `target/bench/cycle-<timestamp>.json` and `target/bench/latest.json`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

// The test fixtures, reused as they are.
#[allow(dead_code)]
#[path = "../tests/support/chump.rs"]
mod chump_process;
#[allow(dead_code)]
#[path = "../tests/support/git_server.rs"]
mod git_server;
#[allow(dead_code)]
#[path = "../tests/support/kube_api.rs"]
mod kube_api;

use chump_process::{Chump, ChumpOptions};
use git_server::GitServer;
use kube_api::KubeApi;

const NAMESPACE: &str = "bench";
const BRANCH: &str = "main";
const CONTAINER: &str = "app";
/// How long one cycle may take before the benchmark gives up.
const CYCLE_TIMEOUT: Duration = Duration::from_secs(900);
/// Requests the benchmark sends to chump at once (triggers, source creation).
const CLIENT_CONCURRENCY: usize = 8;

// ---------------------------------------------------------------------------
// Options

struct Args {
    sources: usize,
    repos: usize,
    quick: bool,
    reps: usize,
    workers: Vec<usize>,
    change_workers: Vec<usize>,
    /// Sources (original approach) and repositories (ls-remote) sampled.
    sample: usize,
    latency_samples: usize,
    original: bool,
    steady_only: bool,
    /// A running original tool (`http://HOST:PORT`) whose `GET
    /// /api/sources` is measured beside chump's, in the same run.
    original_api: Option<String>,
    /// `--rethinkdb HOST:PORT`: the API measured again on a chump serving
    /// a new database on this RethinkDB server (dropped afterwards).
    rethinkdb: Option<String>,
}

impl Args {
    fn parse() -> Args {
        let mut a = Args {
            sources: 200,
            repos: 0,
            quick: false,
            reps: 0,
            workers: vec![1, 4, 16],
            change_workers: vec![4, 16],
            sample: 0,
            latency_samples: 0,
            original: true,
            steady_only: false,
            original_api: None,
            rethinkdb: None,
        };
        let mut it = std::env::args().skip(1);
        let number = |v: Option<String>, name: &str| -> usize {
            v.and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        let list = |v: Option<String>, name: &str| -> Vec<usize> {
            v.map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
                .unwrap_or_else(|| panic!("{name} needs a list like 1,4,16"))
        };
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--sources" => a.sources = number(it.next(), "--sources"),
                "--repos" => a.repos = number(it.next(), "--repos"),
                "--reps" => a.reps = number(it.next(), "--reps"),
                "--workers" => a.workers = list(it.next(), "--workers"),
                "--change-workers" => a.change_workers = list(it.next(), "--change-workers"),
                "--quick" => a.quick = true,
                "--no-original" => a.original = false,
                "--steady-only" => a.steady_only = true,
                "--original-api" => {
                    a.original_api = Some(it.next().expect("--original-api needs http://HOST:PORT"))
                }
                "--rethinkdb" => {
                    a.rethinkdb = Some(it.next().expect("--rethinkdb needs HOST:PORT"))
                }
                // `cargo bench` passes `--bench` to every bench target.
                "--bench" => {}
                other => panic!(
                    "unknown argument {other}; usage: cargo bench --bench cycle -- \
                     [--sources N] [--repos R] [--quick] [--reps K] [--workers 1,4,16] \
                     [--change-workers 4,16] [--no-original] [--steady-only] \
                     [--original-api http://HOST:PORT] [--rethinkdb HOST:PORT]"
                ),
            }
        }
        if a.repos == 0 {
            a.repos = a.sources;
        }
        assert!(
            a.sources >= 1 && a.repos >= 1 && a.repos <= a.sources,
            "need 1 <= repos <= sources"
        );
        if a.reps == 0 {
            a.reps = if a.quick { 1 } else { 3 };
        }
        a.sample = if a.quick { 5 } else { 20 };
        a.latency_samples = if a.quick { 2 } else { 5 };
        a
    }
}

// ---------------------------------------------------------------------------
// Results

/// Median and spread of repeated measurements, in milliseconds.
#[derive(Serialize, Clone, Copy, Default, Debug)]
struct Stats {
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    n: usize,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        if n == 0 {
            return Stats::default();
        }
        let median = if n % 2 == 1 {
            ms[n / 2]
        } else {
            (ms[n / 2 - 1] + ms[n / 2]) / 2.0
        };
        Stats {
            median_ms: median,
            min_ms: ms[0],
            max_ms: ms[n - 1],
            n,
        }
    }

    fn spread(&self) -> String {
        format!("{}–{}", fmt_ms(self.min_ms), fmt_ms(self.max_ms))
    }
}

#[derive(Serialize)]
struct Machine {
    nproc: usize,
    cpu_model: String,
    kernel: String,
    git: String,
    loadavg_start: String,
    loadavg_end: String,
}

#[derive(Serialize)]
struct FloorResult {
    concurrency: usize,
    /// Protocol v0: connect, read the ref advertisement to the flush.
    v0_advertisement: Stats,
    /// Protocol v2: connect, capabilities, `ls-refs` of the branch.
    v2_ls_refs: Stats,
    /// Its part without the ref queries: the N GETs alone.
    get_only: Stats,
}

impl FloorResult {
    /// The cheaper of the two ways to ask for the refs.
    fn best(&self) -> Stats {
        if self.v0_advertisement.median_ms <= self.v2_ls_refs.median_ms {
            self.v0_advertisement
        } else {
            self.v2_ls_refs
        }
    }
}

/// A per-item measurement on a sample, extrapolated to a whole cycle.
#[derive(Serialize)]
struct SampleResult {
    sample: usize,
    per_item: Stats,
    extrapolated_cycle_ms: f64,
}

/// Mean milliseconds per check, from chump's log.
#[derive(Serialize, Clone, Copy, Default, Debug)]
struct Stages {
    git_ms: f64,
    manifest_ms: f64,
    cluster_ms: f64,
    build_ms: f64,
    apply_ms: f64,
    rollout_ms: f64,
    /// Inside `Checker::check` but in no stage ("check started" to "check
    /// finished" minus the stages, which chump logs to the microsecond).
    other_in_check_ms: f64,
    /// Writing the result ("check finished" to "check done"; for a quiet
    /// check, handed to the recorder, this includes its wait in the
    /// recorder's queue while the worker goes on).
    record_ms: f64,
    /// "check started" to "check done".
    wall_ms: f64,
}

#[derive(Serialize)]
struct CycleResult {
    workers: usize,
    total: Stats,
    /// Median total / N.
    per_check_ms: f64,
    /// N / median total.
    checks_per_second: f64,
    /// CPU time of `chump serve` per check, over every repetition.
    chump_cpu_ms_per_check: f64,
    /// CPU time per check of every process the cycle kept busy.
    cpu_per_check: CpuPerCheck,
    /// Time to send the R push webhooks, one per repository (overlaps the checks).
    trigger: Stats,
    stages: Stages,
    /// workers × total / N − wall: how long a worker slot waits between checks.
    slot_gap_ms: f64,
    ref_queries_per_cycle: f64,
    fetches_per_cycle: f64,
    outcomes: BTreeMap<String, usize>,
    /// Requests to the Kubernetes API per check, by kind (`get`, `list`,
    /// `apply`, `dry_run`, …), over every repetition.
    cluster_requests_per_check: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct LatencyResult {
    mode: String,
    workers: usize,
    to_apply: Stats,
    /// The build stage of the same checks (`build_ms`).
    build: Stats,
}

#[derive(Serialize)]
struct RssResult {
    workers: usize,
    /// What the process did since the previous reading: `cold cycle`,
    /// `steady`, `change`, `API`, `webhook latency`.
    phase: &'static str,
    /// The peak over that phase alone (VmHWM, reset after each reading).
    vm_hwm_kib: u64,
    vm_rss_kib: u64,
}

#[derive(Serialize)]
struct Ratio {
    workers: usize,
    chump_over_floor: f64,
    original_over_chump_per_source: f64,
}

#[derive(Serialize)]
struct Report {
    timestamp: String,
    machine: Machine,
    sources: usize,
    repos: usize,
    reps: usize,
    quick: bool,
    setup_ms: f64,
    floor: Vec<FloorResult>,
    ls_remote: Option<SampleResult>,
    original: Option<SampleResult>,
    cold_cycle_ms: f64,
    steady: Vec<CycleResult>,
    /// Steady state with `CHUMP_SELF_HEAL=false`.
    steady_without_self_heal: Vec<CycleResult>,
    change: Vec<CycleResult>,
    /// Change cycles with `CHUMP_KUSTOMIZE_IN_PROCESS=false`: the binary
    /// builds every (plain) kustomization.
    change_with_kustomize: Vec<CycleResult>,
    /// A commit per repository that renders the same objects.
    noop_commit: Vec<CycleResult>,
    latency: Vec<LatencyResult>,
    /// The REST API over the N sources and their statuses (SQLite).
    api: Option<ApiResult>,
    rss: Vec<RssResult>,
    peak_rss_mib: f64,
    /// The peak over the steady cycles alone.
    peak_rss_steady_mib: f64,
    /// The SQLite store's files after the cycles (database, WAL, shm).
    store_bytes: u64,
    ratios: Vec<Ratio>,
    /// Each goal of issue 18: what this run measured beside its target.
    goals: Vec<Goal>,
}

/// One performance goal: the measured figure and the target it is held to
/// (`met` is `measured <= target`, or `>=` where `higher_is_better`).
#[derive(Serialize)]
struct Goal {
    name: String,
    measured: f64,
    target: f64,
    higher_is_better: bool,
    met: bool,
}

/// One route under load: one client in a row, then 16 at once.
#[derive(Serialize)]
struct RouteResult {
    route: String,
    /// One client, requests in a row.
    one_client: Stats,
    /// 16 clients for 3 s.
    rps_16: f64,
    p99_ms_16: f64,
    max_ms_16: f64,
}

#[derive(Serialize)]
struct ApiResult {
    sources: usize,
    response_bytes: usize,
    routes: Vec<RouteResult>,
    /// The original tool's `GET /api/sources` under the same load, with
    /// the number of sources it listed (`--original-api`).
    original_list: Option<(usize, RouteResult)>,
    /// The same sources on a chump serving RethinkDB (`--rethinkdb`).
    rethinkdb: Option<RethinkApi>,
}

#[derive(Serialize)]
struct RethinkApi {
    server: String,
    response_bytes: usize,
    routes: Vec<RouteResult>,
}

// ---------------------------------------------------------------------------
// The fixture: repositories, the API stand-in, the Deployments

struct App {
    name: String,
    repo: usize,
    /// The first app of its repository (the floor asks for its refs).
    first_of_repo: bool,
}

struct Fixture {
    git: GitServer,
    kube: KubeApi,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    apps: Vec<App>,
    repos: Vec<String>,
    /// Image tag generation; every commit uses a new one.
    generation: usize,
    http: reqwest::Client,
}

fn image(app: &str, generation: usize) -> String {
    format!("registry.example/{app}:v{generation}")
}

fn deployment_yaml(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
         spec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    \
         metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      \
         - name: {CONTAINER}\n        image: {image}\n"
    )
}

impl Fixture {
    async fn new(args: &Args) -> Fixture {
        let git = blocking(GitServer::start);
        let kube = KubeApi::start().await;
        let dir = tempfile::Builder::new()
            .prefix("chump-bench-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        let kubeconfig = kube.kubeconfig(dir.path());
        let repos = (0..args.repos).map(|j| format!("repo-{j:04}")).collect();
        let apps = (0..args.sources)
            .map(|i| App {
                name: format!("app-{i:04}"),
                repo: i % args.repos,
                first_of_repo: i < args.repos,
            })
            .collect();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .unwrap();
        let fx = Fixture {
            git,
            kube,
            dir,
            kubeconfig,
            apps,
            repos,
            generation: 1,
            http,
        };
        let all: Vec<usize> = (0..fx.repos.len()).collect();
        blocking(|| fx.publish(&all, 1, true));
        fx.kube.put_namespace(NAMESPACE);
        for app in &fx.apps {
            fx.kube
                .put_deployment_with(NAMESPACE, &app.name, &[(CONTAINER, &image(&app.name, 1))]);
        }
        fx
    }

    fn apps_of(&self, repo: usize) -> impl Iterator<Item = &App> {
        self.apps.iter().filter(move |a| a.repo == repo)
    }

    /// The files of every app in `repo`, declaring images of `generation`.
    fn repo_files(&self, repo: usize, generation: usize) -> Vec<(String, String)> {
        self.apps_of(repo)
            .flat_map(|a| {
                [
                    (
                        format!("apps/{}/kustomization.yaml", a.name),
                        "resources:\n- deployment.yaml\n".to_string(),
                    ),
                    (
                        format!("apps/{}/deployment.yaml", a.name),
                        deployment_yaml(&a.name, &image(&a.name, generation)),
                    ),
                ]
            })
            .collect()
    }

    /// Creates (or commits to, as a push would) `repos` with images of
    /// `generation`, four at a time. Blocking.
    fn publish(&self, repos: &[usize], generation: usize, create: bool) {
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while let Some(&j) = repos.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let files = self.repo_files(j, generation);
                        if create {
                            self.git.create_repo(&self.repos[j], BRANCH, files);
                        } else {
                            let message = format!("images v{generation}");
                            self.git
                                .commit_files(&self.repos[j], BRANCH, files, &message);
                        }
                    }
                });
            }
        });
    }

    /// Commits a README change to `repos` (the rendered objects stay the
    /// same), four at a time. Blocking.
    fn publish_readme(&self, repos: &[usize], revision: usize) {
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    while let Some(&j) = repos.get(next.fetch_add(1, Ordering::Relaxed)) {
                        let readme = format!("# apps\n\nrevision {revision}\n");
                        self.git.commit_files(
                            &self.repos[j],
                            BRANCH,
                            [("README.md", readme)],
                            "docs",
                        );
                    }
                });
            }
        });
    }

    fn next_generation(&mut self) -> usize {
        self.generation += 1;
        self.generation
    }

    fn repo_url(&self, repo: usize) -> String {
        self.git.url(&self.repos[repo])
    }

    fn deployment_url(&self, name: &str) -> String {
        format!(
            "{}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}",
            self.kube.url()
        )
    }

    fn source_body(&self, app: &App) -> Value {
        json!({
            "namespace": NAMESPACE,
            "deployment_name": app.name,
            "git_url": self.repo_url(app.repo),
            "branch": BRANCH,
            "deploy_path": format!("apps/{}", app.name),
            "container_name": CONTAINER,
            "image_version_file": format!("apps/{}/deployment.yaml", app.name),
        })
    }

    /// `git ARGS` with no system or global configuration. Blocking.
    fn git_cli(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("HOME", self.dir.path().join("home"))
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// How many `ls-refs` and `fetch` commands git daemon served so far
    /// (after a moment, for the packet trace of the last ones). Blocking.
    fn served(&self) -> (usize, usize) {
        std::thread::sleep(Duration::from_millis(200));
        let commands = self.git.upload_pack_commands();
        let ls_refs = commands.iter().filter(|c| *c == "ls-refs").count();
        let fetches = commands.iter().filter(|c| *c == "fetch").count();
        (ls_refs, fetches)
    }
}

/// Runs blocking work (git CLI, starting processes) off the async workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// One GET of a Deployment, the whole body read; returns its length.
async fn get_deployment(http: &reqwest::Client, url: &str) -> usize {
    let resp = http.get(url).send().await.expect("GET deployment");
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.bytes().await.expect("body").len()
}

// ---------------------------------------------------------------------------
// The floor: a minimal git-protocol client

#[derive(Clone, Copy)]
enum Proto {
    V0,
    V2,
}

fn pkt(payload: &str) -> Vec<u8> {
    let mut out = format!("{:04x}", payload.len() + 4).into_bytes();
    out.extend_from_slice(payload.as_bytes());
    out
}

/// Reads pkt-lines up to a flush; returns whether one named `needle`.
async fn read_to_flush(r: &mut BufReader<TcpStream>, needle: &[u8]) -> std::io::Result<bool> {
    let mut found = false;
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await?;
        let len = usize::from_str_radix(std::str::from_utf8(&len).unwrap_or("zzzz"), 16)
            .map_err(|_| std::io::Error::other("bad pkt-line length"))?;
        match len {
            0 => return Ok(found),
            1 | 2 => continue,
            3 => return Err(std::io::Error::other("bad pkt-line length 3")),
            _ => {
                buf.resize(len - 4, 0);
                r.read_exact(&mut buf).await?;
                if buf.starts_with(b"ERR ") {
                    return Err(std::io::Error::other(
                        String::from_utf8_lossy(&buf).into_owned(),
                    ));
                }
                found |= buf.windows(needle.len()).any(|w| w == needle);
            }
        }
    }
}

/// One connection to git daemon that asks for the refs and reads them,
/// nothing else.
async fn ref_query(port: u16, repo: &str, proto: Proto) -> std::io::Result<()> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let mut s = BufReader::new(stream);
    let head = format!("refs/heads/{BRANCH}");
    let request = match proto {
        Proto::V0 => format!("git-upload-pack /{repo}.git\0host=127.0.0.1:{port}\0"),
        Proto::V2 => format!("git-upload-pack /{repo}.git\0host=127.0.0.1:{port}\0\0version=2\0"),
    };
    s.get_mut().write_all(&pkt(&request)).await?;
    let found = match proto {
        // The ref advertisement, up to its flush.
        Proto::V0 => read_to_flush(&mut s, head.as_bytes()).await?,
        // The capability advertisement, then `ls-refs` of the branch.
        Proto::V2 => {
            read_to_flush(&mut s, b"ls-refs").await?;
            let mut cmd = pkt("command=ls-refs\n");
            cmd.extend_from_slice(b"0001");
            cmd.extend(pkt("peel\n"));
            cmd.extend(pkt("symrefs\n"));
            cmd.extend(pkt(&format!("ref-prefix {head}\n")));
            cmd.extend_from_slice(b"0000");
            s.get_mut().write_all(&cmd).await?;
            read_to_flush(&mut s, head.as_bytes()).await?
        }
    };
    // No wants (v0) / no more commands (v2): upload-pack ends.
    s.get_mut().write_all(b"0000").await?;
    if !found {
        return Err(std::io::Error::other(format!("{repo}: no {head}")));
    }
    Ok(())
}

/// The floor at `concurrency`: for every source one GET of its Deployment,
/// and for every repository one ref query (none without `proto`).
async fn floor_once(fx: &Fixture, concurrency: usize, proto: Option<Proto>) -> Duration {
    let next = AtomicUsize::new(0);
    let (next, port) = (&next, fx.git.port());
    let worker = move || async move {
        while let Some(app) = fx.apps.get(next.fetch_add(1, Ordering::Relaxed)) {
            if let (true, Some(proto)) = (app.first_of_repo, proto) {
                ref_query(port, &fx.repos[app.repo], proto)
                    .await
                    .expect("ref query");
            }
            get_deployment(&fx.http, &fx.deployment_url(&app.name)).await;
        }
    };
    let t = Instant::now();
    futures::future::join_all((0..concurrency).map(|_| worker())).await;
    t.elapsed()
}

async fn measure_floor(fx: &Fixture, concurrency: usize, reps: usize) -> FloorResult {
    floor_once(fx, concurrency, Some(Proto::V2)).await; // warm the connection pool
    let (mut v0, mut v2, mut get) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps.max(3) {
        v0.push(floor_once(fx, concurrency, Some(Proto::V0)).await);
        v2.push(floor_once(fx, concurrency, Some(Proto::V2)).await);
        get.push(floor_once(fx, concurrency, None).await);
    }
    FloorResult {
        concurrency,
        v0_advertisement: Stats::of(&v0),
        v2_ls_refs: Stats::of(&v2),
        get_only: Stats::of(&get),
    }
}

/// `git ls-remote` per repository, sequential, on a sample.
fn measure_ls_remote(fx: &Fixture, sample: usize) -> SampleResult {
    let sample = sample.max(10).min(fx.repos.len());
    let head = format!("refs/heads/{BRANCH}");
    let mut times = Vec::new();
    for j in 0..sample {
        let t = Instant::now();
        let out = fx.git_cli(&["ls-remote", &fx.repo_url(j), &head]);
        times.push(t.elapsed());
        assert!(out.contains(&head), "ls-remote: {out}");
    }
    let per_item = Stats::of(&times);
    SampleResult {
        sample,
        per_item,
        extrapolated_cycle_ms: per_item.median_ms * fx.repos.len() as f64,
    }
}

/// The image of `container` in a Deployment manifest, the way a script
/// would find it.
fn image_in_manifest(text: &str, container: &str) -> Option<String> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| l.trim_start_matches("- ") == format!("name: {container}"))?;
    lines
        .find_map(|l| l.strip_prefix("image:"))
        .map(|i| i.trim().to_string())
}

/// The original tool's approach, per source: `git clone`, read the image,
/// one GET of the Deployment; sequential, on a sample.
async fn measure_original(fx: &Fixture, sample: usize) -> SampleResult {
    let sample = sample.min(fx.apps.len());
    let mut times = Vec::new();
    for k in 0..sample {
        let app = &fx.apps[k * fx.apps.len() / sample];
        let dest = fx.dir.path().join(format!("original-{k}"));
        let t = Instant::now();
        blocking(|| {
            fx.git_cli(&[
                "clone",
                "--quiet",
                "--branch",
                BRANCH,
                &fx.repo_url(app.repo),
                dest.to_str().unwrap(),
            ])
        });
        let file = dest.join(format!("apps/{}/deployment.yaml", app.name));
        let text = std::fs::read_to_string(&file).expect("manifest");
        let desired = image_in_manifest(&text, CONTAINER).expect("image in manifest");
        let resp = fx
            .http
            .get(fx.deployment_url(&app.name))
            .send()
            .await
            .unwrap();
        let d: Value = resp.json().await.unwrap();
        let running = d["spec"]["template"]["spec"]["containers"][0]["image"].as_str();
        times.push(t.elapsed());
        assert_eq!(running, Some(desired.as_str()));
        std::fs::remove_dir_all(&dest).ok();
    }
    let per_item = Stats::of(&times);
    SampleResult {
        sample,
        per_item,
        extrapolated_cycle_ms: per_item.median_ms * fx.apps.len() as f64,
    }
}

// ---------------------------------------------------------------------------
// Chump

fn start_chump(fx: &Fixture, dir: &Path, workers: usize, interval: &str) -> Chump {
    start_chump_with(fx, dir, workers, interval, &[])
}

fn start_chump_with(
    fx: &Fixture,
    dir: &Path,
    workers: usize,
    interval: &str,
    env: &[(&str, &str)],
) -> Chump {
    std::fs::create_dir_all(dir).unwrap();
    let mut options = ChumpOptions::default()
        .dir(dir)
        .env("KUBECONFIG", fx.kubeconfig.display().to_string())
        .env("CHUMP_WORKERS", workers.to_string())
        .env("CHUMP_INTERVAL", interval)
        .env("CHUMP_ROLLOUT_TIMEOUT", "60")
        .env("CHUMP_CHECK_TIMEOUT", "300")
        // "check finished" (info) has the stage times; "check started" and
        // "check done" (worker, or recorder for quiet checks; debug) bound
        // each check.
        .env(
            "RUST_LOG",
            "info,chump_jobs::worker=debug,chump_jobs::recorder=debug",
        );
    for (k, v) in env {
        options = options.env(k, *v);
    }
    blocking(|| Chump::start_with(options))
}

/// Registers one source per app; returns their ids in app order.
async fn create_sources(fx: &Fixture, ch: &Chump, apps: &[&App]) -> Vec<i64> {
    let mut ids: Vec<(usize, i64)> = futures::stream::iter(apps.iter().enumerate())
        .map(|(i, app)| async move {
            let resp = fx
                .http
                .post(ch.url("/api/sources"))
                .json(&fx.source_body(app))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, 201, "create source: {body}");
            (i, body["source"]["id"].as_i64().unwrap())
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .collect()
        .await;
    ids.sort();
    ids.into_iter().map(|(_, id)| id).collect()
}

/// Makes every source due now, as one scheduler tick finds them: one push
/// webhook per repository (each triggers all the sources on it), so sources
/// that share a repository are due together. `ids` are the sources that
/// must all have been triggered.
async fn trigger_checks(fx: &Fixture, ch: &Chump, ids: &[i64]) {
    let triggered: Vec<i64> = futures::stream::iter(&fx.repos)
        .map(|repo| async move {
            let push = serde_json::json!({"repository": fx.git.url(repo), "branch": "main"});
            let resp = fx
                .http
                .post(ch.url("/api/webhooks/generic"))
                .json(&push)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202, "webhook for {repo}");
            let body: Value = resp.json().await.unwrap();
            body["triggered"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_i64).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .concat()
        .await;
    let missing = ids.iter().filter(|id| !triggered.contains(id)).count();
    assert_eq!(
        missing, 0,
        "{missing} sources were not triggered by their repository's push"
    );
}

/// The log events of the checks in `logs`, by source id.
#[derive(Default)]
struct CheckEvents {
    started: Option<OffsetDateTime>,
    finished: Option<(OffsetDateTime, Value)>,
    done: Option<OffsetDateTime>,
}

fn check_events(logs: &str) -> HashMap<i64, CheckEvents> {
    let mut out: HashMap<i64, CheckEvents> = HashMap::new();
    for line in logs.lines() {
        if !line.contains("\"check ") {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(id) = v["source_id"].as_i64().or(v["span"]["source_id"].as_i64()) else {
            continue;
        };
        let Some(ts) = v["timestamp"]
            .as_str()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        else {
            continue;
        };
        let e = out.entry(id).or_default();
        match v["message"].as_str() {
            Some("check started") => e.started = Some(ts),
            Some("check finished") => e.finished = Some((ts, v)),
            Some("check done") => e.done = Some(ts),
            _ => {}
        }
    }
    out
}

/// Waits until `n` checks logged "check done" after `offset`; returns the
/// log from `offset`. Reads only what is new at each look (the log of a
/// large run is tens of MB: copying it every 20 ms would take a core).
async fn wait_checks_done(ch: &Chump, offset: usize, n: usize) -> String {
    const DONE: &str = "\"message\":\"check done\"";
    let deadline = Instant::now() + CYCLE_TIMEOUT;
    let (mut seen, mut done) = (offset, 0);
    loop {
        let new = ch.logs_since(seen);
        // Lines are added whole, so no event is split between two looks.
        done += new.matches(DONE).count();
        seen += new.len();
        if done >= n {
            return ch.logs_since(offset);
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {n} checks done; log tail:\n{}",
            &new[new.len().saturating_sub(4000)..]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One measured cycle.
struct CycleSample {
    total: Duration,
    /// CPU time the cycle cost, by process (user + system).
    cpu: CpuUse,
    trigger: Duration,
    /// Sums over the checks (ms).
    sums: Stages,
    checks: usize,
    ref_queries: usize,
    fetches: usize,
    outcomes: BTreeMap<String, usize>,
    /// Requests the API stand-in received during the cycle, by kind.
    kube_requests: BTreeMap<String, usize>,
}

/// What kind of request the API stand-in got: `get` (one object), `list`
/// (by label selector), `apply`, `dry_run` (an apply with `dryRun`), or the
/// method.
fn request_kind(r: &kube_api::RecordedRequest) -> String {
    match r.method.as_str() {
        "PATCH" if r.query.contains("dryRun") => "dry_run".into(),
        "PATCH" => "apply".into(),
        "GET" if r.query.contains("labelSelector") || r.query.contains("fieldSelector") => {
            "list".into()
        }
        "GET" => "get".into(),
        other => other.to_ascii_lowercase(),
    }
}

fn ms(a: OffsetDateTime, b: OffsetDateTime) -> f64 {
    (b - a).as_seconds_f64() * 1e3
}

/// Summarizes the checks logged in `tail`; the cycle ends at the last
/// "check done".
fn summarize(tail: &str, t0: OffsetDateTime) -> (Duration, Stages, usize, BTreeMap<String, usize>) {
    let mut sums = Stages::default();
    let mut outcomes = BTreeMap::new();
    let mut end = t0;
    let mut checks = 0;
    for e in check_events(tail).values() {
        let (Some(started), Some((finished_at, f)), Some(done)) = (e.started, &e.finished, e.done)
        else {
            continue;
        };
        checks += 1;
        end = end.max(done);
        let field = |k: &str| f[k].as_f64().unwrap_or(0.0);
        let stages = [
            "git_ms",
            "manifest_ms",
            "cluster_ms",
            "build_ms",
            "apply_ms",
            "rollout_ms",
        ]
        .map(field);
        sums.git_ms += stages[0];
        sums.manifest_ms += stages[1];
        sums.cluster_ms += stages[2];
        sums.build_ms += stages[3];
        sums.apply_ms += stages[4];
        sums.rollout_ms += stages[5];
        sums.other_in_check_ms += ms(started, *finished_at) - stages.iter().sum::<f64>();
        sums.record_ms += ms(*finished_at, done);
        sums.wall_ms += ms(started, done);
        let outcome = f["outcome"].as_str().unwrap_or("?").to_string();
        *outcomes.entry(outcome).or_default() += 1;
    }
    let total = Duration::from_secs_f64((end - t0).as_seconds_f64().max(0.0));
    (total, sums, checks, outcomes)
}

/// Triggers a check of every source in `ids` and waits until all are done.
async fn cycle(fx: &Fixture, ch: &Chump, ids: &[i64]) -> CycleSample {
    let offset = ch.logs_len();
    let (ls_refs0, fetches0) = blocking(|| fx.served());
    fx.kube.clear_requests();
    let cpu0 = CpuUse::now(ch.pid(), fx.git.pid());
    let t0 = OffsetDateTime::now_utc();
    let started = Instant::now();
    trigger_checks(fx, ch, ids).await;
    let trigger = started.elapsed();
    let tail = wait_checks_done(ch, offset, ids.len()).await;
    let cpu = CpuUse::now(ch.pid(), fx.git.pid()).since(cpu0);
    let (total, sums, checks, outcomes) = summarize(&tail, t0);
    let (ls_refs1, fetches1) = blocking(|| fx.served());
    let mut kube_requests = BTreeMap::new();
    for r in fx.kube.requests() {
        *kube_requests.entry(request_kind(&r)).or_default() += 1;
    }
    verify_checked_after(fx, ch, ids, t0).await;
    CycleSample {
        kube_requests,
        cpu,
        total,
        trigger,
        sums,
        checks,
        ref_queries: ls_refs1 - ls_refs0,
        fetches: fetches1 - fetches0,
        outcomes,
    }
}

/// Every source's status says it was checked after `t0` (outside the timing).
async fn verify_checked_after(fx: &Fixture, ch: &Chump, ids: &[i64], t0: OffsetDateTime) {
    let body: Value = fx
        .http
        .get(ch.url("/api/sources"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let checked: HashMap<i64, OffsetDateTime> = body["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| {
            let at = s["status"]["last_checked_at"].as_str()?;
            Some((s["id"].as_i64()?, OffsetDateTime::parse(at, &Rfc3339).ok()?))
        })
        .collect();
    for id in ids {
        assert!(
            checked.get(id).is_some_and(|at| *at >= t0),
            "source {id} was not checked in this cycle"
        );
    }
}

fn cycle_result(workers: usize, n: usize, samples: &[CycleSample]) -> CycleResult {
    let totals: Vec<Duration> = samples.iter().map(|s| s.total).collect();
    let triggers: Vec<Duration> = samples.iter().map(|s| s.trigger).collect();
    let total = Stats::of(&totals);
    let checks: usize = samples.iter().map(|s| s.checks).sum::<usize>().max(1);
    let mean =
        |f: fn(&Stages) -> f64| samples.iter().map(|s| f(&s.sums)).sum::<f64>() / checks as f64;
    let stages = Stages {
        git_ms: mean(|s| s.git_ms),
        manifest_ms: mean(|s| s.manifest_ms),
        cluster_ms: mean(|s| s.cluster_ms),
        build_ms: mean(|s| s.build_ms),
        apply_ms: mean(|s| s.apply_ms),
        rollout_ms: mean(|s| s.rollout_ms),
        other_in_check_ms: mean(|s| s.other_in_check_ms),
        record_ms: mean(|s| s.record_ms),
        wall_ms: mean(|s| s.wall_ms),
    };
    let mut outcomes = BTreeMap::new();
    for s in samples {
        for (k, v) in &s.outcomes {
            *outcomes.entry(k.clone()).or_default() += v;
        }
    }
    let reps = samples.len().max(1) as f64;
    let mean_total: f64 = totals.iter().map(|d| d.as_secs_f64() * 1e3).sum::<f64>() / reps;
    CycleResult {
        workers,
        per_check_ms: total.median_ms / n as f64,
        checks_per_second: n as f64 / (total.median_ms / 1e3).max(1e-9),
        chump_cpu_ms_per_check: samples
            .iter()
            .map(|s| s.cpu.chump.as_secs_f64() * 1e3)
            .sum::<f64>()
            / checks as f64,
        cpu_per_check: {
            let per = |f: fn(&CpuUse) -> Duration| {
                samples
                    .iter()
                    .map(|s| f(&s.cpu).as_secs_f64() * 1e3)
                    .sum::<f64>()
                    / checks as f64
            };
            let mut c = CpuPerCheck {
                chump_ms: per(|c| c.chump),
                kustomize_ms: per(|c| c.chump_children),
                git_daemon_ms: per(|c| c.git_daemon),
                kube_stand_in_and_bench_ms: per(|c| c.bench),
                total_ms: 0.0,
            };
            c.total_ms =
                c.chump_ms + c.kustomize_ms + c.git_daemon_ms + c.kube_stand_in_and_bench_ms;
            c
        },
        total,
        trigger: Stats::of(&triggers),
        slot_gap_ms: (workers.min(n) as f64 * mean_total / n as f64 - stages.wall_ms).max(0.0),
        stages,
        ref_queries_per_cycle: samples.iter().map(|s| s.ref_queries).sum::<usize>() as f64 / reps,
        fetches_per_cycle: samples.iter().map(|s| s.fetches).sum::<usize>() as f64 / reps,
        outcomes,
        cluster_requests_per_check: {
            let mut per: BTreeMap<String, f64> = BTreeMap::new();
            for smp in samples {
                for (kind, n) in &smp.kube_requests {
                    *per.entry(kind.clone()).or_default() += *n as f64;
                }
            }
            per.values_mut().for_each(|v| *v /= checks as f64);
            per
        },
    }
}

/// A route's load beside writes: manual checks asked of these sources in
/// turn, this many a second (each a request, a claim and a result written).
struct Writes {
    ids: Vec<i64>,
    per_second: f64,
}

/// One route: `n` requests in a row, then 16 clients for 3 s (with
/// `writes` going on meanwhile, when given).
async fn measure_route(
    fx: &Fixture,
    base: &str,
    route: &str,
    n: usize,
    writes: Option<Writes>,
) -> RouteResult {
    let label = match &writes {
        Some(w) => format!("{route} + {} checks/s", w.per_second),
        None => route.to_string(),
    };
    let url = format!("{base}{route}");
    let mut one = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let resp = fx.http.get(&url).send().await.unwrap();
        assert!(resp.status().is_success(), "{route}: {}", resp.status());
        resp.bytes().await.unwrap();
        one.push(t.elapsed());
    }
    let until = Instant::now() + Duration::from_secs(3);
    let started = Instant::now();
    let writer = writes.map(|w| {
        let http = fx.http.clone();
        let urls: Vec<String> = w
            .ids
            .iter()
            .map(|id| format!("{base}/api/sources/{id}/check"))
            .collect();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / w.per_second));
            let mut sent = 0usize;
            while Instant::now() < until {
                tick.tick().await;
                let resp = http.post(&urls[sent % urls.len()]).send().await.unwrap();
                assert!(
                    resp.status().is_success(),
                    "check request: {}",
                    resp.status()
                );
                sent += 1;
            }
            sent
        })
    });
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (http, url) = (fx.http.clone(), url.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let resp = http.get(&url).send().await.unwrap();
                    assert!(resp.status().is_success());
                    resp.bytes().await.unwrap();
                    times.push(t.elapsed());
                }
                times
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    if let Some(writer) = writer {
        writer.await.unwrap();
    }
    all.sort();
    let p99 = all[(all.len() * 99 / 100).min(all.len() - 1)];
    RouteResult {
        route: label,
        one_client: Stats::of(&one),
        rps_16: all.len() as f64 / secs,
        p99_ms_16: p99.as_secs_f64() * 1e3,
        max_ms_16: all.last().unwrap().as_secs_f64() * 1e3,
    }
}

/// The API over every source with its status: the whole list (the original
/// tool's answer), a page of 100, one source, one status.
async fn measure_api(
    fx: &Fixture,
    ch: &Chump,
    ids: &[i64],
    original_api: Option<&str>,
) -> ApiResult {
    let base = ch.url("");
    let body = fx
        .http
        .get(ch.url("/api/sources"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let id = ids[ids.len() / 2];
    let mut routes = Vec::new();
    for (route, n) in [
        ("/api/sources".to_string(), 20),
        ("/api/sources?limit=100".to_string(), 50),
        (format!("/api/sources/{id}/"), 200),
        (format!("/api/sources/{id}/status"), 200),
    ] {
        routes.push(measure_route(fx, &base, &route, n, None).await);
    }
    // The whole list is kept between writes on SQLite: measured again
    // while checks are asked for and recorded, each moving the version.
    let writes = Writes {
        ids: ids.to_vec(),
        per_second: 50.0,
    };
    routes.push(measure_route(fx, &base, "/api/sources", 20, Some(writes)).await);
    let original_list = match original_api {
        Some(url) => {
            let url = url.trim_end_matches('/');
            let listed: Value = fx
                .http
                .get(format!("{url}/api/sources"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let n = listed["sources"].as_array().map_or(0, Vec::len);
            Some((n, measure_route(fx, url, "/api/sources", 20, None).await))
        }
        None => None,
    };
    ApiResult {
        sources: ids.len(),
        response_bytes: body.len(),
        routes,
        original_list,
        rethinkdb: None,
    }
}

/// The API again on a chump serving a new database on RethinkDB
/// `server` (`--rethinkdb`): the same sources, created and checked once,
/// then the whole list (alone, and while 50 checks a second are asked for
/// and recorded) and one source. The database is dropped afterwards.
async fn measure_api_rethinkdb(
    fx: &Fixture,
    dir: &Path,
    workers: usize,
    server: &str,
    stamp: &str,
) -> RethinkApi {
    let db = format!("chump_bench_{}", stamp.to_lowercase());
    let url = format!("rethinkdb://{server}/{db}");
    let mut ch = start_chump_with(fx, dir, workers, "1h", &[("CHUMP_DATABASE", &url)]);
    let offset = ch.logs_len();
    let apps: Vec<&App> = fx.apps.iter().collect();
    let ids = create_sources(fx, &ch, &apps).await;
    wait_checks_done(&ch, offset, ids.len()).await;
    let body = fx
        .http
        .get(ch.url("/api/sources"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let base = ch.url("");
    let id = ids[ids.len() / 2];
    let mut routes = Vec::new();
    routes.push(measure_route(fx, &base, "/api/sources", 20, None).await);
    routes.push(measure_route(fx, &base, &format!("/api/sources/{id}/"), 200, None).await);
    let writes = Writes {
        ids: ids.clone(),
        per_second: 50.0,
    };
    routes.push(measure_route(fx, &base, "/api/sources", 20, Some(writes)).await);
    blocking(|| ch.terminate(Duration::from_secs(30)));
    let (host, port) = server.rsplit_once(':').expect("--rethinkdb HOST:PORT");
    let session = reql::r
        .connect(
            reql::cmd::connect::Options::new()
                .host(host.to_string())
                .port(port.parse().expect("--rethinkdb HOST:PORT")),
        )
        .await
        .expect("connect to RethinkDB");
    let mut dropped = reql::r.db_drop(db.as_str()).run::<_, Value>(&session);
    futures::TryStreamExt::try_next(&mut dropped)
        .await
        .expect("drop the bench database");
    RethinkApi {
        server: server.to_string(),
        response_bytes: body.len(),
        routes,
    }
}

/// Steady state: `reps` cycles where nothing changed.
async fn measure_steady(
    fx: &Fixture,
    ch: &Chump,
    ids: &[i64],
    workers: usize,
    reps: usize,
) -> CycleResult {
    let mut samples = Vec::new();
    for _ in 0..reps {
        let s = cycle(fx, ch, ids).await;
        if s.outcomes.get("up_to_date") != Some(&ids.len()) {
            eprintln!("warning: steady cycle outcomes {:?}", s.outcomes);
        }
        samples.push(s);
    }
    cycle_result(workers, ids.len(), &samples)
}

/// Change: before each cycle every repository gets a new image tag (not
/// timed); the cycle fetches, builds, applies and waits for the rollouts.
async fn measure_change(
    fx: &mut Fixture,
    ch: &Chump,
    ids: &[i64],
    workers: usize,
    reps: usize,
) -> CycleResult {
    let mut samples = Vec::new();
    let all: Vec<usize> = (0..fx.repos.len()).collect();
    for _ in 0..reps {
        let generation = fx.next_generation();
        blocking(|| fx.publish(&all, generation, false));
        let s = cycle(fx, ch, ids).await;
        if s.outcomes.get("deployed") != Some(&ids.len()) {
            eprintln!("warning: change cycle outcomes {:?}", s.outcomes);
        }
        for app in &fx.apps {
            let d = fx
                .kube
                .get_object("apps/v1", "deployments", Some(NAMESPACE), &app.name)
                .unwrap();
            assert_eq!(
                d["spec"]["template"]["spec"]["containers"][0]["image"],
                json!(image(&app.name, generation)),
                "{} not deployed",
                app.name
            );
        }
        samples.push(s);
    }
    cycle_result(workers, ids.len(), &samples)
}

/// No-op commits: before each cycle every repository gets a README change
/// (not timed); the cycle fetches, builds and compares, and applies nothing.
async fn measure_noop_commit(
    fx: &mut Fixture,
    ch: &Chump,
    ids: &[i64],
    workers: usize,
    reps: usize,
) -> CycleResult {
    let mut samples = Vec::new();
    let all: Vec<usize> = (0..fx.repos.len()).collect();
    for _ in 0..reps {
        let revision = fx.next_generation();
        blocking(|| fx.publish_readme(&all, revision));
        let s = cycle(fx, ch, ids).await;
        if s.outcomes.get("up_to_date") != Some(&ids.len()) {
            eprintln!("warning: no-op commit cycle outcomes {:?}", s.outcomes);
        }
        // (`cycle` starts the stand-in's request log afresh.)
        let writes = fx.kube.writes().len();
        assert_eq!(
            writes, 0,
            "a commit rendering the same objects wrote to the cluster"
        );
        samples.push(s);
    }
    cycle_result(workers, ids.len(), &samples)
}

/// Waits for the first server-side apply of a Deployment at the stand-in.
async fn wait_apply(fx: &Fixture, since: Instant) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let applied = fx
            .kube
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path.contains("/deployments/"));
        if applied {
            return since.elapsed();
        }
        assert!(Instant::now() < deadline, "no apply within 120 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The `build_ms` of the deploys in `tail` (every "check finished" line: a
/// polled source may be checked again, up to date, right after its deploy).
fn deploy_build_times(tail: &str) -> Vec<Duration> {
    tail.lines()
        .filter(|l| l.contains("\"check finished\"") && l.contains("\"deployed\""))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|f| f["outcome"] == "deployed")
        .filter_map(|f| f["build_ms"].as_f64())
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .collect()
}

/// Commits a new image to `repo`; when `webhook`, sends a generic push
/// webhook. Returns the time from the push to the first apply and the
/// build time of the deploys, once they are done.
async fn one_latency(
    fx: &mut Fixture,
    ch: &Chump,
    repo: usize,
    webhook: bool,
) -> (Duration, Vec<Duration>) {
    let generation = fx.next_generation();
    let n = fx.apps_of(repo).count();
    let offset = ch.logs_len();
    fx.kube.clear_requests();
    blocking(|| fx.publish(&[repo], generation, false));
    let pushed = Instant::now();
    if webhook {
        let resp = fx
            .http
            .post(ch.url("/api/webhooks/generic"))
            .json(&json!({"repository": fx.repo_url(repo), "branch": BRANCH}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202, "webhook");
    }
    let latency = wait_apply(fx, pushed).await;
    // Then wait until the repository's sources are deployed.
    let deadline = Instant::now() + CYCLE_TIMEOUT;
    loop {
        let builds = deploy_build_times(&ch.logs_since(offset));
        if builds.len() >= n {
            return (latency, builds);
        }
        assert!(
            Instant::now() < deadline,
            "deploys after the push did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn measure_webhook_latency(
    fx: &mut Fixture,
    ch: &Chump,
    workers: usize,
    samples: usize,
) -> LatencyResult {
    let (mut lat, mut builds) = (Vec::new(), Vec::new());
    for s in 0..samples {
        let repo = (s * 7919) % fx.repos.len();
        let (l, b) = one_latency(fx, ch, repo, true).await;
        lat.push(l);
        builds.extend(b);
    }
    LatencyResult {
        mode: "webhook".into(),
        workers,
        to_apply: Stats::of(&lat),
        build: Stats::of(&builds),
    }
}

/// Polling: a separate chump with `CHUMP_INTERVAL=2` and the sources of a
/// few repositories; a push at a random moment of the interval.
async fn measure_poll_latency(fx: &mut Fixture, samples: usize) -> LatencyResult {
    const WORKERS: usize = 4;
    let repos: Vec<usize> = (0..fx.repos.len().min(3)).collect();
    let dir = fx.dir.path().join("chump-poll");
    let ch = start_chump(fx, &dir, WORKERS, "2");
    let apps: Vec<&App> = fx.apps.iter().filter(|a| repos.contains(&a.repo)).collect();
    let offset = ch.logs_len();
    create_sources(fx, &ch, &apps).await;
    wait_checks_done(&ch, offset, apps.len()).await;
    let (mut lat, mut builds) = (Vec::new(), Vec::new());
    for s in 0..samples {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..2000))).await;
        let (l, b) = one_latency(fx, &ch, repos[s % repos.len()], false).await;
        lat.push(l);
        builds.extend(b);
    }
    drop(ch);
    LatencyResult {
        mode: "poll (CHUMP_INTERVAL=2)".into(),
        workers: WORKERS,
        to_apply: Stats::of(&lat),
        build: Stats::of(&builds),
    }
}

/// CPU time (user + system) process `pid` has used so far, from
/// `/proc/<pid>/stat` (clock ticks: 10 ms on Linux).
fn cpu_of(pid: u32) -> Duration {
    cpu_split_of(pid).0
}

/// CPU time (user + system) of process `pid` itself, and of its children
/// that it has waited for (`kubectl kustomize` for chump, `git
/// upload-pack` and its `pack-objects` for git daemon).
fn cpu_split_of(pid: u32) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime: fields 14 and 15 of the line, 11 and 12 from state;
    // cutime and cstime follow.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let of = |ticks: u64| Duration::from_micros(ticks * 1_000_000 / per_second);
    (of(ticks(11) + ticks(12)), of(ticks(13) + ticks(14)))
}

/// Where a cycle's CPU went, by process: what it costs beside chump's own.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    /// `chump serve` itself.
    chump: Duration,
    /// The children chump waited for: its `kubectl kustomize` builds.
    chump_children: Duration,
    /// `git daemon` and the `upload-pack`s it forked.
    git_daemon: Duration,
    /// This process: the Kubernetes API stand-in and the harness.
    bench: Duration,
}

impl CpuUse {
    fn now(chump: u32, git_daemon: Option<u32>) -> CpuUse {
        let (own, children) = cpu_split_of(chump);
        let daemon = git_daemon.map(cpu_split_of).unwrap_or_default();
        CpuUse {
            chump: own,
            chump_children: children,
            git_daemon: daemon.0 + daemon.1,
            bench: cpu_of(std::process::id()),
        }
    }

    fn since(self, before: CpuUse) -> CpuUse {
        CpuUse {
            chump: self.chump.saturating_sub(before.chump),
            chump_children: self.chump_children.saturating_sub(before.chump_children),
            git_daemon: self.git_daemon.saturating_sub(before.git_daemon),
            bench: self.bench.saturating_sub(before.bench),
        }
    }
}

/// [`CpuUse`] per check, in milliseconds.
#[derive(Serialize, Default, Clone, Copy)]
struct CpuPerCheck {
    chump_ms: f64,
    kustomize_ms: f64,
    git_daemon_ms: f64,
    kube_stand_in_and_bench_ms: f64,
    total_ms: f64,
}

/// The peak RSS of `pid` over `phase` (since the previous reading), then
/// resets the peak so the next reading is of the next phase alone (Linux:
/// writing 5 to `clear_refs` resets VmHWM).
fn rss_of(pid: u32, workers: usize, phase: &'static str) -> RssResult {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let result = RssResult {
        workers,
        phase,
        vm_hwm_kib: kib("VmHWM:"),
        vm_rss_kib: kib("VmRSS:"),
    };
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
    result
}

// ---------------------------------------------------------------------------
// Report

fn machine(loadavg_start: String) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let git = Command::new("git")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        kernel: read("/proc/sys/kernel/osrelease"),
        git,
        loadavg_start,
        loadavg_end: read("/proc/loadavg"),
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1e3)
    } else if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

fn ratios(r: &Report) -> Vec<Ratio> {
    r.steady
        .iter()
        .filter_map(|c| {
            let floor = r.floor.iter().find(|f| f.concurrency == c.workers)?.best();
            let original = r.original.as_ref().map_or(0.0, |o| o.per_item.median_ms);
            Some(Ratio {
                workers: c.workers,
                chump_over_floor: c.total.median_ms / floor.median_ms,
                original_over_chump_per_source: original / c.per_check_ms,
            })
        })
        .collect()
}

/// Bytes of the SQLite store's files in `dir` (`chump.db`, `-wal`, `-shm`).
fn store_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("chump.db"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The goals of issue 18 this run can speak to, measured beside targets.
fn goals(r: &Report) -> Vec<Goal> {
    let goal = |name: String, measured: f64, target: f64, higher_is_better: bool| Goal {
        met: if higher_is_better {
            measured >= target
        } else {
            measured <= target
        },
        name,
        measured,
        target,
        higher_is_better,
    };
    let mut out = Vec::new();
    for ratio in &r.ratios {
        out.push(goal(
            format!("steady_over_floor_w{}", ratio.workers),
            ratio.chump_over_floor,
            2.0,
            false,
        ));
    }
    for c in &r.change {
        // A change cycle scaled to 1,000 sources, in seconds.
        out.push(goal(
            format!("change_cycle_per_1000_s_w{}", c.workers),
            c.per_check_ms,
            30.0,
            false,
        ));
    }
    for c in &r.change_with_kustomize {
        // The baseline: the same with every build a kustomize process.
        out.push(goal(
            format!("change_cycle_per_1000_s_kustomize_binary_w{}", c.workers),
            c.per_check_ms,
            30.0,
            false,
        ));
    }
    out.push(goal("peak_rss_mib".into(), r.peak_rss_mib, 150.0, false));
    out.push(goal(
        "peak_rss_steady_mib".into(),
        r.peak_rss_steady_mib,
        150.0,
        false,
    ));
    if let Some(api) = &r.api {
        if let Some(list) = api.routes.iter().find(|x| x.route == "/api/sources") {
            out.push(goal(
                "list_sources_one_client_ms".into(),
                list.one_client.median_ms,
                // The dashboard's budget for a whole page load.
                200.0,
                false,
            ));
            if let Some((_, original)) = &api.original_list {
                out.push(goal(
                    "list_sources_over_original".into(),
                    list.rps_16 / original.rps_16,
                    5.0,
                    true,
                ));
            }
        }
        if let Some(rdb) = &api.rethinkdb {
            if let (Some(list), Some((_, original))) = (
                rdb.routes.iter().find(|x| x.route == "/api/sources"),
                &api.original_list,
            ) {
                out.push(goal(
                    "list_sources_over_original_rethinkdb".into(),
                    list.rps_16 / original.rps_16,
                    5.0,
                    true,
                ));
            }
            if let Some(one) = rdb.routes.iter().find(|x| x.route.ends_with("/")) {
                out.push(goal(
                    "single_source_p99_rethinkdb_ms".into(),
                    one.p99_ms_16,
                    50.0,
                    false,
                ));
            }
        }
    }
    for c in &r.steady {
        let requests: f64 = c.cluster_requests_per_check.values().sum();
        out.push(goal(
            format!("cluster_requests_per_steady_check_w{}", c.workers),
            requests,
            // The bench's apps hold one object each: one GET.
            1.0,
            false,
        ));
    }
    out
}

fn print_table(r: &Report) {
    let n = r.sources as f64;
    println!(
        "\nchump cycle benchmark: {} sources on {} repositories, {} reps; {} × {}, kernel {}, load {} → {}",
        r.sources, r.repos, r.reps, r.machine.nproc, r.machine.cpu_model, r.machine.kernel,
        r.machine.loadavg_start, r.machine.loadavg_end
    );
    println!(
        "{:<44} {:>3} {:>10} {:>17} {:>11}  ratio",
        "measurement (one cycle)", "W", "median ms", "min–max ms", "per source"
    );
    let row = |what: &str, w: String, s: &Stats, per: Option<f64>, extra: String| {
        println!(
            "{what:<44} {w:>3} {:>10} {:>17} {:>11}  {extra}",
            fmt_ms(s.median_ms),
            s.spread(),
            per.map_or("-".into(), fmt_ms)
        );
    };
    for f in &r.floor {
        let w = f.concurrency.to_string();
        row(
            "floor: v0 ref advertisement + GET",
            w.clone(),
            &f.v0_advertisement,
            Some(f.v0_advertisement.median_ms / n),
            String::new(),
        );
        row(
            "floor: v2 ls-refs + GET",
            w,
            &f.v2_ls_refs,
            Some(f.v2_ls_refs.median_ms / n),
            String::new(),
        );
        row(
            "  of which the GETs alone",
            f.concurrency.to_string(),
            &f.get_only,
            Some(f.get_only.median_ms / n),
            String::new(),
        );
    }
    if let Some(l) = &r.ls_remote {
        let s = Stats {
            median_ms: l.extrapolated_cycle_ms,
            min_ms: l.per_item.min_ms * r.repos as f64,
            max_ms: l.per_item.max_ms * r.repos as f64,
            n: l.sample,
        };
        row(
            &format!("git ls-remote, sequential ({} repos sampled)", l.sample),
            "1".into(),
            &s,
            Some(l.extrapolated_cycle_ms / n),
            format!("{} ms per repo", fmt_ms(l.per_item.median_ms)),
        );
    }
    if let Some(o) = &r.original {
        let s = Stats {
            median_ms: o.extrapolated_cycle_ms,
            min_ms: o.per_item.min_ms * n,
            max_ms: o.per_item.max_ms * n,
            n: o.sample,
        };
        row(
            &format!("original: clone+read+GET ({} sampled)", o.sample),
            "1".into(),
            &s,
            Some(o.per_item.median_ms),
            String::new(),
        );
    }
    for c in &r.steady {
        let ratio = r.ratios.iter().find(|x| x.workers == c.workers);
        let extra = ratio.map_or(String::new(), |x| {
            format!(
                "chump/floor {:.1}×  original/chump {:.0}×",
                x.chump_over_floor, x.original_over_chump_per_source
            )
        });
        row(
            "chump steady state",
            c.workers.to_string(),
            &c.total,
            Some(c.per_check_ms),
            extra,
        );
    }
    for c in &r.steady_without_self_heal {
        let on = r.steady.iter().find(|s| s.workers == c.workers);
        row(
            "  same, CHUMP_SELF_HEAL=false (image only)",
            c.workers.to_string(),
            &c.total,
            Some(c.per_check_ms),
            on.map_or(String::new(), |on| {
                format!(
                    "self-heal on/off {:.2}×",
                    on.total.median_ms / c.total.median_ms
                )
            }),
        );
    }
    for c in &r.noop_commit {
        row(
            "chump no-op commit (fetch+build+compare)",
            c.workers.to_string(),
            &c.total,
            Some(c.per_check_ms),
            String::new(),
        );
    }
    for c in &r.change {
        row(
            "chump change (fetch+build+apply+rollout)",
            c.workers.to_string(),
            &c.total,
            Some(c.per_check_ms),
            String::new(),
        );
    }
    for c in &r.change_with_kustomize {
        let in_process = r.change.iter().find(|x| x.workers == c.workers);
        row(
            "  same, CHUMP_KUSTOMIZE_IN_PROCESS=false",
            c.workers.to_string(),
            &c.total,
            Some(c.per_check_ms),
            in_process.map_or(String::new(), |x| {
                format!(
                    "binary/in process {:.2}×",
                    c.total.median_ms / x.total.median_ms
                )
            }),
        );
    }
    for l in &r.latency {
        row(
            &format!("latency push→apply, {}", l.mode),
            l.workers.to_string(),
            &l.to_apply,
            None,
            format!("build {} ms (median)", fmt_ms(l.build.median_ms)),
        );
    }
    println!(
        "cold first cycle (fetch of every repository): {}",
        fmt_ms(r.cold_cycle_ms)
    );
    println!(
        "peak RSS of chump serve (VmHWM): {:.1} MiB; by phase: {}",
        r.peak_rss_mib,
        r.rss
            .iter()
            .map(|x| format!(
                "{} W={} {:.1}",
                x.phase,
                x.workers,
                x.vm_hwm_kib as f64 / 1024.0
            ))
            .collect::<Vec<_>>()
            .join(" · ")
    );
    println!(
        "store on disk (SQLite, database + WAL + shm): {:.1} MiB",
        r.store_bytes as f64 / (1024.0 * 1024.0)
    );
    for c in &r.steady {
        println!(
            "steady checks per second, W={}: {:.0}; chump's CPU per check {:.2} ms",
            c.workers, c.checks_per_second, c.chump_cpu_ms_per_check
        );
    }
    println!("CPU per check, ms (chump · its kubectl kustomize · git daemon · API stand-in and bench = total):");
    let cycles = [
        ("steady", &r.steady),
        ("no-op commit", &r.noop_commit),
        ("change", &r.change),
        ("change, binary", &r.change_with_kustomize),
    ];
    for (name, results) in cycles {
        for c in results {
            let u = &c.cpu_per_check;
            println!(
                "  {name:<13} W={:<3} {:.2} · {:.2} · {:.2} · {:.2} = {:.2}",
                c.workers,
                u.chump_ms,
                u.kustomize_ms,
                u.git_daemon_ms,
                u.kube_stand_in_and_bench_ms,
                u.total_ms
            );
        }
    }
    println!("\ngoals (measured · target):");
    for g in &r.goals {
        println!(
            "  {:<44} {:>10.2} {} {:<8} {}",
            g.name,
            g.measured,
            if g.higher_is_better { "≥" } else { "≤" },
            g.target,
            if g.met { "met" } else { "NOT met" }
        );
    }

    println!("\nper check, mean ms (from chump's log):");
    println!(
        "{:<8} {:>3} {:>7} {:>8} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>9} {:>7}",
        "cycle",
        "W",
        "git",
        "manifest",
        "cluster",
        "build",
        "apply",
        "rollout",
        "other",
        "record",
        "wall",
        "gap",
        "ref qs",
        "fetches"
    );
    for (kind, list) in [
        ("steady", &r.steady),
        ("change", &r.change),
        ("chg,bin", &r.change_with_kustomize),
    ] {
        for c in list {
            let s = &c.stages;
            println!(
                "{kind:<8} {:>3} {:>7.2} {:>8.2} {:>7.2} {:>7.1} {:>7.1} {:>7.1} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>9.0} {:>7.0}",
                c.workers, s.git_ms, s.manifest_ms, s.cluster_ms, s.build_ms, s.apply_ms, s.rollout_ms,
                s.other_in_check_ms, s.record_ms, s.wall_ms, c.slot_gap_ms, c.ref_queries_per_cycle, c.fetches_per_cycle
            );
        }
    }
    if let Some(api) = &r.api {
        println!(
            "\nREST API over {} sources with their statuses (SQLite; the whole list is {} bytes):",
            api.sources, api.response_bytes
        );
        for route in &api.routes {
            println!(
                "{:<28} one client {:>8.2} ms ({:.2}–{:.2}) · 16 clients {:>8.0} req/s, p99 {:.1} ms, max {:.1} ms",
                route.route, route.one_client.median_ms, route.one_client.min_ms, route.one_client.max_ms,
                route.rps_16, route.p99_ms_16, route.max_ms_16
            );
        }
        if let Some(rdb) = &api.rethinkdb {
            println!(
                "on RethinkDB ({}; the whole list is {} bytes):",
                rdb.server, rdb.response_bytes
            );
            for route in &rdb.routes {
                println!(
                    "{:<28} one client {:>8.2} ms ({:.2}–{:.2}) · 16 clients {:>8.0} req/s, p99 {:.1} ms, max {:.1} ms",
                    route.route, route.one_client.median_ms, route.one_client.min_ms, route.one_client.max_ms,
                    route.rps_16, route.p99_ms_16, route.max_ms_16
                );
            }
        }
        if let Some((n, route)) = &api.original_list {
            println!(
                "{:<28} one client {:>8.2} ms ({:.2}–{:.2}) · 16 clients {:>8.0} req/s, p99 {:.1} ms, max {:.1} ms",
                format!("original, {n} sources"), route.one_client.median_ms, route.one_client.min_ms,
                route.one_client.max_ms, route.rps_16, route.p99_ms_16, route.max_ms_16
            );
        }
    }
    println!("\ncluster requests per check (the API stand-in's log, every repetition):");
    for (kind, list) in [("steady", &r.steady), ("change", &r.change)] {
        for c in list {
            let per: Vec<String> = c
                .cluster_requests_per_check
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            let all: f64 = c.cluster_requests_per_check.values().sum();
            println!(
                "{kind:<8} W={:<3} {all:.2} in all: {}",
                c.workers,
                per.join(", ")
            );
        }
    }
}

/// Compares with an earlier run of a fifth of the sources and the same
/// sources-per-repository mix (the linearity target).
fn print_linearity(r: &Report, out_dir: &Path) {
    if !r.sources.is_multiple_of(5) {
        return;
    }
    let Ok(entries) = std::fs::read_dir(out_dir) else {
        return;
    };
    let mut earlier: Vec<(String, Value)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cycle-"))
        .filter_map(|e| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), v))
        })
        .filter(|(_, v)| {
            v["sources"].as_u64() == Some(r.sources as u64 / 5)
                && v["repos"].as_u64().map(|x| x * 5) == Some(r.repos as u64)
        })
        .collect();
    earlier.sort_by(|a, b| a.0.cmp(&b.0));
    let Some((name, prev)) = earlier.last() else {
        return;
    };
    println!("\nlinearity against {name} (target: ≤ 5.5×):");
    for c in &r.steady {
        let before = prev["steady"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|x| x["workers"].as_u64() == Some(c.workers as u64))
            })
            .and_then(|x| x["total"]["median_ms"].as_f64());
        if let Some(before) = before {
            println!(
                "  W={:<3} {:.2}×  ({:.0} → {:.0} ms)",
                c.workers,
                c.total.median_ms / before,
                before,
                c.total.median_ms
            );
        }
    }
}

fn write_json(r: &Report, out_dir: &Path) -> PathBuf {
    std::fs::create_dir_all(out_dir).unwrap();
    let text = serde_json::to_string_pretty(r).unwrap();
    let path = out_dir.join(format!("cycle-{}.json", r.timestamp));
    std::fs::write(&path, &text).unwrap();
    std::fs::write(out_dir.join("latest.json"), &text).unwrap();
    path
}

// ---------------------------------------------------------------------------

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let loadavg_start = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string();
    let stamp = OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap();
    eprintln!(
        "setting up {} sources on {} repositories…",
        args.sources, args.repos
    );
    let t = Instant::now();
    let mut fx = Fixture::new(&args).await;
    let setup_ms = t.elapsed().as_secs_f64() * 1e3;

    let mut floor = Vec::new();
    for &w in &args.workers {
        eprintln!("floor, concurrency {w}…");
        floor.push(measure_floor(&fx, w, args.reps).await);
    }
    let ls_remote = if args.steady_only {
        None
    } else {
        eprintln!("git ls-remote…");
        Some(blocking(|| measure_ls_remote(&fx, args.sample * 2)))
    };
    let original = if args.original && !args.steady_only {
        eprintln!("original approach…");
        Some(measure_original(&fx, args.sample).await)
    } else {
        None
    };

    let chump_dir = fx.dir.path().join("chump");
    let mut ids = Vec::new();
    let (mut steady, mut change, mut latency, mut rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut steady_without_self_heal, mut noop_commit) = (Vec::new(), Vec::new());
    let mut change_with_kustomize = Vec::new();
    let mut cold_cycle_ms = 0.0;
    let mut api = None;
    let latency_workers = args
        .workers
        .iter()
        .copied()
        .find(|&w| w >= 4)
        .unwrap_or(args.workers[0]);
    for &w in &args.workers {
        eprintln!("chump, {w} workers…");
        let mut ch = start_chump(&fx, &chump_dir, w, "1h");
        if ids.is_empty() {
            // New sources are due at once: the first cycle fetches everything.
            let offset = ch.logs_len();
            let t0 = OffsetDateTime::now_utc();
            let apps: Vec<&App> = fx.apps.iter().collect();
            ids = create_sources(&fx, &ch, &apps).await;
            let tail = wait_checks_done(&ch, offset, ids.len()).await;
            cold_cycle_ms = summarize(&tail, t0).0.as_secs_f64() * 1e3;
            rss.push(rss_of(ch.pid(), w, "cold cycle"));
        } else {
            cycle(&fx, &ch, &ids).await; // warm-up: client, connections
        }
        steady.push(measure_steady(&fx, &ch, &ids, w, args.reps).await);
        rss.push(rss_of(ch.pid(), w, "steady"));
        if args.steady_only {
            if w == latency_workers {
                eprintln!("API…");
                api = Some(measure_api(&fx, &ch, &ids, args.original_api.as_deref()).await);
                rss.push(rss_of(ch.pid(), w, "API"));
            }
            blocking(|| ch.terminate(Duration::from_secs(30)));
            continue;
        }
        if args.change_workers.contains(&w) {
            eprintln!("chump change, {w} workers…");
            change.push(measure_change(&mut fx, &ch, &ids, w, args.reps).await);
            eprintln!("chump no-op commit, {w} workers…");
            noop_commit.push(measure_noop_commit(&mut fx, &ch, &ids, w, args.reps).await);
            rss.push(rss_of(ch.pid(), w, "change"));
        }
        if w == latency_workers {
            eprintln!("API…");
            api = Some(measure_api(&fx, &ch, &ids, args.original_api.as_deref()).await);
            rss.push(rss_of(ch.pid(), w, "API"));
            eprintln!("webhook latency…");
            latency.push(measure_webhook_latency(&mut fx, &ch, w, args.latency_samples).await);
            rss.push(rss_of(ch.pid(), w, "webhook latency"));
        }
        blocking(|| ch.terminate(Duration::from_secs(30)));

        // The same steady cycle without drift observation, same run.
        eprintln!("chump, {w} workers, CHUMP_SELF_HEAL=false…");
        let mut ch = start_chump_with(&fx, &chump_dir, w, "1h", &[("CHUMP_SELF_HEAL", "false")]);
        cycle(&fx, &ch, &ids).await; // warm-up
        steady_without_self_heal.push(measure_steady(&fx, &ch, &ids, w, args.reps).await);
        blocking(|| ch.terminate(Duration::from_secs(30)));

        // The same change cycle with every build a kustomize process.
        if args.change_workers.contains(&w) {
            eprintln!("chump change, {w} workers, CHUMP_KUSTOMIZE_IN_PROCESS=false…");
            let mut ch = start_chump_with(
                &fx,
                &chump_dir,
                w,
                "1h",
                &[("CHUMP_KUSTOMIZE_IN_PROCESS", "false")],
            );
            cycle(&fx, &ch, &ids).await; // warm-up
            change_with_kustomize.push(measure_change(&mut fx, &ch, &ids, w, args.reps).await);
            blocking(|| ch.terminate(Duration::from_secs(30)));
        }
    }
    if let (Some(server), Some(api)) = (&args.rethinkdb, &mut api) {
        eprintln!("API on RethinkDB…");
        let dir = fx.dir.path().join("chump-rethinkdb");
        api.rethinkdb =
            Some(measure_api_rethinkdb(&fx, &dir, latency_workers, server, &stamp).await);
    }
    if !args.steady_only {
        eprintln!("polling latency…");
        latency.push(measure_poll_latency(&mut fx, args.latency_samples).await);
    }
    let store_bytes = store_size(&chump_dir);

    let peak = rss.iter().map(|r| r.vm_hwm_kib).max().unwrap_or(0);
    let peak_steady = rss
        .iter()
        .filter(|r| r.phase == "steady")
        .map(|r| r.vm_hwm_kib)
        .max()
        .unwrap_or(0);
    let mut report = Report {
        timestamp: stamp,
        machine: machine(loadavg_start),
        sources: args.sources,
        repos: args.repos,
        reps: args.reps,
        quick: args.quick,
        setup_ms,
        floor,
        ls_remote,
        original,
        cold_cycle_ms,
        steady,
        steady_without_self_heal,
        change,
        change_with_kustomize,
        noop_commit,
        latency,
        api,
        rss,
        peak_rss_mib: peak as f64 / 1024.0,
        peak_rss_steady_mib: peak_steady as f64 / 1024.0,
        store_bytes,
        ratios: Vec::new(),
        goals: Vec::new(),
    };
    report.ratios = ratios(&report);
    report.goals = goals(&report);
    print_table(&report);
    let out_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench");
    print_linearity(&report, &out_dir);
    let path = write_json(&report, &out_dir);
    println!("\nwritten to {}", path.display());
}
