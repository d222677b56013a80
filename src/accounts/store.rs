//! Where accounts and sessions are kept: the [`AccountStore`] trait and its
//! in-memory implementation.
//!
//! The trait is deliberately small and synchronous so that a backend is a few
//! lines over a key-value store: users by username, sessions by key, and one
//! "every session of this user" operation. Records are serde types, stored
//! as they are (JSON, bincode…, the backend's choice).
//!
//! Sessions are keyed by a SHA-256 hash of the cookie value, never by the
//! value itself (see [`super::session_key`]): whoever reads the store (a backup
//! of the data directory, a Redis replica) learns no cookie that would log in.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

/// A registered user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// Lower case `[a-z0-9_]{3,32}`; the key.
    pub username: String,
    pub display_name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Unix seconds.
    pub created_at: u64,
}

impl fmt::Debug for UserRecord {
    // The hash is no password, but it has no business in logs either.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("password_hash", &"<redacted>")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A login session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user: String,
    /// Unix seconds; the session is void from then on.
    pub expires_at: u64,
}

/// Why the store could not do it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// `create_user` found the username already registered.
    #[error("username taken")]
    Taken,
    /// No store is available in this configuration.
    #[error("{0}")]
    Unavailable(String),
    /// The backend failed (I/O, corruption, connection).
    #[error("accounts store: {0}")]
    Backend(String),
}

/// Accounts and sessions. Every method is one short, synchronous operation;
/// implementations must be safe to call from several threads at once.
pub trait AccountStore: Send + Sync {
    /// Registers `user` unless its username exists: then `Err(Taken)`, atomically.
    fn create_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Every user, in username order.
    fn users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// Removes a user (not their sessions: see `revoke_sessions_of`); `false` if absent.
    fn remove_user(&self, username: &str) -> Result<bool, StoreError>;
    /// `false` if the user does not exist.
    fn set_password_hash(&self, username: &str, hash: &str) -> Result<bool, StoreError>;
    /// `false` if the user does not exist.
    fn set_display_name(&self, username: &str, name: &str) -> Result<bool, StoreError>;

    /// Stores a session under `key` (a hash of the cookie value). Expired
    /// sessions may be dropped by the backend at any time.
    fn create_session(&self, key: &str, session: &SessionRecord) -> Result<(), StoreError>;
    fn session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError>;
    fn revoke_session(&self, key: &str) -> Result<(), StoreError>;
    /// Revokes every session of `username`; returns how many there were.
    fn revoke_sessions_of(&self, username: &str) -> Result<usize, StoreError>;

    /// Whether a registered user's display name has this [`name_key`](super::names::name_key).
    /// The provided version scans `users()`; a backend with many users keeps
    /// an index and overrides it.
    fn display_name_taken(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .users()?
            .iter()
            .any(|user| super::names::name_key(&user.display_name) == key))
    }
}

/// Accounts in process memory: for tests and `history_store = "memory"`.
/// Everything is lost when the process ends.
#[derive(Default)]
pub struct MemoryAccountStore {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    users: HashMap<String, UserRecord>,
    sessions: HashMap<String, SessionRecord>,
    /// Session count after the last sweep of expired ones.
    swept_at: usize,
}

impl MemoryAccountStore {
    pub fn new() -> MemoryAccountStore {
        MemoryAccountStore::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl AccountStore for MemoryAccountStore {
    fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.users.contains_key(&user.username) {
            return Err(StoreError::Taken);
        }
        state.users.insert(user.username.clone(), user.clone());
        Ok(())
    }

    fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.lock().users.get(username).cloned())
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let mut users: Vec<UserRecord> = self.lock().users.values().cloned().collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    fn remove_user(&self, username: &str) -> Result<bool, StoreError> {
        Ok(self.lock().users.remove(username).is_some())
    }

    fn set_password_hash(&self, username: &str, hash: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .users
            .get_mut(username)
            .map(|user| user.password_hash = hash.to_owned())
            .is_some())
    }

    fn set_display_name(&self, username: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .users
            .get_mut(username)
            .map(|user| user.display_name = name.to_owned())
            .is_some())
    }

    fn create_session(&self, key: &str, session: &SessionRecord) -> Result<(), StoreError> {
        let mut state = self.lock();
        // Sessions that are never used again would pile up: sweep the expired
        // ones whenever the table has doubled since the last sweep (amortized O(1)).
        if state.sessions.len() >= (2 * state.swept_at).max(1024) {
            let now = crate::token::unix_now();
            state.sessions.retain(|_, s| s.expires_at > now);
            state.swept_at = state.sessions.len();
        }
        state.sessions.insert(key.to_owned(), session.clone());
        Ok(())
    }

    fn session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self.lock().sessions.get(key).cloned())
    }

    fn revoke_session(&self, key: &str) -> Result<(), StoreError> {
        self.lock().sessions.remove(key);
        Ok(())
    }

    fn revoke_sessions_of(&self, username: &str) -> Result<usize, StoreError> {
        let mut state = self.lock();
        let before = state.sessions.len();
        state.sessions.retain(|_, s| s.user != username);
        Ok(before - state.sessions.len())
    }
}

/// The behaviour every [`AccountStore`] must have, as test cases each backend
/// runs against itself (memory here, redb and Redis next to their code).
#[cfg(test)]
pub(crate) mod contract {
    use super::*;

    pub(crate) fn user(name: &str, display: &str) -> UserRecord {
        UserRecord {
            username: name.into(),
            display_name: display.into(),
            password_hash: "$argon2id$secret".into(),
            created_at: 1_700_000_000,
        }
    }

    fn session(user: &str) -> SessionRecord {
        SessionRecord {
            user: user.into(),
            // Fixed (year 2096), so that records compare equal.
            expires_at: 4_000_000_000,
        }
    }

    pub(crate) fn users_are_created_once_listed_in_order_and_updated(store: &dyn AccountStore) {
        assert_eq!(store.user("bob").unwrap(), None);
        assert!(store.users().unwrap().is_empty());
        store.create_user(&user("bob", "Bob")).unwrap();
        store.create_user(&user("alice", "Alice")).unwrap();
        assert_eq!(store.create_user(&user("bob", "Other")), Err(StoreError::Taken));
        assert_eq!(
            store.user("bob").unwrap(),
            Some(user("bob", "Bob")),
            "the first one stays"
        );
        let names: Vec<String> = store.users().unwrap().into_iter().map(|u| u.username).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert!(store.set_display_name("bob", "Bobby").unwrap());
        assert!(store.set_password_hash("bob", "h2").unwrap());
        let bob = store.user("bob").unwrap().unwrap();
        assert_eq!((bob.display_name.as_str(), bob.password_hash.as_str()), ("Bobby", "h2"));
        assert_eq!(bob.created_at, 1_700_000_000);
        assert!(!store.set_display_name("nobody", "x").unwrap());
        assert!(!store.set_password_hash("nobody", "x").unwrap());
        assert_eq!(store.user("nobody").unwrap(), None, "no update creates a user");
        assert!(store.remove_user("bob").unwrap());
        assert!(!store.remove_user("bob").unwrap());
        assert_eq!(store.user("bob").unwrap(), None);
        assert_eq!(store.users().unwrap(), [user("alice", "Alice")]);
        // The username is free again.
        store.create_user(&user("bob", "Bob")).unwrap();
    }

    pub(crate) fn display_names_are_found_by_key_through_renames_and_removals(store: &dyn AccountStore) {
        let key = super::super::names::name_key;
        store.create_user(&user("bob", "Bob")).unwrap();
        store.create_user(&user("rob", "BOB")).unwrap();
        assert!(store.display_name_taken(&key("bob")).unwrap());
        assert!(!store.display_name_taken(&key("bob")[..2]).unwrap(), "whole keys only");
        assert!(store.set_display_name("bob", "Bobby").unwrap());
        assert!(store.display_name_taken(&key("Bobby")).unwrap());
        assert!(
            store.display_name_taken(&key("Bob")).unwrap(),
            "rob is still called BOB"
        );
        assert!(store.remove_user("rob").unwrap());
        assert!(!store.display_name_taken(&key("Bob")).unwrap());
        assert!(store.set_display_name("bob", "Bobby").unwrap(), "the same name again");
        assert!(store.remove_user("bob").unwrap());
        assert!(!store.display_name_taken(&key("Bobby")).unwrap());
        // A failed create changes no name.
        store.create_user(&user("ann", "Ann")).unwrap();
        assert_eq!(store.create_user(&user("ann", "Zed")), Err(StoreError::Taken));
        assert!(!store.display_name_taken(&key("Zed")).unwrap());
    }

    pub(crate) fn sessions_are_revoked_one_by_one_or_per_user(store: &dyn AccountStore) {
        store.create_session("k1", &session("alice")).unwrap();
        store.create_session("k2", &session("alice")).unwrap();
        store.create_session("k3", &session("bob")).unwrap();
        assert_eq!(store.session("k1").unwrap(), Some(session("alice")));
        assert_eq!(store.session("nope").unwrap(), None);
        store.revoke_session("k1").unwrap();
        store.revoke_session("k1").unwrap();
        assert_eq!(store.session("k1").unwrap(), None);
        assert_eq!(store.revoke_sessions_of("alice").unwrap(), 1);
        assert_eq!(store.revoke_sessions_of("alice").unwrap(), 0);
        assert_eq!(store.session("k2").unwrap(), None);
        assert_eq!(store.session("k3").unwrap(), Some(session("bob")));
        // A session that never expires is kept as well.
        let forever = SessionRecord {
            user: "bob".into(),
            expires_at: u64::MAX,
        };
        store.create_session("k4", &forever).unwrap();
        assert_eq!(store.session("k4").unwrap(), Some(forever));
        assert_eq!(store.revoke_sessions_of("bob").unwrap(), 2);
    }

    /// An expired session may be dropped at once or kept: either way it is
    /// not counted as live by a later revoke, and new sessions still work.
    pub(crate) fn expired_sessions_do_not_disturb_live_ones(store: &dyn AccountStore) {
        let expired = SessionRecord {
            user: "alice".into(),
            expires_at: 1,
        };
        store.create_session("live", &session("alice")).unwrap();
        store.create_session("old", &expired).unwrap();
        assert!(matches!(
            store.session("old").unwrap(),
            None | Some(SessionRecord { expires_at: 1, .. })
        ));
        assert_eq!(store.session("live").unwrap(), Some(session("alice")));
        store.revoke_session("old").unwrap();
        assert_eq!(store.session("old").unwrap(), None);
        assert_eq!(store.revoke_sessions_of("alice").unwrap(), 1);
    }

    /// Every case on a fresh store from `fresh`.
    pub(crate) fn all(fresh: impl Fn() -> Box<dyn AccountStore>) {
        users_are_created_once_listed_in_order_and_updated(&*fresh());
        display_names_are_found_by_key_through_renames_and_removals(&*fresh());
        sessions_are_revoked_one_by_one_or_per_user(&*fresh());
        expired_sessions_do_not_disturb_live_ones(&*fresh());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_store_keeps_the_contract() {
        contract::all(|| Box::new(MemoryAccountStore::new()));
    }

    #[test]
    fn expired_sessions_are_swept_as_the_table_grows() {
        let store = MemoryAccountStore::new();
        for i in 0..1024 {
            let expired = SessionRecord {
                user: "alice".into(),
                expires_at: 1,
            };
            store.create_session(&format!("old{i}"), &expired).unwrap();
        }
        let live = SessionRecord {
            user: "alice".into(),
            expires_at: u64::MAX,
        };
        store.create_session("new", &live).unwrap();
        assert_eq!(store.lock().sessions.len(), 1);
    }

    #[test]
    fn the_password_hash_stays_out_of_debug_output() {
        let debug = format!("{:?}", contract::user("alice", "Alice"));
        assert!(!debug.contains("secret") && debug.contains("<redacted>"), "{debug}");
    }
}
