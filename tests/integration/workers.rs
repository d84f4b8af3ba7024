//! Remote workers against a real server, as separate processes of the real binary: a worker
//! killed mid-run (its run finished by another after the lease lapses), a worker stopped with
//! SIGTERM (its run handed back at once), a cancellation reaching a remote worker, routing by
//! device, and a refused token.

use serde_json::{Value, json};
use shapewise::client::ApiClient;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "worker-tests-admin-token-0123456789abcdef";
/// Short, so a killed worker's run returns to the queue within seconds.
const LEASE_SECS: &str = "2";

/// A server process with authentication on and no in-process workers.
struct Server {
    process: Child,
    url: String,
    client: ApiClient,
    _dir: PathBuf,
}

impl Server {
    fn start(name: &str) -> Server {
        Server::start_on(name, free_port())
    }

    fn start_on(name: &str, port: u16) -> Server {
        let dir =
            std::env::temp_dir().join(format!("shapewise-workers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let process = Command::new(env!("CARGO_BIN_EXE_shapewise"))
            .args([
                "serve",
                "--addr",
                &format!("127.0.0.1:{port}"),
                "--workers",
                "0",
            ])
            .args([
                "--lease-secs",
                LEASE_SECS,
                "--auth",
                "on",
                "--admin-token",
                ADMIN,
            ])
            .arg("--db")
            .arg(dir.join("db.sqlite"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let client = ApiClient::new(&url, Some(ADMIN)).unwrap();
        let server = Server {
            process,
            url,
            client,
            _dir: dir,
        };
        wait_for("the server to answer", Duration::from_secs(20), || {
            server.client.send("GET", "/healthz", None::<&()>).is_ok()
        });
        server
    }

    fn get(&self, path: &str) -> Value {
        self.client.json("GET", path, None::<&()>).unwrap().unwrap()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        (self.client.json("POST", path, Some(&body)))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
            .unwrap()
    }

    /// Queues a tiny run of `steps` steps (about 1 ms each) on `device`.
    fn queue_run(&self, steps: u64, device: &str) -> i64 {
        let run = self.post(
            "/api/v1/runs",
            json!({
                "parameterization": "completep", "width": 64, "depth": 2, "d_head": 32,
                "context": 16, "batch": 4, "tokens": 64 * steps, "base_width": 64,
                "base_depth": 2, "lr": 0.01, "log_every": 10, "device": device,
                "data": {"kind": "builtin", "seed": 0, "vocab": 32}
            }),
        );
        run["id"].as_i64().unwrap()
    }

    fn status(&self, run_id: i64) -> String {
        self.get(&format!("/api/v1/runs/{run_id}"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn steps(&self, run_id: i64) -> Vec<i64> {
        let series = self.get(&format!("/api/v1/runs/{run_id}/metrics?limit=100000"));
        (series["points"].as_array().unwrap().iter())
            .map(|p| p["step"].as_i64().unwrap())
            .collect()
    }

    fn worker(&self, name: &str) -> Value {
        let list = self.get("/api/v1/workers");
        (list["workers"].as_array().unwrap().iter())
            .find(|w| w["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no worker '{name}' in {list}"))
    }

    fn spawn_worker(&self, name: &str, token: &str) -> Child {
        spawn_worker(&self.url, name, token)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_worker(url: &str, name: &str, token: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_shapewise"))
        .args(["worker", "--server", url, "--name", name, "--token", token])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A worker process, killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn assert_one_attempt(steps: &[i64]) {
    assert!(!steps.is_empty());
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "steps are not strictly increasing: {steps:?}"
    );
}

#[test]
fn a_killed_workers_run_is_finished_by_another_after_its_lease_lapses() {
    let server = Server::start("kill");
    let a = Worker(server.spawn_worker("A", ADMIN));
    let run = server.queue_run(6000, "cpu");
    wait_for("A to train some steps", Duration::from_secs(60), || {
        server.steps(run).len() >= 20
    });
    assert_eq!(server.worker("A")["current_run_id"], run);
    let before_kill = server.steps(run);
    signal(&a.0, "KILL");
    drop(a);
    let b = Worker(server.spawn_worker("B", ADMIN));
    wait_for("B to finish the run", Duration::from_secs(120), || {
        server.status(run) == "succeeded"
    });
    // B restarted from step 0 and replaced A's points: one attempt's series, ending at the
    // last step.
    let steps = server.steps(run);
    assert_one_attempt(&steps);
    assert_eq!(steps[0], 10, "{steps:?}");
    assert_eq!(*steps.last().unwrap(), 6000);
    assert_eq!(steps.len(), 600);
    assert!(before_kill.len() < steps.len());
    let (a, b_view) = (server.worker("A"), server.worker("B"));
    assert_eq!(a["live"], false, "{a}");
    assert_eq!(a["runs_done"], 0);
    assert_eq!(b_view["runs_done"], 1, "{b_view}");
    assert_eq!(b_view["live"], true);
    drop(b);
}

#[test]
fn sigterm_hands_the_run_back_at_once_and_cancel_reaches_a_remote_worker() {
    let server = Server::start("term");
    let mut a = Worker(server.spawn_worker("A", ADMIN));
    let run = server.queue_run(1_000_000, "cpu");
    wait_for("A to start training", Duration::from_secs(60), || {
        !server.steps(run).is_empty()
    });
    signal(&a.0, "TERM");
    let start = Instant::now();
    let exit = loop {
        if let Some(status) = a.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "A did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    // Queued again at once (not after the lease), its attempt not counted.
    assert_eq!(server.status(run), "queued");
    assert!(server.worker("A")["left_at"].is_string());

    // B takes it up; a cancellation reaches B within a heartbeat, and B stays on.
    let b = Worker(server.spawn_worker("B", ADMIN));
    wait_for("B to start training", Duration::from_secs(60), || {
        server.status(run) == "running" && !server.steps(run).is_empty()
    });
    server.post(&format!("/api/v1/runs/{run}/cancel"), json!({}));
    wait_for(
        "the cancellation to reach B",
        Duration::from_secs(10),
        || server.status(run) == "cancelled",
    );
    assert_one_attempt(&server.steps(run));
    let b_view = server.worker("B");
    assert_eq!(b_view["runs_done"], 1, "{b_view}");
    assert_eq!(b_view["live"], true);

    // A GPU run is left to GPU workers: the CPU worker B does not claim it.
    let gpu = server.queue_run(10, "gpu");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(server.status(gpu), "queued");
    // Its page says why it waits; the workers page lists B live and A gone.
    let page = |path: &str| {
        let (_, body) = server.client.send("GET", path, None::<&()>).unwrap();
        String::from_utf8(body).unwrap()
    };
    let run_page = page(&format!("/runs/{gpu}"));
    assert!(
        run_page.contains("No live worker can take this run: it asks for the gpu device"),
        "{run_page}"
    );
    assert!(!page(&format!("/runs/{run}")).contains("No live worker"));
    let workers = page("/workers");
    assert!(workers.contains(r#"<tr class="worker-live">"#), "{workers}");
    assert!(workers.contains(r#"<tr class="worker-left">"#), "{workers}");
    drop(b);
}

#[test]
fn a_refused_token_is_exit_code_2_with_the_reason() {
    let server = Server::start("token");
    let worker = server.spawn_worker("A", "not-a-valid-token");
    let output = worker.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(stderr.contains("--token"), "{stderr}");
}

#[test]
fn a_worker_waits_for_an_unreachable_server_and_then_trains() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut worker = Worker(spawn_worker(&url, "early", ADMIN));
    // Nothing listens yet: the worker retries instead of exiting.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(worker.0.try_wait().unwrap().is_none(), "the worker gave up");
    let server = Server::start_on("unreachable", port);
    let run = server.queue_run(200, "cpu");
    wait_for(
        "the early worker to train the run",
        Duration::from_secs(60),
        || server.status(run) == "succeeded",
    );
    assert_eq!(server.worker("early")["runs_done"], 1);
}
