//! A lean RESP2 connection for the hot paths: a worker's completion script and reads of its
//! next entry, and the pool's reader (its adds, trims and reads of results). Commands are
//! packed by hand into one reused buffer, one write per round trip, and replies parsed
//! straight from the socket's bytes into [`Reply`] (and a read's entries into [`Entry`]).
//!
//! Why not redis-rs for those: at chunk 1 its reply parser (combine, with its partial-parse
//! state) and the conversion of a read to `StreamReadReply` (a `HashMap` of `Value`s per
//! entry) cost a worker about as much CPU per empty job as Redis spent on the job's commands
//! (perf on the worker), and the caller about 3 us a job. Every other command (reclaims, dead
//! letters, run checks, a pool's setup and shutdown) still goes through redis-rs, on
//! connections of its own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;

use crate::{RedisError, RedisUrl};

/// A reply, as RESP2 has them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Status(String),
    /// An error reply: its code (`NOSCRIPT`, `NOGROUP`, `ERR`...) and the rest.
    Error(String),
    Array(Vec<Reply>),
}

impl Reply {
    /// The code of an error reply (its first word).
    pub(crate) fn error_code(&self) -> Option<&str> {
        match self {
            Self::Error(text) => text.split(' ').next(),
            _ => None,
        }
    }
}

/// A stream entry: its id and its fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Entry {
    /// The value of field `name`.
    pub(crate) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields.iter().find(|(key, _)| key == name.as_bytes()).map(|(_, value)| &value[..])
    }

    /// The entries of an `XREADGROUP`/`XREAD` reply (none for a nil one); entries whose data
    /// is gone (`[id, nil]`) are left out.
    pub(crate) fn from_read(reply: Reply) -> Vec<Self> {
        let Reply::Array(streams) = reply else { return Vec::new() };
        let mut out = Vec::new();
        for stream in streams {
            let Reply::Array(mut parts) = stream else { continue };
            let Some(Reply::Array(entries)) = parts.pop() else { continue };
            out.extend(entries.into_iter().filter_map(Self::from_reply));
        }
        out
    }

    fn from_reply(entry: Reply) -> Option<Self> {
        let Reply::Array(mut parts) = entry else { return None };
        let (Some(Reply::Array(flat)), Some(Reply::Bulk(id))) = (parts.pop(), parts.pop()) else {
            return None;
        };
        let id = String::from_utf8(id).ok()?;
        let mut fields = Vec::with_capacity(flat.len() / 2);
        let mut flat = flat.into_iter();
        while let (Some(Reply::Bulk(key)), Some(Reply::Bulk(value))) = (flat.next(), flat.next()) {
            fields.push((key, value));
        }
        Some(Self { id, fields })
    }

    /// The same entry as redis-rs reads it (a reclaim's).
    pub(crate) fn from_stream_id(entry: redis::streams::StreamId) -> Self {
        let fields = entry
            .map
            .into_iter()
            .filter_map(|(key, value)| match value {
                redis::Value::BulkString(bytes) => Some((key.into_bytes(), bytes)),
                redis::Value::SimpleString(text) => Some((key.into_bytes(), text.into_bytes())),
                _ => None,
            })
            .collect();
        Self { id: entry.id, fields }
    }
}

/// What can go wrong on a [`Wire`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the server sent a malformed reply ({0})")]
    Protocol(&'static str),
    #[error("unsupported connection address: only redis:// and redis+unix:// are")]
    Unsupported,
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// The largest bulk string or array a reply may announce (a result or entry is at most the
/// message limit, 64 MiB by default; this only stops a garbled length from allocating wildly).
const MAX_LENGTH: usize = 1 << 32;

/// The receive buffer's size, and the largest kept once a reply is read.
const INITIAL_BUFFER: usize = 16 << 10;
const KEPT_BUFFER: usize = 1 << 20;

/// A connection that sends packed commands and parses their replies.
pub(crate) struct Wire {
    stream: Stream,
    /// Bytes received: `buf[start..end]` are not parsed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The commands being packed for the next [`send`](Self::send).
    out: Vec<u8>,
}

impl Wire {
    /// Connects to the Redis at `url`, authenticates and selects its database.
    pub(crate) fn connect(url: &RedisUrl) -> Result<Self, RedisError> {
        let failed = |e: &dyn std::fmt::Display| url.failed("connect", e);
        let info = redis::IntoConnectionInfo::into_connection_info(url.secret()).map_err(|e| failed(&e))?;
        let stream = match &info.addr {
            redis::ConnectionAddr::Tcp(host, port) => {
                let stream = TcpStream::connect((host.as_str(), *port)).map_err(|e| failed(&e))?;
                // One write per round trip: nothing to coalesce, so no wait for it.
                stream.set_nodelay(true).map_err(|e| failed(&e))?;
                Stream::Tcp(stream)
            }
            redis::ConnectionAddr::Unix(path) => {
                Stream::Unix(UnixStream::connect(path).map_err(|e| failed(&e))?)
            }
            #[allow(unreachable_patterns)]
            _ => return Err(failed(&WireError::Unsupported)),
        };
        let mut wire =
            Self { stream, buf: vec![0; INITIAL_BUFFER], start: 0, end: 0, out: Vec::with_capacity(1 << 10) };
        let settings = &info.redis;
        if let Some(password) = settings.password.as_deref().filter(|p| !p.is_empty()) {
            match settings.username.as_deref() {
                Some(user) => wire.pack(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => wire.pack(&[b"AUTH", password.as_bytes()]),
            }
            wire.expect_ok(url, "authenticate")?;
        }
        if settings.db != 0 {
            wire.pack(&[b"SELECT", settings.db.to_string().as_bytes()]);
            wire.expect_ok(url, "select the database")?;
        }
        Ok(wire)
    }

    fn expect_ok(&mut self, url: &RedisUrl, action: &'static str) -> Result<(), RedisError> {
        self.send().map_err(|e| url.failed(action, &e))?;
        match self.recv().map_err(|e| url.failed(action, &e))? {
            Reply::Status(_) => Ok(()),
            Reply::Error(text) => Err(url.failed(action, &text)),
            _ => Err(url.failed(action, &WireError::Protocol("not a status"))),
        }
    }

    /// Packs one command for the next [`send`](Self::send).
    pub(crate) fn pack(&mut self, args: &[&[u8]]) {
        let out = &mut self.out;
        header(out, b'*', args.len());
        for arg in args {
            header(out, b'$', arg.len());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// Adds a command packed elsewhere (by redis-rs) for the next [`send`](Self::send).
    pub(crate) fn pack_raw(&mut self, packed: &[u8]) {
        self.out.extend_from_slice(packed);
    }

    /// Writes the packed commands, in one write.
    pub(crate) fn send(&mut self) -> Result<(), WireError> {
        let written = match &mut self.stream {
            Stream::Tcp(stream) => stream.write_all(&self.out),
            Stream::Unix(stream) => stream.write_all(&self.out),
        };
        self.out.clear();
        if self.out.capacity() > KEPT_BUFFER {
            // A large result is sent: its room goes back.
            self.out = Vec::with_capacity(1 << 10);
        }
        Ok(written?)
    }

    /// The next reply, read from the socket as far as needed.
    pub(crate) fn recv(&mut self) -> Result<Reply, WireError> {
        loop {
            // Measured before it is parsed: a reply that is still coming (an entry of many
            // megabytes) is looked at once per read without copying what came of it so far.
            if let Some(used) = measure(&self.buf[self.start..self.end])? {
                let Some((reply, parsed)) = parse(&self.buf[self.start..self.start + used])? else {
                    return Err(WireError::Protocol("a reply measured whole did not parse"));
                };
                debug_assert_eq!(parsed, used);
                self.start += used;
                if self.start == self.end {
                    (self.start, self.end) = (0, 0);
                    if self.buf.len() > KEPT_BUFFER {
                        // A large reply is past: its room goes back.
                        self.buf = vec![0; INITIAL_BUFFER];
                    }
                }
                return Ok(reply);
            }
            // Incomplete: make room after what is there, then read more.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            if self.end == self.buf.len() {
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
            let read = match &mut self.stream {
                Stream::Tcp(stream) => stream.read(&mut self.buf[self.end..]),
                Stream::Unix(stream) => stream.read(&mut self.buf[self.end..]),
            };
            match read {
                Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
                Ok(n) => self.end += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// `*N\r\n` or `$N\r\n`.
fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    let mut digits = [0_u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

/// A reply's first line: its type byte, the rest of it, and where the next line starts.
type Line<'a> = (u8, &'a [u8], usize);

/// The first line of `bytes`, or `None` if it is incomplete.
fn line(bytes: &[u8]) -> Result<Option<Line<'_>>, WireError> {
    let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
    match bytes[..end].split_first() {
        Some((&kind, rest)) => Ok(Some((kind, rest, end + 2))),
        None => Err(WireError::Protocol("an empty line")),
    }
}

/// The number of a `:`, `$` or `*` line.
fn number(line: &[u8]) -> Result<i64, WireError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(WireError::Protocol("not a number"))
}

/// A bulk string's or array's length (`None`: nil).
fn length(n: i64) -> Result<Option<usize>, WireError> {
    match usize::try_from(n) {
        Ok(n) if n <= MAX_LENGTH => Ok(Some(n)),
        Ok(_) => Err(WireError::Protocol("a length is too large")),
        Err(_) if n == -1 => Ok(None),
        Err(_) => Err(WireError::Protocol("a negative length")),
    }
}

/// How many bytes the reply at the start of `bytes` takes, or `None` if `bytes` holds only
/// part of it; copies nothing (bulk strings are stepped over by their length).
fn measure(bytes: &[u8]) -> Result<Option<usize>, WireError> {
    // Replies still to step over: an array adds its items.
    let mut left: usize = 1;
    let mut at = 0;
    while left > 0 {
        let Some((kind, text, after)) = line(&bytes[at..])? else { return Ok(None) };
        left -= 1;
        at += after;
        match kind {
            b'+' | b'-' | b':' => {}
            b'$' => {
                if let Some(n) = length(number(text)?)? {
                    at += n + 2;
                    if at > bytes.len() {
                        return Ok(None);
                    }
                }
            }
            b'*' => {
                if let Some(n) = length(number(text)?)? {
                    left += n;
                }
            }
            _ => return Err(WireError::Protocol("an unknown reply type")),
        }
    }
    Ok(Some(at))
}

/// How deep arrays may nest in a reply: a stream read nests four deep (streams, a stream,
/// its entries, an entry's fields), so this only stops a garbled reply from recursing until
/// the stack overflows.
const MAX_DEPTH: usize = 8;

/// One reply at the start of `bytes` and how many bytes it took, or `None` if `bytes` holds
/// only part of it.
fn parse(bytes: &[u8]) -> Result<Option<(Reply, usize)>, WireError> {
    parse_nested(bytes, 0)
}

/// [`parse`] of a reply inside `depth` arrays.
fn parse_nested(bytes: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::Protocol("arrays nest too deep"));
    }
    let Some((kind, line, after)) = line(bytes)? else { return Ok(None) };
    let text = || std::str::from_utf8(line).map_err(|_| WireError::Protocol("a line is not UTF-8"));
    let number = || number(line);
    Ok(match kind {
        b'+' => Some((Reply::Status(text()?.to_owned()), after)),
        b'-' => Some((Reply::Error(String::from_utf8_lossy(line).into_owned()), after)),
        b':' => Some((Reply::Int(number()?), after)),
        b'$' => match length(number()?)? {
            None => Some((Reply::Nil, after)),
            Some(n) if bytes.len() >= after + n + 2 => {
                if &bytes[after + n..after + n + 2] != b"\r\n" {
                    return Err(WireError::Protocol("a bulk string does not end its line"));
                }
                Some((Reply::Bulk(bytes[after..after + n].to_vec()), after + n + 2))
            }
            Some(_) => None,
        },
        b'*' => match length(number()?)? {
            None => Some((Reply::Nil, after)),
            Some(n) => {
                // At most what the bytes can hold (a reply takes 3 bytes at least).
                let mut items = Vec::with_capacity(n.min(bytes.len() / 3));
                let mut at = after;
                for _ in 0..n {
                    let Some((item, used)) = parse_nested(&bytes[at..], depth + 1)? else { return Ok(None) };
                    items.push(item);
                    at += used;
                }
                Some((Reply::Array(items), at))
            }
        },
        _ => return Err(WireError::Protocol("an unknown reply type")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_waits_for_the_rest() {
        let read = b"*1\r\n*2\r\n$4\r\njobs\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*4\r\n$1\r\nk\r\n$2\r\nab\r\n$1\r\nc\r\n$0\r\n\r\n";
        for cut in 0..read.len() {
            assert_eq!(parse(&read[..cut]).unwrap(), None, "{cut}");
            assert_eq!(measure(&read[..cut]).unwrap(), None, "{cut}");
        }
        assert_eq!(measure(read).unwrap(), Some(read.len()));
        assert_eq!(measure(b"*2\r\n$-1\r\n*-1\r\n:1\r\n").unwrap(), Some(14));
        let (reply, used) = parse(read).unwrap().unwrap();
        assert_eq!(used, read.len());
        let entries = Entry::from_read(reply);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(entries[0].field("k"), Some(&b"ab"[..]));
        assert_eq!(entries[0].field("c"), Some(&b""[..]));
        assert_eq!(entries[0].field("x"), None);
        assert_eq!(parse(b"*-1\r\n").unwrap(), Some((Reply::Nil, 5)));
        assert_eq!(parse(b"$-1\r\n").unwrap(), Some((Reply::Nil, 5)));
        assert_eq!(parse(b":-7\r\n+").unwrap(), Some((Reply::Int(-7), 5)));
        let (error, _) = parse(b"-NOSCRIPT No matching script\r\n").unwrap().unwrap();
        assert_eq!(error.error_code(), Some("NOSCRIPT"));
        assert!(parse(b"?x\r\n").is_err());
        // A garbled reply nesting arrays without end is refused, not recursed into.
        assert!(parse(&b"*1\r\n".repeat(100_000)).is_err());
        assert!(parse(&[&b"*1\r\n".repeat(MAX_DEPTH)[..], b":1\r\n"].concat()).unwrap().is_some());
        assert!(parse(b"$2\r\nabcd").is_err());
    }

    #[test]
    fn packs_commands_as_resp_arrays() {
        let mut out = Vec::new();
        header(&mut out, b'*', 0);
        header(&mut out, b'$', 1234);
        assert_eq!(out, b"*0\r\n$1234\r\n");
    }
}
