//! The migration summary and its order-independent checksum.
//!
//! Every migrated item gets a 64-bit FNV-1a digest of a framed byte string; the checksum is
//! the wrapping sum of those digests, printed as 16 lowercase hex digits. Addition commutes,
//! so clients that migrate in any order, concurrently or not, end with the same checksum, and
//! an item stored twice would be counted (and summed) twice. The framing, so that any client
//! can recompute it (`u64` values are 8 little-endian bytes; a string or byte blob is its
//! length as a `u64` followed by its bytes):
//!
//! - ticket: `b"ticket\0"`, the Idempotency-Key (old id), then the posted ticket's `id`,
//!   `subject`, `body`, `requester`, `created_at`, `status`;
//! - attachment: `b"attachment\0"`, the ticket's old id, the attachment name, the bytes.

use serde::{Deserialize, Serialize};

use crate::data::Ticket;

/// The answer of `GET /new/tickets/summary`: what the new system holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Summary {
    /// Number of distinct tickets created (repeated idempotent POSTs count once).
    pub tickets: u64,
    /// Number of distinct attachments uploaded.
    pub attachments: u64,
    /// Order-independent checksum over all of them, 16 lowercase hex digits.
    pub checksum: String,
}

/// 64-bit FNV-1a over framed values.
#[derive(Debug, Clone)]
pub(crate) struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new(tag: &[u8]) -> Self {
        let mut h = Self(Self::OFFSET);
        h.write(tag);
        h
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    pub(crate) fn write_u64(&mut self, v: u64) {
        self.write(&v.to_le_bytes());
    }

    pub(crate) fn write_blob(&mut self, bytes: &[u8]) {
        self.write_u64(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        self.write(bytes);
    }

    /// The hash of everything written so far.
    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// Digest of one migrated ticket, keyed by its old id (the Idempotency-Key).
pub(crate) fn ticket_digest(old_id: u64, ticket: &Ticket) -> u64 {
    let mut h = Fnv1a::new(b"ticket\0");
    h.write_u64(old_id);
    h.write_u64(ticket.id);
    h.write_blob(ticket.subject.as_bytes());
    h.write_blob(ticket.body.as_bytes());
    h.write_blob(ticket.requester.as_bytes());
    h.write_blob(ticket.created_at.as_bytes());
    h.write_blob(ticket.status.as_bytes());
    h.0
}

/// Digest of one migrated attachment of the ticket whose old id is `old_ticket_id`.
pub(crate) fn attachment_digest(old_ticket_id: u64, name: &str, bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::new(b"attachment\0");
    h.write_u64(old_ticket_id);
    h.write_blob(name.as_bytes());
    h.write_blob(bytes);
    h.0
}

/// Running totals behind a [`Summary`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Accumulator {
    tickets: u64,
    attachments: u64,
    sum: u64,
}

impl Accumulator {
    pub(crate) fn add_ticket(&mut self, digest: u64) {
        self.tickets += 1;
        self.sum = self.sum.wrapping_add(digest);
    }

    pub(crate) fn add_attachment(&mut self, digest: u64) {
        self.attachments += 1;
        self.sum = self.sum.wrapping_add(digest);
    }

    pub(crate) fn summary(&self) -> Summary {
        Summary {
            tickets: self.tickets,
            attachments: self.attachments,
            checksum: format!("{:016x}", self.sum),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        let mut h = Fnv1a::new(b"");
        assert_eq!(h.0, 0xcbf2_9ce4_8422_2325);
        h.write(b"a");
        assert_eq!(h.0, 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn checksum_is_order_independent() {
        let digests = [attachment_digest(1, "a", b"x"), attachment_digest(2, "b", b"yy")];
        let mut forward = Accumulator::default();
        let mut backward = Accumulator::default();
        for d in digests {
            forward.add_attachment(d);
        }
        for d in digests.iter().rev() {
            backward.add_attachment(*d);
        }
        assert_eq!(forward.summary(), backward.summary());
        assert_eq!(forward.summary().checksum.len(), 16);
        assert_eq!(Accumulator::default().summary().checksum, "0000000000000000");
    }

    #[test]
    fn framing_separates_fields() {
        assert_ne!(attachment_digest(1, "ab", b"c"), attachment_digest(1, "a", b"bc"));
    }
}
