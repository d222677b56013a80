//! Token policies: `policies/*.toml` turned into per-client `permissions` claims.
//!
//! A policy is an ordered list of rules, each a room regex that may contain the
//! placeholders `{client}` (the connection's client id), `{user}` (the
//! logged-in member's username, PROTOCOL.md §11) and `{group}` (one of the
//! member's groups, §11.1). Rendering replaces them with the
//! **regex-escaped** values and keeps the rule order, because the last
//! matching key of a token decides (see [`crate::permissions`]). A rule that
//! uses `{user}` is left out of a guest's token: a guest has no username, and
//! such rules grant what belongs to one person (their conversations, their
//! inbox). A rule that uses `{group}` is rendered **once per group** of the
//! subject, in the subject's group order, at the rule's place; with no groups
//! (guests, members of none) it renders to nothing. Every rule is rendered
//! for a sample subject and compiled when the policy loads, so a broken rule
//! stops the server at startup instead of silently denying users later.
//!
//! A `{group}` rule in a token is necessary but not sufficient: the server
//! also checks membership for group rooms (see [`crate::groups`]), so a token
//! minted before a removal does not keep the room open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::permissions::pattern_compiles;

/// The placeholder for the client id in a rule's room regex.
pub const CLIENT_PLACEHOLDER: &str = "{client}";
/// The placeholder for the member's username.
pub const USER_PLACEHOLDER: &str = "{user}";
/// The placeholder for one of the member's groups; the rule is repeated per group.
pub const GROUP_PLACEHOLDER: &str = "{group}";
/// The id used to check that every rendered rule compiles.
pub const SAMPLE_CLIENT_ID: &str = "r3k:SampleClient0000";
/// The username used to check that every rendered rule compiles.
pub const SAMPLE_USER: &str = "sample_user";
/// The group id used to check that every rendered rule compiles.
pub const SAMPLE_GROUP: &str = "sample_group";

/// Whom a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    pub client: &'a str,
    /// The member's username; `None` for a guest.
    pub user: Option<&'a str>,
    /// Ids of the member's groups (§11.1); empty for a guest.
    pub groups: &'a [String],
}

impl<'a> Subject<'a> {
    /// A connection without an account.
    pub fn guest(client: &'a str) -> Subject<'a> {
        Subject {
            client,
            user: None,
            groups: &[],
        }
    }

    /// A member without groups.
    pub fn member(client: &'a str, user: &'a str) -> Subject<'a> {
        Subject {
            client,
            user: Some(user),
            groups: &[],
        }
    }
}

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
    /// Room regex, possibly with the `{client}` and `{user}` placeholders.
    pub room: String,
    #[serde(default)]
    pub publish: bool,
    #[serde(default)]
    pub subscribe: bool,
    #[serde(default)]
    pub history: u32,
}

impl Rule {
    /// Whether the rule is about a member (and so absent from guest tokens).
    pub fn uses_user(&self) -> bool {
        self.room.contains(USER_PLACEHOLDER)
    }

    /// Whether the rule is repeated once per group of the subject.
    pub fn uses_group(&self) -> bool {
        self.room.contains(GROUP_PLACEHOLDER)
    }
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
            let sample = Subject::member(SAMPLE_CLIENT_ID, SAMPLE_USER);
            let rendered = render_room(&rule.room, &sample, Some(SAMPLE_GROUP));
            pattern_compiles(&rendered).map_err(|reason| PolicyError::Rule {
                file: file.to_owned(),
                rule: index + 1,
                room: rule.room.clone(),
                reason: format!("does not compile: {reason}"),
            })?;
        }
        Ok(policy)
    }

    /// The `permissions` claim for a guest with `client_id`, in rule order.
    pub fn render(&self, client_id: &str) -> Map<String, Value> {
        self.render_for(&Subject::guest(client_id))
    }

    /// The `permissions` claim for `subject`, in rule order; without a user,
    /// the rules that use `{user}` are left out, and a rule that uses
    /// `{group}` becomes one key per group of the subject.
    pub fn render_for(&self, subject: &Subject<'_>) -> Map<String, Value> {
        let mut claim = Map::new();
        for rule in self.rules.iter() {
            if subject.user.is_none() && rule.uses_user() {
                continue;
            }
            let permission = json!({
                "publish": rule.publish,
                "subscribe": rule.subscribe,
                "history": rule.history,
            });
            if rule.uses_group() {
                for group in subject.groups {
                    claim.insert(render_room(&rule.room, subject, Some(group)), permission.clone());
                }
            } else {
                claim.insert(render_room(&rule.room, subject, None), permission);
            }
        }
        claim
    }
}

/// Fills the placeholders with the regex-escaped client id, username and group.
fn render_room(template: &str, subject: &Subject<'_>, group: Option<&str>) -> String {
    let mut room = template.replace(CLIENT_PLACEHOLDER, &regex::escape(subject.client));
    if let Some(user) = subject.user {
        room = room.replace(USER_PLACEHOLDER, &regex::escape(user));
    }
    if let Some(group) = group {
        room = room.replace(GROUP_PLACEHOLDER, &regex::escape(group));
    }
    room
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
        assert!(set.get("chat").is_some());
    }

    const USER_RULES: &str = "[[rule]]\nroom = \"^public$\"\npublish = true\n\
                              [[rule]]\nroom = \"^inbox-{user}$\"\nsubscribe = true\n\
                              [[rule]]\nroom = \"^mixed-{user}-{client}$\"\npublish = true\n";

    #[test]
    fn user_rules_are_rendered_for_members_and_left_out_for_guests() {
        let policy = Policy::parse("p", USER_RULES, Path::new("p.toml")).unwrap();
        let member = policy.render_for(&Subject::member("r3k:a", "alice"));
        let keys: Vec<&str> = member.keys().map(String::as_str).collect();
        assert_eq!(keys, ["^public$", "^inbox-alice$", "^mixed-alice-r3k:a$"]);
        let guest = policy.render("r3k:a");
        assert_eq!(guest.keys().collect::<Vec<_>>(), ["^public$"]);
        assert_eq!(guest, policy.render_for(&Subject::guest("r3k:a")));
    }

    #[test]
    fn usernames_are_regex_escaped() {
        // Registered usernames are [a-z0-9_], but the policy does not rely on it.
        let policy = Policy::parse("p", USER_RULES, Path::new("p.toml")).unwrap();
        let claim = policy.render_for(&Subject::member("c", "a.b"));
        assert!(claim.contains_key(r"^inbox-a\.b$"), "{claim:?}");
    }

    const GROUP_RULES: &str = "[[rule]]\nroom = \"^public$\"\npublish = true\n\
                               [[rule]]\nroom = \"^observable-group-{group}$\"\npublish = true\nsubscribe = true\nhistory = 100\n\
                               [[rule]]\nroom = \"^inbox-{user}$\"\nsubscribe = true\n";

    #[test]
    fn group_rules_are_repeated_per_group_in_place_and_absent_without_groups() {
        let policy = Policy::parse("p", GROUP_RULES, Path::new("p.toml")).unwrap();
        let groups = ["ops".to_owned(), "a.b".to_owned()];
        let claim = policy.render_for(&Subject {
            groups: &groups,
            ..Subject::member("r3k:a", "alice")
        });
        let keys: Vec<&str> = claim.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "^public$",
                "^observable-group-ops$",
                r"^observable-group-a\.b$",
                "^inbox-alice$"
            ]
        );
        assert_eq!(
            claim["^observable-group-ops$"],
            json!({"publish": true, "subscribe": true, "history": 100})
        );
        let permissions = Permissions::from_claim(&Value::Object(claim)).unwrap();
        assert!(permissions.decide("observable-group-ops").subscribe);
        assert!(!permissions.decide("observable-group-opsx").subscribe);
        assert!(!permissions.decide("observable-group-aXb").subscribe);
        let none = policy.render_for(&Subject::member("r3k:a", "alice"));
        assert_eq!(none.keys().collect::<Vec<_>>(), ["^public$", "^inbox-alice$"]);
        assert_eq!(policy.render("r3k:a").keys().collect::<Vec<_>>(), ["^public$"]);
    }

    #[test]
    fn group_rules_are_compiled_at_load() {
        let text = "[[rule]]\nroom = \"^ok$\"\n[[rule]]\nroom = \"^g-{group}(\"\n";
        let err = Policy::parse("p", text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.contains("rule 2"), "{err}");
    }

    #[test]
    fn user_rules_are_compiled_at_load() {
        let text = "[[rule]]\nroom = \"^ok$\"\n[[rule]]\nroom = \"^dm-{user}-(\"\n";
        let err = Policy::parse("p", text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.contains("rule 2"), "{err}");
    }
}
