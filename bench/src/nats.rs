//! NATS adapter: the NATS text protocol (INFO, CONNECT, SUB, PUB, MSG, PING/PONG) carried in
//! WebSocket binary frames, as nats-server's WebSocket listener expects. A "room" is a subject.
//!
//! nats-server may split one protocol message over several WebSocket frames or pack several
//! into one, so incoming bytes go through a small streaming parser ([`Parser`]).

use tokio_tungstenite::tungstenite::Message;

use crate::ws::{Event, Ws, recv_timeout, send};

const CONNECT: &str = r#"CONNECT {"verbose":false,"pedantic":false,"tls_required":false,"name":"rookery-bench","lang":"rust","version":"0.1.0","protocol":1,"echo":true,"headers":false,"no_responders":false}"#;

/// Reads INFO, sends CONNECT (and SUB when `room` is given), then waits for the PONG that
/// answers a PING, which proves the server processed everything before it.
pub async fn setup(ws: &mut Ws, parser: &mut Parser, room: Option<&str>) -> anyhow::Result<()> {
    let mut out = format!("{CONNECT}\r\n");
    if let Some(room) = room {
        out.push_str(&format!("SUB {room} 1\r\n"));
    }
    out.push_str("PING\r\n");
    send(ws, Message::binary(out.into_bytes())).await?;
    loop {
        let msg = recv_timeout(ws).await?;
        let mut pong = false;
        let mut err = None;
        parser.feed(&msg, |ev| match ev {
            Event::Pong => pong = true,
            Event::Error(e) => err = Some(e),
            _ => {}
        });
        if let Some(e) = err {
            anyhow::bail!("nats error during setup: {e}");
        }
        if pong {
            return Ok(());
        }
    }
}

/// One `PUB` in one WebSocket frame (like one Rookery publish per frame).
pub fn publish(room: &str, payload: &str) -> Message {
    Message::binary(format!("PUB {room} {}\r\n{payload}\r\n", payload.len()).into_bytes())
}

/// Streaming parser of server-to-client NATS protocol bytes.
#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// Payload size still awaited after a `MSG` line, if any.
    pending: Option<usize>,
    /// PINGs received that still need a PONG.
    pub pings: u32,
}

impl Parser {
    /// Feeds one WebSocket message and reports every complete protocol event.
    pub fn feed(&mut self, msg: &Message, mut on: impl FnMut(Event<'_>)) {
        let data: &[u8] = match msg {
            Message::Binary(b) => b,
            Message::Text(t) => t.as_bytes(),
            _ => return,
        };
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        loop {
            if let Some(n) = self.pending {
                if self.buf.len() - pos < n + 2 {
                    break;
                }
                on(Event::Delivery(&self.buf[pos..pos + n]));
                pos += n + 2;
                self.pending = None;
                continue;
            }
            let Some(eol) = crate::payload::find(&self.buf[pos..], b"\r\n") else {
                break;
            };
            let line = &self.buf[pos..pos + eol];
            pos += eol + 2;
            if line.starts_with(b"MSG ") {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let size = std::str::from_utf8(line)
                    .ok()
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|n| n.parse().ok());
                match size {
                    Some(n) => self.pending = Some(n),
                    None => on(Event::Error(String::from_utf8_lossy(line).into_owned())),
                }
            } else if line.starts_with(b"PING") {
                self.pings += 1;
            } else if line.starts_with(b"PONG") {
                on(Event::Pong);
            } else if line.starts_with(b"-ERR") {
                on(Event::Error(String::from_utf8_lossy(line).into_owned()));
            }
            // INFO and +OK need no action.
        }
        if pos >= self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..pos);
        }
    }

    /// The PONG frame answering the PINGs seen so far, if any.
    pub fn take_pongs(&mut self) -> Option<Message> {
        if self.pings == 0 {
            return None;
        }
        let out = "PONG\r\n".repeat(self.pings as usize);
        self.pings = 0;
        Some(Message::binary(out.into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(p: &mut Parser, chunk: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        p.feed(&Message::binary(chunk.to_vec()), |ev| {
            if let Event::Delivery(d) = ev {
                out.push(d.to_vec());
            }
        });
        out
    }

    #[test]
    fn split_and_packed_messages() {
        let mut p = Parser::default();
        let all = b"INFO {}\r\nMSG a 1 5\r\nhello\r\nPING\r\nMSG a 1 3\r\nabc\r\nMSG b 1 r 2\r\nxy\r\n";
        // Feed one byte at a time, then all at once.
        let mut got = Vec::new();
        for b in all.iter() {
            got.extend(collect(&mut p, &[*b]));
        }
        assert_eq!(got, vec![b"hello".to_vec(), b"abc".to_vec(), b"xy".to_vec()]);
        assert_eq!(
            p.take_pongs().map(|m| m.into_data().to_vec()),
            Some(b"PONG\r\n".to_vec())
        );
        let mut p = Parser::default();
        assert_eq!(collect(&mut p, all).len(), 3);
        assert!(p.buf.is_empty());
    }
}
