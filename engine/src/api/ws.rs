//! One WebSocket session: greetings, history from the store, then live
//! events from the hub, without gap or duplicate; pings; closes.
//!
//! fastwebsockets' `read_frame` is not cancellation-safe, so it is never
//! raced in a `select!`: a reader task owns the read half and reports
//! control frames (and a broken frame) to the writer over a channel; the
//! writer owns the write half and is the only task that selects.
//!
//! Every way a session ends is one [`End`], which alone decides the close
//! code and reason sent (RFC 6455, section 7.4.1); 1000 is sent only when
//! the order reached its terminal event.
//!
//! The framing, the reader task, the close handshake ([`run_session`]) and
//! the ping rule ([`Heartbeat`], [`on_control`]) serve the stream of many
//! orders too (`stream`), which brings its own loop.

use super::{
    ApiState,
    hub::Membership,
    views::{Greeting, GreetingKind},
};
use crate::{
    bus::{BusError, Published},
    domain::{OrderId, Timestamp},
    telemetry::event,
};
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket, WebSocketError};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::{sync::Arc, time::Duration};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf},
    sync::mpsc,
    time::{Instant, sleep_until},
};

/// The write half of a session's socket, each write bounded by a deadline
/// (`websocket.ping_timeout`): a client that reads nothing for that long
/// cannot hold a session (and its task and buffers) forever.
///
/// Frames are laid out by fastwebsockets ([`Frame::fmt_head`]; a server's
/// frames are unmasked, RFC 6455 §5.1) into one buffer: [`Writer::queue`]
/// adds a text frame, [`Writer::flush`] writes every queued frame with one
/// write, so a session that finds several events waiting sends them in one
/// system call instead of one each. One deadline covers the whole write (at
/// most [`BURST`] events and a close frame).
pub(super) struct Writer {
    socket: WriteHalf<TokioIo<Upgraded>>,
    /// Frames laid out and not yet written.
    pending: Vec<u8>,
    /// Messages, replayed messages and bytes of payload in `pending` (for
    /// the metrics, counted once written).
    queued: (u64, u64, u64),
    deadline: Duration,
    /// A write missed its deadline: the socket may hold half a frame, so
    /// nothing more may be written to it (not even a close frame).
    stalled: bool,
}

/// A buffer larger than this is given back once written, so a quiet socket
/// keeps at most about one event's worth.
const KEEP_BUFFER: usize = 1024;

impl Writer {
    fn new(socket: WriteHalf<TokioIo<Upgraded>>, deadline: Duration) -> Self {
        Writer {
            socket,
            pending: Vec::new(),
            queued: (0, 0, 0),
            deadline,
            stalled: false,
        }
    }

    /// Lays `frame` out after the frames already queued.
    fn lay_out(&mut self, mut frame: Frame<'_>) {
        // The longest header: 2 bytes, a 64-bit length, a masking key.
        let mut head = [0u8; 14];
        let size = frame.fmt_head(&mut head);
        self.pending.extend_from_slice(&head[..size]);
        self.pending.extend_from_slice(&frame.payload);
    }

    /// Queues one text message (written by the next [`Writer::flush`]).
    /// `replayed` marks an event read from the store.
    pub(super) fn queue(&mut self, payload: &[u8], replayed: bool) {
        self.lay_out(Frame::text(Payload::Borrowed(payload)));
        self.queued.0 += 1;
        self.queued.1 += u64::from(replayed);
        self.queued.2 += payload.len() as u64;
    }

    /// Writes every queued frame, within the deadline. A write that misses
    /// it fails with an `IoError` of kind `TimedOut` and marks the writer
    /// stalled; every later write fails the same way at once.
    pub(super) async fn flush(&mut self) -> Result<(), WebSocketError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.stalled {
            return Err(stalled());
        }
        let written = tokio::time::timeout(self.deadline, self.socket.write_all(&self.pending)).await;
        self.pending.clear();
        if self.pending.capacity() > KEEP_BUFFER {
            self.pending = Vec::new();
        }
        let (messages, replayed, bytes) = std::mem::take(&mut self.queued);
        match written {
            Ok(Ok(())) => {
                event::ws_sent(messages, bytes);
                event::ws_replayed(replayed);
                Ok(())
            }
            Ok(Err(e)) => Err(WebSocketError::IoError(e)),
            Err(_) => {
                self.stalled = true;
                Err(stalled())
            }
        }
    }

    /// Writes one frame (after any queued ones) within the deadline.
    pub(super) async fn write(&mut self, frame: Frame<'_>) -> Result<(), WebSocketError> {
        self.lay_out(frame);
        self.flush().await
    }
}

fn stalled() -> WebSocketError {
    WebSocketError::IoError(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "a write missed websocket.ping_timeout",
    ))
}

/// Largest client frame accepted, bytes; a larger one (by its header, before
/// its payload is read) ends the session with 1009. An order's socket is
/// server to client (a client sends control frames, at most 125 bytes
/// each); on `/api/stream` a client also sends `subscribe` messages.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// After a broken client frame, how long the server keeps reading (and
/// discarding) what the client still sends before it hangs up, so that the
/// close frame is not destroyed by a TCP reset (closing a socket with
/// unread input sends RST, RFC 1122 section 4.2.2.13).
const LINGER: Duration = Duration::from_secs(2);

/// Within [`LINGER`], the drain stops after this long without a byte.
const LINGER_IDLE: Duration = Duration::from_millis(500);

/// Close codes used by the server (RFC 6455, section 7.4.1; 1013 from the
/// IANA WebSocket Close Code Number Registry).
pub mod close {
    /// The order reached its terminal event; sent for nothing else.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down, or the client stopped answering pings.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (e.g. reserved bits set, a
    /// fragmented control frame, an invalid close frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A client text frame was not UTF-8 (RFC 6455, section 8.1).
    pub const INVALID_DATA: u16 = 1007;
    /// The stream's key was revoked while it was open (checked at each
    /// ping).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A client frame was larger than [`super::MAX_CLIENT_FRAME`].
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// A backend (store or bus) failed; reconnect with `?since` (`?cursor`
    /// on the stream).
    pub const INTERNAL: u16 = 1011;
    /// The client fell too far behind; reconnect with `?since` (`?cursor`
    /// on the stream).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Longest close reason, bytes: a close frame's payload is at most 125
/// bytes, 2 of them the code (RFC 6455, section 5.5).
const MAX_REASON: usize = 123;

/// Where a session stands in its order's history: the `seq` of the last
/// event it sent. Pure (no I/O), so the no-gap, no-duplicate rule is tested
/// apart from framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cursor {
    pub(super) last: u64,
}

/// What to do with a live event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Already sent (from history or an earlier delivery): drop it.
    Skip,
    /// The next one: send it.
    Send,
    /// Events between the cursor and this one are missing (the bus lost
    /// them): send the stored ones before `seq` first, then this one.
    FillGap,
}

impl Cursor {
    /// A cursor after `since` (0: nothing sent yet).
    pub(super) fn new(since: u64) -> Self {
        Cursor { last: since }
    }

    /// The step for a live event numbered `seq`.
    pub(super) fn step(self, seq: u64) -> Step {
        if seq <= self.last {
            Step::Skip
        } else if seq == self.last + 1 {
            Step::Send
        } else {
            Step::FillGap
        }
    }

    /// Records that event `seq` was sent.
    pub(super) fn sent(&mut self, seq: u64) {
        self.last = seq;
    }
}

/// Why a session ends. [`End::close`] is the one place that maps a cause to
/// its close code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum End {
    /// The order's terminal event was sent, or the client already had it.
    Finished,
    /// The server is shutting down.
    Shutdown,
    /// The client did not answer a ping within `websocket.ping_timeout`.
    PingTimeout,
    /// The client broke the WebSocket protocol; the words say how.
    Protocol(&'static str),
    /// A client text frame (or close reason) was not UTF-8.
    InvalidData,
    /// A client frame was over [`MAX_CLIENT_FRAME`].
    TooBig,
    /// The store failed (replaying history, or reading the order).
    StoreDown(String),
    /// The bus did not confirm the order's subscription: it failed, or
    /// `websocket.subscribe_timeout` passed.
    BusDown(BusError),
    /// A write to the client did not finish within `websocket.ping_timeout`
    /// (the client reads too slowly, or not at all). The close frame
    /// cannot follow a half-written frame: the connection is dropped.
    Stalled,
    /// The key the stream opened with was revoked (or deleted).
    Revoked,
    /// The client fell `websocket.client_buffer` events behind.
    TooSlow {
        /// The query that resumes after the last event it was sent:
        /// `since=<seq>` on an order's socket, `cursor=<cursor>` on the
        /// stream.
        resume: String,
    },
    /// The client sent a close frame (with this code, if any); the answer
    /// echoes its code (RFC 6455, section 5.5.1).
    ClientClosed(Option<u16>),
    /// The connection is gone (reset, or a write failed): nothing to send.
    Gone,
}

impl End {
    /// The close frame to send: code and reason (at most [`MAX_REASON`]
    /// bytes); `None` when the connection is gone, or for an empty close
    /// (the answer to a client's close without a code).
    fn close(&self) -> Option<(u16, String)> {
        let (code, reason) = match self {
            End::Finished => (close::NORMAL, "order finished".to_owned()),
            End::Shutdown => (close::GOING_AWAY, "server shutting down".to_owned()),
            End::PingTimeout => (close::GOING_AWAY, "ping timeout".to_owned()),
            End::Protocol(what) => (close::PROTOCOL_ERROR, format!("protocol error: {what}")),
            End::InvalidData => (close::INVALID_DATA, "text frame is not UTF-8".to_owned()),
            End::TooBig => (
                close::MESSAGE_TOO_BIG,
                format!("frame too big: at most {MAX_CLIENT_FRAME} bytes"),
            ),
            End::StoreDown(error) => (close::INTERNAL, format!("store unavailable: {error}")),
            End::BusDown(BusError::Stopped(_)) => (close::GOING_AWAY, "server shutting down".to_owned()),
            End::BusDown(error @ BusError::Unavailable(_)) => (close::INTERNAL, error.to_string()),
            End::TooSlow { resume } => (close::TRY_AGAIN_LATER, format!("too slow; reconnect with ?{resume}")),
            End::Revoked => (close::POLICY_VIOLATION, "the API key was revoked".to_owned()),
            // Reported as 1013 (logs); no frame goes out (`run_session`).
            End::Stalled => (
                close::TRY_AGAIN_LATER,
                "too slow: a write took longer than the ping timeout".to_owned(),
            ),
            End::ClientClosed(Some(code)) => return Some((*code, String::new())),
            // An empty close answers one without a code (RFC 6455, 7.1.5:
            // the code is then 1005, which is never sent).
            End::ClientClosed(None) | End::Gone => return None,
        };
        Some((code, truncated(reason)))
    }

    /// Whether the client's input may be mid-frame (a broken frame), so the
    /// rest must be drained before hanging up ([`LINGER`]).
    fn lingers(&self) -> bool {
        matches!(self, End::Protocol(_) | End::InvalidData | End::TooBig)
    }

    /// How a failed frame read ends the session.
    fn of_read_error(error: &WebSocketError) -> Self {
        match error {
            WebSocketError::FrameTooLarge => End::TooBig,
            WebSocketError::InvalidUTF8 => End::InvalidData,
            WebSocketError::ReservedBitsNotZero => End::Protocol("reserved bits set"),
            WebSocketError::ControlFrameFragmented => End::Protocol("fragmented control frame"),
            WebSocketError::PingFrameTooLarge => End::Protocol("control frame over 125 bytes"),
            WebSocketError::InvalidValue => End::Protocol("unknown opcode"),
            WebSocketError::InvalidFragment | WebSocketError::InvalidContinuationFrame => {
                End::Protocol("invalid fragment")
            }
            WebSocketError::InvalidCloseFrame | WebSocketError::InvalidCloseCode => {
                End::Protocol("invalid close frame")
            }
            _ => End::Gone,
        }
    }

    /// How a close frame from the client (its payload) ends the session.
    fn of_client_close(payload: &[u8]) -> Self {
        match payload {
            [] => End::ClientClosed(None),
            [_] => End::Protocol("invalid close frame"),
            [high, low, reason @ ..] => {
                let code = u16::from_be_bytes([*high, *low]);
                if !close_code_allowed(code) {
                    End::Protocol("invalid close code")
                } else if std::str::from_utf8(reason).is_err() {
                    End::InvalidData
                } else {
                    End::ClientClosed(Some(code))
                }
            }
        }
    }
}

/// Whether a peer may send `code` in a close frame (RFC 6455, section 7.4:
/// 1004–1006 and 1015 are reserved, 1016–2999 unassigned; 3000–4999 belong
/// to libraries and applications).
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// `reason` cut to [`MAX_REASON`] bytes, on a character boundary.
fn truncated(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// What the reader task tells the writer.
pub(super) enum Control {
    Ping(Vec<u8>),
    Pong,
    /// A text message (UTF-8, checked by the reader).
    Text(Vec<u8>),
    /// The session must end (the client closed, broke a frame, or left).
    End(End),
}

/// Runs a session to its end.
pub async fn session(ws: WebSocket<TokioIo<Upgraded>>, state: Arc<ApiState>, order: OrderId, since: u64) {
    event::ws_connection(1.0);
    let label = format!("order {order}");
    run_session(ws, &label, state.settings.ping_timeout, async |writer, controls| {
        stream(writer, controls, &state, order, since).await
    })
    .await;
    event::ws_connection(-1.0);
}

/// Runs one socket: spawns the reader task, runs `body` (the writer side,
/// which decides how the session ends), then sends the close frame of that
/// [`End`], after any frames `body` left queued and in the same write, and
/// hangs up (draining a broken input first). `label` names the
/// session in logs; every write must finish within `write_deadline`, or
/// the session ends [`End::Stalled`].
pub(super) async fn run_session(
    ws: WebSocket<TokioIo<Upgraded>>,
    label: &str,
    write_deadline: Duration,
    body: impl AsyncFnOnce(&mut Writer, &mut mpsc::Receiver<Control>) -> Result<End, WebSocketError>,
) {
    // Split by hand rather than with `WebSocket::split`, so the reader task
    // keeps the raw read half and can drain it after a broken frame.
    let (raw_read, raw_write) = tokio::io::split(ws.into_inner());
    let mut writer = Writer::new(raw_write, write_deadline);
    let (control, mut controls) = mpsc::channel(8);
    let mut reading = tokio::spawn(read_client(raw_read, control));

    let end = match body(&mut writer, &mut controls).await {
        Ok(end) => end,
        Err(_) if writer.stalled => End::Stalled,
        Err(e) => {
            tracing::debug!(session = label, error = %e, "WebSocket write failed");
            End::Gone
        }
    };
    if end == End::Stalled {
        event::ws_slow_close();
        tracing::warn!(
            session = label,
            "dropping a WebSocket client: a write missed the ping timeout"
        );
    } else if end == End::ClientClosed(None) {
        let _ = writer.write(Frame::close_raw(Payload::Borrowed(&[]))).await;
    } else if let Some((code, reason)) = end.close() {
        tracing::debug!(session = label, code, reason, "closing a WebSocket");
        let _ = writer.write(Frame::close(code, reason.as_bytes())).await;
        if !matches!(end, End::ClientClosed(_)) {
            // Give the client a moment to answer the close, then hang up.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(message) = controls.recv().await {
                    if matches!(message, Control::End(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
    if end.lingers() {
        // The reader drains the rest of the broken input (bounded by LINGER).
        let _ = tokio::time::timeout(LINGER + Duration::from_secs(1), &mut reading).await;
    }
    reading.abort();
}

/// Reads the client's frames and reports control frames, and how the
/// session must end, to the writer. After a broken frame the input is no
/// longer frame-aligned: what the client still sends is read and discarded
/// for at most [`LINGER`] (until the client goes quiet for
/// [`LINGER_IDLE`]), so that hanging up does not reset the connection under
/// the close frame.
///
/// A frame reader holds an 8 KiB read buffer (fastwebsockets allocates it
/// up front), more than half of what an open socket costs. So none is held
/// while the client is quiet: the task waits for a first byte with none,
/// reads frames while bytes keep coming, and drops the reader (and its
/// buffer) as soon as every byte it was handed belongs to a frame it has
/// returned ([`FrameEnds`] tells).
async fn read_client(mut raw: ReadHalf<TokioIo<Upgraded>>, control: mpsc::Sender<Control>) {
    let broken = 'session: loop {
        // Quiet: wait for the client's next bytes without a frame buffer.
        // A small first read holds a whole control frame (a pong, a close)
        // most of the time. End of input or an error leaves it empty: the
        // reader below meets it again and reports it as any broken read.
        let mut first = [0u8; FIRST_READ];
        let first_len = raw.read(&mut first).await.unwrap_or(0);
        let ends = std::sync::Mutex::new(FrameEnds {
            unread: first_len,
            ..FrameEnds::default()
        });
        let mut source = Counted {
            raw: &mut raw,
            first: &first[..first_len],
            ends: &ends,
        };
        let (mut reader, _) = fastwebsockets::after_handshake_split(&mut source, tokio::io::sink(), Role::Server);
        reader.set_auto_close(false);
        reader.set_auto_pong(false);
        reader.set_max_message_size(MAX_CLIENT_FRAME + 1);
        let mut returned = 0u64;
        loop {
            let frame = reader.read_frame(&mut |_| async { Ok::<(), std::io::Error>(()) }).await;
            let message = match frame {
                Ok(frame) => {
                    returned += 1;
                    match frame.opcode {
                        OpCode::Ping => Some(Control::Ping(frame.payload.to_vec())),
                        OpCode::Pong => Some(Control::Pong),
                        OpCode::Close => Some(Control::End(End::of_client_close(&frame.payload))),
                        // UTF-8 already checked by fastwebsockets (1007 if not).
                        OpCode::Text => Some(Control::Text(frame.payload.to_vec())),
                        // Binary frames mean nothing here; they are ignored.
                        _ => None,
                    }
                }
                Err(e) => Some(Control::End(End::of_read_error(&e))),
            };
            if let Some(message) = message {
                let broken = match &message {
                    Control::End(end) => Some(end.lingers()),
                    _ => None,
                };
                if control.send(message).await.is_err() {
                    return;
                }
                if let Some(broken) = broken {
                    break 'session broken;
                }
            }
            if ends.lock().expect("frame ends lock").drained(returned) {
                // Nothing is left in the reader's buffer: give it back.
                break;
            }
        }
    };
    drop(control);
    if broken {
        drain(&mut raw).await;
    }
}

/// Bytes of the read that wakes a quiet session (a control frame is at
/// most 131 bytes, and a pong or close is much less).
const FIRST_READ: usize = 64;

/// The read half as a frame reader sees it: first the bytes that woke the
/// session up, then the socket; every byte handed over is fed to
/// [`FrameEnds`].
struct Counted<'a> {
    raw: &'a mut ReadHalf<TokioIo<Upgraded>>,
    first: &'a [u8],
    ends: &'a std::sync::Mutex<FrameEnds>,
}

impl tokio::io::AsyncRead for Counted<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        if !this.first.is_empty() {
            let take = this.first.len().min(buf.remaining());
            buf.put_slice(&this.first[..take]);
            this.first = &this.first[take..];
        } else {
            std::task::ready!(std::pin::Pin::new(&mut *this.raw).poll_read(cx, buf))?;
        }
        let mut ends = this.ends.lock().expect("frame ends lock");
        ends.unread = this.first.len();
        ends.feed(&buf.filled()[before..]);
        std::task::Poll::Ready(Ok(()))
    }
}

/// Where the client's frames end in the bytes handed to a frame reader
/// (RFC 6455 §5.2: two header bytes, a 16- or 64-bit extended length when
/// the 7-bit one is 126 or 127, a 4-byte masking key when the mask bit is
/// set, then the payload). It only finds boundaries; the reader checks
/// everything else.
#[derive(Debug, Default)]
pub(super) struct FrameEnds {
    /// Header bytes of the frame being read so far (at most 14).
    header: Vec<u8>,
    /// Payload bytes of the current frame still to come (`None`: in the
    /// header).
    payload_left: Option<u64>,
    /// Frames whose last byte was handed over.
    complete: u64,
    /// Bytes of the waking read not yet handed over.
    unread: usize,
}

impl FrameEnds {
    /// Takes the next bytes handed to the reader.
    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if let Some(left) = self.payload_left {
                let take = left.min(bytes.len() as u64);
                bytes = &bytes[take as usize..];
                self.finish_payload(left - take);
                continue;
            }
            self.header.push(bytes[0]);
            bytes = &bytes[1..];
            if let Some(length) = self.header_length()
                && self.header.len() == length
            {
                let payload = self.payload_length();
                self.header.clear();
                self.finish_payload(payload);
            }
        }
    }

    fn finish_payload(&mut self, left: u64) {
        if left == 0 {
            self.payload_left = None;
            self.complete += 1;
        } else {
            self.payload_left = Some(left);
        }
    }

    /// The whole header's length, once its second byte is in.
    fn header_length(&self) -> Option<usize> {
        let second = *self.header.get(1)?;
        let extended = match second & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        Some(2 + extended + mask)
    }

    /// The payload length a complete header gives.
    fn payload_length(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(self.header[2..10].try_into().expect("eight bytes")),
            short => u64::from(short),
        }
    }

    /// Whether every byte handed over belongs to one of the `returned`
    /// frames the reader gave back: its buffer is then empty.
    pub(super) fn drained(&self, returned: u64) -> bool {
        self.unread == 0 && self.header.is_empty() && self.payload_left.is_none() && self.complete == returned
    }
}

/// Reads and discards input until end of stream, an error, [`LINGER`], or
/// [`LINGER_IDLE`] without a byte.
async fn drain(raw: &mut ReadHalf<TokioIo<Upgraded>>) {
    let mut buffer = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + LINGER;
    loop {
        let until = deadline.min(Instant::now() + LINGER_IDLE);
        match tokio::time::timeout_at(until, raw.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}

/// Sends one text message (after any queued ones); `replayed` marks events
/// read from the store.
pub(super) async fn send(writer: &mut Writer, payload: &[u8], replayed: bool) -> Result<(), WebSocketError> {
    writer.queue(payload, replayed);
    writer.flush().await
}

/// The ping rule of every session: a ping every `websocket.ping_interval`;
/// a pong that misses `websocket.ping_timeout` ends the session (1001).
/// Each tick also says whether the session was quiet since the previous
/// one, so a quiet session can ask the store once per interval: an event
/// whose publish was lost while this node's subscriber stayed healthy (so
/// no resync marker comes) would otherwise never arrive.
pub(super) struct Heartbeat {
    pinger: tokio::time::Interval,
    pong_due: Option<Instant>,
    timeout: Duration,
    quiet: bool,
}

/// What a [`Heartbeat`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Beat {
    /// Time to ping ([`ping`]); `quiet`: no event went out since the last
    /// tick.
    Ping { quiet: bool },
    /// The client did not answer a ping in time.
    Timeout,
}

impl Heartbeat {
    /// From the session settings; the first ping is one interval away.
    pub(super) fn new(interval: Duration, timeout: Duration) -> Self {
        Heartbeat {
            pinger: tokio::time::interval_at(Instant::now() + interval, interval),
            pong_due: None,
            timeout,
            quiet: true,
        }
    }

    /// Waits for the next tick or the pong deadline; on a tick the caller
    /// sends the ping ([`ping`]) in its `select!` branch body. It writes
    /// nothing itself, so it is cancellation safe when raced in a
    /// `select!`: a write cancelled half-way would leave half a frame on
    /// the socket; nothing changes until it resolves.
    pub(super) async fn beat(&mut self) -> Beat {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        tokio::select! {
            biased;
            _ = sleep_until(self.pong_due.unwrap_or(far)) => {
                event::ws_ping_timeout();
                Beat::Timeout
            }
            _ = self.pinger.tick() => {
                if self.pong_due.is_none() {
                    self.pong_due = Some(Instant::now() + self.timeout);
                }
                Beat::Ping { quiet: std::mem::replace(&mut self.quiet, true) }
            }
        }
    }

    /// Something was sent: the session is not quiet this interval.
    pub(super) fn busy(&mut self) {
        self.quiet = false;
    }
}

/// Sends the heartbeat's ping (after [`Heartbeat::beat`] said
/// [`Beat::Ping`]).
pub(super) async fn ping(writer: &mut Writer) -> Result<(), WebSocketError> {
    writer
        .write(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"swapline")))
        .await
}

/// What to do after a message of the reader task.
pub(super) enum Flow {
    /// Handled (a ping answered, a pong noted).
    Continue,
    /// A client text message, for the session to read.
    Text(Vec<u8>),
    /// The session ends.
    End(End),
}

/// Handles a message of the reader task (`None`: it ended): answers pings,
/// notes pongs, hands text over.
pub(super) async fn on_control(
    writer: &mut Writer,
    heartbeat: &mut Heartbeat,
    control: Option<Control>,
) -> Result<Flow, WebSocketError> {
    Ok(match control {
        Some(Control::Ping(payload)) => {
            writer.write(Frame::pong(Payload::Owned(payload))).await?;
            Flow::Continue
        }
        Some(Control::Pong) => {
            heartbeat.pong_due = None;
            Flow::Continue
        }
        Some(Control::Text(text)) => Flow::Text(text),
        Some(Control::End(end)) => Flow::End(end),
        None => Flow::End(End::Gone),
    })
}

/// Streams until the session should close; returns how it ends.
async fn stream(
    writer: &mut Writer,
    controls: &mut mpsc::Receiver<Control>,
    state: &Arc<ApiState>,
    order: OrderId,
    since: u64,
) -> Result<End, WebSocketError> {
    let settings = &state.settings;
    let joined = state
        .hub
        .join(order, settings.client_buffer, settings.subscribe_timeout)
        .await;
    let mut membership: Membership = match joined {
        Ok(membership) => membership,
        Err(e) => {
            tracing::warn!(order_id = %order, error = %e, "closing a WebSocket: no bus subscription");
            return Ok(End::BusDown(e));
        }
    };
    let greeting = |kind, message: String| {
        let greeting = Greeting {
            kind,
            order_id: order.to_string(),
            message,
            timestamp: Timestamp::now(),
        };
        serde_json::to_vec(&greeting).expect("greetings serialise")
    };
    send(
        writer,
        &greeting(GreetingKind::Connection, "Connected to order status stream".into()),
        false,
    )
    .await?;
    let subscribed = format!("Subscribed to real-time updates for order {order}");
    send(writer, &greeting(GreetingKind::Subscribed, subscribed), false).await?;

    // Joined first, history second: any event committed after this read is
    // already queued in `membership.events`; duplicates are dropped by seq.
    let mut cursor = Cursor::new(since);
    if let Some(end) = replay(writer, state, order, &mut cursor, u64::MAX).await? {
        return Ok(end);
    }
    // `?since` at the terminal event replays nothing, yet the order is
    // finished all the same. (When something was replayed and none of it
    // was terminal, the order is still running: no need to ask.)
    if cursor == Cursor::new(since) {
        match state.store.order(order).await {
            Ok(Some(current)) if current.status.is_terminal() && cursor.last >= current.last_seq => {
                return Ok(End::Finished);
            }
            Ok(_) => {}
            Err(e) => return Ok(End::StoreDown(e.to_string())),
        }
    }

    // After a lost terminal event, pings alone would keep the socket open
    // forever: the quiet-session check (see `Heartbeat`) ends it.
    let mut heartbeat = Heartbeat::new(settings.ping_interval, settings.ping_timeout);
    loop {
        tokio::select! {
            biased;
            _ = state.shutdown.cancelled() => return Ok(End::Shutdown),
            control = controls.recv() => match on_control(writer, &mut heartbeat, control).await? {
                // Nothing to say to an order's socket: text is ignored.
                Flow::Continue | Flow::Text(_) => {}
                Flow::End(end) => return Ok(end),
            },
            event = membership.events.recv() => {
                heartbeat.busy();
                // Every event already waiting goes out in the same write.
                let (mut next, mut handled) = (event, 0);
                loop {
                    if let Some(end) = on_event(writer, state, order, &mut cursor, next).await? {
                        // What is queued (the terminal event, say) goes
                        // out in one write with the close frame.
                        return Ok(end);
                    }
                    handled += 1;
                    if handled == BURST {
                        break;
                    }
                    next = match membership.events.try_recv() {
                        Ok(event) => Some(event),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => None,
                    };
                }
                writer.flush().await?;
            },
            beat = heartbeat.beat() => match beat {
                Beat::Timeout => return Ok(End::PingTimeout),
                Beat::Ping { quiet } => {
                    ping(writer).await?;
                    if !quiet {
                        continue;
                    }
                    match replay(writer, state, order, &mut cursor, u64::MAX).await? {
                        // A store that does not answer now is asked again
                        // at the next tick; the session itself is fine.
                        Some(End::StoreDown(e)) => tracing::debug!(order_id = %order, error = %e, "quiet-session check failed"),
                        Some(end) => return Ok(end),
                        None => {}
                    }
                }
            },
        }
    }
}

/// Most live events one write carries.
const BURST: usize = 64;

/// Handles one live event of the order (`None`: the hub dropped this slow
/// client): queues it on `writer` (the caller flushes), fills a gap from
/// the store first, or skips what the client has; `Some(end)` when the
/// session must end.
async fn on_event(
    writer: &mut Writer,
    state: &Arc<ApiState>,
    order: OrderId,
    cursor: &mut Cursor,
    event: Option<Arc<Published>>,
) -> Result<Option<End>, WebSocketError> {
    let Some(event) = event else {
        event::ws_slow_close();
        let last = cursor.last;
        tracing::warn!(order_id = %order, last, "closing a slow WebSocket client");
        return Ok(Some(End::TooSlow {
            resume: format!("since={last}"),
        }));
    };
    if event.is_resync() {
        // The bus may have dropped events: the store has them all.
        return replay(writer, state, order, cursor, u64::MAX).await;
    }
    match cursor.step(event.seq) {
        // The client has the terminal event already (it came from history,
        // or `since` covers it): done.
        Step::Skip if event.terminal => return Ok(Some(End::Finished)),
        Step::Skip => return Ok(None),
        Step::Send => {}
        Step::FillGap => {
            // The bus lost something: the store has it.
            if let Some(end) = replay(writer, state, order, cursor, event.seq).await? {
                return Ok(Some(end));
            }
        }
    }
    writer.queue(&event.payload, false);
    cursor.sent(event.seq);
    Ok(event.terminal.then_some(End::Finished))
}

/// Sends stored events after the cursor and before `before`, advancing it;
/// `Some(end)` when the session must end (the terminal event was sent, or
/// the store is down).
async fn replay(
    writer: &mut Writer,
    state: &Arc<ApiState>,
    order: OrderId,
    cursor: &mut Cursor,
    before: u64,
) -> Result<Option<End>, WebSocketError> {
    let history = match state.store.events(order, cursor.last).await {
        Ok(history) => history,
        Err(e) => return Ok(Some(End::StoreDown(e.to_string()))),
    };
    for event in history.iter().filter(|e| e.seq < before) {
        let published = Published::new(event);
        send(writer, &published.payload, true).await?;
        cursor.sent(event.seq);
        if published.terminal {
            return Ok(Some(End::Finished));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame as it goes on the wire (masked unless `mask` is
    /// `None`), with the shortest length encoding unless `extended` forces
    /// the 16-bit one.
    fn wire(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>, extended: bool) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        let bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 && !extended => out.push(bit | n as u8),
            n if n < 65_536 => {
                out.push(bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if let Some(key) = mask {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        out
    }

    #[test]
    fn frame_ends_are_found_whatever_the_chunks() {
        let key = Some([1, 2, 3, 4]);
        let frames = [
            wire(0x9, b"ping", key, false),
            wire(0x1, &[b'a'; 300], key, false),
            wire(0xA, b"", key, false),
            wire(0x1, b"short but long-encoded", key, true),
            wire(0x2, &[7; 70_000], key, false),
            wire(0x1, b"unmasked", None, false),
        ];
        let stream: Vec<u8> = frames.concat();
        for chunk in [1, 2, 3, 7, 64, 4096, stream.len()] {
            let mut ends = FrameEnds::default();
            let (mut fed, mut boundaries) = (0, Vec::new());
            for piece in stream.chunks(chunk) {
                ends.feed(piece);
                fed += piece.len();
                if ends.header.is_empty() && ends.payload_left.is_none() {
                    boundaries.push((fed, ends.complete));
                }
            }
            assert_eq!(ends.complete, frames.len() as u64, "chunks of {chunk}");
            // At every boundary seen, the count matches the frames before it.
            for (offset, complete) in boundaries {
                let expected = frames
                    .iter()
                    .scan(0, |end, f| {
                        *end += f.len();
                        Some(*end)
                    })
                    .take_while(|end| *end <= offset)
                    .count() as u64;
                assert_eq!(complete, expected, "chunks of {chunk}, offset {offset}");
            }
        }
    }

    #[test]
    fn a_reader_is_drained_only_when_every_byte_is_in_a_returned_frame() {
        let key = Some([9, 9, 9, 9]);
        let (ping, text) = (wire(0x9, b"p", key, false), wire(0x1, b"hello", key, false));
        let mut ends = FrameEnds::default();
        assert!(ends.drained(0), "nothing handed over yet");
        ends.feed(&ping[..3]);
        assert!(!ends.drained(0), "half a header");
        ends.feed(&ping[3..]);
        assert!(!ends.drained(0), "a whole frame the reader has not returned");
        assert!(ends.drained(1));
        // A frame and the start of the next in one read: the rest is buffered.
        let mut both = text.clone();
        both.extend_from_slice(&ping[..1]);
        ends.feed(&both);
        assert!(!ends.drained(2), "one byte of the next frame is in the buffer");
        ends.feed(&ping[1..]);
        assert!(ends.drained(3));
        // A header whose payload has not all come.
        ends.feed(&text[..text.len() - 1]);
        assert!(!ends.drained(3) && !ends.drained(4));
    }

    #[test]
    fn cursor_sends_the_next_event_and_skips_what_was_sent() {
        let mut cursor = Cursor::new(0);
        assert_eq!(cursor.step(1), Step::Send);
        cursor.sent(1);
        assert_eq!(cursor.step(1), Step::Skip, "a duplicate delivery");
        assert_eq!(cursor.step(2), Step::Send);
    }

    #[test]
    fn cursor_asks_for_the_store_when_the_bus_skipped_events() {
        let mut cursor = Cursor::new(3);
        assert_eq!(cursor.step(6), Step::FillGap);
        cursor.sent(4);
        cursor.sent(5);
        assert_eq!(cursor.step(6), Step::Send, "after the gap is filled");
    }

    #[test]
    fn cursor_from_since_skips_history_the_client_has() {
        let cursor = Cursor::new(5);
        for seq in 1..=5 {
            assert_eq!(cursor.step(seq), Step::Skip, "seq {seq}");
        }
        assert_eq!(cursor.step(6), Step::Send);
    }

    fn code(end: End) -> Option<u16> {
        end.close().map(|(code, _)| code)
    }

    #[test]
    fn only_a_finished_order_closes_with_1000() {
        let ends = [
            End::Shutdown,
            End::PingTimeout,
            End::Protocol("reserved bits set"),
            End::InvalidData,
            End::TooBig,
            End::StoreDown("timed out".into()),
            End::BusDown(BusError::Unavailable("subscription not confirmed within 5s".into())),
            End::BusDown(BusError::Stopped("shutdown".into())),
            End::TooSlow {
                resume: "since=7".into(),
            },
            End::Stalled,
            End::Revoked,
        ];
        assert_eq!(code(End::Finished), Some(close::NORMAL));
        for end in ends {
            let (code, reason) = end.close().expect("a close frame");
            assert_ne!(code, close::NORMAL, "{end:?}");
            assert!(!reason.is_empty(), "{end:?} gives a reason");
        }
        assert_eq!(code(End::Gone), None, "nothing is sent on a dead connection");
        assert_eq!(code(End::ClientClosed(None)), None, "an empty close is answered empty");
    }

    #[test]
    fn each_cause_has_its_rfc_6455_code() {
        assert_eq!(code(End::of_read_error(&WebSocketError::FrameTooLarge)), Some(1009));
        assert_eq!(
            code(End::of_read_error(&WebSocketError::ReservedBitsNotZero)),
            Some(1002)
        );
        assert_eq!(
            code(End::of_read_error(&WebSocketError::ControlFrameFragmented)),
            Some(1002)
        );
        assert_eq!(code(End::of_read_error(&WebSocketError::InvalidValue)), Some(1002));
        assert_eq!(code(End::of_read_error(&WebSocketError::InvalidUTF8)), Some(1007));
        assert_eq!(code(End::of_read_error(&WebSocketError::UnexpectedEOF)), None);
        assert_eq!(code(End::StoreDown("x".into())), Some(1011));
        assert_eq!(code(End::BusDown(BusError::Unavailable("x".into()))), Some(1011));
        assert_eq!(
            code(End::TooSlow {
                resume: "since=1".into()
            }),
            Some(1013)
        );
        assert_eq!(code(End::Revoked), Some(1008));
        assert_eq!(code(End::Shutdown), Some(1001));
        assert_eq!(code(End::PingTimeout), Some(1001));
    }

    #[test]
    fn a_client_close_is_echoed_and_a_bad_one_is_a_protocol_error() {
        assert_eq!(End::of_client_close(&[]), End::ClientClosed(None));
        assert_eq!(
            End::of_client_close(&4000u16.to_be_bytes()),
            End::ClientClosed(Some(4000))
        );
        assert_eq!(code(End::of_client_close(&1001u16.to_be_bytes())), Some(1001));
        assert_eq!(code(End::of_client_close(&[3])), Some(1002), "a 1-byte payload");
        assert_eq!(
            code(End::of_client_close(&1005u16.to_be_bytes())),
            Some(1002),
            "reserved"
        );
        assert_eq!(
            code(End::of_client_close(&[0x03, 0xe8, 0xff])),
            Some(1007),
            "reason not UTF-8"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_beat_only_waits_so_a_select_may_cancel_it_and_a_missed_pong_times_out() {
        // `beat` takes no writer: it cannot leave half a ping on the socket
        // when another `select!` branch wins.
        let mut heartbeat = Heartbeat::new(Duration::from_secs(20), Duration::from_secs(10));
        assert_eq!(heartbeat.beat().await, Beat::Ping { quiet: true });
        heartbeat.busy();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), heartbeat.beat())
                .await
                .is_err(),
            "cancelled while waiting"
        );
        assert_eq!(
            heartbeat.beat().await,
            Beat::Timeout,
            "no pong 10 s after the ping, before the next tick"
        );
        heartbeat.pong_due = None;
        assert_eq!(
            heartbeat.beat().await,
            Beat::Ping { quiet: false },
            "the cancelled wait lost nothing: the interval was busy"
        );
    }

    #[test]
    fn a_long_reason_is_cut_to_fit_a_close_frame_on_a_char_boundary() {
        let (_, reason) = End::StoreDown("é".repeat(200)).close().unwrap();
        assert!(reason.len() <= MAX_REASON, "{}", reason.len());
        assert!(reason.starts_with("store unavailable: é"));
    }
}
