//! A token's `permissions` claim turned into ordered room matchers.
//!
//! Owns the matching rules of PROTOCOL.md §6: keys are regexes searched (not
//! anchored) in the room name, evaluated in the order they appear in the
//! token's JSON text, and **the last key that matches decides**. Keys compile
//! with the linear-time `regex` crate when it accepts them; only keys that need
//! look-around or backreferences fall back to `fancy-regex`, with a hard
//! backtracking limit. A key that compiles in neither engine matches nothing.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use serde_json::{Map, Value};

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
}

enum Matcher {
    Linear(regex::Regex),
    Backtracking(fancy_regex::Regex),
    /// The key compiled in neither engine.
    Never,
}

impl Matcher {
    fn compile(pattern: &str) -> Matcher {
        if let Ok(re) = regex::Regex::new(pattern) {
            return Matcher::Linear(re);
        }
        match fancy_regex::RegexBuilder::new(pattern)
            .backtrack_limit(BACKTRACK_LIMIT)
            .build()
        {
            Ok(re) => Matcher::Backtracking(re),
            Err(_) => Matcher::Never,
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

    /// Whether the key compiles in either engine (used to validate policies).
    fn compiles(&self) -> bool {
        !matches!(self, Matcher::Never)
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
    /// Compiles a `permissions` claim. The map must preserve the JSON key order
    /// (serde_json's `preserve_order` feature), because the last match wins.
    pub fn from_claim(claim: &Value) -> Result<Self, InvalidPermissions> {
        let map = claim.as_object().ok_or(InvalidPermissions::NotAnObject)?;
        Self::from_map(map)
    }

    fn from_map(map: &Map<String, Value>) -> Result<Self, InvalidPermissions> {
        let rules = map
            .iter()
            .map(|(key, value)| {
                let decision = parse_rule(value).ok_or_else(|| InvalidPermissions::BadRule(key.clone()))?;
                Ok(Rule {
                    matcher: interned_matcher(key),
                    decision,
                })
            })
            .collect::<Result<_, _>>()?;
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

/// Decisions of one connection, computed once per room and kept until the
/// token changes. Bounded: a client cycling through endless room names resets
/// the cache instead of growing it.
#[derive(Debug)]
pub struct DecisionCache {
    decisions: HashMap<Arc<str>, Decision>,
    limit: usize,
}

impl DecisionCache {
    pub fn new(limit: usize) -> Self {
        DecisionCache {
            decisions: HashMap::new(),
            limit: limit.max(1),
        }
    }

    /// The cached decision for `room`, or `permissions.decide(room)` remembered.
    pub fn decide(&mut self, permissions: &Permissions, room: &str) -> Decision {
        if let Some(decision) = self.decisions.get(room) {
            return *decision;
        }
        let decision = permissions.decide(room);
        if self.decisions.len() >= self.limit {
            self.decisions.clear();
        }
        self.decisions.insert(room.into(), decision);
        decision
    }

    /// Forgets everything (the token changed).
    pub fn clear(&mut self) {
        self.decisions.clear();
    }
}

/// Reports whether `pattern` compiles in either engine; policies use it to
/// refuse rules that could never match at startup.
pub fn pattern_compiles(pattern: &str) -> Result<(), String> {
    if Matcher::compile(pattern).compiles() {
        Ok(())
    } else {
        let linear = regex::Regex::new(pattern).err().map(|e| e.to_string());
        let fancy = fancy_regex::Regex::new(pattern).err().map(|e| e.to_string());
        Err(fancy.or(linear).unwrap_or_default())
    }
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
