//! Token policies: `policies/*.toml` turned into per-client `permissions` claims.
//!
//! A policy is an ordered list of rules, each a room regex that may contain the
//! `{client}` placeholder. Rendering replaces the placeholder with the
//! **regex-escaped** client id and keeps the rule order, because the last
//! matching key of a token decides (see [`crate::permissions`]). Every rule is
//! rendered for a sample id and compiled when the policy loads, so a broken
//! rule stops the server at startup instead of silently denying users later.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::permissions::pattern_compiles;

/// The placeholder for the client id in a rule's room regex.
pub const CLIENT_PLACEHOLDER: &str = "{client}";
/// The id used to check that every rendered rule compiles.
pub const SAMPLE_CLIENT_ID: &str = "r3k:SampleClient0000";

/// Default token lifetime when a policy names none: the tutorial's 3 minutes.
const DEFAULT_TTL_SECONDS: u64 = 180;

/// Why a policy file was refused; names the file, the rule and the reason.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {file}: {reason}")]
    Read { file: PathBuf, reason: String },
    #[error("policy {file}: {reason}")]
    Parse { file: PathBuf, reason: String },
    #[error("policy {file}, rule {rule} (room {room:?}): {reason}")]
    Rule {
        file: PathBuf,
        rule: usize,
        room: String,
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    ttl_seconds: Option<u64>,
    #[serde(default, rename = "rule")]
    rules: Vec<Rule>,
}

/// One rule of a policy, as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Room regex, possibly with the `{client}` placeholder.
    pub room: String,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
    #[serde(default)]
    pub history: u32,
}

/// A loaded, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub ttl_seconds: u64,
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Parses and validates one policy from TOML text; `file` is only used in errors.
    pub fn parse(name: &str, text: &str, file: &Path) -> Result<Policy, PolicyError> {
        let parsed: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Parse {
            file: file.to_owned(),
            reason: e.to_string(),
        })?;
        if parsed.rules.is_empty() {
            return Err(PolicyError::Parse {
                file: file.to_owned(),
                reason: "no [[rule]] entries: a token from it would allow nothing".into(),
            });
        }
        if parsed.ttl_seconds == Some(0) {
            return Err(PolicyError::Parse {
                file: file.to_owned(),
                reason: "ttl_seconds must be at least 1".into(),
            });
        }
        let policy = Policy {
            name: name.to_owned(),
            ttl_seconds: parsed.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS),
            rules: parsed.rules,
        };
        for (index, rule) in policy.rules.iter().enumerate() {
            let rendered = render_room(&rule.room, SAMPLE_CLIENT_ID);
            pattern_compiles(&rendered).map_err(|reason| PolicyError::Rule {
                file: file.to_owned(),
                rule: index + 1,
                room: rule.room.clone(),
                reason: format!("does not compile: {reason}"),
            })?;
        }
        Ok(policy)
    }

    /// The `permissions` claim for `client_id`, in rule order.
    pub fn render(&self, client_id: &str) -> Map<String, Value> {
        self.rules
            .iter()
            .map(|rule| {
                let permission = json!({
                    "publish": rule.publish,
                    "subscribe": rule.subscribe,
                    "history": rule.history,
                });
                (render_room(&rule.room, client_id), permission)
            })
            .collect()
    }
}

/// Fills the `{client}` placeholder with the regex-escaped client id.
fn render_room(template: &str, client_id: &str) -> String {
    template.replace(CLIENT_PLACEHOLDER, &regex::escape(client_id))
}

/// Every policy in a directory, by file stem (`policies/default.toml` is `default`).
#[derive(Debug, Default, Clone)]
pub struct PolicySet {
    policies: HashMap<String, Arc<Policy>>,
}

impl PolicySet {
    /// Loads and validates every `*.toml` file in `dir`.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
        let read_error = |reason: String| PolicyError::Read {
            file: dir.to_owned(),
            reason,
        };
        let mut policies = HashMap::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| read_error(e.to_string()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
            let text = std::fs::read_to_string(&path).map_err(|e| PolicyError::Read {
                file: path.clone(),
                reason: e.to_string(),
            })?;
            let policy = Policy::parse(&name, &text, &path)?;
            policies.insert(name, Arc::new(policy));
        }
        Ok(PolicySet { policies })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Policy>> {
        self.policies.get(name).cloned()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::Permissions;

    const DEFAULT: &str = include_str!("../policies/default.toml");

    fn default_policy() -> Policy {
        Policy::parse("default", DEFAULT, Path::new("policies/default.toml")).unwrap()
    }

    #[test]
    fn default_policy_reproduces_the_tutorial() {
        let policy = default_policy();
        assert_eq!(policy.ttl_seconds, 180);
        let claim = policy.render("r3k:abc");
        let keys: Vec<&str> = claim.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "^observable-room$",
                "^private-room-(?!r3k:abc$).+$",
                "^private-room-r3k:abc$"
            ]
        );
        assert_eq!(
            claim["^observable-room$"],
            json!({"publish": true, "subscribe": true, "history": 100})
        );
        assert_eq!(
            claim["^private-room-(?!r3k:abc$).+$"],
            json!({"publish": true, "subscribe": false, "history": 0})
        );
        assert_eq!(
            claim["^private-room-r3k:abc$"],
            json!({"publish": false, "subscribe": true, "history": 100})
        );
    }

    #[test]
    fn client_ids_with_metacharacters_are_escaped() {
        let policy = default_policy();
        let claim = policy.render("a.b+c");
        assert!(claim.contains_key(r"^private-room-a\.b\+c$"));
        let permissions = Permissions::from_claim(&Value::Object(claim)).unwrap();
        assert!(permissions.decide("private-room-a.b+c").subscribe);
        // Unescaped, `.` would have matched any character here.
        assert!(!permissions.decide("private-room-aXb+c").subscribe);
        assert!(permissions.decide("private-room-aXb+c").publish);
    }

    #[test]
    fn broken_rules_are_refused_with_file_and_rule() {
        let text = "[[rule]]\nroom = \"^ok$\"\n[[rule]]\nroom = \"^bad([\"\n";
        let err = Policy::parse("p", text, Path::new("policies/p.toml")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("policies/p.toml"), "{message}");
        assert!(message.contains("rule 2"), "{message}");
    }

    #[test]
    fn unknown_fields_and_empty_policies_are_refused() {
        let file = Path::new("p.toml");
        assert!(Policy::parse("p", "[[rule]]\nroom = \"a\"\npublsh = true\n", file).is_err());
        assert!(Policy::parse("p", "ttl_seconds = 5\n", file).is_err());
    }

    #[test]
    fn the_repository_policies_all_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let set = PolicySet::load_dir(&dir).unwrap();
        assert!(set.get("default").is_some());
    }
}
