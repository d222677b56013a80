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

use crate::engine::MessageId;
use crate::ids::{ClientId, RoomName};

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
}

impl DecodeError {
    pub fn callback(self) -> Option<i64> {
        match self {
            DecodeError::Malformed { callback } | DecodeError::UnknownType { callback } => callback,
        }
    }

    /// The wire text of the error.
    pub fn text(self) -> &'static str {
        match self {
            DecodeError::Malformed { .. } => "Malformed frame",
            DecodeError::UnknownType { .. } => "Unknown frame type",
        }
    }
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

/// Decodes one client frame (text, or the UTF-8 payload of a binary frame).
pub fn decode(text: &str) -> Result<Inbound<'_>, DecodeError> {
    // serde would also read a struct from a JSON array; frames must be objects.
    if !text.trim_start().starts_with('{') {
        return Err(DecodeError::Malformed { callback: None });
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(|_| DecodeError::Malformed { callback: None })?;
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
}
