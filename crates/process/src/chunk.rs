//! Encoding inputs into chunks for the wire: one bad input is reported alone, and no chunk
//! grows past the pool's message limit.
//!
//! A chunk is postcard's encoding of a `Vec<Input>` (the element count as a varint, then each
//! element), built one element at a time so that an input that fails to serialize, or that is
//! too large on its own, becomes that input's error instead of the whole chunk's.

use fanout_core::{JobError, PayloadPart};
use serde::Serialize;

pub(crate) struct ChunkEncoder {
    body: Vec<u8>,
    count: usize,
    limit: usize,
}

/// What happened to an input offered to a chunk.
pub(crate) enum Pushed {
    /// It is in the chunk.
    Added,
    /// The chunk is full: finish it and offer the input to the next one.
    Full,
    /// The input cannot travel at all.
    Failed(JobError),
}

impl ChunkEncoder {
    pub(crate) fn new(limit: usize) -> Self {
        Self { body: Vec::new(), count: 0, limit }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn push<T: Serialize>(&mut self, input: &T) -> Pushed {
        let before = self.body.len();
        if let Err(error) = postcard::to_io(input, &mut self.body) {
            self.body.truncate(before);
            return Pushed::Failed(JobError::Serialization {
                part: PayloadPart::Input,
                encoding: true,
                message: error.to_string(),
            });
        }
        let size = self.body.len() - before;
        // The varint count takes at most 10 bytes.
        if self.body.len() + 10 > self.limit {
            self.body.truncate(before);
            if self.count > 0 && size + 10 <= self.limit {
                return Pushed::Full;
            }
            return Pushed::Failed(JobError::Serialization {
                part: PayloadPart::Input,
                encoding: true,
                message: format!(
                    "this input takes {size} bytes, over the pool's message limit of {} bytes; \
                     raise ProcessPoolBuilder::max_message_bytes",
                    self.limit
                ),
            });
        }
        self.count += 1;
        Pushed::Added
    }

    /// The encoded `Vec<Input>`, and a fresh encoder for the next chunk.
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        let mut bytes = postcard::to_stdvec(&self.count).unwrap_or_default();
        bytes.extend_from_slice(&self.body);
        self.body.clear();
        self.count = 0;
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_is_postcards_encoding_of_a_vec() {
        let inputs: Vec<(String, u64)> = (0..300).map(|i| (format!("input {i}"), i * 1_000_003)).collect();
        let mut encoder = ChunkEncoder::new(usize::MAX);
        for input in &inputs {
            assert!(matches!(encoder.push(input), Pushed::Added));
        }
        assert_eq!(encoder.finish(), postcard::to_stdvec(&inputs).unwrap());
    }

    #[test]
    fn a_full_chunk_refuses_more_and_an_oversized_input_fails_alone() {
        let mut encoder = ChunkEncoder::new(64);
        assert!(matches!(encoder.push(&vec![1_u8; 30]), Pushed::Added));
        assert!(matches!(encoder.push(&vec![2_u8; 30]), Pushed::Full));
        assert!(matches!(encoder.push(&vec![3_u8; 100]), Pushed::Failed(JobError::Serialization { .. })));
        assert_eq!(encoder.len(), 1);
        let bytes = encoder.finish();
        assert_eq!(postcard::from_bytes::<Vec<Vec<u8>>>(&bytes).unwrap(), vec![vec![1_u8; 30]]);
    }
}
