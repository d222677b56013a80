//! Differential test of permission-key matching against Go's `regexp`.
//!
//! PROTOCOL.md §6: a key's syntax is Go's `regexp` (Scaledrone's engine) plus
//! look-around and backreferences; a key Go rejects for any other reason
//! matches nothing. This test generates a corpus — hand-picked tricky keys and
//! a few thousand seeded random combinations of regex atoms, anchors, classes,
//! escapes, flags and repetitions — runs every (key, room) pair through the Go
//! program next to this file (`main.go`, standard library only) and through
//! Rookery's `Permissions`, and requires the same decision for each.
//!
//! Keys with look-around or backreferences are the one exception, and only
//! because Go cannot answer for them: for those the test checks that Go
//! rejects them (as "invalid or unsupported Perl syntax" or, for `\1`, an
//! "invalid escape sequence") and compares Rookery with hand-written
//! expectations instead.
//!
//! `go` must be installed (`scripts/test.sh` installs Debian's `golang-go`);
//! without it the test fails. It runs offline: the program needs no module,
//! and the Go build cache lives under Cargo's target directory.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rookery::permissions::Permissions;
use serde_json::{Value, json};

/// Room names every key is tried against: ASCII and not, case-fold traps
/// (Kelvin sign, long s), punctuation, and a newline for the `m`/`s` flags.
const ROOMS: &[&str] = &[
    "",
    "a",
    "ab",
    "abc",
    "aaa",
    "A",
    "aB",
    "b",
    "k",
    "K",
    "\u{212A}",
    "s",
    "\u{17F}",
    "é",
    "É",
    "α",
    "Ω",
    "日本",
    "٣",
    "😀",
    "0",
    "123",
    "_",
    "a-b",
    "a:b",
    "a.b",
    "a b",
    "a{,2}",
    "a{01}",
    "{",
    "<a>",
    "&",
    "[a]",
    "a\nb",
    "\t",
    "\u{b}",
    "observable-room",
    "private-room-r3k:abc",
    "private-room-r3k:xyz",
];

/// Keys chosen for the places where Go and the Rust crates part ways.
const TRICKY_KEYS: &[&str] = &[
    "^*.$",
    "^*",
    "$?",
    r"\b*",
    "a**",
    "a++",
    "a*?*",
    "a*?",
    "a+?b",
    "x{2,1}",
    "a{2}{3}",
    "a{2}*",
    "a{1001}",
    "a{1000}",
    "(a{1000}){2}",
    "(a{10}){100}",
    "(a{10}){101}",
    "(a{0}){1000}",
    "a{,2}",
    "a{01}",
    "a{2",
    "a{2,",
    "a{ 2}",
    "{",
    "{2}",
    "a|*",
    "()*",
    "(|a)+",
    "(?:)*",
    r"\Q\E*",
    r"\Qa.b\E*",
    r"\Qa.b",
    r"a\Q\E*",
    "a(?i)*",
    "a*(?i)*",
    "(?i)*",
    "(?)",
    "(?ii)a",
    "(?i-i)a",
    "(?i-)a",
    "(?-)a",
    "(?x)a",
    "(?u)a",
    "(?U)a+",
    "(?s).",
    "(?m)^b",
    "(?m)a$",
    "a$",
    "(?i)k",
    "(?i)K",
    "(?i)s",
    "(?i)[k]",
    "(?i)[^k]",
    r"(?i)\w",
    r"(?i)\W",
    r"(?i)[\W]",
    "(?i)[[:upper:]]",
    "(?i)[[:^lower:]]",
    r"(?i)\p{Lu}",
    r"(?i)\P{Ll}",
    r"(?i)\x{212A}",
    "(?i)é",
    "(?i:a)b",
    "(?i:a)B",
    "a(?i:b)",
    "(?P<n>a)(?P<n>b)",
    "(?P<1>a)",
    "(?P<>a)",
    "(?P<a-b>a)",
    "(?P<n>",
    "(?P",
    "(?P=n)",
    r"\q",
    r"\Z",
    r"\z",
    r"\A",
    r"\C",
    r"\k<n>",
    r"\u0061",
    r"\e",
    r"\x4",
    r"\x41",
    r"\x{}",
    r"\x{61}",
    r"\x{110000}",
    r"\x{D800}",
    r"[\x{D800}-\x{E000}]",
    r"[\x{D800}]",
    r"\0",
    r"\08",
    r"\12",
    r"\101",
    r"\777",
    r"\8",
    r"\<",
    r"\>",
    r"\ ",
    r"\_",
    r"\é",
    r"\.",
    r"\-",
    r"\d",
    r"\D",
    r"\s",
    r"\S",
    r"\w",
    r"\W",
    r"[\d]",
    r"[\D]",
    r"[^\D]",
    r"[\s\S]",
    r"\pL",
    r"\pN",
    r"\p{L}",
    r"\p{Greek}",
    r"\p{greek}",
    r"\p{^Greek}",
    r"\P{^Greek}",
    r"\PL",
    r"\p{Any}",
    r"\p{Letter}",
    r"\p{LC}",
    r"\p{Latin}",
    r"\p{Han}",
    r"\p{Arabic}",
    r"\p",
    r"\p{",
    r"\pé",
    "[[:alpha:]]",
    "[[:^alpha:]]",
    "[[:word:]]",
    "[[:foo:]]",
    "[[:alpha:]-z]",
    "[:alpha:]",
    "[[:a]b:]]",
    "[[:]",
    "[a-]",
    "[-a]",
    "[]a]",
    "[^]a]",
    "[a--]",
    "[z-a]",
    r"[\d-z]",
    r"[a-\d]",
    "[[a]",
    "[&&a]",
    "[a&&b]",
    "[a~~b]",
    "[a||b]",
    r"[\b]",
    r"[\Q]",
    r"[\A]",
    r"[\z]",
    r"[\x{61}-\x{63}]",
    r"[\n-\r]",
    "[é-ü]",
    "[^a]",
    "[^\n]",
    "[]",
    "[",
    "]",
    "}",
    "a]",
    r"\b{start}",
    r"\bé",
    r"é\b",
    r"\Bé",
    r"a\b",
    r"\ba\b",
    r"\Ba",
    r"\E",
    "(",
    ")",
    "a)",
    "(a",
    "((a)|b)+",
    "(?:a|b|)c",
    "a|b|",
    "|",
    "",
    ".",
    "..",
    ".+",
    ".*",
    "^$",
    "^main$",
    "main",
    "^private-room-",
    "^observable-",
    "(?i)^OBSERVABLE-",
    "r3k:abc$",
    "a\\",
    r"\\",
    r"[\\]",
    "\u{1}",
    "\\\u{1}",
    "a\tb",
];

/// Look-around and backreference keys (Go rejects them all) with the rooms
/// they must and must not match. Checked against these expectations, not Go.
const EXTENSION_KEYS: &[(&str, &[&str], &[&str])] = &[
    (
        r"^private-room-(?!r3k:abc$).+$",
        &["private-room-r3k:xyz"],
        &["private-room-r3k:abc", "private-room-", "a"],
    ),
    ("^a(?=b)", &["ab", "abc"], &["a", "ac"]),
    ("^a(?!b)", &["a", "ac"], &["ab"]),
    ("(?<=a)b", &["ab", "aab"], &["b", "cb"]),
    ("(?<!a)b", &["b", "cb"], &["ab"]),
    (r"^(a+)-\1$", &["a-a", "aa-aa"], &["aa-a", "a-aa"]),
    (r"^(.)\1$", &["aa", "éé"], &["ab", "a"]),
    (r"^(a)\8$", &[], &["a", "a8"]),
    (r"(?i)^(a)\1$", &["aA", "Aa"], &["ab"]),
    // Go's ASCII \b keeps its meaning in the fallback engine.
    (r"\bé(?=x)", &[], &["éx"]),
    (r"\ba(?=x)", &["ax", "-ax"], &["bax"]),
    // Named group spelling of Go ≥ 1.22 (the Go here may be older).
    ("^(?<n>a)b$", &["ab"], &["a", "b"]),
];

/// Pieces the random keys are built from; some are invalid on purpose.
const ATOMS: &[&str] = &[
    "a",
    "b",
    "k",
    "s",
    "é",
    "α",
    "日",
    "-",
    ":",
    " ",
    "0",
    "_",
    "A",
    "K",
    ".",
    "^",
    "$",
    r"\A",
    r"\z",
    r"\b",
    r"\B",
    "[a-c]",
    "[^a]",
    "[[:alpha:]]",
    "[[:^space:]x]",
    r"[\d]",
    r"[\W]",
    "[a&&b]",
    "[]a]",
    "[a-]",
    r"[\p{Greek}]",
    "[é-ü]",
    r"\d",
    r"\D",
    r"\s",
    r"\S",
    r"\w",
    r"\W",
    r"\pL",
    r"\p{Greek}",
    r"\PL",
    r"\p{Lu}",
    r"\x41",
    r"\x{e9}",
    r"\101",
    r"\12",
    r"\0",
    r"\.",
    r"\-",
    r"\<",
    r"\q",
    r"\Z",
    r"\Qa.\E",
    r"\Q",
    "{",
    "}",
    "]",
    "[",
    r"\x{212A}",
];

const OPENERS: &[&str] = &[
    "(", "(?:", "(?i)", "(?i:", "(?m)", "(?s)", "(?-i)", "(?P<n>", "(?U)", "(?i-s:",
];

const REPEATS: &[&str] = &[
    "*", "+", "?", "*?", "+?", "??", "{2}", "{1,3}", "{0}", "{2,}", "{,2}", "{01}", "{2,1}", "{1001}", "**", "{3}{2}",
];

/// SplitMix64: a seeded generator, so a failing key can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).expect("small")
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

fn random_key(rng: &mut Rng) -> String {
    let mut key = String::new();
    let mut open = 0;
    for _ in 0..1 + rng.below(7) {
        match rng.below(10) {
            0 | 1 => {
                key.push_str(rng.pick(OPENERS));
                if !key.ends_with(')') {
                    open += 1;
                }
            }
            2 if open > 0 => {
                key.push(')');
                open -= 1;
            }
            3 => key.push('|'),
            4 | 5 => key.push_str(rng.pick(REPEATS)),
            _ => key.push_str(rng.pick(ATOMS)),
        }
    }
    // Mostly balanced, sometimes not: unbalanced keys are a case too.
    if rng.below(8) != 0 {
        key.push_str(&")".repeat(open));
    }
    key
}

fn corpus() -> Vec<String> {
    let mut keys: Vec<String> = TRICKY_KEYS.iter().map(|k| (*k).to_owned()).collect();
    let mut rng = Rng(0x5EED_2026);
    while keys.len() < TRICKY_KEYS.len() + 3000 {
        keys.push(random_key(&mut rng));
    }
    keys.sort();
    keys.dedup();
    keys
}

#[derive(serde::Deserialize)]
struct GoAnswer {
    ok: bool,
    error: String,
    matches: Vec<bool>,
}

/// Runs `main.go` over `requests`, one answer per request.
fn ask_go(requests: &[(String, Vec<String>)]) -> Vec<GoAnswer> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/regexp_diff");
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("regexp_diff");
    let mut child = Command::new("go")
        .arg("run")
        .arg("main.go")
        .current_dir(&dir)
        // Offline and independent of the user's Go setup, as root on a clean machine.
        .env("GOCACHE", scratch.join("gocache"))
        .env("GOPATH", scratch.join("gopath"))
        .env("GOENV", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("GOPROXY", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `go` ({e}): the differential test needs Go's regexp; \
                 install golang-go (scripts/test.sh does)"
            )
        });
    let mut input = String::new();
    for (key, rooms) in requests {
        input.push_str(&json!({ "key": key, "rooms": rooms }).to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Write from a thread: Go answers while we write, and both pipes are bounded.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("go run finishes");
    writer.join().expect("writer thread").expect("write to go");
    assert!(
        output.status.success(),
        "go run main.go failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<GoAnswer> = String::from_utf8(output.stdout)
        .expect("utf-8 from go")
        .lines()
        .map(|line| serde_json::from_str(line).expect("an answer line"))
        .collect();
    assert_eq!(answers.len(), requests.len(), "one answer per key");
    answers
}

/// Rookery's decisions for `key` (allowing publish) in each of `rooms`.
fn rookery_allows(key: &str, rooms: &[&str]) -> Vec<bool> {
    let claim: Value = json!({ key: {"publish": true} });
    let permissions = Permissions::from_claim(&claim).expect("a rule object is valid whatever its key");
    rooms.iter().map(|room| permissions.decide(room).publish).collect()
}

#[test]
fn permission_keys_match_exactly_as_go_regexp() {
    let keys = corpus();
    let rooms: Vec<String> = ROOMS.iter().map(|r| (*r).to_owned()).collect();
    let requests: Vec<(String, Vec<String>)> = keys.iter().map(|k| (k.clone(), rooms.clone())).collect();
    let answers = ask_go(&requests);

    let mut mismatches = Vec::new();
    let (mut accepted, mut rejected) = (0, 0);
    for (key, answer) in keys.iter().zip(&answers) {
        if answer.ok {
            accepted += 1
        } else {
            rejected += 1
        }
        let decisions = rookery_allows(key, ROOMS);
        for ((room, go), rookery) in ROOMS.iter().zip(&answer.matches).zip(decisions) {
            if rookery != *go {
                mismatches.push(format!(
                    "key {key:?} room {room:?}: go {go} ({}), rookery {rookery}",
                    if answer.ok { "compiles" } else { answer.error.as_str() }
                ));
            }
        }
    }
    eprintln!("{} keys: Go accepts {accepted}, rejects {rejected}", keys.len());
    // The corpus must exercise both sides, or the comparison proves little.
    assert!(
        accepted > 1000 && rejected > 300,
        "accepted {accepted}, rejected {rejected}"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} decisions differ from Go:\n{}",
        mismatches.len(),
        keys.len() * ROOMS.len(),
        mismatches[..mismatches.len().min(40)].join("\n")
    );
}

#[test]
fn look_around_and_backreferences_are_the_only_extension() {
    let requests: Vec<(String, Vec<String>)> = EXTENSION_KEYS
        .iter()
        .map(|(key, _, _)| ((*key).to_owned(), Vec::new()))
        .collect();
    let answers = ask_go(&requests);
    for ((key, matching, not_matching), answer) in EXTENSION_KEYS.iter().zip(&answers) {
        if key.contains("(?<n>") {
            // Go accepts this since 1.22; older Go rejects it as Perl syntax.
            assert!(
                answer.ok || answer.error.contains("invalid or unsupported Perl syntax"),
                "{key}"
            );
        } else {
            assert!(!answer.ok, "Go accepts {key}?");
            assert!(
                answer.error.contains("invalid or unsupported Perl syntax")
                    || answer.error.contains("invalid escape sequence: `\\"),
                "Go rejects {key} for another reason: {}",
                answer.error
            );
        }
        for (room, allowed) in matching.iter().zip(rookery_allows(key, matching)) {
            assert!(allowed, "{key} should match {room:?}");
        }
        for (room, allowed) in not_matching.iter().zip(rookery_allows(key, not_matching)) {
            assert!(!allowed, "{key} should not match {room:?}");
        }
    }
}
