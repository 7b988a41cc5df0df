//! The messages of a gRPC body, counted and digested as they stream past.
//!
//! A gRPC body is a run of length-prefixed messages (gRPC's PROTOCOL-HTTP2.md: a compressed
//! flag byte, a four-byte big-endian length, the message), cut into HTTP/2 frames wherever
//! the sender liked. The audit entry of an exchange carries the number of message bytes and
//! the SHA-256 of the messages one after the other, prefixes left out, as
//! `gateway/exchange_log.py` computes them from the messages grpcio hands it.

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// The five bytes before each message.
const PREFIX: usize = 5;

/// The running count and digest of one direction's messages.
#[derive(Debug, Clone, Default)]
pub struct MessageDigest {
    digest: Sha256,
    bytes: u64,
    messages: u64,
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
    /// The longest message announced so far.
    largest: u64,
}

impl MessageDigest {
    /// Take in the next piece of the body, wherever it was cut.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining == 0 {
                let take = (PREFIX - self.prefix_len).min(data.len());
                self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&data[..take]);
                self.prefix_len += take;
                data = &data[take..];
                if self.prefix_len == PREFIX {
                    let length = [
                        self.prefix[1],
                        self.prefix[2],
                        self.prefix[3],
                        self.prefix[4],
                    ];
                    self.remaining = u64::from(u32::from_be_bytes(length));
                    self.largest = self.largest.max(self.remaining);
                    self.prefix_len = 0;
                    self.messages += 1;
                }
                continue;
            }
            let take =
                usize::try_from(self.remaining).map_or(data.len(), |left| left.min(data.len()));
            self.digest.update(&data[..take]);
            self.bytes += take as u64;
            self.remaining -= take as u64;
            data = &data[take..];
        }
    }

    /// The message bytes seen so far.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The length of the longest message begun so far, as its prefix announced it: known
    /// before its bytes arrive, so that an oversized message is refused unread.
    #[must_use]
    pub fn largest(&self) -> u64 {
        self.largest
    }

    /// The messages begun so far.
    #[must_use]
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// The lowercase hex SHA-256 of the message bytes seen so far.
    #[must_use]
    pub fn hex(&self) -> String {
        hex::encode(self.digest.clone().finalize())
    }
}

/// One gRPC message frame: uncompressed, its length, the message.
#[must_use]
pub fn frame(message: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    // The gateway's own messages are a few bytes: the length fits a u32.
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
    framed.extend_from_slice(message);
    Bytes::from(framed)
}

/// The message of a body that is exactly one uncompressed frame.
#[must_use]
pub fn unframe(body: &[u8]) -> Option<&[u8]> {
    let (&compressed, rest) = body.split_first()?;
    let (length, message) = rest.split_at_checked(4)?;
    let length = usize::try_from(u32::from_be_bytes(length.try_into().ok()?)).ok()?;
    (compressed == 0 && message.len() == length).then_some(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(messages: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::new();
        for message in messages {
            body.push(0);
            body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
            body.extend_from_slice(message);
        }
        body
    }

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    #[test]
    fn the_digest_covers_the_messages_without_their_prefixes() {
        let mut digest = MessageDigest::default();
        digest.update(&framed(&[b"hello", b"", b"world"]));
        assert_eq!(digest.bytes(), 10);
        assert_eq!(digest.messages(), 3);
        assert_eq!(digest.hex(), sha256_hex(b"helloworld"));
    }

    #[test]
    fn wherever_the_body_is_cut_the_digest_is_the_same() {
        let body = framed(&[b"a first message", &[0u8; 300], b"x"]);
        let mut whole = MessageDigest::default();
        whole.update(&body);
        for cut in 0..body.len() {
            for step in [1, 2, 3, 7] {
                let mut pieces = MessageDigest::default();
                pieces.update(&body[..cut]);
                for chunk in body[cut..].chunks(step) {
                    pieces.update(chunk);
                }
                assert_eq!(pieces.hex(), whole.hex(), "cut at {cut}, then by {step}");
                assert_eq!(pieces.bytes(), whole.bytes());
            }
        }
    }

    #[test]
    fn no_message_is_the_digest_of_nothing() {
        let digest = MessageDigest::default();
        assert_eq!(digest.bytes(), 0);
        assert_eq!(digest.hex(), sha256_hex(b""));
    }
}
