//! Deterministic pseudo-random numbers: a tiny splitmix64 generator keyed by
//! `(seed, kind, id)`, so every generated value can be recomputed on its own, in any order.

/// The kinds of generated values; each keys an independent stream.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(crate) enum Kind {
    Item = 1,
    Ticket = 2,
    AttachmentCount = 3,
    AttachmentCountAdjust = 4,
    AttachmentMeta = 5,
    AttachmentBytes = 6,
    /// The fate of one attempt of one request (fault injection).
    Fault = 7,
}

/// One step of splitmix64's output function (a strong 64-bit mixer).
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A splitmix64 stream.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

    /// A stream keyed by the seed, the kind of value and the id of the thing generated.
    pub(crate) fn keyed(seed: u64, kind: Kind, id: u64) -> Self {
        let state = mix64(seed ^ mix64((kind as u64).wrapping_mul(Self::GAMMA) ^ mix64(id)));
        Self { state }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GAMMA);
        mix64(self.state)
    }

    /// A uniform number in `[0, 1)` (53 random bits).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A number in `0..n` (`0` when `n == 0`); the tiny modulo bias does not matter here.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A number in `lo..=hi` (`lo` when `hi < lo`).
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo { lo } else { lo + self.below(hi - lo + 1) }
    }

    /// One element of a non-empty slice.
    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        let len = u64::try_from(items.len()).unwrap_or(u64::MAX);
        let idx = usize::try_from(self.below(len)).unwrap_or(0);
        items.get(idx).copied().unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_and_keyed() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::keyed(42, Kind::Item, 7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix64::keyed(42, Kind::Item, 7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = SplitMix64::keyed(42, Kind::Ticket, 7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut r = SplitMix64::keyed(1, Kind::Item, 1);
        for _ in 0..1000 {
            let v = r.range(3, 9);
            assert!((3..=9).contains(&v));
        }
        assert_eq!(r.range(5, 5), 5);
        assert_eq!(r.below(0), 0);
    }
}
