//! The [`GroupStore`] trait and the record it keeps per group.
//!
//! A store keeps two views of the same facts and changes them together: the
//! group records (id, title, creator, members) and an index from a user to
//! the groups they belong to, so that minting a token and checking a
//! subscribe are one lookup each, never a scan. Groups belong to a channel:
//! the same id names different groups on two channels.

use serde::{Deserialize, Serialize};

/// One group as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// `[a-z0-9_]{1,32}`; the room is `observable-group-<id>`.
    pub id: String,
    pub title: String,
    /// The member who created it; `None` when an operator did (HTTP Basic).
    pub creator: Option<String>,
    /// Usernames in the order they joined, each once.
    pub members: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
}

impl GroupRecord {
    pub fn has_member(&self, user: &str) -> bool {
        self.members.iter().any(|m| m == user)
    }
}

/// A store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupStoreError {
    /// `create` found the id already used on the channel.
    #[error("group id taken")]
    Taken,
    /// `save` found another record than the `previous` it was given: someone
    /// else (another node) changed the group meanwhile; nothing was written.
    #[error("group changed meanwhile")]
    Changed,
    /// The backend failed (I/O, corruption).
    #[error("groups store: {0}")]
    Backend(String),
}

/// Groups and their members. Every method is one short, synchronous operation;
/// each change is durable when it returns.
///
/// The store does not check limits or permissions (the service does, and
/// serializes changes), only that ids stay unique and that the per-user index
/// always agrees with the records.
pub trait GroupStore: Send + Sync {
    /// Stores a new group; [`GroupStoreError::Taken`] when its id is in use.
    fn create(&self, channel: &str, group: &GroupRecord) -> Result<(), GroupStoreError>;
    /// Replaces `previous`, the record as read, by `group` (same id), adding
    /// and removing index entries for the members that changed; compare and
    /// set: [`GroupStoreError::Changed`] and no write when the stored record
    /// is no longer `previous`.
    fn save(&self, channel: &str, previous: &GroupRecord, group: &GroupRecord) -> Result<(), GroupStoreError>;
    fn group(&self, channel: &str, id: &str) -> Result<Option<GroupRecord>, GroupStoreError>;
    /// Every group of the channel, in id order.
    fn groups(&self, channel: &str) -> Result<Vec<GroupRecord>, GroupStoreError>;
    /// The ids of the groups `user` belongs to, in id order.
    fn groups_of(&self, channel: &str, user: &str) -> Result<Vec<String>, GroupStoreError>;
    fn is_member(&self, channel: &str, id: &str, user: &str) -> Result<bool, GroupStoreError>;
}

/// The behaviour every [`GroupStore`] must have, as test cases each backend
/// runs against itself (next to its code).
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    fn group(id: &str, members: &[&str]) -> GroupRecord {
        GroupRecord {
            id: id.into(),
            title: id.to_uppercase(),
            creator: members.first().map(|m| (*m).to_owned()),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            created_at: 1,
        }
    }

    pub(crate) fn an_empty_store_answers(store: &dyn GroupStore) {
        assert_eq!(store.group("c", "g").unwrap(), None);
        assert!(store.groups("c").unwrap().is_empty());
        assert!(store.groups_of("c", "alice").unwrap().is_empty());
        assert!(!store.is_member("c", "g", "alice").unwrap());
    }

    pub(crate) fn records_and_the_index_change_together_per_channel(store: &dyn GroupStore) {
        store.create("c", &group("team", &["alice", "bob"])).unwrap();
        store.create("c", &group("ops", &["alice"])).unwrap();
        store.create("d", &group("team", &["carol"])).unwrap();
        assert_eq!(
            store.create("c", &group("team", &["carol"])),
            Err(GroupStoreError::Taken)
        );
        assert!(
            !store.is_member("c", "team", "carol").unwrap(),
            "a refused create indexes nobody"
        );
        let ids: Vec<String> = store.groups("c").unwrap().into_iter().map(|g| g.id).collect();
        assert_eq!(ids, ["ops", "team"]);
        assert_eq!(store.groups_of("c", "alice").unwrap(), ["ops", "team"]);
        assert_eq!(store.groups_of("d", "alice").unwrap(), Vec::<String>::new());
        assert!(store.is_member("d", "team", "carol").unwrap());
        assert!(!store.is_member("c", "team", "carol").unwrap());

        let read = store.group("c", "team").unwrap().unwrap();
        let mut team = read.clone();
        team.members = vec!["alice".into(), "carol".into()];
        store.save("c", &read, &team).unwrap();
        assert_eq!(store.group("c", "team").unwrap(), Some(team.clone()));
        assert!(!store.is_member("c", "team", "bob").unwrap());
        assert!(store.groups_of("c", "bob").unwrap().is_empty());
        assert_eq!(store.groups_of("c", "carol").unwrap(), ["team"]);
        // The other channel's group of the same id is untouched.
        assert_eq!(store.group("d", "team").unwrap().unwrap().members, ["carol"]);

        // Down to no members: nobody is indexed, the group stays.
        let read = team.clone();
        team.members.clear();
        store.save("c", &read, &team).unwrap();
        assert_eq!(store.groups_of("c", "alice").unwrap(), ["ops"]);
        assert!(!store.is_member("c", "team", "carol").unwrap());
        assert_eq!(store.group("c", "team").unwrap(), Some(team));
    }

    pub(crate) fn a_save_over_a_changed_record_writes_nothing(store: &dyn GroupStore) {
        let read = group("team", &["alice", "bob"]);
        store.create("c", &read).unwrap();
        let mut theirs = read.clone();
        theirs.members.push("carol".into());
        store.save("c", &read, &theirs).unwrap();
        // A second writer that read before the first saved.
        let mut mine = read.clone();
        mine.members.retain(|m| m != "bob");
        assert_eq!(store.save("c", &read, &mine), Err(GroupStoreError::Changed));
        assert_eq!(store.group("c", "team").unwrap(), Some(theirs.clone()));
        assert!(store.is_member("c", "team", "bob").unwrap());
        assert!(store.is_member("c", "team", "carol").unwrap());
        // Nor over a record that is not there.
        let ghost = group("ghost", &["alice"]);
        assert_eq!(store.save("c", &ghost, &ghost), Err(GroupStoreError::Changed));
        assert_eq!(store.group("c", "ghost").unwrap(), None);
        assert_eq!(store.groups_of("c", "alice").unwrap(), ["team"]);
    }

    /// Every case on a fresh store from `fresh`.
    pub(crate) fn all(fresh: impl Fn() -> Box<dyn GroupStore>) {
        an_empty_store_answers(&*fresh());
        records_and_the_index_change_together_per_channel(&*fresh());
        a_save_over_a_changed_record_writes_nothing(&*fresh());
    }
}
