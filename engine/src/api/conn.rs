//! Limits on one TCP connection's life, apart from what it serves: how long
//! a client may take to send a request's headers
//! (`server.header_read_timeout`), how long a keep-alive connection may sit
//! idle (`server.keep_alive_timeout`), and its place among
//! `server.max_connections` (a semaphore permit held by the socket itself,
//! so an upgraded WebSocket keeps counting until it closes).
//!
//! hyper's own `http1::Builder::header_read_timeout` is not used: in hyper
//! 1.12 (`src/proto/h1/conn.rs`, `State::idle` and `Conn::poll_read_head`)
//! its timer also starts as soon as a keep-alive connection goes idle, so
//! it doubles as the idle timeout and a 10 s header limit would close every
//! idle connection after 10 s (discussed in hyperium/hyper#3828 and
//! agentgateway/agentgateway#504). Here the two
//! are apart, as in Envoy and Go's `net/http`: [`Clock`] knows which phase
//! the connection is in from the bytes it reads ([`Tracked`]) and the
//! requests it serves ([`Clock::busy`]).
//!
//! May import: `telemetry`.

use crate::telemetry::event;
use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{Notify, OwnedSemaphorePermit},
    time::{Instant, sleep_until},
};

/// The time limits of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timeouts {
    /// From accept (first request) or from the first byte of the next
    /// request to the end of its headers.
    pub header_read: Duration,
    /// From the end of a response to the first byte of the next request.
    pub keep_alive: Duration,
}

/// Which limit a connection ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expired {
    /// Its request headers did not arrive in time.
    HeaderRead,
    /// It sat idle between requests for too long.
    KeepAlive,
}

impl Expired {
    /// The metric label.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Expired::HeaderRead => "header_read",
            Expired::KeepAlive => "keep_alive",
        }
    }
}

/// Accepted; the first request's headers are not complete yet.
const FIRST: u64 = 0;
/// Between requests: the last response is out, no byte of the next one.
const IDLE: u64 = 1;
/// The next request has begun; its headers are not complete yet.
const HEAD: u64 = 2;
/// A request is being served: no limit here (the handler bounds itself).
const BUSY: u64 = 3;

/// Where a connection stands and since when, as one atomic word (phase in
/// the low two bits, milliseconds since `origin` above them) so that the
/// two are always read together.
#[derive(Debug)]
pub(super) struct Clock {
    origin: Instant,
    state: AtomicU64,
    changed: Notify,
}

impl Clock {
    /// A clock for a connection accepted now.
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Clock {
            origin: Instant::now(),
            state: AtomicU64::new(FIRST),
            changed: Notify::new(),
        })
    }

    fn now(&self) -> u64 {
        let millis = self.origin.elapsed().as_millis();
        u64::try_from(millis).unwrap_or(u64::MAX >> 2)
    }

    fn set(&self, phase: u64) {
        self.state.store((self.now() << 2) | phase, Ordering::Release);
        // A stored permit if the watchdog is not waiting: it re-reads then.
        self.changed.notify_one();
    }

    /// Bytes arrived: on an idle connection, the next request has begun.
    fn on_read(&self) {
        let state = self.state.load(Ordering::Acquire);
        if state & 3 == IDLE {
            let begun = (self.now() << 2) | HEAD;
            if self
                .state
                .compare_exchange(state, begun, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.changed.notify_one();
            }
        }
    }

    /// Marks a request as being served (its headers are in) until the
    /// returned guard is dropped, when the connection becomes idle.
    pub(super) fn busy(self: &Arc<Self>) -> Busy {
        self.set(BUSY);
        Busy(self.clone())
    }

    /// The next deadline and which limit it is; `None` while busy.
    fn deadline(&self, limits: Timeouts) -> Option<(Instant, Expired)> {
        let state = self.state.load(Ordering::Acquire);
        let since = self.origin + Duration::from_millis(state >> 2);
        match state & 3 {
            FIRST | HEAD => Some((since + limits.header_read, Expired::HeaderRead)),
            IDLE => Some((since + limits.keep_alive, Expired::KeepAlive)),
            _ => None,
        }
    }

    /// Resolves when the connection has run out of one of its limits: race
    /// it against the connection and drop the connection when it wins.
    pub(super) async fn expired(&self, limits: Timeouts) -> Expired {
        loop {
            match self.deadline(limits) {
                None => self.changed.notified().await,
                Some((at, why)) => {
                    tokio::select! {
                        () = sleep_until(at) => {
                            // Still the same phase and deadline: it is over.
                            if self.deadline(limits) == Some((at, why)) {
                                return why;
                            }
                        }
                        () = self.changed.notified() => {}
                    }
                }
            }
        }
    }
}

/// A request in service; dropping it makes the connection idle.
#[derive(Debug)]
pub(super) struct Busy(Arc<Clock>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(IDLE);
    }
}

/// An accepted socket that tells its [`Clock`] when bytes arrive and holds
/// its `server.max_connections` permit (and the open-connections gauge)
/// until it is dropped, upgraded or not.
#[derive(Debug)]
pub(super) struct Tracked<S> {
    inner: S,
    clock: Arc<Clock>,
    _permit: OwnedSemaphorePermit,
}

impl<S> Tracked<S> {
    /// Wraps an accepted socket.
    pub(super) fn new(inner: S, clock: Arc<Clock>, permit: OwnedSemaphorePermit) -> Self {
        event::http_connection(1.0);
        Tracked {
            inner,
            clock,
            _permit: permit,
        }
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        event::http_connection(-1.0);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.on_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        keep_alive: Duration::from_secs(60),
    };

    /// When `clock` expires, measured from now (paused time).
    async fn expires_after(clock: &Clock) -> (Duration, Expired) {
        let start = Instant::now();
        let why = clock.expired(LIMITS).await;
        (start.elapsed(), why)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_without_complete_headers_expires_after_the_header_timeout() {
        let clock = Clock::new();
        clock.on_read(); // a partial request line does not reset the limit
        assert_eq!(expires_after(&clock).await, (LIMITS.header_read, Expired::HeaderRead));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_expires_after_the_keep_alive_timeout() {
        let clock = Clock::new();
        drop(clock.busy());
        assert_eq!(expires_after(&clock).await, (LIMITS.keep_alive, Expired::KeepAlive));
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_the_next_request_starts_the_header_timeout() {
        let clock = Clock::new();
        drop(clock.busy());
        let reader = clock.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            reader.on_read();
        });
        // 30 s idle, then 10 s to finish the headers.
        assert_eq!(
            expires_after(&clock).await,
            (Duration::from_secs(40), Expired::HeaderRead)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_service_never_expires_and_idles_from_its_end() {
        let clock = Clock::new();
        let busy = clock.busy();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(300)).await;
            drop(busy);
        });
        assert_eq!(
            expires_after(&clock).await,
            (Duration::from_secs(360), Expired::KeepAlive)
        );
    }
}
