//! Serde types for every frame of PROTOCOL.md §4–§5: decoding client requests
//! and encoding server frames. No I/O and no state.
//!
//! Outgoing frames are encoded once into [`Frame`] — an immutable, cheaply
//! cloned UTF-8 buffer — so a publish is serialized once and shared by every
//! subscriber's outbox.

use std::sync::Arc;

use serde::de::{Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::ids::{ClientId, MessageId, RoomName};

/// One encoded outgoing text frame; cloning shares the buffer.
pub type Frame = tungstenite_utf8::Utf8Bytes;

/// Re-export of tungstenite's shared UTF-8 buffer, named for what it is here.
mod tungstenite_utf8 {
    pub use hyper_tungstenite::tungstenite::Utf8Bytes;
}

/// A request decoded from one client frame.
#[derive(Debug)]
pub enum Request<'a> {
    Handshake {
        channel: String,
        client_data: Option<Value>,
    },
    Authenticate {
        token: String,
    },
    Subscribe {
        room: String,
        history_count: u32,
        history_since: Option<String>,
    },
    Unsubscribe {
        room: String,
    },
    Publish {
        room: String,
        message: &'a RawValue,
    },
}

impl PartialEq for Request<'_> {
    fn eq(&self, other: &Self) -> bool {
        use Request::*;
        match (self, other) {
            (
                Handshake {
                    channel: a,
                    client_data: x,
                },
                Handshake {
                    channel: b,
                    client_data: y,
                },
            ) => a == b && x == y,
            (Authenticate { token: a }, Authenticate { token: b }) => a == b,
            (
                Subscribe {
                    room: a,
                    history_count: x,
                    history_since: s,
                },
                Subscribe {
                    room: b,
                    history_count: y,
                    history_since: t,
                },
            ) => a == b && x == y && s == t,
            (Unsubscribe { room: a }, Unsubscribe { room: b }) => a == b,
            // Raw messages compare by their exact JSON text.
            (Publish { room: a, message: x }, Publish { room: b, message: y }) => a == b && x.get() == y.get(),
            _ => false,
        }
    }
}

/// A decoded request with the callback to echo in its one reply.
#[derive(Debug, PartialEq)]
pub struct Inbound<'a> {
    pub callback: Option<i64>,
    pub request: Request<'a>,
}

/// Why a frame could not be decoded; carries the callback when it could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a JSON object, or a known type with a missing or ill-typed field.
    Malformed { callback: Option<i64> },
    /// A `type` this server does not know.
    UnknownType { callback: Option<i64> },
    /// Longer than [`FrameLimits::max_bytes`].
    TooLarge { callback: Option<i64> },
    /// Nested deeper than [`FrameLimits::max_depth`].
    TooDeep { callback: Option<i64> },
}

impl DecodeError {
    pub fn callback(self) -> Option<i64> {
        match self {
            DecodeError::Malformed { callback }
            | DecodeError::UnknownType { callback }
            | DecodeError::TooLarge { callback }
            | DecodeError::TooDeep { callback } => callback,
        }
    }

    /// The wire text of the error.
    pub fn text(self) -> &'static str {
        match self {
            DecodeError::Malformed { .. } => "Malformed frame",
            DecodeError::UnknownType { .. } => "Unknown frame type",
            DecodeError::TooLarge { .. } => "Message too large",
            DecodeError::TooDeep { .. } => "Message too deeply nested",
        }
    }

    /// The `reason` label under which a refused frame is counted, for the
    /// errors that are a limit of PROTOCOL.md §10 (a client's mistake is not counted).
    pub fn refusal(self) -> Option<&'static str> {
        match self {
            DecodeError::TooLarge { .. } => Some("too_large"),
            DecodeError::TooDeep { .. } => Some(crate::metrics::reason::TOO_DEEP),
            DecodeError::Malformed { .. } | DecodeError::UnknownType { .. } => None,
        }
    }
}

/// The limits a frame is checked against before it is parsed (PROTOCOL.md §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Longest frame, in bytes.
    pub max_bytes: usize,
    /// Deepest nesting of a message or of `client_data`. A scalar has depth 0 and
    /// `[[1]]` depth 2; the frame's own object adds one level around them.
    pub max_depth: usize,
}

/// Every field any request may carry, each kept raw until the type is known.
/// `present` makes an explicit `null` distinguishable from a missing key.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "present")]
    kind: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    callback: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    channel: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    client_data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    room: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    history_count: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    history: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    history_since: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    message: Option<&'a RawValue>,
    #[serde(default, rename = "version")]
    _version: Option<IgnoredAny>,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Checks one client frame against `limits`, then decodes it.
///
/// The checks run before any parsing and cost one linear scan: serde_json
/// recurses once per nesting level (and gives up only at 128), so a frame must
/// be known to be shallow before it reaches serde. A refused frame is answered
/// with its callback when [`peek_callback`] can read it.
pub fn decode_within(text: &str, limits: FrameLimits) -> Result<Inbound<'_>, DecodeError> {
    if text.len() > limits.max_bytes {
        return Err(DecodeError::TooLarge {
            callback: peek_callback(text),
        });
    }
    // The frame's own object is one level around the message.
    if nesting_exceeds(text, limits.max_depth.saturating_add(1)) {
        return Err(DecodeError::TooDeep {
            callback: peek_callback(text),
        });
    }
    decode(text)
}

/// Decodes one client frame (text, or the UTF-8 payload of a binary frame)
/// without checking [`FrameLimits`]; the session calls [`decode_within`].
pub fn decode(text: &str) -> Result<Inbound<'_>, DecodeError> {
    // serde would also read a struct from a JSON array; frames must be objects.
    if !text.trim_start().starts_with('{') {
        return Err(DecodeError::Malformed { callback: None });
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(|error| DecodeError::Malformed {
        // Valid JSON that serde refused (a duplicate key) may still have a
        // readable callback; text that is not JSON at all is not answered in kind.
        callback: match error.classify() {
            serde_json::error::Category::Data => peek_callback(text),
            _ => None,
        },
    })?;
    let callback = match envelope.callback {
        None => None,
        Some(raw) if raw.get() == "null" => None,
        Some(raw) => {
            Some(serde_json::from_str::<i64>(raw.get()).map_err(|_| DecodeError::Malformed { callback: None })?)
        }
    };
    let malformed = DecodeError::Malformed { callback };
    let kind: String = parse(envelope.kind).ok_or(malformed)?;
    let request = match kind.as_str() {
        "handshake" => Request::Handshake {
            channel: parse(envelope.channel).ok_or(malformed)?,
            client_data: envelope
                .client_data
                .map(|raw| serde_json::from_str::<Value>(raw.get()))
                .transpose()
                .map_err(|_| malformed)?
                .filter(|v| !v.is_null()),
        },
        "authenticate" => Request::Authenticate {
            token: parse(envelope.token).ok_or(malformed)?,
        },
        "subscribe" => Request::Subscribe {
            room: parse(envelope.room).ok_or(malformed)?,
            history_count: history_count(envelope.history_count.or(envelope.history)).ok_or(malformed)?,
            history_since: optional(envelope.history_since).map_err(|_| malformed)?,
        },
        "unsubscribe" => Request::Unsubscribe {
            room: parse(envelope.room).ok_or(malformed)?,
        },
        "publish" => Request::Publish {
            room: parse(envelope.room).ok_or(malformed)?,
            message: envelope.message.ok_or(malformed)?,
        },
        _ => return Err(DecodeError::UnknownType { callback }),
    };
    Ok(Inbound { callback, request })
}

fn parse<T: for<'de> Deserialize<'de>>(raw: Option<&RawValue>) -> Option<T> {
    serde_json::from_str(raw?.get()).ok()
}

/// A field that may be missing or `null`, but must have the right type otherwise.
fn optional<T: for<'de> Deserialize<'de>>(raw: Option<&RawValue>) -> Result<Option<T>, ()> {
    match raw {
        None => Ok(None),
        Some(raw) => serde_json::from_str::<Option<T>>(raw.get()).map_err(|_| ()),
    }
}

/// `history_count` (or legacy `history`): a non-negative integer; missing or null is 0.
fn history_count(raw: Option<&RawValue>) -> Option<u32> {
    match optional::<i64>(raw) {
        Ok(count) => Some(count.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32),
        Err(()) => None,
    }
}

/// Whether `value`, serialized compactly as presence frames carry it, takes at
/// most `max_bytes`. Stops serializing as soon as the answer is known.
pub fn fits_serialized(value: &Value, max_bytes: usize) -> bool {
    /// Counts bytes and fails the write once past the limit.
    struct Budget(usize);
    impl std::io::Write for Budget {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 = self
                .0
                .checked_sub(bytes.len())
                .ok_or(std::io::ErrorKind::FileTooLarge)?;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Budget(max_bytes), value).is_ok()
}

// ---------------------------------------------------------------------------
// Scanning untrusted text without parsing it. Both scans are single linear
// passes without recursion or allocation, so they are safe on any input up to
// the socket's hard frame cap.

/// The index of the `"` that closes the string opening at `bytes[open]`, or
/// `None` when it is not terminated.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut at = open + 1;
    loop {
        at += memchr::memchr2(b'"', b'\\', bytes.get(at..)?)?;
        match bytes[at] {
            b'"' => return Some(at),
            // An escape: the next byte cannot close the string.
            _ => at += 2,
        }
    }
}

/// Whether `text` nests arrays and objects deeper than `max_depth` levels
/// (brackets inside strings do not count). Text that is not JSON is left for
/// the parser to refuse.
pub fn nesting_exceeds(text: &str, max_depth: usize) -> bool {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => match string_end(bytes, at) {
                Some(end) => at = end,
                None => return false,
            },
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    false
}

/// The callback of a frame that cannot be decoded in full (too large, too deep,
/// a duplicate key), so that its error can still be correlated.
///
/// Finds a top-level `"callback"` key whose value is an integer, without
/// trusting the rest of the frame: one pass, nested values skipped. `None` when
/// the text does not open an object, the key is absent or appears twice, its
/// value is not an integer, or the object does not close at the end.
pub fn peek_callback(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let skip_whitespace = |mut at: usize| {
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    let mut at = skip_whitespace(0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at += 1;
    // Depth 1 is the frame's own object; only its keys are looked at.
    let mut depth = 1usize;
    let mut expect_key = true;
    // `Some(value)` once the key was seen; `value` is `None` when it is not an integer.
    let mut callback: Option<Option<i64>> = None;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => {
                let end = string_end(bytes, at)?;
                if depth == 1 && expect_key {
                    expect_key = false;
                    let is_callback = key_is(&text[at..=end], "callback");
                    at = skip_whitespace(end + 1);
                    if bytes.get(at) != Some(&b':') {
                        return None;
                    }
                    if is_callback {
                        if callback.is_some() {
                            // Twice: which one the client meant cannot be known.
                            return None;
                        }
                        at = skip_whitespace(at + 1);
                        let (value, next) = integer_at(bytes, at);
                        callback = Some(value);
                        at = next;
                        continue;
                    }
                } else {
                    at = end;
                }
            }
            b'[' | b'{' => depth += 1,
            b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    // The frame's object closed: only whitespace may follow.
                    return if skip_whitespace(at + 1) == bytes.len() {
                        callback.flatten()
                    } else {
                        None
                    };
                }
            }
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        at += 1;
    }
    None
}

/// Whether the JSON string literal `quoted` (quotes included) spells `name`.
fn key_is(quoted: &str, name: &str) -> bool {
    let inner = &quoted[1..quoted.len() - 1];
    if !inner.contains('\\') {
        return inner == name;
    }
    // An escaped spelling of the name is short; longer keys are not it.
    quoted.len() <= 8 * name.len() && serde_json::from_str::<String>(quoted).is_ok_and(|key| key == name)
}

/// The JSON integer starting at `bytes[at]` (as serde would read it into an
/// `i64`), and where scanning continues: after the integer, or at `at` when
/// there is none.
fn integer_at(bytes: &[u8], at: usize) -> (Option<i64>, usize) {
    let digits_from = if bytes.get(at) == Some(&b'-') { at + 1 } else { at };
    let mut end = digits_from;
    while bytes.get(end).is_some_and(u8::is_ascii_digit) {
        end += 1;
    }
    let digits = end - digits_from;
    // JSON allows no leading zero, and a fraction or exponent is not an integer.
    let well_formed = digits > 0
        && !(digits > 1 && bytes[digits_from] == b'0')
        && bytes
            .get(end)
            .is_none_or(|next| next.is_ascii_whitespace() || matches!(next, b',' | b'}'));
    if !well_formed {
        return (None, at);
    }
    let value = std::str::from_utf8(&bytes[at..end]).ok().and_then(|s| s.parse().ok());
    (value, end)
}

// ---------------------------------------------------------------------------
// Server → client frames.

fn encode<T: Serialize>(frame: &T) -> Frame {
    // Serializing these structs cannot fail: every field is a string, number,
    // bool or an already-valid JSON value.
    Frame::from(serde_json::to_string(frame).expect("frames serialize"))
}

#[derive(Serialize)]
struct Reply<'a> {
    callback: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// `{"callback":n}` or `{"callback":n,"error":"…"}`.
pub fn reply(callback: i64, error: Option<&str>) -> Frame {
    encode(&Reply { callback, error })
}

#[derive(Serialize)]
struct HandshakeReply<'a> {
    callback: i64,
    client_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    require_auth: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// The successful handshake reply.
pub fn handshake_ok(callback: i64, client_id: &ClientId, require_auth: bool) -> Frame {
    encode(&HandshakeReply {
        callback,
        client_id: client_id.as_str(),
        require_auth: Some(require_auth),
        error: None,
    })
}

/// A failed handshake reply; `client_id` is present and empty because the Swift client force-reads it.
pub fn handshake_error(callback: i64, error: &str) -> Frame {
    encode(&HandshakeReply {
        callback,
        client_id: "",
        require_auth: None,
        error: Some(error),
    })
}

#[derive(Serialize)]
struct SubscribeReply {
    callback: i64,
    recovered: bool,
}

/// The subscribe reply of a recovery request (PROTOCOL.md §7).
pub fn subscribe_recovered(callback: i64, recovered: bool) -> Frame {
    encode(&SubscribeReply { callback, recovered })
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
}

/// An uncorrelated error `{"error":"…"}`.
pub fn error(error: &str) -> Frame {
    encode(&ErrorFrame { error, room: None })
}

/// An uncorrelated error about one room, e.g. a subscription lost on re-authentication.
pub fn room_error(error: &str, room: &RoomName) -> Frame {
    encode(&ErrorFrame {
        error,
        room: Some(room.as_str()),
    })
}

/// The reply to a request with a callback, or an uncorrelated error without one.
pub fn outcome(callback: Option<i64>, error: Option<&str>) -> Option<Frame> {
    match (callback, error) {
        (Some(callback), error) => Some(reply(callback, error)),
        (None, Some(error)) => Some(self::error(error)),
        (None, None) => None,
    }
}

/// A published message, as delivered live and as kept in history.
#[derive(Debug)]
pub struct Message {
    pub room: RoomName,
    pub message: Box<RawValue>,
    /// The publisher; `None` for messages published through REST.
    pub client_id: Option<ClientId>,
    /// The publisher's username, when its token carries `data.user` (PROTOCOL.md §11).
    pub user: Option<Arc<str>>,
    /// Assigned by the engine: the room's epoch and this message's offset.
    pub id: MessageId,
    /// Unix seconds.
    pub timestamp: u64,
}

#[derive(Serialize)]
struct PublishFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    message: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    id: &'a str,
    timestamp: u64,
}

impl Message {
    fn frame(&self, kind: &'static str, index: Option<usize>) -> Frame {
        encode(&PublishFrame {
            kind,
            room: self.room.as_str(),
            index,
            message: &self.message,
            client_id: self.client_id.as_ref().map(ClientId::as_str),
            user: self.user.as_deref(),
            id: &self.id.to_string(),
            timestamp: self.timestamp,
        })
    }

    /// The live delivery frame (`type: publish`).
    pub fn publish_frame(&self) -> Frame {
        self.frame("publish", None)
    }

    /// The frame for this message as the `index`-th of a history reply.
    pub fn history_frame(&self, index: usize) -> Frame {
        self.frame("history_message", Some(index))
    }
}

/// A member of an observable room: `{id, authData?, clientData?}`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Member {
    pub id: ClientId,
    #[serde(rename = "authData", skip_serializing_if = "Option::is_none")]
    pub auth_data: Option<Value>,
    #[serde(rename = "clientData", skip_serializing_if = "Option::is_none")]
    pub client_data: Option<Value>,
}

#[derive(Serialize)]
struct PresenceFrame<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a str,
    data: T,
}

/// The member list a new subscriber of an observable room receives.
pub fn observable_members<'a>(room: &RoomName, members: impl Iterator<Item = &'a Member>) -> Frame {
    let members: Vec<&Member> = members.collect();
    encode(&PresenceFrame {
        kind: "observable_members",
        room: room.as_str(),
        data: members,
    })
}

/// The event the other subscribers receive when `member` joins.
pub fn member_join(room: &RoomName, member: &Member) -> Frame {
    encode(&PresenceFrame {
        kind: "observable_member_join",
        room: room.as_str(),
        data: member,
    })
}

/// The event the remaining subscribers receive when `member` leaves.
pub fn member_leave(room: &RoomName, member: &Member) -> Frame {
    encode(&PresenceFrame {
        kind: "observable_member_leave",
        room: room.as_str(),
        data: member,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name, 256).unwrap()
    }

    fn json_of(frame: &Frame) -> Value {
        serde_json::from_str(frame.as_str()).unwrap()
    }

    #[test]
    fn decodes_every_request_type() {
        let handshake =
            decode(r#"{"type":"handshake","channel":"c","client_data":{"x":1},"version":2,"callback":0}"#).unwrap();
        assert_eq!(handshake.callback, Some(0));
        assert_eq!(
            handshake.request,
            Request::Handshake {
                channel: "c".into(),
                client_data: Some(json!({"x":1}))
            }
        );
        let auth = decode(r#"{"type":"authenticate","token":"a.b.c","callback":1}"#).unwrap();
        assert_eq!(auth.request, Request::Authenticate { token: "a.b.c".into() });
        let sub = decode(r#"{"type":"subscribe","room":"r","history":5,"callback":2}"#).unwrap();
        assert_eq!(
            sub.request,
            Request::Subscribe {
                room: "r".into(),
                history_count: 5,
                history_since: None
            }
        );
        let unsub = decode(r#"{"type":"unsubscribe","room":"r"}"#).unwrap();
        assert_eq!(unsub.callback, None);
        let publish = decode(r#"{"type":"publish","room":"r","message":{"a":[1, 2]}}"#).unwrap();
        match publish.request {
            Request::Publish { message, .. } => assert_eq!(message.get(), r#"{"a":[1, 2]}"#),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn falsy_messages_are_valid_but_a_missing_message_is_not() {
        for message in ["null", "0", "false", "\"\""] {
            let text = format!(r#"{{"type":"publish","room":"r","message":{message}}}"#);
            assert!(decode(&text).is_ok(), "{message}");
        }
        assert_eq!(
            decode(r#"{"type":"publish","room":"r","callback":4}"#),
            Err(DecodeError::Malformed { callback: Some(4) })
        );
    }

    #[test]
    fn malformed_and_unknown_frames() {
        assert_eq!(decode("[1]"), Err(DecodeError::Malformed { callback: None }));
        assert_eq!(
            decode(r#"["subscribe", 2]"#),
            Err(DecodeError::Malformed { callback: None })
        );
        assert_eq!(decode("nope"), Err(DecodeError::Malformed { callback: None }));
        assert_eq!(
            decode(r#"{"type":"subscribe","callback":3}"#),
            Err(DecodeError::Malformed { callback: Some(3) })
        );
        assert_eq!(
            decode(r#"{"type":"authenticate","token":5,"callback":3}"#),
            Err(DecodeError::Malformed { callback: Some(3) })
        );
        assert_eq!(
            decode(r#"{"type":"subscribe","room":"r","history_count":"x","callback":3}"#),
            Err(DecodeError::Malformed { callback: Some(3) })
        );
        assert_eq!(
            decode(r#"{"type":"dance","callback":7}"#),
            Err(DecodeError::UnknownType { callback: Some(7) })
        );
        assert_eq!(
            decode(r#"{"type":"dance"}"#),
            Err(DecodeError::UnknownType { callback: None })
        );
        assert_eq!(
            decode(r#"{"callback":7}"#),
            Err(DecodeError::Malformed { callback: Some(7) })
        );
    }

    const LIMITS: FrameLimits = FrameLimits {
        max_bytes: 1024,
        max_depth: 4,
    };

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn peeks_a_top_level_integer_callback() {
        assert_eq!(peek_callback(r#"{"callback":7}"#), Some(7));
        assert_eq!(peek_callback(r#" { "type" : "x" , "callback" : -3 } "#), Some(-3));
        assert_eq!(
            peek_callback(r#"{"a":{"callback":1},"b":["callback",2],"callback":0}"#),
            Some(0)
        );
        assert_eq!(peek_callback(r#"{"s":"\"callback\":1","callback":5}"#), Some(5));
        assert_eq!(
            peek_callback(r#"{"c\u0061llback":9}"#),
            Some(9),
            "escaped keys are keys"
        );
        assert_eq!(
            peek_callback(&format!(r#"{{"message":{},"callback":4}}"#, nested(10_000))),
            Some(4)
        );
    }

    #[test]
    fn peek_refuses_what_it_cannot_be_sure_of() {
        for text in [
            r#"{"a":{"callback":1}}"#,
            r#"{"callback":1,"callback":2}"#,
            r#"{"callback":1.5}"#,
            r#"{"callback":1e3}"#,
            r#"{"callback":01}"#,
            r#"{"callback":"1"}"#,
            r#"{"callback":null}"#,
            r#"{"callback":99999999999999999999}"#,
            r#"{"callback":1"#,
            r#"{"callback":1} trailing"#,
            r#"[{"callback":1}]"#,
            r#"{"callback" 1}"#,
            r#"{"x":"unterminated,"callback":1}"#,
            "",
            "{",
        ] {
            assert_eq!(peek_callback(text), None, "{text}");
        }
    }

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert!(!nesting_exceeds(&nested(4), 4));
        assert!(nesting_exceeds(&nested(5), 4));
        assert!(!nesting_exceeds(r#"{"a":"[[[[[[[[[[{{{{{{","b":"\"[[[[[["}"#, 1));
        assert!(nesting_exceeds(r#"{"a":{"b":{}}}"#, 2));
        assert!(!nesting_exceeds("]]]]]][[", 2), "stray closers do not go negative");
        assert!(
            nesting_exceeds(&nested(1_000_000), 64),
            "no recursion, no stack overflow"
        );
    }

    #[test]
    fn frames_over_the_limits_are_refused_with_their_callback() {
        let deep = format!(
            r#"{{"type":"publish","room":"r","message":{},"callback":2}}"#,
            nested(5)
        );
        assert_eq!(
            decode_within(&deep, LIMITS),
            Err(DecodeError::TooDeep { callback: Some(2) })
        );
        let ok = format!(
            r#"{{"type":"publish","room":"r","message":{},"callback":2}}"#,
            nested(4)
        );
        assert!(
            decode_within(&ok, LIMITS).is_ok(),
            "the message may nest max_depth levels"
        );
        let deep_data = format!(r#"{{"type":"handshake","channel":"c","client_data":{}}}"#, nested(5));
        assert_eq!(
            decode_within(&deep_data, LIMITS),
            Err(DecodeError::TooDeep { callback: None })
        );

        let large = format!(
            r#"{{"callback":3,"type":"publish","room":"r","message":"{}"}}"#,
            "x".repeat(1024)
        );
        assert_eq!(
            decode_within(&large, LIMITS),
            Err(DecodeError::TooLarge { callback: Some(3) })
        );
        let large = format!(r#"{{"type":"publish","room":"r","message":"{}"}}"#, "x".repeat(1024));
        assert_eq!(
            decode_within(&large, LIMITS),
            Err(DecodeError::TooLarge { callback: None })
        );
        // Far deeper than serde_json's own recursion limit: refused before serde sees it.
        let very_deep = format!(r#"{{"callback":1,"message":{}}}"#, nested(30_000));
        let limits = FrameLimits {
            max_bytes: usize::MAX,
            max_depth: 64,
        };
        assert_eq!(
            decode_within(&very_deep, limits),
            Err(DecodeError::TooDeep { callback: Some(1) })
        );

        assert_eq!(DecodeError::TooLarge { callback: None }.text(), "Message too large");
        assert_eq!(
            DecodeError::TooDeep { callback: None }.text(),
            "Message too deeply nested"
        );
        assert_eq!(DecodeError::TooDeep { callback: None }.refusal(), Some("too_deep"));
        assert_eq!(DecodeError::TooLarge { callback: None }.refusal(), Some("too_large"));
        assert_eq!(DecodeError::Malformed { callback: None }.refusal(), None);
    }

    #[test]
    fn a_duplicate_key_is_malformed_but_correlated() {
        assert_eq!(
            decode(r#"{"type":"subscribe","room":"a","room":"b","callback":6}"#),
            Err(DecodeError::Malformed { callback: Some(6) })
        );
        // Not JSON at all: nothing in it is trusted.
        assert_eq!(
            decode(r#"{"callback":6,"type":"subscribe","room":}"#),
            Err(DecodeError::Malformed { callback: None })
        );
    }

    #[test]
    fn client_data_size_is_measured_as_compact_json() {
        let data = json!({"name": "x".repeat(10)});
        let size = data.to_string().len();
        assert!(fits_serialized(&data, size));
        assert!(!fits_serialized(&data, size - 1));
        assert!(fits_serialized(&json!(null), 4));
        assert!(!fits_serialized(&json!("x".repeat(1 << 20)), 1024));
    }

    #[test]
    fn reply_shapes() {
        assert_eq!(reply(0, None).as_str(), r#"{"callback":0}"#);
        assert_eq!(
            reply(3, Some("Unauthorized")).as_str(),
            r#"{"callback":3,"error":"Unauthorized"}"#
        );
        assert_eq!(
            error("Rate limit exceeded").as_str(),
            r#"{"error":"Rate limit exceeded"}"#
        );
        assert_eq!(
            handshake_error(1, "Unknown channel").as_str(),
            r#"{"callback":1,"client_id":"","error":"Unknown channel"}"#
        );
        assert_eq!(
            room_error("Unauthorized", &room("r")).as_str(),
            r#"{"error":"Unauthorized","room":"r"}"#
        );
    }

    #[test]
    fn publish_and_history_frames_have_integer_timestamps_and_omit_absent_publishers() {
        let message = Message {
            room: room("chat"),
            message: RawValue::from_string("\"Hello\"".into()).unwrap(),
            client_id: None,
            user: None,
            id: MessageId {
                epoch: "e".into(),
                offset: 1,
            },
            timestamp: 1_763_772_000,
        };
        let id = "e-00000000000000000001";
        assert_eq!(
            json_of(&message.publish_frame()),
            json!({"type":"publish","room":"chat","message":"Hello","id":id,"timestamp":1_763_772_000})
        );
        assert_eq!(
            json_of(&message.history_frame(0)),
            json!({"type":"history_message","room":"chat","index":0,"message":"Hello","id":id,"timestamp":1_763_772_000})
        );
        let from_alice = Message {
            user: Some("alice".into()),
            ..message
        };
        assert_eq!(json_of(&from_alice.publish_frame())["user"], "alice");
    }

    #[test]
    fn members_omit_absent_keys() {
        let member = Member {
            id: ClientId::generate("r3k"),
            auth_data: Some(json!({"name":"misty_moon"})),
            client_data: None,
        };
        let r = room("observable-room");
        assert_eq!(
            json_of(&member_join(&r, &member)),
            json!({"type":"observable_member_join","room":"observable-room","data":{"id":member.id.as_str(),"authData":{"name":"misty_moon"}}})
        );
        assert_eq!(
            json_of(&observable_members(&r, [&member].into_iter())),
            json!({"type":"observable_members","room":"observable-room","data":[{"id":member.id.as_str(),"authData":{"name":"misty_moon"}}]})
        );
    }

    /// Property tests: decoding never panics, whatever arrives, and what it
    /// accepts or refuses is consistent with what was sent.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        const TEXTS: [&str; 4] = [
            "Malformed frame",
            "Unknown frame type",
            "Message too large",
            "Message too deeply nested",
        ];

        /// JSON values without floats (whose text serde_json may not reproduce digit for digit).
        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<String>().prop_map(Value::from),
            ];
            leaf.prop_recursive(6, 48, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                    prop::collection::vec((any::<String>(), inner), 0..5)
                        .prop_map(|entries| Value::Object(entries.into_iter().collect())),
                ]
            })
        }

        /// Text made of JSON's punctuation and a few meaningful words, which reaches
        /// far more of the scanners' states than arbitrary Unicode does.
        fn json_ish() -> impl Strategy<Value = String> {
            let token = prop_oneof![
                Just("{"),
                Just("}"),
                Just("["),
                Just("]"),
                Just("\""),
                Just("\\"),
                Just(":"),
                Just(","),
                Just(" "),
                Just("\"callback\""),
                Just("\"type\""),
                Just("\"publish\""),
                Just("\"room\""),
                Just("\"message\""),
                Just("-"),
                Just("0"),
                Just("17"),
                Just("1e3"),
                Just("null"),
            ];
            prop::collection::vec(token, 0..48).prop_map(|tokens| tokens.concat())
        }

        /// A request as a client would send it.
        fn inbound_text() -> impl Strategy<Value = String> {
            let quoted = |text: &String| Value::from(text.as_str()).to_string();
            let callback = prop::option::of(any::<i64>());
            let request = prop_oneof![
                (
                    any::<String>(),
                    prop::option::of(json_value().prop_filter("null is absent", |v| !v.is_null()))
                )
                    .prop_map(move |(channel, data)| {
                        let data = data.map(|d| format!(r#","client_data":{d}"#)).unwrap_or_default();
                        format!(r#""type":"handshake","channel":{}{data}"#, quoted(&channel))
                    }),
                any::<String>().prop_map(move |token| format!(r#""type":"authenticate","token":{}"#, quoted(&token))),
                (any::<String>(), any::<u32>(), prop::option::of(any::<String>())).prop_map(
                    move |(room, count, since)| {
                        let since = since
                            .map(|s| format!(r#","history_since":{}"#, quoted(&s)))
                            .unwrap_or_default();
                        format!(
                            r#""type":"subscribe","room":{},"history_count":{count}{since}"#,
                            quoted(&room)
                        )
                    }
                ),
                any::<String>().prop_map(move |room| format!(r#""type":"unsubscribe","room":{}"#, quoted(&room))),
                (any::<String>(), json_value()).prop_map(move |(room, message)| {
                    format!(r#""type":"publish","room":{},"message":{message}"#, quoted(&room))
                }),
            ];
            (request, callback).prop_map(|(fields, callback)| match callback {
                Some(callback) => format!(r#"{{{fields},"callback":{callback}}}"#),
                None => format!("{{{fields}}}"),
            })
        }

        /// Encodes a decoded request again, the way a client would.
        fn encode_request(inbound: &Inbound) -> String {
            let quoted = |text: &str| Value::from(text).to_string();
            let fields = match &inbound.request {
                Request::Handshake { channel, client_data } => {
                    let data = client_data.as_ref().map(|d| format!(r#","client_data":{d}"#));
                    format!(
                        r#""type":"handshake","channel":{}{}"#,
                        quoted(channel),
                        data.unwrap_or_default()
                    )
                }
                Request::Authenticate { token } => format!(r#""type":"authenticate","token":{}"#, quoted(token)),
                Request::Subscribe {
                    room,
                    history_count,
                    history_since,
                } => {
                    let since = history_since
                        .as_ref()
                        .map(|s| format!(r#","history_since":{}"#, quoted(s)));
                    format!(
                        r#""type":"subscribe","room":{},"history_count":{history_count}{}"#,
                        quoted(room),
                        since.unwrap_or_default()
                    )
                }
                Request::Unsubscribe { room } => format!(r#""type":"unsubscribe","room":{}"#, quoted(room)),
                Request::Publish { room, message } => {
                    format!(
                        r#""type":"publish","room":{},"message":{}"#,
                        quoted(room),
                        message.get()
                    )
                }
            };
            match inbound.callback {
                Some(callback) => format!(r#"{{{fields},"callback":{callback}}}"#),
                None => format!("{{{fields}}}"),
            }
        }

        fn check_error(error: DecodeError) {
            let expected = match error {
                DecodeError::Malformed { .. } => TEXTS[0],
                DecodeError::UnknownType { .. } => TEXTS[1],
                DecodeError::TooLarge { .. } => TEXTS[2],
                DecodeError::TooDeep { .. } => TEXTS[3],
            };
            assert_eq!(error.text(), expected);
        }

        fn limits() -> FrameLimits {
            FrameLimits {
                max_bytes: 64 * 1024,
                max_depth: 3,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]

            #[test]
            fn arbitrary_text_never_panics(text in any::<String>()) {
                if let Err(error) = decode_within(&text, limits()) {
                    check_error(error);
                }
                let _ = peek_callback(&text);
                let _ = nesting_exceeds(&text, 3);
            }

            #[test]
            fn json_like_text_never_panics(text in json_ish()) {
                if let Err(error) = decode_within(&text, limits()) {
                    check_error(error);
                }
                // Whatever the peek reads, serde must agree where it can parse the frame.
                if let (Some(peeked), Ok(Value::Object(object))) = (peek_callback(&text), serde_json::from_str::<Value>(&text)) {
                    prop_assert_eq!(object.get("callback").and_then(Value::as_i64), Some(peeked));
                }
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    let _ = decode_within(text, limits());
                }
                let _ = peek_callback(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn an_integer_callback_is_always_echoed(value in json_value(), callback in any::<i64>(), tiny in any::<bool>()) {
                let mut frame = match value {
                    Value::Object(object) => object,
                    other => [("message".to_owned(), other)].into_iter().collect(),
                };
                frame.insert("callback".into(), callback.into());
                let text = Value::Object(frame).to_string();
                let limits = if tiny { FrameLimits { max_bytes: text.len() / 2, max_depth: 3 } } else { limits() };
                if let Err(error) = decode_within(&text, limits) {
                    check_error(error);
                    prop_assert_eq!(error.callback(), Some(callback), "{}", text);
                }
            }

            #[test]
            fn requests_survive_a_round_trip(text in inbound_text()) {
                let unlimited = FrameLimits { max_bytes: usize::MAX, max_depth: 64 };
                let inbound = decode_within(&text, unlimited);
                prop_assert!(inbound.is_ok(), "{} -> {:?}", text, inbound);
                let inbound = inbound.unwrap();
                let again = encode_request(&inbound);
                prop_assert_eq!(decode(&again), Ok(inbound));
            }
        }
    }
}
