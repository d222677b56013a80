//! The `rookery` binary itself: `check`, `token`, `--help` and `serve` with
//! signal handling, run as a child process with temporary config files.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

/// How long a child process may take for anything a test waits on.
const TIMEOUT: Duration = Duration::from_secs(10);

const CONFIG: &str = "[[channel]]\nid = \"chat\"\nsecret = \"cli-secret\"\n\n\
                      [[channel]]\nid = \"open\"\nsecret = \"open-secret\"\nrequire_auth = false\ntoken_ttl_seconds = 60\n";

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("rookery-cli-{}", rookery::ids::random_alphanumeric(10)));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// `rookery --config <config> --policies-dir <policies> --data-dir <tmp> ARGS`.
fn rookery(dir: &TempDir, config: &Path, policies: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rookery"));
    command
        .arg("--config")
        .arg(config)
        .arg("--policies-dir")
        .arg(policies)
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .args(args)
        // The environment must not leak into what is tested.
        .env_remove("ROOKERY_CONFIG")
        .env_remove("ROOKERY_LISTEN")
        .env_remove("ROOKERY_POLICIES_DIR")
        .env_remove("ROOKERY_STATIC_DIR")
        .env_remove("ROOKERY_DATA_DIR")
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0");
    command
}

/// Runs a short command to completion (under a timeout).
fn run(mut command: Command) -> Output {
    let mut child = Running::spawn(command.stdout(Stdio::piped()).stderr(Stdio::piped()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = sender.send(bytes);
        });
        receiver
    };
    let stdout = drain(Box::new(child.child().stdout.take().unwrap()));
    let stderr = drain(Box::new(child.child().stderr.take().unwrap()));
    let status = child.wait(TIMEOUT).expect("the command finishes in time");
    Output {
        status,
        stdout: stdout.recv_timeout(TIMEOUT).expect("stdout closes"),
        stderr: stderr.recv_timeout(TIMEOUT).expect("stderr closes"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A child process, killed if the test fails before it exits.
struct Running(Option<Child>);

impl Running {
    fn spawn(command: &mut Command) -> Running {
        Running(Some(command.stdin(Stdio::null()).spawn().expect("the binary starts")))
    }

    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("still running")
    }

    /// Waits for the exit under a timeout; `None` if it did not exit in time.
    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.0.take()?;
        let pid = child.id().to_string();
        let (sender, receiver) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = sender.send(());
            (child, status)
        });
        if receiver.recv_timeout(timeout).is_err() {
            // Still running. The waiter thread holds the unreaped child, so the
            // id cannot have been reused: kill it by id, and the waiter reaps it.
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            return None;
        }
        let (child, status) = waiter.join().expect("waiter");
        self.0 = Some(child);
        status.ok()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn jwt_claims(token: &str) -> Value {
    let parts: Vec<&str> = token.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {token:?}");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url")).expect("JSON claims")
}

fn now() -> u64 {
    rookery::token::unix_now()
}

#[test]
fn help_names_the_subcommands() {
    let output = run({
        let mut command = Command::new(env!("CARGO_BIN_EXE_rookery"));
        command.arg("--help");
        command
    });
    assert!(output.status.success());
    let help = text(&output.stdout);
    for word in ["serve", "token", "check", "--config", "--listen", "--policies-dir"] {
        assert!(help.contains(word), "{word} missing from\n{help}");
    }
}

#[test]
fn check_prints_the_rendered_rules() {
    let dir = TempDir::new();
    let config = dir.write("rookery.toml", CONFIG);
    let output = run(rookery(&dir, &config, &repo_policies(), &["check"]));
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", text(&output.stderr));
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(
        stdout.contains("channel \"chat\"") && stdout.contains("channel \"open\""),
        "{stdout}"
    );
    assert!(stdout.contains("require_auth=false"), "{stdout}");
    // The sample id, rule by rule, in policy order.
    let rules = [
        "^observable-room$",
        "^private-room-(?!r3k:SampleClient0000$).+$",
        "^private-room-r3k:SampleClient0000$",
    ];
    let positions: Vec<usize> = rules
        .iter()
        .map(|rule| {
            stdout
                .find(rule)
                .unwrap_or_else(|| panic!("{rule} missing from\n{stdout}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "policy order: {stdout}");

    // `--client` renders the placeholder regex-escaped.
    let output = run(rookery(&dir, &config, &repo_policies(), &["check", "--client", "a.b"]));
    let stdout = text(&output.stdout);
    assert!(output.status.success());
    assert!(stdout.contains("^private-room-a\\.b$"), "{stdout}");
}

#[test]
fn check_names_the_broken_policy_file_and_rule() {
    let dir = TempDir::new();
    let config = dir.write("rookery.toml", CONFIG);
    let default = std::fs::read_to_string(repo_policies().join("default.toml")).unwrap();
    dir.write("policies/default.toml", &default);
    dir.write(
        "policies/broken.toml",
        "[[rule]]\nroom = \"^fine$\"\npublish = true\n\n[[rule]]\nroom = \"^(unclosed-{client}$\"\nsubscribe = true\n",
    );
    let output = run(rookery(&dir, &config, &dir.0.join("policies"), &["check"]));
    assert!(!output.status.success(), "a broken policy fails the check");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("broken.toml"), "names the file: {stderr}");
    assert!(stderr.contains("rule 2"), "names the rule: {stderr}");
    assert!(stderr.contains("^(unclosed-{client}$"), "shows the pattern: {stderr}");
    assert!(text(&output.stdout).is_empty(), "nothing rendered");

    // The server refuses to start with it too.
    let output = run(rookery(
        &dir,
        &config,
        &dir.0.join("policies"),
        &["--listen", "127.0.0.1:0", "serve"],
    ));
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("broken.toml"));
}

#[test]
fn invalid_config_names_the_file_and_entry() {
    let dir = TempDir::new();
    let cases = [
        ("unknown.toml", "bogus_key = 1\n", "bogus_key"),
        ("limits.toml", "[limits]\noutbox_frames = 0\n", "outbox_frames"),
        (
            "policy.toml",
            "[[channel]]\nid = \"c\"\nsecret = \"s\"\npolicy = \"missing\"\n",
            "missing",
        ),
        ("secret.toml", "[[channel]]\nid = \"c\"\n", "secret"),
    ];
    for (name, body, entry) in cases {
        let config = dir.write(name, body);
        let output = run(rookery(&dir, &config, &repo_policies(), &["check"]));
        assert!(!output.status.success(), "{name} is refused");
        let stderr = text(&output.stderr);
        assert!(stderr.contains(name), "names the file: {stderr}");
        assert!(stderr.contains(entry), "names {entry}: {stderr}");
    }
    let output = run(rookery(&dir, &dir.0.join("absent.toml"), &repo_policies(), &["check"]));
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("absent.toml"));
}

#[test]
fn token_mints_a_socket_token_in_policy_order() {
    let dir = TempDir::new();
    let config = dir.write("rookery.toml", CONFIG);
    let output = run(rookery(
        &dir,
        &config,
        &repo_policies(),
        &["token", "--client", "r3k:Cli.1", "--name", "Ops"],
    ));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let token = text(&output.stdout);
    let claims = jwt_claims(&token);
    assert_eq!(claims["client"], "r3k:Cli.1");
    assert_eq!(claims["channel"], "chat", "the auth channel by default");
    assert_eq!(claims["data"], json!({"name": "Ops"}));
    let keys: Vec<&str> = claims["permissions"]
        .as_object()
        .expect("permissions")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "^observable-room$",
            "^private-room-(?!r3k:Cli\\.1$).+$",
            "^private-room-r3k:Cli\\.1$"
        ]
    );
    assert_eq!(
        claims["permissions"]["^private-room-r3k:Cli\\.1$"],
        json!({"publish": false, "subscribe": true, "history": 100})
    );
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(
        (now() + 170..=now() + 190).contains(&exp),
        "the policy TTL of 180 s: {exp}"
    );

    // The token verifies with the channel secret.
    let verifier = rookery::token::TokenVerifier::new("chat", "cli-secret", 0);
    let verified = verifier.verify(token.trim(), rookery::token::Bearer::Socket("r3k:Cli.1"), now());
    assert!(verified.is_ok(), "{:?}", verified.err());

    // Another channel and a custom lifetime.
    let output = run(rookery(
        &dir,
        &config,
        &repo_policies(),
        &["token", "--channel", "open", "--client", "x", "--ttl", "30"],
    ));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let claims = jwt_claims(&text(&output.stdout));
    assert_eq!(claims["channel"], "open");
    let exp = claims["exp"].as_u64().unwrap();
    assert!((now() + 20..=now() + 40).contains(&exp), "{exp}");
    assert_eq!(claims.get("data"), None);

    let output = run(rookery(
        &dir,
        &config,
        &repo_policies(),
        &["token", "--channel", "nope", "--client", "x"],
    ));
    assert!(!output.status.success());
    assert!(text(&output.stderr).contains("nope"));
}

#[test]
fn token_rest_has_no_client_claim() {
    let dir = TempDir::new();
    let config = dir.write("rookery.toml", CONFIG);
    let output = run(rookery(&dir, &config, &repo_policies(), &["token", "--rest"]));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let token = text(&output.stdout);
    let claims = jwt_claims(&token);
    assert_eq!(claims.get("client"), None, "{claims}");
    assert_eq!(claims["channel"], "chat");
    assert!(claims["permissions"]["^observable-room$"]["publish"].as_bool().unwrap());
    let verifier = rookery::token::TokenVerifier::new("chat", "cli-secret", 0);
    assert!(
        verifier
            .verify(token.trim(), rookery::token::Bearer::Rest, now())
            .is_ok()
    );

    // A token is for a socket or for REST, not both; and a socket token needs a client.
    for args in [&["token", "--rest", "--client", "x"][..], &["token"][..]] {
        let output = run(rookery(&dir, &config, &repo_policies(), args));
        assert!(!output.status.success(), "{args:?}");
        assert!(text(&output.stdout).is_empty());
    }
}

/// One HTTP/1.1 GET over a plain socket; the whole response as text.
fn http_get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response in time");
    response
}

#[test]
fn serve_answers_and_exits_cleanly_on_sigterm() {
    let dir = TempDir::new();
    let config = dir.write("rookery.toml", CONFIG);
    let mut command = rookery(&dir, &config, &repo_policies(), &["serve", "--listen", "127.0.0.1:0"]);
    let mut child = Running::spawn(command.stdout(Stdio::piped()).stderr(Stdio::null()));

    // The first line says where it listens.
    let stdout = child.child().stdout.take().unwrap();
    let (lines, received) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let line = received
        .recv_timeout(TIMEOUT)
        .expect("a line on stdout in time")
        .unwrap();
    let port: u16 = line
        .strip_prefix("rookery listening on http://127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("a port");
    assert_ne!(port, 0);

    let health = http_get(port, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.ends_with("ok"), "{health}");
    let config = http_get(port, "/config.json");
    assert!(config.ends_with("{\"channel\":\"chat\"}"), "{config}");

    // An open WebSocket-less keep-alive connection does not hold up shutdown.
    let _idle = TcpStream::connect(("127.0.0.1", port)).unwrap();

    let pid = child.child().id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(killed.success());
    let status = child.wait(Duration::from_secs(5)).expect("exits within 5 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "the port is closed");
}

/// Runs a short command with `input` on its standard input (under a timeout).
fn run_with_stdin(mut command: Command, input: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let pid = child.id().to_string();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(child.wait_with_output());
    });
    match receiver.recv_timeout(TIMEOUT) {
        Ok(output) => output.expect("the command runs"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("the command did not finish in time");
        }
    }
}

#[test]
fn user_help_names_its_commands() {
    let dir = TempDir::new();
    let config = dir.write("rookery.toml", CONFIG);
    let output = run(rookery(&dir, &config, &repo_policies(), &["user", "--help"]));
    assert!(output.status.success(), "{}", text(&output.stderr));
    let help = text(&output.stdout);
    for word in ["add", "list", "remove", "passwd"] {
        assert!(help.contains(word), "{word} missing from\n{help}");
    }
}

#[test]
fn user_commands_check_their_input_before_the_store() {
    let dir = TempDir::new();
    let config = dir.write("rookery.toml", CONFIG);
    let password = dir.write("password", "a-long-password\n");
    let password_arg = password.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["user", "add", "A!"], "", "Invalid username"),
        (
            vec!["user", "add", "alice", "--name", "bad\u{202E}name"],
            "",
            "Invalid name",
        ),
        (vec!["user", "add", "alice"], "short\n", "Invalid password"),
        (vec!["user", "add", "alice"], "", "Missing password"),
        (vec!["user", "remove", "x"], "", "Invalid username"),
        (vec!["user", "passwd", "alice"], "1234567\r\n", "Invalid password"),
    ];
    for (args, stdin, expected) in cases {
        let output = run_with_stdin(rookery(&dir, &config, &repo_policies(), &args), stdin);
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // Valid input reaches the durable store: the accounts outlive each command.
    let run = |args: &[&str]| run_with_stdin(rookery(&dir, &config, &repo_policies(), args), "");
    let added = run(&[
        "user",
        "add",
        "Alice",
        "--name",
        "Alice A.",
        "--password-file",
        password_arg,
    ]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    let again = run(&["user", "add", "alice", "--password-file", password_arg]);
    assert!(!again.status.success(), "a second alice is refused");
    let listed = run(&["user", "list"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(text(&listed.stdout).contains("alice"), "{}", text(&listed.stdout));
    assert!(text(&listed.stdout).contains("Alice A."), "{}", text(&listed.stdout));
    let changed = run(&["user", "passwd", "alice", "--password-file", password_arg]);
    assert!(changed.status.success(), "{}", text(&changed.stderr));
    let removed = run(&["user", "remove", "alice"]);
    assert!(removed.status.success(), "{}", text(&removed.stderr));
    let listed = run(&["user", "list"]);
    assert!(!text(&listed.stdout).contains("alice"), "{}", text(&listed.stdout));
    let gone = run(&["user", "passwd", "alice", "--password-file", password_arg]);
    assert!(!gone.status.success(), "no such user any more");
}

/// A running `serve`: the child, its port, and its stderr lines as they come.
struct Serving {
    child: Running,
    port: u16,
    stderr: mpsc::Receiver<String>,
}

/// Spawns `command` (a `serve`) and waits for the line that says where it listens.
fn serve_child(command: &mut Command) -> Serving {
    let mut child = Running::spawn(command.stdout(Stdio::piped()).stderr(Stdio::piped()));
    let lines = |pipe: Box<dyn Read + Send>| {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        receiver
    };
    let stdout = lines(Box::new(child.child().stdout.take().unwrap()));
    let stderr = lines(Box::new(child.child().stderr.take().unwrap()));
    let line = stdout.recv_timeout(TIMEOUT).expect("a line on stdout in time");
    let port = line
        .strip_prefix("rookery listening on http://127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("a port");
    Serving { child, port, stderr }
}

impl Serving {
    /// SIGTERM, then the exit status within 5 s.
    fn stop(mut self) -> ExitStatus {
        let pid = self.child.child().id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        self.child
            .wait(Duration::from_secs(5))
            .expect("exits within 5 s of SIGTERM")
    }
}

/// The embedded default (no config file) with its data directory in `dir`.
fn embedded(dir: &TempDir, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rookery"));
    command
        .arg("--policies-dir")
        .arg(repo_policies())
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .args(args)
        .env_remove("ROOKERY_CONFIG")
        .env_remove("ROOKERY_LISTEN")
        .env_remove("ROOKERY_POLICIES_DIR")
        .env_remove("ROOKERY_STATIC_DIR")
        .env_remove("ROOKERY_DATA_DIR")
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0");
    command
}

#[test]
fn check_writes_nothing_and_serve_keeps_the_dev_secret_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new();
    let output = run(embedded(&dir, &["check"]));
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", text(&output.stderr));
    assert!(stdout.contains("development channel: not created yet"), "{stdout}");
    assert!(!dir.0.join("data").exists(), "check created the data directory");

    let serving = serve_child(&mut embedded(&dir, &["--listen", "127.0.0.1:0", "serve"]));
    let file = dir.0.join("data/dev-channel.toml");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600, "the channel secret is readable by its owner only");
    assert_eq!(mode(&dir.0.join("data")), 0o700);
    assert!(serving.stop().success());

    let before = std::fs::read(&file).unwrap();
    let output = run(embedded(&dir, &["check"]));
    assert!(text(&output.stdout).contains("development channel: credentials in"));
    assert_eq!(std::fs::read(&file).unwrap(), before, "check leaves the file alone");
}

/// Every metric `/metrics` must show from startup (PROTOCOL.md §10), by
/// family name, with the series a fresh server has at zero.
const FRESH_METRICS: &[(&str, &str, &[&str])] = &[
    ("rookery_connections", "gauge", &["rookery_connections"]),
    (
        "rookery_authenticated_connections",
        "gauge",
        &["rookery_authenticated_connections"],
    ),
    ("rookery_subscriptions", "gauge", &["rookery_subscriptions"]),
    ("rookery_rooms", "gauge", &["rookery_rooms"]),
    ("rookery_engine_rooms", "gauge", &["rookery_engine_rooms"]),
    (
        "rookery_messages_published_total",
        "counter",
        &[
            "rookery_messages_published_total{via=\"websocket\"}",
            "rookery_messages_published_total{via=\"rest\"}",
        ],
    ),
    (
        "rookery_frames_delivered_total",
        "counter",
        &["rookery_frames_delivered_total"],
    ),
    (
        "rookery_refusals_total",
        "counter",
        &[
            "rookery_refusals_total{limit=\"too_large\"}",
            "rookery_refusals_total{limit=\"too_deep\"}",
            "rookery_refusals_total{limit=\"client_data_too_large\"}",
            "rookery_refusals_total{limit=\"rate_limit\"}",
            "rookery_refusals_total{limit=\"invalid_room\"}",
            "rookery_refusals_total{limit=\"too_many_subscriptions\"}",
            "rookery_refusals_total{limit=\"unauthorized\"}",
            "rookery_refusals_total{limit=\"slow_consumer\"}",
            "rookery_refusals_total{limit=\"handshake_timeout\"}",
            "rookery_refusals_total{limit=\"http_deadline\"}",
            "rookery_refusals_total{limit=\"http_connections\"}",
            "rookery_refusals_total{limit=\"http_connections_per_ip\"}",
            "rookery_refusals_total{limit=\"websocket_connections_per_ip\"}",
        ],
    ),
    (
        "rookery_slow_consumer_disconnects_total",
        "counter",
        &["rookery_slow_consumer_disconnects_total"],
    ),
    (
        "rookery_http_responses_total",
        "counter",
        &[
            "rookery_http_responses_total{status=\"408\"}",
            "rookery_http_responses_total{status=\"429\"}",
            "rookery_http_responses_total{status=\"503\"}",
        ],
    ),
    ("rookery_http_connections", "gauge", &[]),
    (
        "rookery_accept_errors_total",
        "counter",
        &["rookery_accept_errors_total"],
    ),
    (
        "rookery_handshakes_total",
        "counter",
        &["rookery_handshakes_total{result=\"ok\"}"],
    ),
    (
        "rookery_authentications_total",
        "counter",
        &["rookery_authentications_total{result=\"signature\"}"],
    ),
    (
        "rookery_tokens_minted_total",
        "counter",
        &["rookery_tokens_minted_total"],
    ),
    (
        "rookery_store_commits_total",
        "counter",
        &["rookery_store_commits_total"],
    ),
    (
        "rookery_store_committed_messages_total",
        "counter",
        &["rookery_store_committed_messages_total"],
    ),
    ("rookery_store_errors_total", "counter", &["rookery_store_errors_total"]),
    (
        "rookery_history_evicted_rooms_total",
        "counter",
        &["rookery_history_evicted_rooms_total"],
    ),
    (
        "rookery_cluster_gap_fills_total",
        "counter",
        &["rookery_cluster_gap_fills_total"],
    ),
    (
        "rookery_cluster_resyncs_total",
        "counter",
        &["rookery_cluster_resyncs_total"],
    ),
    ("rookery_fanout_seconds", "histogram", &["rookery_fanout_seconds_count"]),
    (
        "rookery_store_commit_seconds",
        "histogram",
        &["rookery_store_commit_seconds_count"],
    ),
];

/// The value of one series in a Prometheus text exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_fresh_server_exports_every_metric() {
    let dir = TempDir::new();
    let config = dir.write("rookery.toml", CONFIG);
    let serving = serve_child(&mut rookery(
        &dir,
        &config,
        &repo_policies(),
        &["serve", "--listen", "127.0.0.1:0"],
    ));
    let response = http_get(serving.port, "/metrics");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let (_, metrics) = response.split_once("\r\n\r\n").expect("a body");
    for (family, kind, zeros) in FRESH_METRICS {
        assert!(
            metrics.contains(&format!("# HELP {family} ")),
            "no HELP for {family}:\n{metrics}"
        );
        assert!(
            metrics.contains(&format!("# TYPE {family} {kind}\n")),
            "no TYPE for {family}:\n{metrics}"
        );
        for series in *zeros {
            assert_eq!(
                sample(metrics, series),
                Some(0.0),
                "{series} on a fresh server:\n{metrics}"
            );
        }
    }
    assert_eq!(sample(metrics, "rookery_store_up"), Some(1.0), "{metrics}");
    // The scrape's own connection is open while it is answered.
    assert_eq!(sample(metrics, "rookery_http_connections"), Some(1.0), "{metrics}");
    for family in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        let value = sample(metrics, family).unwrap_or_else(|| panic!("{family} missing:\n{metrics}"));
        assert!(value > 0.0, "{family} = {value}");
    }
    assert!(sample(metrics, "process_cpu_seconds_total").is_some(), "{metrics}");
    assert!(metrics.contains("# TYPE process_cpu_seconds_total counter\n"));
    assert!(serving.stop().success());
}

#[test]
fn accept_errors_back_off_and_are_not_logged_in_a_loop() {
    let dir = TempDir::new();
    let config = dir.write("rookery.toml", CONFIG);
    let program = env!("CARGO_BIN_EXE_rookery");
    // A low descriptor limit makes `accept` fail with EMFILE once a few clients are connected.
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg("ulimit -n 48 && exec \"$0\" --config \"$1\" --policies-dir \"$2\" --data-dir \"$3\" --listen 127.0.0.1:0 serve")
        .arg(program)
        .arg(&config)
        .arg(repo_policies())
        .arg(dir.0.join("data"))
        .env_remove("ROOKERY_CONFIG")
        .env("RUST_LOG", "warn");
    let serving = serve_child(&mut command);
    // More clients than descriptors: the kernel completes their handshakes
    // (the listen backlog is deep), the server fails to accept the rest.
    let clients: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(("127.0.0.1", serving.port)).expect("the backlog takes it"))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let warnings = serving
        .stderr
        .try_iter()
        .filter(|line| line.contains("accept failed"))
        .count();
    // Before the fix: a warning every 50 ms, about 30 here.
    assert!((1..=2).contains(&warnings), "{warnings} accept warnings in 1.5 s");

    // Once descriptors are free again the server accepts and answers.
    drop(clients);
    let deadline = std::time::Instant::now() + TIMEOUT;
    let metrics = loop {
        let answer = std::panic::catch_unwind(|| http_get(serving.port, "/metrics")).unwrap_or_default();
        if answer.starts_with("HTTP/1.1 200") {
            break answer;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not recover");
        std::thread::sleep(Duration::from_millis(50));
    };
    let errors = sample(metrics.split_once("\r\n\r\n").unwrap().1, "rookery_accept_errors_total").unwrap();
    assert!(errors >= 1.0, "accept errors are counted: {errors}");
    assert!(serving.stop().success());
}
