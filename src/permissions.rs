//! A token's `permissions` claim turned into ordered room matchers.
//!
//! Owns the matching rules of PROTOCOL.md §6: keys are regexes searched (not
//! anchored) in the room name, evaluated in the order they appear in the
//! token's JSON text, and **the last key that matches decides**; a key that
//! appears twice counts once, at its last position, with its last value.
//!
//! Key syntax is Go's `regexp` plus look-around and backreferences. Every key
//! first goes through [`go_syntax`], which parses it with Go's rules (so a key
//! Go rejects matches nothing, however lenient the crates are) and re-spells
//! it so the crates read it as Go does; see that module for the decisions.
//! Plain keys then compile with the linear-time `regex` crate; only keys that
//! need look-around or backreferences use `fancy-regex`, with a hard
//! backtracking limit. A key that compiles in neither engine matches nothing.
//!
//! [`DecisionCache`] remembers one connection's decisions, bounded in entries
//! and in (approximate) bytes.

mod go_syntax;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use serde::de::{Deserializer as _, MapAccess, Visitor};
use serde_json::Value;

use go_syntax::Translation;

/// Backtracking steps a fallback pattern may take per match; hitting the limit counts as no match.
const BACKTRACK_LIMIT: usize = 100_000;

/// What a connection may do in one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    pub publish: bool,
    pub subscribe: bool,
    /// How many history messages the subscriber may read.
    pub history: u32,
}

impl Decision {
    /// Nothing allowed: the decision when no key matches.
    pub const DENY: Decision = Decision {
        publish: false,
        subscribe: false,
        history: 0,
    };

    /// Everything allowed, with the history allowance of channels without auth.
    pub const OPEN: Decision = Decision {
        publish: true,
        subscribe: true,
        history: 100,
    };
}

/// Why a `permissions` claim could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidPermissions {
    #[error("permissions must be a JSON object")]
    NotAnObject,
    #[error("permission for key {0:?} must be an object with boolean publish/subscribe")]
    BadRule(String),
    #[error("permissions are not valid JSON")]
    NotJson,
}

enum Matcher {
    Linear(regex::Regex),
    Backtracking(fancy_regex::Regex),
    /// The key compiled in neither engine.
    Never,
}

impl Matcher {
    fn compile(pattern: &str) -> Matcher {
        Self::try_compile(pattern).unwrap_or(Matcher::Never)
    }

    /// Go's syntax check, then the engine the key needs; `Err` says why the key can never match.
    fn try_compile(pattern: &str) -> Result<Matcher, String> {
        match go_syntax::translate(pattern).map_err(|e| e.to_string())? {
            // The crate's default nest limit (250) stays: Go allows 1000, but
            // the crate compiles recursively and deeper keys overflow a
            // worker's stack. Keys nested deeper than that match nothing.
            Translation::Linear(canonical) => regex::RegexBuilder::new(&canonical)
                .build()
                .map(Matcher::Linear)
                .map_err(|e| e.to_string()),
            Translation::Fallback(canonical) => fancy_regex::RegexBuilder::new(&canonical)
                .backtrack_limit(BACKTRACK_LIMIT)
                .build()
                .map(Matcher::Backtracking)
                .map_err(|e| e.to_string()),
        }
    }

    fn is_match(&self, room: &str) -> bool {
        match self {
            Matcher::Linear(re) => re.is_match(room),
            // An error here is the backtrack limit: count it as no match.
            Matcher::Backtracking(re) => re.is_match(room).unwrap_or(false),
            Matcher::Never => false,
        }
    }
}

struct Rule {
    matcher: Arc<Matcher>,
    decision: Decision,
}

/// Compiled patterns shared by every token that carries them.
///
/// Thousands of connections hold tokens from the same policy; most of their
/// keys are identical (`^observable-room$`), and a compiled regex costs
/// kilobytes. Interning keeps one copy per distinct pattern for as long as
/// any token uses it, and makes authenticating cheap for repeated keys.
struct Interned {
    matchers: HashMap<String, Weak<Matcher>>,
    /// Prune dead entries when the map grows past this.
    prune_at: usize,
}

static INTERNED: LazyLock<Mutex<Interned>> = LazyLock::new(|| {
    Mutex::new(Interned {
        matchers: HashMap::new(),
        prune_at: 1024,
    })
});

fn interned_matcher(pattern: &str) -> Arc<Matcher> {
    let mut interned = INTERNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(matcher) = interned.matchers.get(pattern).and_then(Weak::upgrade) {
        return matcher;
    }
    // Compiling under the lock keeps two tokens from compiling the same key
    // twice; it happens once per distinct key, never on the message path.
    let matcher = Arc::new(Matcher::compile(pattern));
    interned.matchers.insert(pattern.to_owned(), Arc::downgrade(&matcher));
    if interned.matchers.len() >= interned.prune_at {
        interned.matchers.retain(|_, weak| weak.strong_count() > 0);
        interned.prune_at = (interned.matchers.len() * 2).max(1024);
    }
    matcher
}

/// The compiled permission rules of one token, in the token's key order.
pub struct Permissions {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for Permissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Permissions({} rules)", self.rules.len())
    }
}

impl Permissions {
    /// Compiles a `permissions` claim already parsed into a map (policies,
    /// the REST API). The map must preserve key order (serde_json's
    /// `preserve_order`), because the last match wins; it cannot carry
    /// duplicate keys. Tokens use [`Permissions::from_json_text`].
    pub fn from_claim(claim: &Value) -> Result<Self, InvalidPermissions> {
        let map = claim.as_object().ok_or(InvalidPermissions::NotAnObject)?;
        Self::from_entries(map.iter().map(|(key, value)| (key.clone(), value.clone())).collect())
    }

    /// Compiles a `permissions` claim from the token's JSON text, where a key
    /// that appears twice counts at its **last** position with its last value
    /// (a parsed map would keep the first position).
    pub(crate) fn from_json_text(text: &str) -> Result<Self, InvalidPermissions> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let entries = deserializer
            .deserialize_any(EntriesVisitor)
            .map_err(|_| InvalidPermissions::NotJson)?
            .ok_or(InvalidPermissions::NotAnObject)?;
        deserializer.end().map_err(|_| InvalidPermissions::NotJson)?;
        Self::from_entries(entries)
    }

    /// Entries in text order, duplicates included; every value must be a valid rule.
    fn from_entries(entries: Vec<(String, Value)>) -> Result<Self, InvalidPermissions> {
        let mut last_position: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
        for (position, (key, _)) in entries.iter().enumerate() {
            last_position.insert(key, position);
        }
        let mut rules = Vec::with_capacity(last_position.len());
        for (position, (key, value)) in entries.iter().enumerate() {
            let decision = parse_rule(value).ok_or_else(|| InvalidPermissions::BadRule(key.clone()))?;
            if last_position.get(key.as_str()) == Some(&position) {
                rules.push(Rule {
                    matcher: interned_matcher(key),
                    decision,
                });
            }
        }
        Ok(Permissions { rules })
    }

    /// The decision for `room`: the last matching key's, or [`Decision::DENY`].
    pub fn decide(&self, room: &str) -> Decision {
        self.rules
            .iter()
            .rev()
            .find(|rule| rule.matcher.is_match(room))
            .map_or(Decision::DENY, |rule| rule.decision)
    }
}

/// Reads a JSON value as the entries of an object in text order, duplicates
/// included; `None` when the value is not an object.
struct EntriesVisitor;

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = Option<Vec<(String, Value)>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Value>()? {
            entries.push(entry);
        }
        Ok(Some(entries))
    }

    // Any other JSON value parses but is not an object.
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

/// Default byte budget of one connection's [`DecisionCache`].
pub(crate) const DECISION_CACHE_BYTES: usize = 16 * 1024;

/// What one cached decision is accounted at besides its room name's bytes:
/// the `Arc<str>` header (two counters), the map's key and value slots and
/// its control byte, rounded up.
const ENTRY_OVERHEAD_BYTES: usize = 64;

/// Decisions of one connection, computed once per room and kept until the
/// token changes. Bounded in entries **and** in approximate bytes (room name
/// plus [`ENTRY_OVERHEAD_BYTES`] per entry): a client cycling through endless
/// or long room names resets the cache instead of growing it, so a
/// connection's cache never holds more than about its byte budget.
#[derive(Debug)]
pub struct DecisionCache {
    decisions: HashMap<Arc<str>, Decision>,
    limit: usize,
    byte_budget: usize,
    bytes: usize,
}

impl DecisionCache {
    /// A cache of at most `limit` entries and [`DECISION_CACHE_BYTES`] bytes.
    pub fn new(limit: usize) -> Self {
        Self::with_budget(limit, DECISION_CACHE_BYTES)
    }

    /// A cache of at most `limit` entries and about `byte_budget` bytes.
    pub(crate) fn with_budget(limit: usize, byte_budget: usize) -> Self {
        DecisionCache {
            decisions: HashMap::new(),
            limit: limit.max(1),
            byte_budget,
            bytes: 0,
        }
    }

    /// The cached decision for `room`, or `permissions.decide(room)` remembered.
    pub fn decide(&mut self, permissions: &Permissions, room: &str) -> Decision {
        if let Some(decision) = self.decisions.get(room) {
            return *decision;
        }
        let decision = permissions.decide(room);
        let cost = Self::cost(room);
        if self.decisions.len() >= self.limit || self.bytes + cost > self.byte_budget {
            self.clear();
        }
        // A single entry over the whole budget is computed but not kept.
        if cost <= self.byte_budget {
            self.decisions.insert(room.into(), decision);
            self.bytes += cost;
        }
        decision
    }

    /// Forgets everything (the token changed).
    pub fn clear(&mut self) {
        // A new map, not `HashMap::clear`, which would keep the old capacity.
        self.decisions = HashMap::new();
        self.bytes = 0;
    }

    /// Accounted bytes of the decisions held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }

    fn cost(room: &str) -> usize {
        room.len() + ENTRY_OVERHEAD_BYTES
    }
}

/// Reports whether `pattern` can ever match: it must be valid Go syntax (plus
/// look-around and backreferences) and compile in its engine. Policies use it
/// to refuse rules that could never match at startup.
pub fn pattern_compiles(pattern: &str) -> Result<(), String> {
    Matcher::try_compile(pattern).map(|_| ())
}

/// `{"publish":bool,"subscribe":bool,"history":int?}`; missing booleans are false.
fn parse_rule(value: &Value) -> Option<Decision> {
    let object = value.as_object()?;
    let flag = |name: &str| match object.get(name) {
        None | Some(Value::Null) => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => None,
    };
    let history = match object.get("history") {
        None | Some(Value::Null) => 0,
        Some(v) => u32::try_from(v.as_u64()?).unwrap_or(u32::MAX),
    };
    Some(Decision {
        publish: flag("publish")?,
        subscribe: flag("subscribe")?,
        history,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permissions(json: &str) -> Permissions {
        let value: Value = serde_json::from_str(json).unwrap();
        Permissions::from_claim(&value).unwrap()
    }

    const PUB_SUB: Decision = Decision {
        publish: true,
        subscribe: true,
        history: 0,
    };

    #[test]
    fn everything_but_one_room() {
        let p =
            permissions(r#"{".+":{"publish":true,"subscribe":true},"^secret$":{"publish":false,"subscribe":false}}"#);
        assert_eq!(p.decide("lobby"), PUB_SUB);
        assert_eq!(p.decide("secret"), Decision::DENY);
        assert_eq!(p.decide("secret2"), PUB_SUB);
    }

    #[test]
    fn only_one_room() {
        let p = permissions(
            r#"{".+":{"publish":false,"subscribe":false},"^main$":{"publish":true,"subscribe":true,"history":50}}"#,
        );
        assert_eq!(p.decide("other"), Decision::DENY);
        assert_eq!(
            p.decide("main"),
            Decision {
                publish: true,
                subscribe: true,
                history: 50
            }
        );
    }

    #[test]
    fn last_match_wins_in_json_text_order() {
        // The same keys in the opposite order give the opposite answer.
        let deny_last = permissions(r#"{"room":{"publish":true},"^room$":{"publish":false}}"#);
        let allow_last = permissions(r#"{"^room$":{"publish":false},"room":{"publish":true}}"#);
        assert!(!deny_last.decide("room").publish);
        assert!(allow_last.decide("room").publish);
    }

    #[test]
    fn keys_are_not_implicitly_anchored() {
        let p = permissions(r#"{"main":{"subscribe":true}}"#);
        assert!(p.decide("domain").subscribe);
        assert!(!p.decide("mai").subscribe);
    }

    #[test]
    fn tutorial_look_around_key() {
        let p = permissions(
            r#"{"^observable-room$":{"publish":true,"subscribe":true,"history":100},
               "^private-room-(?!r3k:abc$).+$":{"publish":true,"subscribe":false},
               "^private-room-r3k:abc$":{"publish":false,"subscribe":true,"history":100}}"#,
        );
        let own = p.decide("private-room-r3k:abc");
        assert!(own.subscribe && !own.publish);
        assert_eq!(own.history, 100);
        let other = p.decide("private-room-r3k:xyz");
        assert!(other.publish && !other.subscribe);
        assert_eq!(p.decide("private-room-"), Decision::DENY);
        assert_eq!(p.decide("elsewhere"), Decision::DENY);
    }

    #[test]
    fn backreferences_use_the_fallback_engine() {
        let p = permissions(r#"{"^(a+)-\\1$":{"subscribe":true}}"#);
        assert!(p.decide("aa-aa").subscribe);
        assert!(!p.decide("aa-a").subscribe);
    }

    #[test]
    fn uncompilable_key_matches_nothing_and_does_not_fail_the_token() {
        let p = permissions(r#"{".*":{"subscribe":true},"([":{"subscribe":false}}"#);
        assert!(p.decide("anything").subscribe);
        assert!(pattern_compiles("([").is_err());
        assert!(pattern_compiles("^a(?!b)").is_ok());
    }

    #[test]
    fn catastrophic_backtracking_counts_as_no_match() {
        let p = permissions(r#"{".*":{"subscribe":true},"^(a|a)*(?=b)c$":{"subscribe":false}}"#);
        let room = "a".repeat(64);
        assert!(p.decide(&room).subscribe);
    }

    #[test]
    fn identical_keys_share_one_compiled_matcher() {
        let a = permissions(r#"{"^interned-test$":{"publish":true}}"#);
        let b = permissions(r#"{"^interned-test$":{"publish":true}}"#);
        assert!(Arc::ptr_eq(&a.rules[0].matcher, &b.rules[0].matcher));
        assert!(b.decide("interned-test").publish);
    }

    #[test]
    fn duplicate_keys_count_at_their_last_position() {
        // "a" first allows, then ".*" denies, then "a" allows again: the
        // second "a" is the last key, so it decides "a".
        let later =
            Permissions::from_json_text(r#"{"a":{"publish":false},".*":{"publish":false},"a":{"publish":true}}"#)
                .unwrap();
        assert!(later.decide("a").publish);
        assert!(!later.decide("b").publish);
        // The other direction: the duplicate moves "a" behind ".*" with a deny.
        let earlier =
            Permissions::from_json_text(r#"{"a":{"publish":true},".*":{"publish":true},"a":{"publish":false}}"#)
                .unwrap();
        assert!(!earlier.decide("a").publish);
        assert!(earlier.decide("b").publish);
        assert_eq!(earlier.rules.len(), 2);
    }

    #[test]
    fn json_text_errors() {
        let bad = |text: &str| Permissions::from_json_text(text).err();
        assert_eq!(bad("[]"), Some(InvalidPermissions::NotAnObject));
        assert_eq!(bad("5"), Some(InvalidPermissions::NotAnObject));
        assert_eq!(bad("{"), Some(InvalidPermissions::NotJson));
        assert_eq!(bad("{} x"), Some(InvalidPermissions::NotJson));
        assert!(matches!(
            bad(r#"{"a":{"publish":"yes"},"a":{"publish":true}}"#),
            Some(InvalidPermissions::BadRule(_))
        ));
    }

    #[test]
    fn keys_go_rejects_match_nothing_even_where_the_crates_accept_them() {
        // Each of these compiles in the regex crate; Go refuses it.
        for key in [r"\Z", "(?x)a", r"\u0061", r"\p{greek}", r"[\b]a", "(?u)a", "a**"] {
            let p = Permissions::from_claim(&serde_json::json!({ key: {"publish": true} })).unwrap();
            assert!(!p.decide("a").publish, "{key}");
            assert!(pattern_compiles(key).is_err(), "{key}");
        }
    }

    #[test]
    fn keys_read_as_go_reads_them() {
        let allows = |key: &str, room: &str| {
            Permissions::from_claim(&serde_json::json!({ key: {"publish": true} }))
                .unwrap()
                .decide(room)
                .publish
        };
        // ASCII classes and boundaries.
        assert!(!allows(r"\d", "٣"));
        assert!(allows(r"\w", "a"));
        assert!(!allows(r"\w", "é"));
        assert!(
            !allows(r"\bé", "é"),
            "é is no word character for Go: no boundary before é"
        );
        // Go literals the crates read as syntax.
        assert!(allows(r"^a{01}$", "a{01}"));
        assert!(allows(r"^a{,2}$", "a{,2}"));
        assert!(!allows(r"^a{,2}$", "aa"));
        assert!(allows(r"^a\<$", "a<"));
        assert!(allows(r"^[a&&b]$", "&"));
        assert!(allows(r"^\Qa.b\E$", "a.b"));
        assert!(!allows(r"^\Qa.b\E$", "axb"));
        assert!(allows(r"^\101$", "A"), "octal escape");
        assert!(allows(r"^a(?i)*$", "aaa"));
        assert!(allows(r"^^*a$", "a"), "Go accepts a repeated ^");
        // Go spellings the crates refuse.
        assert!(allows("(?ii)A", "a"));
        assert!(allows("(?P<1>a)", "a"));
        assert!(allows("(?i)(?P<n>a)(?P<n>b)", "AB"));
    }

    #[test]
    fn deep_nesting_neither_crashes_nor_matches() {
        // Run on a thread with a tokio worker's stack, as a session would.
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                for depth in [100, 999, 5_000, 30_000] {
                    let key = format!("{}a{}", "(".repeat(depth), ")".repeat(depth));
                    let p = Permissions::from_claim(&serde_json::json!({ key: {"publish": true} })).unwrap();
                    assert_eq!(p.decide("a").publish, depth <= 100, "{depth}");
                    let look = format!("{}(?=a){}", "(".repeat(depth), ")".repeat(depth));
                    let p = Permissions::from_claim(&serde_json::json!({ look: {"publish": true} })).unwrap();
                    assert!(!p.decide("b").publish);
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn the_cache_is_bounded_in_bytes() {
        // The finding: refused publishes to 1,023 distinct 256-byte names.
        let p = permissions(r#"{"^allowed$":{"publish":true}}"#);
        let mut cache = DecisionCache::new(1024);
        let mut peak = 0;
        for i in 0..1023 {
            let room = format!("{i:0>256}");
            assert!(!cache.decide(&p, &room).publish);
            peak = peak.max(cache.bytes());
        }
        assert!(peak <= DECISION_CACHE_BYTES, "{peak}");
        assert!(cache.decisions.len() <= DECISION_CACHE_BYTES / (256 + ENTRY_OVERHEAD_BYTES));
        // Short names still fit many entries, and the entry limit still holds.
        let mut small = DecisionCache::with_budget(3, 1 << 20);
        for room in ["a", "b", "c", "d"] {
            small.decide(&p, room);
        }
        assert_eq!(small.decisions.len(), 1);
        // An entry bigger than the whole budget is answered, not kept.
        let mut tiny = DecisionCache::with_budget(10, 100);
        assert!(tiny.decide(&p, "allowed").publish);
        assert!(!tiny.decide(&p, &"x".repeat(200)).publish);
        assert!(tiny.bytes() <= 100);
    }

    #[test]
    fn the_cache_remembers_and_stays_bounded() {
        let p = permissions(r#"{"^a":{"publish":true}}"#);
        let mut cache = DecisionCache::new(2);
        assert!(cache.decide(&p, "a1").publish);
        assert!(!cache.decide(&p, "b").publish);
        assert_eq!(cache.decisions.len(), 2);
        cache.decide(&p, "a2");
        assert_eq!(cache.decisions.len(), 1, "reset when full");
        assert!(cache.decide(&p, "a1").publish);
    }

    #[test]
    fn malformed_claims_are_rejected() {
        let bad = |json: &str| Permissions::from_claim(&serde_json::from_str(json).unwrap()).err();
        assert_eq!(bad("[]"), Some(InvalidPermissions::NotAnObject));
        assert!(matches!(bad(r#"{"a":true}"#), Some(InvalidPermissions::BadRule(_))));
        assert!(matches!(
            bad(r#"{"a":{"publish":"yes"}}"#),
            Some(InvalidPermissions::BadRule(_))
        ));
        assert!(matches!(
            bad(r#"{"a":{"history":-1}}"#),
            Some(InvalidPermissions::BadRule(_))
        ));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A key of the simple subset: a literal over a small alphabet, optionally anchored.
    #[derive(Debug, Clone)]
    struct SimpleKey {
        start: bool,
        literal: String,
        end: bool,
    }

    impl SimpleKey {
        fn pattern(&self) -> String {
            format!(
                "{}{}{}",
                if self.start { "^" } else { "" },
                self.literal,
                if self.end { "$" } else { "" }
            )
        }

        /// The reference model of a search for this key in `room`.
        fn matches(&self, room: &str) -> bool {
            match (self.start, self.end) {
                (false, false) => room.contains(&self.literal),
                (true, false) => room.starts_with(&self.literal),
                (false, true) => room.ends_with(&self.literal),
                (true, true) => room == self.literal,
            }
        }
    }

    fn simple_key() -> impl Strategy<Value = SimpleKey> {
        (any::<bool>(), "[ab-]{0,3}", any::<bool>()).prop_map(|(start, literal, end)| SimpleKey { start, literal, end })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn last_match_wins_like_the_reference_model(
            rules in prop::collection::vec((simple_key(), any::<bool>()), 0..8),
            rooms in prop::collection::vec("[ab-]{0,4}", 1..6),
        ) {
            // Written as JSON text so that repeated keys stay repeated.
            let body: Vec<String> = rules
                .iter()
                .map(|(key, publish)| format!("{}:{{\"publish\":{publish}}}", Value::from(key.pattern())))
                .collect();
            let permissions = Permissions::from_json_text(&format!("{{{}}}", body.join(","))).unwrap();
            // Reference: a repeated key lives only at its last position.
            let effective: Vec<&(SimpleKey, bool)> = rules
                .iter()
                .enumerate()
                .filter(|(i, (key, _))| !rules[i + 1..].iter().any(|(later, _)| later.pattern() == key.pattern()))
                .map(|(_, rule)| rule)
                .collect();
            for room in &rooms {
                let expected = effective.iter().rev().find(|(key, _)| key.matches(room)).is_some_and(|(_, publish)| *publish);
                prop_assert_eq!(permissions.decide(room).publish, expected, "room {:?}", room);
            }
        }

        #[test]
        fn arbitrary_patterns_never_panic(
            regexish in r"[\\()\[\]{}?*+|^$.ab0-9:,PpQEdwbBxkiUmsz<>=!-]{0,16}",
            anything in ".{0,16}",
            room in ".{0,12}",
        ) {
            for key in [regexish, anything] {
                let p = Permissions::from_claim(&serde_json::json!({ key.clone(): {"publish": true} })).unwrap();
                let decided = p.decide(&room).publish;
                // A key that can never match must say so to policies, and vice versa.
                if decided {
                    prop_assert!(pattern_compiles(&key).is_ok());
                }
            }
        }
    }
}
