//! Identifier newtypes: client ids, room names and message ids.
//!
//! Client ids are pasted unescaped into regexes by existing auth servers, so
//! their alphabet is restricted to `[A-Za-z0-9]` plus one `:` separator.
//! Room names are validated once at the edge so that every other module can
//! trust a [`RoomName`].

use std::fmt;
use std::sync::Arc;

use rand::RngExt;
use rand::distr::Alphanumeric;

/// Random characters after the node prefix: 16 base-62 characters carry about
/// 95 bits, far above the 64 bits PROTOCOL.md §3 asks for.
const CLIENT_ID_RANDOM_CHARS: usize = 16;

/// The server-assigned id of one connection, unique across all nodes and never reused.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    /// Draws a fresh id `"{node}:{random}"`.
    pub fn generate(node: &str) -> Self {
        let random: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(CLIENT_ID_RANDOM_CHARS)
            .map(char::from)
            .collect();
        ClientId(format!("{node}:{random}").into())
    }

    /// An id read back from the store; it was valid when it was generated.
    pub fn restore(id: &str) -> Self {
        ClientId(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for ClientId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Draws a random alphanumeric string, used for node tags, history epochs and dev secrets.
pub fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// Why a room name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Invalid room name")]
pub struct InvalidRoomName;

/// A validated room name: 1..=max bytes, no control characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// Validates `name` against the configured maximum length in bytes.
    pub fn parse(name: &str, max_bytes: usize) -> Result<Self, InvalidRoomName> {
        if name.is_empty() || name.len() > max_bytes || name.chars().any(char::is_control) {
            return Err(InvalidRoomName);
        }
        Ok(RoomName(name.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Rooms whose name starts with `observable-` (case-sensitive) carry presence.
    pub fn is_observable(&self) -> bool {
        self.0.starts_with("observable-")
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Where one message sits in its room's history: the room's epoch and the message's offset.
///
/// Offsets count one room's messages from 1; the epoch names one incarnation of
/// the room's history, so an id from a lost store is never mistaken for one of
/// today's messages.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct MessageId {
    pub epoch: Arc<str>,
    pub offset: u64,
}

/// Width of the zero-padded offset; 20 digits hold every `u64`, so ids of one
/// room sort in publication order as plain strings.
const OFFSET_DIGITS: usize = 20;

impl MessageId {
    /// Parses an id made by [`MessageId`]'s `Display`, or `None` if it is not one of ours.
    pub fn parse(id: &str) -> Option<MessageId> {
        let (epoch, offset) = id.rsplit_once('-')?;
        if offset.len() != OFFSET_DIGITS || epoch.is_empty() {
            return None;
        }
        Some(MessageId {
            epoch: epoch.into(),
            offset: offset.parse().ok()?,
        })
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:0width$}", self.epoch, self.offset, width = OFFSET_DIGITS)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_use_the_regex_safe_alphabet_and_differ() {
        let a = ClientId::generate("r3k");
        let b = ClientId::generate("r3k");
        assert_ne!(a, b);
        let (node, random) = a.as_str().split_once(':').unwrap();
        assert_eq!(node, "r3k");
        assert_eq!(random.len(), CLIENT_ID_RANDOM_CHARS);
        assert!(random.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn room_names_are_validated() {
        assert!(RoomName::parse("observable-room", 256).is_ok());
        assert_eq!(RoomName::parse("", 256), Err(InvalidRoomName));
        assert_eq!(RoomName::parse("a\nb", 256), Err(InvalidRoomName));
        assert_eq!(RoomName::parse(&"x".repeat(257), 256), Err(InvalidRoomName));
        assert!(RoomName::parse(&"x".repeat(256), 256).is_ok());
        assert!(RoomName::parse("observable-x", 256).unwrap().is_observable());
        assert!(!RoomName::parse("Observable-x", 256).unwrap().is_observable());
    }

    #[test]
    fn message_ids_sort_in_offset_order_and_round_trip() {
        let id = |offset| MessageId {
            epoch: "ep0ch".into(),
            offset,
        };
        assert!(id(9).to_string() < id(10).to_string());
        assert_eq!(MessageId::parse(&id(10).to_string()), Some(id(10)));
        assert_eq!(MessageId::parse("nonsense"), None);
        assert_eq!(MessageId::parse("e-12"), None);
        assert_eq!(MessageId::parse("-00000000000000000001"), None);
    }
}
