//! Members: accounts, login sessions and live display names (PROTOCOL.md §11).
//!
//! Scaledrone knows connections only; Rookery adds a stable **user** beside the
//! per-connection client id. [`Accounts`] is the one service behind
//! `POST /register`, `/login`, `/logout`, `GET /me`, the session-aware
//! `POST /auth` and the `rookery user` commands. It owns the rules (what a
//! username is, when a login is refused, how long a session lives) and keeps
//! the records in an [`AccountStore`]: the embedded durable store on one
//! node, Redis in a cluster (see [`crate::stores`]), memory in tests.
//!
//! Password hashing is deliberately slow (see [`password`]); the methods that
//! hash or verify ([`Accounts::register`], [`Accounts::add_user`],
//! [`Accounts::login`], [`Accounts::set_password`]) block for that long and
//! are called from `tokio::task::spawn_blocking` on the server.
//!
//! # Layout
//! - [`store`]: the [`AccountStore`] trait, its records and the memory store.
//! - [`redb_store`], `redis_store`: the embedded and the Redis backend.
//! - [`password`]: Argon2id hashing and its parameters.
//! - [`throttle`]: failed-login limits per username and per address.
//! - [`names`]: usernames, passwords, display names, name comparison, colours.

pub mod names;
pub mod password;
pub mod redb_store;
pub(crate) mod redis_store;
pub mod store;
pub mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use self::names::InvalidField;
use self::password::{HashFailed, HashParams, InvalidParams, PasswordHasher};
pub use self::store::{AccountStore, MemoryAccountStore, SessionRecord, StoreError, UserRecord};
use self::throttle::{LoginThrottle, RetryAfter, ThrottleLimits};
use crate::config::{Config, Registration};
use crate::engine::LiveNameSink;
use crate::token::unix_now;

/// Length of a session cookie value: 32 characters of `[A-Za-z0-9]` carry
/// about 190 random bits.
const SESSION_ID_CHARS: usize = 32;

/// The throttle key for usernames that cannot exist: they share one counter,
/// so nonsense input cannot grow the table.
const INVALID_USERNAME_KEY: &str = "\u{0}invalid";

/// Why an account operation was refused; the texts are PROTOCOL.md §11's.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    Invalid(#[from] InvalidField),
    #[error("Username taken")]
    UsernameTaken,
    #[error("Registration closed")]
    RegistrationClosed,
    /// The same for an unknown user and a wrong password.
    #[error("Invalid username or password")]
    InvalidCredentials,
    #[error("Too many attempts")]
    TooManyAttempts(RetryAfter),
    /// Only the operator commands name a missing user.
    #[error("no user {0:?}")]
    NoSuchUser(String),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Hash(#[from] HashFailed),
}

impl From<StoreError> for AccountError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Taken => AccountError::UsernameTaken,
            other => AccountError::Store(other),
        }
    }
}

/// A successful login: the user and the cookie value that now identifies them.
pub struct LoggedIn {
    pub user: UserRecord,
    /// The `rookery_session` cookie value. Never log it.
    pub session: String,
}

/// The accounts service of one server.
pub struct Accounts {
    store: Arc<dyn AccountStore>,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    registration: Registration,
    session_lifetime_seconds: u64,
    live_names: HashMap<String, LiveNames>,
}

impl Accounts {
    /// The service for `config`, keeping its records in `store`.
    pub fn new(config: &Config, store: Arc<dyn AccountStore>) -> Result<Accounts, InvalidParams> {
        let settings = &config.accounts;
        let hasher = PasswordHasher::new(HashParams {
            memory_kib: settings.argon2_memory_kib,
            iterations: settings.argon2_iterations,
            parallelism: settings.argon2_parallelism,
        })?;
        Ok(Accounts {
            store,
            hasher,
            throttle: LoginThrottle::new(ThrottleLimits {
                per_username: settings.login_failures_per_username,
                per_ip: settings.login_failures_per_ip,
                window: Duration::from_secs(settings.login_failure_window_seconds),
            }),
            registration: config.registration,
            session_lifetime_seconds: settings.session_lifetime_seconds,
            live_names: config
                .channels
                .iter()
                .map(|channel| (channel.id.clone(), LiveNames::new(&channel.id)))
                .collect(),
        })
    }

    /// Reports every channel's name changes to `sink` too (a cluster engine,
    /// which tells the other nodes): without it a node's names are its own.
    pub fn with_name_sink(mut self, sink: Arc<dyn LiveNameSink>) -> Accounts {
        for live in self.live_names.values_mut() {
            live.sink = Some(Arc::clone(&sink));
        }
        self
    }

    /// `POST /register`: a new account, when registration is open.
    pub fn register(&self, username: &str, password: &str, name: Option<&str>) -> Result<UserRecord, AccountError> {
        if self.registration == Registration::Closed {
            return Err(AccountError::RegistrationClosed);
        }
        self.add_user(username, password, name)
    }

    /// A new account whatever the registration setting (the operator's
    /// `rookery user add`). Without a display name, the username is one.
    pub fn add_user(&self, username: &str, password: &str, name: Option<&str>) -> Result<UserRecord, AccountError> {
        let username = names::normalize_username(username)?;
        names::check_password(password)?;
        let display_name = match name.filter(|n| !n.is_empty()) {
            Some(name) => names::validate_display_name(name)?,
            None => username.clone(),
        };
        // Spare the hash when the answer is known; `create_user` still decides races.
        if self.store.user(&username)?.is_some() {
            return Err(AccountError::UsernameTaken);
        }
        let user = UserRecord {
            username,
            display_name,
            password_hash: self.hasher.hash(password)?,
            created_at: unix_now(),
        };
        self.store.create_user(&user)?;
        Ok(user)
    }

    /// `POST /login` from `ip`. An unknown user costs one (dummy) verification,
    /// like a wrong password, and gets the same answer.
    pub fn login(&self, username: &str, password: &str, ip: IpAddr) -> Result<LoggedIn, AccountError> {
        if username.is_empty() {
            return Err(InvalidField::MissingUsername.into());
        }
        if password.is_empty() {
            return Err(InvalidField::MissingPassword.into());
        }
        let normalized = names::normalize_username(username).ok();
        let key = normalized.as_deref().unwrap_or(INVALID_USERNAME_KEY);
        let now = Instant::now();
        // Checked (and counted) before the password: a locked account answers
        // 429 even to the right password, so the lock tells a guesser nothing.
        self.throttle
            .begin(key, ip, now)
            .map_err(AccountError::TooManyAttempts)?;
        let user = match &normalized {
            Some(username) => self.store.user(username)?,
            None => None,
        };
        // An impossible password is refused unhashed for known and unknown
        // users alike, so its timing says nothing about the user either.
        let verified = match &user {
            _ if !names::plausible_password(password) => false,
            Some(user) => self.hasher.verify(password, &user.password_hash),
            None => {
                self.hasher.verify_dummy(password);
                false
            }
        };
        let Some(user) = user.filter(|_| verified) else {
            return Err(AccountError::InvalidCredentials);
        };
        self.throttle.succeeded(key, ip, now);
        let session = crate::ids::random_alphanumeric(SESSION_ID_CHARS);
        let record = SessionRecord {
            user: user.username.clone(),
            expires_at: unix_now().saturating_add(self.session_lifetime_seconds),
        };
        self.store.create_session(&session_key(&session), &record)?;
        Ok(LoggedIn { user, session })
    }

    /// `POST /logout`: the session stops working everywhere, copies included.
    pub fn logout(&self, session: &str) -> Result<(), AccountError> {
        Ok(self.store.revoke_session(&session_key(session))?)
    }

    /// The user a session cookie belongs to; `None` when it is unknown,
    /// revoked, expired, or its user was removed.
    pub fn session_user(&self, session: &str) -> Result<Option<UserRecord>, AccountError> {
        let key = session_key(session);
        let Some(record) = self.store.session(&key)? else {
            return Ok(None);
        };
        if record.expires_at <= unix_now() {
            self.store.revoke_session(&key)?;
            return Ok(None);
        }
        Ok(self.store.user(&record.user)?)
    }

    /// Whether a guest may not use `name` on `channel`: a live connection of
    /// the channel carries it, or a registered user is called so (§11).
    pub fn guest_name_taken(&self, channel: &str, name: &str) -> Result<bool, AccountError> {
        let key = names::name_key(name);
        if self.live_names(channel).is_some_and(|live| live.is_taken_key(&key)) {
            return Ok(true);
        }
        Ok(self.store.display_name_taken(&key)?)
    }

    /// The names of `channel`'s live connections.
    pub fn live_names(&self, channel: &str) -> Option<&LiveNames> {
        self.live_names.get(channel)
    }

    /// Every user, in username order (`rookery user list`).
    pub fn users(&self) -> Result<Vec<UserRecord>, AccountError> {
        Ok(self.store.users()?)
    }

    /// Removes a user and ends their sessions (`rookery user remove`).
    pub fn remove_user(&self, username: &str) -> Result<(), AccountError> {
        let username = names::normalize_username(username)?;
        if !self.store.remove_user(&username)? {
            return Err(AccountError::NoSuchUser(username));
        }
        self.store.revoke_sessions_of(&username)?;
        Ok(())
    }

    /// Sets a new password and ends every session of the user, so a stolen
    /// cookie dies with the old password (`rookery user passwd`).
    pub fn set_password(&self, username: &str, password: &str) -> Result<(), AccountError> {
        let username = names::normalize_username(username)?;
        names::check_password(password)?;
        if self.store.user(&username)?.is_none() {
            return Err(AccountError::NoSuchUser(username));
        }
        let hash = self.hasher.hash(password)?;
        if !self.store.set_password_hash(&username, &hash)? {
            return Err(AccountError::NoSuchUser(username));
        }
        self.store.revoke_sessions_of(&username)?;
        Ok(())
    }

    /// Seconds a new session lives (the cookie's `Max-Age`).
    pub fn session_lifetime_seconds(&self) -> u64 {
        self.session_lifetime_seconds
    }
}

/// The store key of a session: SHA-256 of the cookie value, hex. The value has
/// 190 random bits, so an unsalted fast hash is enough to make the store
/// useless for logging in, and lookups stay one exact-key read.
pub(crate) fn session_key(session: &str) -> String {
    Sha256::digest(session.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The display names of one channel's live connections, so that `POST /auth`
/// can refuse a guest a name that is in use (§11).
///
/// A WebSocket session claims its `authData.name` after a successful
/// authenticate and keeps the [`NameClaim`] until it closes (or
/// re-authenticates). Claims are counted, never refused: a member's several
/// tabs share their name, and tokens minted by other backends are Scaledrone's
/// business, not ours. Names compare by [`names::name_key`].
///
/// In a cluster the counts stay here (many tabs, one name); only a name's
/// first claim and its last release are reported to the [`LiveNameSink`],
/// which must not block (it runs under the lock, so that the reports of one
/// name arrive in the order of its transitions).
#[derive(Clone)]
pub struct LiveNames {
    channel: Arc<str>,
    counts: Arc<Mutex<HashMap<String, usize>>>,
    sink: Option<Arc<dyn LiveNameSink>>,
}

impl std::fmt::Debug for LiveNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveNames")
            .field("channel", &self.channel)
            .field("counts", &self.counts)
            .field("shared", &self.sink.is_some())
            .finish()
    }
}

impl LiveNames {
    /// The live names of `channel`, this node's only.
    pub fn new(channel: &str) -> LiveNames {
        LiveNames {
            channel: channel.into(),
            counts: Arc::default(),
            sink: None,
        }
    }

    /// Marks `name` as in use until the returned claim is dropped.
    pub fn claim(&self, name: &str) -> NameClaim {
        let key = names::name_key(name);
        let mut counts = self.lock();
        let count = counts.entry(key.clone()).or_default();
        *count += 1;
        if *count == 1
            && let Some(sink) = &self.sink
        {
            sink.name_changed(&self.channel, &key, true);
        }
        drop(counts);
        NameClaim {
            names: self.clone(),
            key,
        }
    }

    /// Whether a live connection carries `name` (in any case).
    pub fn is_taken(&self, name: &str) -> bool {
        self.is_taken_key(&names::name_key(name))
    }

    fn is_taken_key(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A live connection's hold on its display name; released on drop.
#[derive(Debug)]
pub struct NameClaim {
    names: LiveNames,
    key: String,
}

impl Drop for NameClaim {
    fn drop(&mut self) {
        let mut counts = self.names.lock();
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
                if let Some(sink) = &self.names.sink {
                    sink.name_changed(&self.names.channel, &self.key, false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn config(registration: &str) -> Config {
        let dir = std::env::temp_dir().join(format!("rookery-accounts-{}", crate::ids::random_alphanumeric(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rookery.toml");
        std::fs::write(
            &file,
            format!(
                "registration = \"{registration}\"\n[accounts]\nargon2_memory_kib = 8\nargon2_iterations = 1\n\
                 login_failures_per_username = 2\n[[channel]]\nid = \"c\"\nsecret = \"s\"\n"
            ),
        )
        .unwrap();
        let overrides = Overrides {
            policies_dir: Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")),
            data_dir: Some(dir),
            ..Overrides::default()
        };
        Config::load(Some(&file), &overrides).unwrap()
    }

    fn accounts(registration: &str) -> Accounts {
        Accounts::new(&config(registration), Arc::new(MemoryAccountStore::new())).unwrap()
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn register_login_session_logout() {
        let accounts = accounts("open");
        let alice = accounts.register("Alice", "password1", Some(" Alice A. ")).unwrap();
        assert_eq!(
            (alice.username.as_str(), alice.display_name.as_str()),
            ("alice", "Alice A.")
        );
        assert!(alice.password_hash.starts_with("$argon2id$"));
        assert!(matches!(
            accounts.register("ALICE", "password2", None),
            Err(AccountError::UsernameTaken)
        ));
        let bob = accounts.register("bob", "password2", None).unwrap();
        assert_eq!(bob.display_name, "bob");

        let login = accounts.login("ALICE", "password1", IP).unwrap();
        assert_eq!(login.user.username, "alice");
        assert_eq!(login.session.len(), SESSION_ID_CHARS);
        assert!(login.session.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(
            accounts.session_user(&login.session).unwrap().unwrap().username,
            "alice"
        );
        // The store never sees the cookie value itself.
        assert_eq!(accounts.store.session(&login.session).unwrap(), None);
        accounts.logout(&login.session).unwrap();
        assert_eq!(accounts.session_user(&login.session).unwrap(), None);
        assert_eq!(accounts.session_user("made-up").unwrap(), None);
    }

    #[test]
    fn unknown_users_and_wrong_passwords_get_the_same_answer_and_count() {
        let accounts = accounts("open");
        accounts.register("alice", "password1", None).unwrap();
        let unknown = accounts.login("nobody", "password1", IP).err().unwrap();
        let wrong = accounts.login("alice", "password9", IP).err().unwrap();
        assert_eq!(unknown.to_string(), wrong.to_string());
        assert!(matches!(unknown, AccountError::InvalidCredentials));
        assert!(matches!(
            accounts.login("al!ce", &"x".repeat(5000), IP),
            Err(AccountError::InvalidCredentials)
        ));
        // Two failures for alice (the configured limit): locked, even for the right password.
        accounts.login("alice", "password8", IP).err().unwrap();
        assert!(matches!(
            accounts.login("alice", "password1", IP),
            Err(AccountError::TooManyAttempts(_))
        ));
        assert!(matches!(
            accounts.login("", "x", IP),
            Err(AccountError::Invalid(InvalidField::MissingUsername))
        ));
    }

    #[test]
    fn expired_sessions_and_removed_users_log_nobody_in() {
        let accounts = accounts("open");
        accounts.register("alice", "password1", None).unwrap();
        let key = session_key("expired");
        let record = SessionRecord {
            user: "alice".into(),
            expires_at: unix_now() - 1,
        };
        accounts.store.create_session(&key, &record).unwrap();
        assert_eq!(accounts.session_user("expired").unwrap(), None);
        assert_eq!(
            accounts.store.session(&key).unwrap(),
            None,
            "expired sessions are dropped"
        );

        let login = accounts.login("alice", "password1", IP).unwrap();
        accounts.remove_user("alice").unwrap();
        assert_eq!(accounts.session_user(&login.session).unwrap(), None);
        assert!(matches!(
            accounts.remove_user("alice"),
            Err(AccountError::NoSuchUser(_))
        ));
    }

    #[test]
    fn a_new_password_ends_every_session() {
        let accounts = accounts("open");
        accounts.add_user("alice", "password1", None).unwrap();
        let first = accounts.login("alice", "password1", IP).unwrap();
        accounts.set_password("alice", "password2").unwrap();
        assert_eq!(accounts.session_user(&first.session).unwrap(), None);
        assert!(accounts.login("alice", "password1", IP).is_err());
        assert!(accounts.login("alice", "password2", IP).is_ok());
        assert!(matches!(
            accounts.set_password("alice", "short"),
            Err(AccountError::Invalid(InvalidField::Password))
        ));
        assert!(matches!(
            accounts.set_password("nobody", "password3"),
            Err(AccountError::NoSuchUser(_))
        ));
    }

    #[test]
    fn closed_registration_still_lets_the_operator_add_users() {
        let accounts = accounts("closed");
        assert!(matches!(
            accounts.register("alice", "password1", None),
            Err(AccountError::RegistrationClosed)
        ));
        accounts.add_user("alice", "password1", None).unwrap();
        assert_eq!(accounts.users().unwrap().len(), 1);
    }

    #[test]
    fn invalid_fields_are_named() {
        let accounts = accounts("open");
        let cases = [
            ("", "password1", None, InvalidField::MissingUsername),
            ("al", "password1", None, InvalidField::Username),
            ("alice", "", None, InvalidField::MissingPassword),
            ("alice", "short", None, InvalidField::Password),
            ("alice", "password1", Some("a\u{202E}b"), InvalidField::Name),
        ];
        for (username, password, name, expected) in cases {
            match accounts.register(username, password, name) {
                Err(AccountError::Invalid(field)) => assert_eq!(field, expected),
                other => panic!("{username:?}: {:?}", other.map(|u| u.username)),
            }
        }
    }

    #[test]
    fn guest_names_collide_with_live_names_and_registered_display_names() {
        let accounts = accounts("open");
        accounts.register("alice", "password1", Some("Alice")).unwrap();
        assert!(accounts.guest_name_taken("c", "ALICE").unwrap());
        assert!(!accounts.guest_name_taken("c", "Bob").unwrap());
        let live = accounts.live_names("c").unwrap();
        let first = live.claim("Bob");
        let second = live.claim("bob");
        assert!(accounts.guest_name_taken("c", "BOB").unwrap());
        drop(first);
        assert!(live.is_taken("Bob"), "still held by the second connection");
        drop(second);
        assert!(!live.is_taken("Bob"));
        assert!(!accounts.guest_name_taken("c", "Bob").unwrap());
        assert!(accounts.live_names("other").is_none());
    }

    /// Records what a cluster engine would be told.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(String, String, bool)>>);

    impl LiveNameSink for Recorder {
        fn name_changed(&self, channel: &str, key: &str, live: bool) {
            self.0.lock().unwrap().push((channel.into(), key.into(), live));
        }
    }

    #[test]
    fn only_a_names_first_claim_and_last_release_are_reported() {
        let sink = Arc::new(Recorder::default());
        let accounts = accounts("open").with_name_sink(sink.clone());
        let live = accounts.live_names("c").unwrap();
        let tabs = [live.claim("Bob"), live.claim(" bob "), live.claim("BOB")];
        let other = live.claim("Ann");
        drop(tabs);
        drop(other);
        let again = live.claim("bob");
        drop(again);
        let seen = sink.0.lock().unwrap().clone();
        let event = |key: &str, live: bool| ("c".to_owned(), key.to_owned(), live);
        assert_eq!(
            seen,
            [
                event("bob", true),
                event("ann", true),
                event("bob", false),
                event("ann", false),
                event("bob", true),
                event("bob", false),
            ]
        );
    }

    #[test]
    fn session_keys_are_sha256_hex() {
        assert_eq!(
            session_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
