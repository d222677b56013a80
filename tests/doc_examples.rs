//! The examples of `README.md` and `docs/*.md`, run as written, so that the
//! docs cannot drift from the code.
//!
//! What a fenced block's info string means here:
//!
//! - ```` ```sh ````: run. The blocks of one document run in order in one
//!   `bash -euo pipefail` (variables set by one block are seen by the next, as
//!   in the reader's terminal), from a directory laid out like a fresh clone
//!   (the repository's files, no `data/`), with `rookery` on the `PATH` (what
//!   `cargo install --path .` gives), against a server started there with no
//!   arguments and no configuration, exactly as `cargo run --release` starts
//!   it. Each block must contain at least one `# → PATTERN` comment: the
//!   block's stdout must contain its patterns, in order; `…` in a pattern
//!   matches anything within a line. The one rewrite: in the commands (not in
//!   the patterns), `127.0.0.1:8080` and `localhost:8080` become the test
//!   server's address.
//! - ```` ```sh no-run ````: builds, installs, the test suite and starting the
//!   server. Not run, but every command in it must be one of [`NOT_RUN`], so
//!   that an example cannot be hidden there.
//! - ```` ```toml config ````: a configuration file; `rookery --config FILE
//!   check` must accept it (each `secret_env` variable is set to a test value,
//!   and the policies are the repository's wherever the example keeps them).
//! - ```` ```toml policy ````: a policy file; it must load as a policy.
//! - `bash`, `shell`, `console`, `zsh` are refused, so every shell example is
//!   one of the above; anything else (```` ```text ````, ```` ```json ````,
//!   ```` ```ini ````, …) is illustration and not checked.
//!
//! The startup log's dev-channel lines are checked too: the `try it:` line
//! must publish when pasted into a shell.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a server start or one document's examples may take.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The only commands a `sh no-run` block may contain.
const NOT_RUN: &[&str] = &[
    "cargo run --release",
    "cargo install --path .",
    "scripts/test.sh",
    "rookery",
    "rookery serve",
];

/// Marks the end of a block's output in the document's script.
const BLOCK_END: &str = "@@rookery-doc-block-end@@";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The documents whose examples are checked: `README.md` and `docs/*.md`.
fn documents() -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.expect("readable docs/").path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.insert(0, repo().join("README.md"));
    docs
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo()).unwrap_or(path).display().to_string()
}

// ---------------------------------------------------------------------------
// Markdown

/// A fenced code block.
#[derive(Debug)]
struct Block {
    /// The info string after the opening fence, e.g. `sh no-run`.
    info: String,
    /// The 1-based line of the opening fence.
    line: usize,
    text: String,
}

impl Block {
    fn kind(&self) -> (&str, &str) {
        let mut words = self.info.split_whitespace();
        (words.next().unwrap_or(""), words.next().unwrap_or(""))
    }

    /// The `# →` patterns, in order.
    fn expectations(&self) -> Vec<&str> {
        self.text
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("# →"))
            .map(str::trim)
            .collect()
    }

    /// The commands of the block: lines that are not comments or blank, with
    /// `\` continuations joined.
    fn commands(&self) -> Vec<String> {
        let mut commands = Vec::new();
        let mut current = String::new();
        for line in self.text.lines() {
            let line = line.trim();
            if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
                continue;
            }
            match line.strip_suffix('\\') {
                Some(start) => {
                    current.push_str(start.trim_end());
                    current.push(' ');
                }
                None => {
                    current.push_str(line);
                    commands.push(std::mem::take(&mut current));
                }
            }
        }
        commands
    }
}

/// The fenced blocks of a Markdown text (fences at the start of a line).
fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block {
                    info: info.trim().to_owned(),
                    line: index + 1,
                    text: String::new(),
                });
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => blocks.extend(open.take()),
            (Some(block), _) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "an unclosed code block");
    blocks
}

/// Whether `output` contains every pattern, in order; `…` matches anything within a line.
fn find_in_order(output: &str, patterns: &[&str]) -> Result<(), String> {
    let mut from = 0;
    for pattern in patterns {
        let regex: Vec<String> = pattern.split('…').map(regex::escape).collect();
        let regex = regex::Regex::new(&regex.join("[^\n]*?")).map_err(|e| e.to_string())?;
        match regex.find_at(output, from) {
            Some(found) => from = found.end(),
            None => return Err(format!("`{pattern}` not found (in order) in the output")),
        }
    }
    Ok(())
}

#[test]
fn patterns_match_in_order_with_ellipsis_wildcards() {
    let output = "{\"id\":\"abc-1\"}\n[\"r3k:x\"]\n";
    assert_eq!(find_in_order(output, &["{\"id\":\"…\"}", "[\"r3k:…\"]"]), Ok(()));
    assert!(
        find_in_order(output, &["[\"r3k:…\"]", "{\"id\":\"…\"}"]).is_err(),
        "order counts"
    );
    assert!(find_in_order(output, &["{\"message\":\"…\"}"]).is_err());
    assert!(
        find_in_order(output, &["{\"id\":…r3k"]).is_err(),
        "… stays within a line"
    );
}

#[test]
fn blocks_and_commands_are_read_from_markdown() {
    let markdown =
        "text\n```sh no-run\ncargo run --release\n```\n\n```sh\n# setup\ncurl -u a:b \\\n  http://x\n# → {}\n```\n";
    let found = blocks(markdown);
    assert_eq!(found.len(), 2);
    assert_eq!((found[0].kind(), found[0].line), (("sh", "no-run"), 2));
    assert_eq!(found[1].commands(), ["curl -u a:b http://x"]);
    assert_eq!(found[1].expectations(), ["{}"]);
}

// ---------------------------------------------------------------------------
// A fresh clone with a running server

/// A directory that looks like a fresh clone: the repository's files, no
/// `data/`, no build output, and a `bin/` holding `rookery`. Removed on drop.
struct FreshClone {
    root: PathBuf,
    bin: PathBuf,
}

impl FreshClone {
    fn new() -> FreshClone {
        let base = std::env::temp_dir().join(format!("rookery-docs-{}", rookery::ids::random_alphanumeric(10)));
        let root = base.join("rookery");
        let bin = base.join("bin");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        for entry in std::fs::read_dir(repo()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_owned();
            if ["data", "target", ".git", ".venv", "node_modules"].contains(&name.to_str().unwrap_or("")) {
                continue;
            }
            std::os::unix::fs::symlink(&path, root.join(&name)).unwrap();
        }
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rookery"), bin.join("rookery")).unwrap();
        FreshClone { root, bin }
    }

    /// A command run in the clone, with `rookery` on the PATH and none of
    /// Rookery's environment variables leaking in from the test's.
    fn command(&self, program: &str) -> Command {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
        );
        let mut command = Command::new(program);
        command
            .current_dir(&self.root)
            .env("PATH", path)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .env_remove("ROOKERY_CONFIG")
            .env_remove("ROOKERY_LISTEN")
            .env_remove("ROOKERY_POLICIES_DIR")
            .env_remove("ROOKERY_STATIC_DIR")
            .env_remove("ROOKERY_DATA_DIR")
            .stdin(Stdio::null());
        command
    }
}

impl Drop for FreshClone {
    fn drop(&mut self) {
        if let Some(base) = self.root.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

/// `rookery` started in a clone with no arguments, on a free port.
struct Server {
    child: Child,
    /// `127.0.0.1:PORT`.
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(clone: &FreshClone) -> Server {
        let mut child = clone
            .command("rookery")
            // The port is the one thing the test chooses; the docs say 8080.
            .env("ROOKERY_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rookery starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = sender.send(lines.next());
            // Keep reading so that the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = Server {
            child,
            addr: String::new(),
            stderr,
        };
        let line = match receiver.recv_timeout(TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            other => panic!("no listening line ({other:?}); stderr:\n{}", server.stderr()),
        };
        server.addr = line
            .strip_prefix("rookery listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        server
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The text after `prefix` on the first stderr line that has it, waiting for it.
    fn log_line_after(&self, prefix: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let stderr = self.stderr();
            if let Some(rest) = stderr
                .lines()
                .find_map(|line| line.split_once(prefix).map(|(_, rest)| rest))
            {
                return rest.to_owned();
            }
            assert!(Instant::now() < deadline, "no `{prefix}` in the log:\n{stderr}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a program to completion under [`TIMEOUT`]: (success, stdout, stderr).
fn run(mut command: Command) -> (bool, String, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = sender.send(text);
        });
        receiver
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waitable") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("did not finish within {TIMEOUT:?}: {command:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = |receiver: mpsc::Receiver<String>| receiver.recv_timeout(TIMEOUT).unwrap_or_default();
    (status.success(), text(stdout), text(stderr))
}

// ---------------------------------------------------------------------------
// The checks

/// Runs the `sh` blocks of one document against a fresh clone and server.
fn run_shell_examples(document: &Path) {
    let name = relative(document);
    let markdown = std::fs::read_to_string(document).unwrap();
    let runnable: Vec<Block> = blocks(&markdown)
        .into_iter()
        .filter(|block| block.kind() == ("sh", ""))
        .collect();
    if runnable.is_empty() {
        return;
    }
    let clone = FreshClone::new();
    let server = Server::start(&clone);
    let mut script = String::from("set -euo pipefail\n");
    for block in &runnable {
        assert!(
            !block.expectations().is_empty(),
            "{name}:{}: a runnable block needs a `# → …` line saying what it prints",
            block.line
        );
        // Only the commands are rewritten: the patterns are matched as written.
        let text = block
            .text
            .replace("127.0.0.1:8080", &server.addr)
            .replace("localhost:8080", &server.addr);
        script.push_str(&text);
        script.push_str(&format!("\nprintf '\\n%s\\n' '{BLOCK_END}'\n"));
    }
    let mut bash = clone.command("bash");
    bash.arg("-c").arg(&script);
    let (ok, stdout, stderr) = run(bash);
    let outputs: Vec<&str> = stdout.split(BLOCK_END).collect();
    // With `set -e` the script stops in the first failing block: the one after the last marker.
    let finished = outputs.len() - 1;
    for (index, (block, output)) in runnable.iter().zip(&outputs).enumerate() {
        let verdict = if index == finished {
            Err("exited with an error".to_owned())
        } else {
            find_in_order(output, &block.expectations())
        };
        if let Err(problem) = verdict {
            panic!(
                "{name}:{}: the example {problem}.\n--- example ---\n{}--- its stdout ---\n{output}\n--- stderr ---\n{stderr}\n--- server log ---\n{}",
                block.line,
                block.text,
                server.stderr()
            );
        }
    }
    assert!(
        ok && finished == runnable.len(),
        "{name}: the examples did not all run:\n{stderr}"
    );
}

#[test]
fn readme_shell_examples_run_as_written() {
    run_shell_examples(&repo().join("README.md"));
}

#[test]
fn docs_shell_examples_run_as_written() {
    for document in documents().iter().skip(1) {
        run_shell_examples(document);
    }
}

#[test]
fn every_shell_block_is_run_or_only_builds_and_starts() {
    let mut runnable = 0;
    for document in documents() {
        let name = relative(&document);
        for block in blocks(&std::fs::read_to_string(&document).unwrap()) {
            match block.kind() {
                ("sh", "") => runnable += 1,
                ("sh", "no-run") => {
                    for command in block.commands() {
                        assert!(
                            NOT_RUN.contains(&command.as_str()),
                            "{name}:{}: `{command}` in a `sh no-run` block: make it a runnable `sh` block",
                            block.line
                        );
                    }
                }
                ("bash" | "shell" | "console" | "zsh", _) | ("sh", _) => panic!(
                    "{name}:{}: shell examples are ```sh (run by this test) or ```sh no-run, not ```{}",
                    block.line, block.info
                ),
                _ => {}
            }
        }
    }
    assert!(runnable >= 5, "the docs lost their runnable examples ({runnable})");
}

#[test]
fn config_examples_are_accepted_by_check() {
    let clone = FreshClone::new();
    let secret_env = regex::Regex::new(r#"secret_env\s*=\s*"([A-Za-z_][A-Za-z0-9_]*)""#).unwrap();
    let mut checked = 0;
    for document in documents() {
        let name = relative(&document);
        for block in blocks(&std::fs::read_to_string(&document).unwrap()) {
            if block.kind() != ("toml", "config") {
                continue;
            }
            let file = clone.root.join(format!("example-{}.toml", block.line));
            std::fs::write(&file, &block.text).unwrap();
            let mut check = clone.command("rookery");
            // The example's paths are a deployment's; the policies come from the clone.
            check
                .arg("--config")
                .arg(&file)
                .args(["--policies-dir", "policies", "check"]);
            for variable in secret_env.captures_iter(&block.text) {
                check.env(&variable[1], "a-test-secret");
            }
            let (ok, stdout, stderr) = run(check);
            assert!(
                ok && stdout.contains("configuration OK"),
                "{name}:{}: `rookery check` refuses this configuration:\n{}\n{stderr}",
                block.line,
                block.text
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "the docs lost their configuration examples ({checked})");
}

#[test]
fn policy_examples_load() {
    let mut checked = 0;
    for document in documents() {
        let name = relative(&document);
        for block in blocks(&std::fs::read_to_string(&document).unwrap()) {
            if block.kind() == ("toml", "policy") {
                if let Err(error) = rookery::policy::Policy::parse("example", &block.text, Path::new("example.toml")) {
                    panic!("{name}:{}: the policy does not load: {error}", block.line);
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 1, "the docs lost their policy example");
}

/// GitHub's anchors for the headings of a Markdown text: lower case, punctuation
/// dropped, spaces to hyphens.
fn anchors(markdown: &str) -> Vec<String> {
    let mut in_code = false;
    let mut anchors = Vec::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        if let Some(heading) = line.strip_prefix('#').filter(|_| !in_code) {
            let title = heading.trim_start_matches('#').trim();
            let slug: String = title
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            anchors.push(slug);
        }
    }
    anchors
}

#[test]
fn github_anchors_follow_headings() {
    let found = anchors("# Rookery\n## 4. Client → server frames\n### `[limits]`\n```sh\n# → x\n```\n");
    assert_eq!(found, ["rookery", "4-client--server-frames", "limits"]);
}

#[test]
fn relative_links_point_to_files_and_headings_in_the_repository() {
    let link = regex::Regex::new(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)").unwrap();
    for document in documents() {
        let name = relative(&document);
        let markdown = std::fs::read_to_string(&document).unwrap();
        for capture in link.captures_iter(&markdown) {
            let target = &capture[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let resolved = if target.is_empty() {
                document.clone()
            } else {
                document.parent().unwrap().join(target)
            };
            assert!(
                resolved.exists() && resolved.canonicalize().unwrap().starts_with(repo()),
                "{name}: the link `{target}` does not point to a file in the repository"
            );
            if let Some(anchor) = capture.get(2) {
                let text = std::fs::read_to_string(&resolved).unwrap_or_default();
                assert!(
                    anchors(&text).iter().any(|a| a == anchor.as_str()),
                    "{name}: `{target}#{}` names no heading of {}",
                    anchor.as_str(),
                    relative(&resolved)
                );
            }
        }
    }
}

#[test]
fn startup_log_says_where_the_dev_channel_is_and_its_curl_line_publishes() {
    let clone = FreshClone::new();
    let server = Server::start(&clone);
    let announced = server.log_line_after("development channel ");
    let (channel, rest) = announced.split_once(':').expect("`development channel ID: …`");
    assert!(
        rest.contains("data/dev-channel.toml"),
        "names the credentials file: {announced}"
    );
    let credentials = std::fs::read_to_string(clone.root.join("data/dev-channel.toml")).unwrap();
    assert!(credentials.contains(&format!("id = \"{channel}\"")), "{credentials}");

    let secret = credentials
        .lines()
        .find_map(|line| line.strip_prefix("secret = "))
        .map(|quoted| quoted.trim_matches('"'))
        .expect("a secret line");
    assert!(!server.stderr().contains(secret), "the secret is never logged");

    let curl = server.log_line_after("try it: ");
    let mut bash = clone.command("bash");
    bash.arg("-c").arg(&curl);
    let (ok, stdout, stderr) = run(bash);
    assert!(ok, "{curl}\n{stderr}");
    assert_eq!(find_in_order(&stdout, &["{\"id\":\"…\"}"]), Ok(()), "{curl}\n{stdout}");
}
