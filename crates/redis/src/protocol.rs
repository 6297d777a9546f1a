//! What travels through Redis: the keys of a queue, the fields of a job entry, code offsets,
//! the build identity of the executable, and the scripts that make a completion atomic.
//!
//! Code travels as an offset from [`code_anchor`], as in fanout-process: the same offset from
//! the same function names the same code in every start of the same executable. A worker on
//! another host may run *another* build, so every entry also carries the caller's
//! [`build_id`] (the ELF build id of the executable), and a worker calls code by address only
//! when it equals its own.

use std::sync::OnceLock;

use fanout_core::plumbing::EncodedEntry;

/// The version of the entry format; a worker refuses entries of another version.
pub(crate) const VERSION: &[u8] = b"1";

/// The consumer group every worker of a queue reads in.
pub(crate) const GROUP: &str = "fanout-workers";

/// The Redis keys of one queue (and of one run on it).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    queue: String,
}

impl Keys {
    pub(crate) fn new(queue: &str) -> Self {
        Self { queue: queue.to_owned() }
    }

    /// The stream of job entries, read by the consumer group.
    pub(crate) fn jobs(&self) -> String {
        format!("fanout:{}:jobs", self.queue)
    }

    /// The dead-letter stream: entries delivered too often, foreign or malformed ones.
    pub(crate) fn dead(&self) -> String {
        format!("fanout:{}:dead", self.queue)
    }

    /// The set of the run keys of live pools on this queue.
    pub(crate) fn runs(&self) -> String {
        format!("fanout:{}:runs", self.queue)
    }

    /// The stream of a run's results, read by its pool.
    pub(crate) fn done(&self, run: &str) -> String {
        format!("fanout:{}:done:{run}", self.queue)
    }

    /// The count of a run's duplicate results (dropped, never delivered).
    pub(crate) fn dups(&self, run: &str) -> String {
        format!("fanout:{}:dups:{run}", self.queue)
    }
}

/// Stores a chunk's result at most once, acknowledges and deletes its entry, atomically.
///
/// A chunk is added as one entry, once, so the first result is the one whose `XACK` finds the
/// entry pending (answers 1): a later result of the same entry (a worker that was taken over
/// while alive) finds it acknowledged and deleted. No per-chunk record is kept to tell them
/// apart (an `HSETNX` per job cost the server about a microsecond, more as the hash grew).
///
/// KEYS: done, jobs, dups. ARGV: chunk id, encoded outcome, group, entry id.
/// Returns 1 for a first result, 0 for a duplicate (counted in `dups`).
pub(crate) const COMPLETE: &str = r"
local first = redis.call('XACK', KEYS[2], ARGV[3], ARGV[4])
redis.call('XDEL', KEYS[2], ARGV[4])
if first == 1 then
  redis.call('XADD', KEYS[1], '*', 'c', ARGV[1], 'r', ARGV[2])
  return 1
end
redis.call('INCR', KEYS[3])
return 0
";

/// Deletes an entry that no worker has read yet. KEYS: jobs. ARGV: group, entry id.
/// Returns 1 if it was deleted, 0 if a worker holds it (or it is gone).
pub(crate) const CANCEL_UNREAD: &str = r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if #pending == 0 then
  return redis.call('XDEL', KEYS[1], ARGV[2])
end
return 0
";

/// The function every code offset is taken from.
#[inline(never)]
pub(crate) fn code_anchor() {
    std::hint::black_box(());
}

/// The offset of a job's entry point from [`code_anchor`].
pub(crate) fn offset_of_entry(entry: EncodedEntry) -> i64 {
    (entry as usize).wrapping_sub(code_anchor as fn() as usize) as isize as i64
}

/// The job entry point at `offset`, in a worker.
///
/// # Safety
/// `offset` must come from [`offset_of_entry`] in a process running the same executable (the
/// worker checks the entry's build id against its own [`build_id`] and its run key first).
pub(crate) unsafe fn entry_at(offset: i64) -> EncodedEntry {
    let address = (code_anchor as fn() as usize).wrapping_add(offset as isize as usize);
    // SAFETY: by the caller's contract, `address` is where this executable keeps the same
    // `EncodedEntry` function the caller named, and a function pointer is an address.
    unsafe { std::mem::transmute::<usize, EncodedEntry>(address) }
}

/// The identity of this executable's build: its ELF build id (`NT_GNU_BUILD_ID`, which the
/// linker derives from the whole output), as hex; without one, a hash of the file's length and
/// contents. Computed once per process, reading only the headers and notes of the file.
pub fn build_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let file = std::fs::File::open("/proc/self/exe").ok();
        match file.as_ref().and_then(|file| elf_build_id(&|at, len| read_at(file, at, len))) {
            Some(id) => id.iter().map(|b| format!("{b:02x}")).collect(),
            None => {
                use std::hash::{Hash, Hasher};
                let bytes = std::fs::read("/proc/self/exe").unwrap_or_default();
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                bytes.len().hash(&mut hasher);
                bytes.hash(&mut hasher);
                format!("h{:016x}", hasher.finish())
            }
        }
    })
}

/// `len` bytes of `file` at `at`, if it has them.
fn read_at(file: &std::fs::File, at: usize, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut bytes = vec![0; len];
    file.read_exact_at(&mut bytes, u64::try_from(at).ok()?).ok()?;
    Some(bytes)
}

/// The `NT_GNU_BUILD_ID` note of a 64-bit little-endian ELF file, from its program headers;
/// `read(at, len)` reads the file.
fn elf_build_id(read: &dyn Fn(usize, usize) -> Option<Vec<u8>>) -> Option<Vec<u8>> {
    let header = read(0, 64)?;
    let u16_in = |b: &[u8], at: usize| b.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_in = |b: &[u8], at: usize| {
        b.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let u64_in = |b: &[u8], at: usize| {
        b.get(at..at + 8).and_then(|b| usize::try_from(u64::from_le_bytes(b.try_into().ok()?)).ok())
    };
    if header.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let (phoff, phentsize, phnum) = (u64_in(&header, 0x20)?, u16_in(&header, 0x36)?, u16_in(&header, 0x38)?);
    if phentsize < 56 || phnum > 4096 {
        return None;
    }
    let headers = read(phoff, phentsize.checked_mul(phnum)?)?;
    for index in 0..phnum {
        let at = index * phentsize;
        // PT_NOTE
        if u32_in(&headers, at)? != 4 {
            continue;
        }
        let (offset, size) = (u64_in(&headers, at + 8)?, u64_in(&headers, at + 32)?);
        if size > 1 << 20 {
            continue;
        }
        let notes = read(offset, size)?;
        let mut at = 0;
        while at + 12 <= notes.len() {
            let (namesz, descsz, kind) =
                (u32_in(&notes, at)?, u32_in(&notes, at + 4)?, u32_in(&notes, at + 8)?);
            let name = at + 12;
            let desc = name + namesz.div_ceil(4) * 4;
            if kind == 3 && notes.get(name..name + namesz)? == b"GNU\0" {
                return notes.get(desc..desc + descsz).map(<[u8]>::to_vec);
            }
            at = desc + descsz.div_ceil(4) * 4;
        }
    }
    None
}

/// A fresh random key for a new run (from the OS-seeded hasher keys of the standard library).
pub(crate) fn new_run_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut first = std::collections::hash_map::RandomState::new().build_hasher();
    first.write_u64(0x0072_6564_6973);
    let mut second = std::collections::hash_map::RandomState::new().build_hasher();
    second.write_u64(first.finish());
    format!("{:016x}{:016x}", first.finish(), second.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_executable_has_a_stable_build_id() {
        let id = build_id();
        // The linker of this toolchain writes a GNU build id: found, not the fallback hash.
        assert!(!id.starts_with('h') && id.len() >= 16, "{id}");
        assert_eq!(id, build_id());
    }

    #[test]
    fn run_keys_differ() {
        assert_ne!(new_run_key(), new_run_key());
        assert_eq!(new_run_key().len(), 32);
    }

    #[test]
    fn garbage_is_no_elf() {
        let from =
            |bytes: &'static [u8]| move |at: usize, len: usize| bytes.get(at..at + len).map(<[u8]>::to_vec);
        assert_eq!(elf_build_id(&from(b"\x7fELF\x02\x01garbage")), None);
        assert_eq!(elf_build_id(&from(b"")), None);
    }
}
