//! The benchmark message: a JSON object carrying send time, sequence and publisher index,
//! padded to a fixed size so both servers carry the same bytes.

/// Fields carried by every benchmark message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// Send time, nanoseconds on the generator's clock ([`crate::stats::now_ns`]).
    pub t: u64,
    /// Sequence number, per publisher, from 0.
    pub s: u64,
    /// Publisher index within the run.
    pub p: u64,
}

/// Builds `{"t":…,"s":…,"p":…,"x":"…"}` padded with `x` to at least `size` bytes.
pub fn encode(stamp: Stamp, size: usize) -> String {
    let mut out = format!(r#"{{"t":{},"s":{},"p":{},"x":""#, stamp.t, stamp.s, stamp.p);
    let pad = size.saturating_sub(out.len() + 2);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
    out
}

/// Finds the stamp inside a delivered frame (the payload may be wrapped by the protocol).
///
/// This is a scan for the three keys rather than a JSON parse, so that the load generator spends
/// the same small effort per delivery on both servers.
pub fn decode(frame: &[u8]) -> Option<Stamp> {
    let t = field(frame, b"\"t\":")?;
    let s = field(frame, b"\"s\":")?;
    let p = field(frame, b"\"p\":")?;
    Some(Stamp { t, s, p })
}

fn field(hay: &[u8], key: &[u8]) -> Option<u64> {
    let start = find(hay, key)? + key.len();
    let rest = &hay[start..];
    let rest = &rest[rest.iter().position(|b| !b.is_ascii_whitespace())?..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

/// Position of the first occurrence of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let st = Stamp { t: 123, s: 4, p: 5 };
        let m = encode(st, 110);
        assert_eq!(m.len(), 110);
        assert_eq!(decode(m.as_bytes()), Some(st));
        let wrapped =
            format!(r#"{{"type":"publish","room":"bench-a","message":{m},"client_id":"x","id":"y","timestamp":9}}"#);
        assert_eq!(decode(wrapped.as_bytes()), Some(st));
    }

    #[test]
    fn small_size_is_not_truncated() {
        let st = Stamp { t: 1, s: 2, p: 3 };
        assert_eq!(decode(encode(st, 0).as_bytes()), Some(st));
    }
}
