//! When a request arrived: the kernel's receive timestamp of its bytes, which the rate limit
//! measures instead of the moment the server gets round to the request.
//!
//! **Why.** The mock server shares the machine with the clients it serves. Under CPU load its
//! runtime threads wait for a core like any other thread: measured on two loaded cores, the
//! server read nothing for 10 to 17 ms while the clients went on sending at their limit's even
//! pace (one request every 2 ms at 500/s), then read the whole backlog at once. A bucket clocked
//! on the server's reading time saw five or six requests within 0.2 ms, more than its burst of
//! 5, and answered `429` to clients that had kept to the rate (issue 13). A remote API measures
//! arrivals on its own machine, where the client's scheduling does not delay them; the kernel's
//! timestamp of the received bytes (`SO_TIMESTAMPNS`, taken on loopback when the client's
//! `write` hands them over) is that arrival here, whenever the server reads them.
//!
//! [`StampedListener`] accepts connections whose reads go through `recvmsg` and keep the
//! timestamp of the last bytes read ([`Arrival`], handed to the routes as connect info).
//! Where the kernel gives no timestamp (another OS, a refused option), [`Arrival::get`] has
//! none and the rate limit falls back to the time it runs.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// When the last bytes read on a connection arrived (the head of the request being served:
/// clients do not pipeline, so the last read before a request is dispatched carries its head).
#[derive(Debug, Clone, Default)]
pub(crate) struct Arrival(Arc<Mutex<Option<Instant>>>);

impl Arrival {
    /// The arrival of the last bytes read, if the kernel stamped them.
    pub(crate) fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, at: Instant) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
    }
}

impl Connected<IncomingStream<'_, StampedListener>> for Arrival {
    fn connect_info(stream: IncomingStream<'_, StampedListener>) -> Self {
        stream.io().arrival.clone()
    }
}

/// A TCP listener whose connections record their arrival times (and have `TCP_NODELAY` set).
#[derive(Debug)]
pub(crate) struct StampedListener {
    inner: TcpListener,
}

impl StampedListener {
    /// Asks the kernel to stamp the bytes received on `inner`'s connections. Setting the option
    /// on the listener turns the kernel's receive timestamps on before the first connection,
    /// and accepted sockets inherit it.
    pub(crate) fn new(inner: TcpListener) -> Self {
        if let Err(error) = enable_timestamps(&inner) {
            tracing::debug!("no receive timestamps, the rate limit uses the serving time: {error}");
        }
        Self { inner }
    }
}

impl Listener for StampedListener {
    type Io = Stamped;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = Listener::accept(&mut self.inner).await;
        if let Err(error) = stream.set_nodelay(true) {
            tracing::trace!("could not set TCP_NODELAY: {error}");
        }
        // Inherited from the listener on Linux; set again where it is not.
        let _ = enable_timestamps(&stream);
        let stamped = Stamped {
            stream,
            arrival: Arrival::default(),
            #[cfg(target_os = "linux")]
            control: control_buffer(),
        };
        (stamped, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// An accepted connection that records when the bytes it reads arrived.
#[derive(Debug)]
pub(crate) struct Stamped {
    stream: TcpStream,
    arrival: Arrival,
    /// `recvmsg`'s buffer for the timestamp's control message.
    #[cfg(target_os = "linux")]
    control: Vec<u8>,
}

impl AsyncRead for Stamped {
    #[cfg(target_os = "linux")]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        use std::os::fd::AsRawFd;
        let this = self.get_mut();
        let fd = this.stream.as_raw_fd();
        loop {
            std::task::ready!(this.stream.poll_read_ready(cx))?;
            let (stream, control) = (&this.stream, &mut this.control);
            let unfilled = buf.initialize_unfilled();
            match stream.try_io(tokio::io::Interest::READABLE, || recv_stamped(fd, unfilled, control)) {
                Ok((read, stamp)) => {
                    buf.advance(read);
                    if read > 0
                        && let Some(at) = stamp
                    {
                        this.arrival.set(at);
                    }
                    return Poll::Ready(Ok(()));
                }
                // `try_io` cleared the readiness: wait for the next.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stamped {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Turns on `SO_TIMESTAMPNS` (the receive time of each packet, on the wall clock).
#[cfg(target_os = "linux")]
fn enable_timestamps(socket: &impl std::os::fd::AsFd) -> io::Result<()> {
    nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
        .map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn enable_timestamps<T>(_socket: &T) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "receive timestamps are only read on Linux"))
}

/// Room for the control message of one receive timestamp.
#[cfg(target_os = "linux")]
fn control_buffer() -> Vec<u8> {
    nix::cmsg_space!(nix::sys::time::TimeSpec)
}

/// One `recvmsg` on the non-blocking socket `fd` into `buf`: the bytes read and, if the kernel
/// attached one, when the last of them arrived (converted to this process's `Instant`).
#[cfg(target_os = "linux")]
fn recv_stamped(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, Option<Instant>)> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::time::{Duration, SystemTime};
    let mut iov = [io::IoSliceMut::new(buf)];
    let message = recvmsg::<()>(fd, &mut iov, Some(control), MsgFlags::empty()).map_err(io::Error::from)?;
    let stamp = message.cmsgs().ok().and_then(|mut messages| {
        messages.find_map(|message| match message {
            ControlMessageOwned::ScmTimestampns(stamp) => Some(stamp),
            _ => None,
        })
    });
    let read = message.bytes;
    // A timestamp on the wall clock: how long ago it was, then that long before now.
    let at = stamp.and_then(|stamp| {
        let secs = u64::try_from(stamp.tv_sec()).ok()?;
        let nanos = u32::try_from(stamp.tv_nsec()).ok()?;
        let then = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        let (wall, now) = (SystemTime::now(), Instant::now());
        Some(now.checked_sub(wall.duration_since(then).unwrap_or(Duration::ZERO)).unwrap_or(now))
    });
    Ok((read, at))
}
