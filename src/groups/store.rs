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
    /// Replaces an existing group's record, adding and removing index entries
    /// for the members that changed.
    fn save(&self, channel: &str, group: &GroupRecord) -> Result<(), GroupStoreError>;
    fn group(&self, channel: &str, id: &str) -> Result<Option<GroupRecord>, GroupStoreError>;
    /// Every group of the channel, in id order.
    fn groups(&self, channel: &str) -> Result<Vec<GroupRecord>, GroupStoreError>;
    /// The ids of the groups `user` belongs to, in id order.
    fn groups_of(&self, channel: &str, user: &str) -> Result<Vec<String>, GroupStoreError>;
    fn is_member(&self, channel: &str, id: &str, user: &str) -> Result<bool, GroupStoreError>;
}
