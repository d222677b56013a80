//! Group rooms (PROTOCOL.md §11.1): groups of members, their limits, and the
//! membership check that guards every `observable-group-<id>` room.
//!
//! [`Groups`] is the one service behind the `/api/{c}/groups` endpoints, the
//! group rules of minted tokens and the session's room check. It owns the
//! rules (what an id and a title are, who may add and remove whom, how big
//! groups get) and keeps the records in a [`GroupStore`]: the embedded
//! database shared with the engine and the accounts.
//!
//! # Who may enter a group room
//!
//! Two checks, both required:
//! - **The token.** `POST /auth` renders the policy's `{group}` rules once per
//!   group of the member (see [`crate::policy`]), so a member's token says
//!   "publish, subscribe, history 100 on `observable-group-<id>`" for each of
//!   their groups, like every other permission.
//! - **The server's membership.** For a room named `observable-group-<id>`,
//!   a connection may subscribe or publish only while its token's `data.user`
//!   is a member of group `<id>` of its channel *now* ([`Groups::is_member`],
//!   one index read, on every subscribe and publish to such a room and on
//!   re-authentication). A token minted before a removal still names the
//!   room, but it no longer opens it: tokens carry no membership version, the
//!   store is the truth. This holds on channels without `require_auth` too:
//!   the `observable-group-` names are reserved for groups.
//!
//! # Live changes
//!
//! - **Added**: the server publishes `{"type":"group_added","group":<id>,"title":<title>}`
//!   to the user's `inbox-<user>` room (also to every member when a group is
//!   created). The page then fetches a fresh token, which carries the new
//!   rule, and authenticates again on the same socket.
//! - **Removed**: the user's connections in the group room are evicted at once
//!   by the broker (each gets `{"error":"Unauthorized","room":…}`, the others a
//!   leave event), and `{"type":"group_removed","group":<id>}` goes to their
//!   inbox. The membership check keeps them out afterwards whatever token they
//!   present.
//!
//! Store calls are synchronous (changes fsync); the HTTP layer runs changes on
//! the blocking pool.
//!
//! # Layout
//! - [`store`]: the [`GroupStore`] trait and [`GroupRecord`].
//! - [`redb_store`]: the store in the embedded database.

pub mod redb_store;
pub(crate) mod redis_store;
pub mod store;

use std::sync::{Arc, Mutex};

use serde_json::json;
use serde_json::value::RawValue;

pub use self::store::{GroupRecord, GroupStore, GroupStoreError};
use crate::accounts::names;
use crate::accounts::{AccountStore, StoreError};
use crate::config::GroupsConfig;
use crate::token::unix_now;

/// The room of group `<id>` is `observable-group-<id>` (with presence).
pub const ROOM_PREFIX: &str = "observable-group-";
/// How often a change is decided again when another node changed the same
/// group between read and save (each retry means a change landed: progress).
const UPDATE_ATTEMPTS: usize = 8;
/// Longest group id, in characters of `[a-z0-9_]`.
const MAX_ID_CHARS: usize = 32;

/// The room of a group.
pub fn room_name(id: &str) -> String {
    format!("{ROOM_PREFIX}{id}")
}

/// The group a room belongs to: what follows `observable-group-`, whether or
/// not it is a valid id (an invalid one names no group, so nobody may enter).
pub fn group_of_room(room: &str) -> Option<&str> {
    room.strip_prefix(ROOM_PREFIX)
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    /// HTTP Basic with the channel's id and secret: sees and manages every group.
    Operator,
    /// A logged-in member (the session cookie).
    Member(&'a str),
}

/// Why a group request was refused; the texts are what the client sees.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("Missing id")]
    MissingId,
    #[error("Invalid id: use 1 to 32 characters of a-z, 0-9 and _")]
    InvalidId,
    #[error("Missing title")]
    MissingTitle,
    #[error("Invalid title: use 1 to {0} characters, no control or invisible characters")]
    InvalidTitle(usize),
    #[error("Invalid members: give a list of usernames")]
    InvalidMembers,
    #[error("Missing user")]
    MissingUser,
    #[error("Invalid user: use 3 to 32 characters of a-z, 0-9 and _")]
    InvalidUser,
    #[error("Too many members: a group has at most {0}")]
    TooManyMembers(usize),
    #[error("Too many groups: {user} is already in {max}")]
    TooManyGroups { user: String, max: usize },
    #[error("Group id taken")]
    Taken,
    #[error("Unknown group")]
    UnknownGroup,
    #[error("Unknown user {0}")]
    UnknownUser(String),
    #[error("{0} is not a member")]
    NotAMember(String),
    #[error("Not a member of this group")]
    Forbidden,
    #[error("Only the group's creator may remove other members")]
    NotCreator,
    #[error(transparent)]
    Store(#[from] GroupStoreError),
    #[error(transparent)]
    Users(#[from] StoreError),
}

/// What an add did.
#[derive(Debug)]
pub struct Added {
    pub group: GroupRecord,
    /// False when the user was a member already (nothing changed).
    pub new: bool,
}

/// The groups service of one server.
pub struct Groups {
    store: Arc<dyn GroupStore>,
    users: Arc<dyn AccountStore>,
    limits: GroupsConfig,
    /// Serializes changes, so that limit checks and read-modify-write are
    /// exact: a full group cannot be joined twice by two racing requests.
    writes: Mutex<()>,
}

impl Groups {
    /// The service with `limits`, keeping groups in `store` and checking
    /// usernames against `users`.
    pub fn new(limits: GroupsConfig, store: Arc<dyn GroupStore>, users: Arc<dyn AccountStore>) -> Groups {
        Groups {
            store,
            users,
            limits,
            writes: Mutex::new(()),
        }
    }

    /// `POST /api/{c}/groups`: a new group with `members` (and its creator).
    pub fn create(
        &self,
        channel: &str,
        actor: Actor<'_>,
        id: &str,
        title: &str,
        members: &[String],
    ) -> Result<GroupRecord, GroupError> {
        check_id(id)?;
        let title = self.check_title(title)?;
        let mut all: Vec<String> = Vec::with_capacity(members.len() + 1);
        if let Actor::Member(creator) = actor {
            all.push(creator.to_owned());
        }
        for member in members {
            let member = names::normalize_username(member).map_err(|_| GroupError::InvalidMembers)?;
            if !all.contains(&member) {
                all.push(member);
            }
        }
        if all.len() > self.limits.max_members_per_group {
            return Err(GroupError::TooManyMembers(self.limits.max_members_per_group));
        }
        for member in &all {
            self.require_user(member)?;
        }
        let _writing = self.lock();
        if self.store.group(channel, id)?.is_some() {
            return Err(GroupError::Taken);
        }
        for member in &all {
            self.require_room_for_one_more(channel, member)?;
        }
        let group = GroupRecord {
            id: id.to_owned(),
            title,
            creator: match actor {
                Actor::Member(creator) => Some(creator.to_owned()),
                Actor::Operator => None,
            },
            members: all,
            created_at: unix_now(),
        };
        self.store.create(channel, &group).map_err(|error| match error {
            GroupStoreError::Taken => GroupError::Taken,
            other => GroupError::Store(other),
        })?;
        Ok(group)
    }

    /// `GET /api/{c}/groups`: the member's groups, or every group for the operator.
    pub fn list(&self, channel: &str, actor: Actor<'_>) -> Result<Vec<GroupRecord>, GroupError> {
        match actor {
            Actor::Operator => Ok(self.store.groups(channel)?),
            Actor::Member(user) => {
                let mut groups = Vec::new();
                for id in self.store.groups_of(channel, user)? {
                    groups.extend(self.store.group(channel, &id)?);
                }
                Ok(groups)
            }
        }
    }

    /// `POST /api/{c}/groups/{id}/members`: any member (or the operator) adds `user`.
    pub fn add_member(&self, channel: &str, actor: Actor<'_>, id: &str, user: &str) -> Result<Added, GroupError> {
        let user = match user {
            "" => return Err(GroupError::MissingUser),
            user => names::normalize_username(user).map_err(|_| GroupError::InvalidUser)?,
        };
        let mut new = false;
        let group = self.update(channel, id, |group| {
            if let Actor::Member(caller) = actor
                && !group.has_member(caller)
            {
                return Err(GroupError::Forbidden);
            }
            self.require_user(&user)?;
            new = !group.has_member(&user);
            if !new {
                return Ok(false);
            }
            if group.members.len() >= self.limits.max_members_per_group {
                return Err(GroupError::TooManyMembers(self.limits.max_members_per_group));
            }
            self.require_room_for_one_more(channel, &user)?;
            group.members.push(user.clone());
            Ok(true)
        })?;
        Ok(Added { group, new })
    }

    /// `DELETE /api/{c}/groups/{id}/members/{user}`: the creator (while a
    /// member) or the operator removes anyone; a member removes themself.
    pub fn remove_member(
        &self,
        channel: &str,
        actor: Actor<'_>,
        id: &str,
        user: &str,
    ) -> Result<GroupRecord, GroupError> {
        self.update(channel, id, |group| {
            if let Actor::Member(caller) = actor {
                if !group.has_member(caller) {
                    return Err(GroupError::Forbidden);
                }
                if caller != user && group.creator.as_deref() != Some(caller) {
                    return Err(GroupError::NotCreator);
                }
            }
            // The path segment is compared as given: a username in another case
            // or an impossible one is simply not a member.
            let before = group.members.len();
            group.members.retain(|member| member != user);
            if group.members.len() == before {
                return Err(GroupError::NotAMember(user.to_owned()));
            }
            Ok(true)
        })
    }

    /// Takes `user` out of every group they belong to on `channels`, for
    /// `rookery user remove`: a removed account leaves no memberships behind
    /// (a new account of the same name starts in no group). Returns how many
    /// groups they left. Their live connections are not evicted from here
    /// (the command runs outside the server); the membership check refuses
    /// them from then on.
    pub fn remove_user_everywhere(&self, channels: &[&str], user: &str) -> Result<usize, GroupError> {
        let mut left = 0;
        for channel in channels {
            for id in self.store.groups_of(channel, user)? {
                let mut changed = false;
                let result = self.update(channel, &id, |group| {
                    let before = group.members.len();
                    group.members.retain(|member| member != user);
                    changed = group.members.len() != before;
                    Ok(changed)
                });
                match result {
                    Ok(_) => left += usize::from(changed),
                    Err(GroupError::UnknownGroup) => {}
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(left)
    }

    /// The ids of `user`'s groups on `channel`, for the token's `{group}` rules.
    pub fn groups_of(&self, channel: &str, user: &str) -> Result<Vec<String>, GroupError> {
        Ok(self.store.groups_of(channel, user)?)
    }

    /// Whether `user` is a member of group `id` now. A store failure answers
    /// false: the room stays closed rather than open to a removed member.
    pub fn is_member(&self, channel: &str, id: &str, user: &str) -> bool {
        self.store.is_member(channel, id, user).unwrap_or_else(|error| {
            tracing::error!(%error, "group membership check failed; refusing");
            false
        })
    }

    /// Reads group `id`, lets `change` edit it (`Ok(false)`: nothing to
    /// save) and saves it only if the stored record is still the one read.
    /// Changes of this node are serialized by the lock; one made meanwhile on
    /// another node of a cluster makes the save fail with `Changed`, and the
    /// change is decided again on the fresh record, so no update is lost and
    /// the checks see what is stored.
    fn update(
        &self,
        channel: &str,
        id: &str,
        mut change: impl FnMut(&mut GroupRecord) -> Result<bool, GroupError>,
    ) -> Result<GroupRecord, GroupError> {
        let _writing = self.lock();
        for _ in 0..UPDATE_ATTEMPTS {
            let previous = self.existing(channel, id)?;
            let mut group = previous.clone();
            if !change(&mut group)? {
                return Ok(group);
            }
            match self.store.save(channel, &previous, &group) {
                Err(GroupStoreError::Changed) => continue,
                saved => return saved.map(|()| group).map_err(GroupError::from),
            }
        }
        Err(GroupStoreError::Changed.into())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn existing(&self, channel: &str, id: &str) -> Result<GroupRecord, GroupError> {
        self.store.group(channel, id)?.ok_or(GroupError::UnknownGroup)
    }

    fn require_user(&self, user: &str) -> Result<(), GroupError> {
        match self.users.user(user)? {
            Some(_) => Ok(()),
            None => Err(GroupError::UnknownUser(user.to_owned())),
        }
    }

    fn require_room_for_one_more(&self, channel: &str, user: &str) -> Result<(), GroupError> {
        let max = self.limits.max_groups_per_user;
        if self.store.groups_of(channel, user)?.len() >= max {
            return Err(GroupError::TooManyGroups {
                user: user.to_owned(),
                max,
            });
        }
        Ok(())
    }

    /// Trims and validates a title like a display name (PROTOCOL.md §8), with
    /// the configured length.
    fn check_title(&self, title: &str) -> Result<String, GroupError> {
        let max = self.limits.max_title_chars;
        let title = title.trim();
        if title.is_empty() {
            return Err(GroupError::MissingTitle);
        }
        let refused = |c: char| c.is_control() || names::is_invisible(c);
        if title.chars().count() > max || title.chars().any(refused) {
            return Err(GroupError::InvalidTitle(max));
        }
        Ok(title.to_owned())
    }
}

fn check_id(id: &str) -> Result<(), GroupError> {
    if id.is_empty() {
        return Err(GroupError::MissingId);
    }
    let valid = id.len() <= MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid { Ok(()) } else { Err(GroupError::InvalidId) }
}

/// The inbox message telling a member they were added: `{"type":"group_added","group","title"}`.
pub fn added_notice(group: &GroupRecord) -> Box<RawValue> {
    notice(json!({ "type": "group_added", "group": group.id, "title": group.title }))
}

/// The inbox message telling a member they were removed: `{"type":"group_removed","group"}`.
pub fn removed_notice(id: &str) -> Box<RawValue> {
    notice(json!({ "type": "group_removed", "group": id }))
}

fn notice(value: serde_json::Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(&value).expect("a JSON object of strings serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{MemoryAccountStore, UserRecord};

    fn groups(limits: GroupsConfig) -> Groups {
        Groups::new(limits, memory_store(), users())
    }

    fn memory_store() -> Arc<dyn GroupStore> {
        Arc::new(redb_store::RedbGroupStore::new(
            crate::test_support::in_memory_database(),
        ))
    }

    fn users() -> Arc<dyn AccountStore> {
        let users = MemoryAccountStore::new();
        for name in ["alice", "bob", "carol", "dave"] {
            users
                .create_user(&UserRecord {
                    username: name.into(),
                    display_name: name.into(),
                    password_hash: String::new(),
                    created_at: 0,
                })
                .unwrap();
        }
        Arc::new(users)
    }

    /// A store whose first `save` first runs `meanwhile`: another node's
    /// change landing between this node's read and its save.
    struct Interleaved {
        inner: Arc<dyn GroupStore>,
        meanwhile: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl GroupStore for Interleaved {
        fn create(&self, channel: &str, group: &GroupRecord) -> Result<(), GroupStoreError> {
            self.inner.create(channel, group)
        }
        fn save(&self, channel: &str, previous: &GroupRecord, group: &GroupRecord) -> Result<(), GroupStoreError> {
            let meanwhile = self.meanwhile.lock().unwrap().take();
            if let Some(change) = meanwhile {
                change();
            }
            self.inner.save(channel, previous, group)
        }
        fn group(&self, channel: &str, id: &str) -> Result<Option<GroupRecord>, GroupStoreError> {
            self.inner.group(channel, id)
        }
        fn groups(&self, channel: &str) -> Result<Vec<GroupRecord>, GroupStoreError> {
            self.inner.groups(channel)
        }
        fn groups_of(&self, channel: &str, user: &str) -> Result<Vec<String>, GroupStoreError> {
            self.inner.groups_of(channel, user)
        }
        fn is_member(&self, channel: &str, id: &str, user: &str) -> Result<bool, GroupStoreError> {
            self.inner.is_member(channel, id, user)
        }
    }

    #[test]
    fn a_change_made_meanwhile_on_another_node_is_not_lost() {
        let (store, users) = (memory_store(), users());
        let other = Groups::new(GroupsConfig::default(), store.clone(), users.clone());
        other.create("c", ALICE, "team", "Team", &[]).unwrap();
        let meanwhile = move || {
            other.add_member("c", ALICE, "team", "bob").unwrap();
        };
        let interleaved = Interleaved {
            inner: store,
            meanwhile: Mutex::new(Some(Box::new(meanwhile))),
        };
        let this = Groups::new(GroupsConfig::default(), Arc::new(interleaved), users);
        let added = this.add_member("c", ALICE, "team", "carol").unwrap();
        assert_eq!(
            added.group.members,
            ["alice", "bob", "carol"],
            "decided again on the fresh record"
        );
        assert!(this.is_member("c", "team", "bob") && this.is_member("c", "team", "carol"));
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    const ALICE: Actor<'static> = Actor::Member("alice");

    #[test]
    fn the_creator_is_a_member_and_members_are_lowered_and_unique() {
        let groups = groups(GroupsConfig::default());
        let group = groups
            .create("c", ALICE, "team", "  The Team ", &names(&["Bob", "bob", "alice"]))
            .unwrap();
        assert_eq!(
            (group.title.as_str(), group.creator.as_deref()),
            ("The Team", Some("alice"))
        );
        assert_eq!(group.members, ["alice", "bob"]);
        assert!(groups.is_member("c", "team", "bob"));
        assert!(!groups.is_member("other", "team", "bob"));
        assert_eq!(groups.groups_of("c", "alice").unwrap(), ["team"]);
    }

    #[test]
    fn fields_are_checked_with_their_names() {
        let groups = groups(GroupsConfig {
            max_title_chars: 5,
            ..GroupsConfig::default()
        });
        let create = |id: &str, title: &str, members: &[&str]| {
            groups
                .create("c", ALICE, id, title, &names(members))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(create("", "t", &[]), "Missing id");
        assert_eq!(create("Team", "t", &[]), GroupError::InvalidId.to_string());
        assert_eq!(create(&"a".repeat(33), "t", &[]), GroupError::InvalidId.to_string());
        assert_eq!(create("t", " ", &[]), "Missing title");
        assert_eq!(
            create("t", "toolong", &[]),
            "Invalid title: use 1 to 5 characters, no control or invisible characters"
        );
        assert_eq!(create("t", "a\u{202E}b", &[]), GroupError::InvalidTitle(5).to_string());
        assert_eq!(
            create("t", "ok", &["no-pe"]),
            "Invalid members: give a list of usernames"
        );
        assert_eq!(create("t", "ok", &["zed"]), "Unknown user zed");
        groups.create("c", ALICE, "t", "ok", &[]).unwrap();
        assert_eq!(create("t", "ok", &[]), "Group id taken");
    }

    #[test]
    fn limits_count_members_and_groups_per_user() {
        let groups = groups(GroupsConfig {
            max_groups_per_user: 2,
            max_members_per_group: 3,
            max_title_chars: 64,
        });
        let error = groups
            .create("c", ALICE, "big", "Big", &names(&["bob", "carol", "dave"]))
            .unwrap_err();
        assert_eq!(error.to_string(), "Too many members: a group has at most 3");
        groups
            .create("c", ALICE, "g1", "One", &names(&["bob", "carol"]))
            .unwrap();
        let error = groups.add_member("c", ALICE, "g1", "dave").unwrap_err();
        assert!(matches!(error, GroupError::TooManyMembers(3)), "{error}");
        groups.create("c", ALICE, "g2", "Two", &[]).unwrap();
        let error = groups.create("c", Actor::Member("bob"), "g3", "Three", &names(&["alice"]));
        assert_eq!(error.unwrap_err().to_string(), "Too many groups: alice is already in 2");
        // Groups of another channel do not count.
        groups.create("d", ALICE, "g1", "One", &[]).unwrap();
    }

    #[test]
    fn members_add_and_the_creator_removes_and_anyone_leaves() {
        let groups = groups(GroupsConfig::default());
        groups.create("c", ALICE, "team", "Team", &names(&["bob"])).unwrap();
        let bob = Actor::Member("bob");
        let carol = Actor::Member("carol");
        assert!(matches!(
            groups.add_member("c", carol, "team", "dave"),
            Err(GroupError::Forbidden)
        ));
        assert!(matches!(
            groups.add_member("c", bob, "nope", "dave"),
            Err(GroupError::UnknownGroup)
        ));
        assert!(matches!(
            groups.add_member("c", bob, "team", "zed"),
            Err(GroupError::UnknownUser(_))
        ));
        assert!(matches!(
            groups.add_member("c", bob, "team", ""),
            Err(GroupError::MissingUser)
        ));
        assert!(groups.add_member("c", bob, "team", "Carol").unwrap().new);
        assert!(!groups.add_member("c", bob, "team", "carol").unwrap().new);
        // Bob is no creator: he may leave, not remove Carol.
        assert!(matches!(
            groups.remove_member("c", bob, "team", "carol"),
            Err(GroupError::NotCreator)
        ));
        assert!(matches!(
            groups.remove_member("c", Actor::Member("dave"), "team", "dave"),
            Err(GroupError::Forbidden)
        ));
        groups.remove_member("c", bob, "team", "bob").unwrap();
        groups.remove_member("c", ALICE, "team", "carol").unwrap();
        assert!(matches!(
            groups.remove_member("c", ALICE, "team", "carol"),
            Err(GroupError::NotAMember(_))
        ));
        groups.add_member("c", Actor::Operator, "team", "dave").unwrap();
        let group = groups.remove_member("c", Actor::Operator, "team", "alice").unwrap();
        assert_eq!(group.members, ["dave"]);
        assert!(!groups.is_member("c", "team", "alice"));
        assert_eq!(groups.list("c", Actor::Member("dave")).unwrap()[0].id, "team");
        assert!(groups.list("c", ALICE).unwrap().is_empty());
        assert_eq!(groups.list("c", Actor::Operator).unwrap().len(), 1);
    }

    #[test]
    fn a_removed_user_leaves_every_group_on_every_channel() {
        let groups = groups(GroupsConfig::default());
        groups
            .create("c", ALICE, "team", "Team", &names(&["bob", "carol"]))
            .unwrap();
        groups.create("c", ALICE, "ops", "Ops", &names(&["bob"])).unwrap();
        groups.create("d", Actor::Member("bob"), "team", "Team", &[]).unwrap();
        groups.create("c", ALICE, "solo", "Solo", &[]).unwrap();
        assert_eq!(groups.remove_user_everywhere(&["c", "d"], "bob").unwrap(), 3);
        assert!(groups.groups_of("c", "bob").unwrap().is_empty());
        assert!(groups.groups_of("d", "bob").unwrap().is_empty());
        assert!(!groups.is_member("c", "team", "bob"));
        let team = groups
            .list("c", ALICE)
            .unwrap()
            .into_iter()
            .find(|g| g.id == "team")
            .unwrap();
        assert_eq!(team.members, ["alice", "carol"], "the others stay, in order");
        assert_eq!(groups.remove_user_everywhere(&["c", "d"], "bob").unwrap(), 0);
    }

    #[test]
    fn group_rooms_are_recognized_by_their_prefix() {
        assert_eq!(room_name("team"), "observable-group-team");
        assert_eq!(group_of_room("observable-group-team"), Some("team"));
        assert_eq!(group_of_room("observable-room"), None);
        let notice = added_notice(&GroupRecord {
            id: "team".into(),
            title: "Team".into(),
            creator: None,
            members: Vec::new(),
            created_at: 0,
        });
        assert_eq!(notice.get(), r#"{"type":"group_added","group":"team","title":"Team"}"#);
        assert_eq!(
            removed_notice("team").get(),
            r#"{"type":"group_removed","group":"team"}"#
        );
    }
}
