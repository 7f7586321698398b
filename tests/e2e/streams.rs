//! The WebSocket cursor and close codes: a `since` past the history is
//! refused before the upgrade, a session always ends at the terminal event
//! with 1000, and a client that breaks a frame gets its own close code
//! (1009, 1002) while the order's other watchers are unaffected.

use crate::harness::{Backend, Engine, assert_gapless, read_stream, sol_usdc};
use std::time::Duration;
use swapline::client;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};

/// Long enough for watchers to connect and a broken frame to be sent
/// while the order still runs, with a wide margin for a loaded machine
/// (the test checks that it was still running).
const SLOW_VENUES: &str = r#"
[venues]
quote_latency = "50ms"

[chain]
land_slots = 300
"#;

/// The headers of a WebSocket upgrade (RFC 6455, section 4.1).
const UPGRADE: [(&str, &str); 4] = [
    ("upgrade", "websocket"),
    ("connection", "upgrade"),
    ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("sec-websocket-version", "13"),
];

/// A WebSocket client on a bare TCP socket, so a test can send frames no
/// well-behaved library would (too big, reserved bits set).
struct RawSocket {
    read: OwnedReadHalf,
    write: Option<OwnedWriteHalf>,
    buffer: Vec<u8>,
}

/// A frame as a client sends it: `first` is the FIN/RSV/opcode byte; the
/// payload is masked (RFC 6455, section 5.3) with a fixed key.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![first];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

impl RawSocket {
    async fn connect(base: &str, path: &str) -> RawSocket {
        let stream = TcpStream::connect(client::authority(base)).await.unwrap();
        let (read, mut write) = stream.into_split();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{}\r\n",
            client::authority(base),
            UPGRADE.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect::<String>()
        );
        write.write_all(request.as_bytes()).await.unwrap();
        let mut socket = RawSocket {
            read,
            write: Some(write),
            buffer: Vec::new(),
        };
        let end = loop {
            if let Some(at) = socket.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            socket.fill().await;
        };
        let head = String::from_utf8_lossy(&socket.buffer[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
        socket.buffer.drain(..end);
        socket
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.read.read(&mut chunk).await.expect("socket read");
        assert!(n > 0, "the server hung up without a close frame");
        self.buffer.extend_from_slice(&chunk[..n]);
    }

    async fn need(&mut self, n: usize) {
        while self.buffer.len() < n {
            self.fill().await;
        }
    }

    /// The next server frame: (opcode, payload). Server frames are unmasked.
    async fn frame(&mut self) -> (u8, Vec<u8>) {
        self.need(2).await;
        let opcode = self.buffer[0] & 0x0f;
        let (len, header) = match self.buffer[1] & 0x7f {
            126 => {
                self.need(4).await;
                (u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize, 4)
            }
            127 => {
                self.need(10).await;
                (u64::from_be_bytes(self.buffer[2..10].try_into().unwrap()) as usize, 10)
            }
            n => (n as usize, 2),
        };
        self.need(header + len).await;
        let payload = self.buffer[header..header + len].to_vec();
        self.buffer.drain(..header + len);
        (opcode, payload)
    }

    /// Reads to the server's close: (text messages, close code, reason).
    async fn until_close(&mut self) -> (usize, u16, String) {
        let mut texts = 0;
        loop {
            let (opcode, payload) = self.frame().await;
            match opcode {
                0x1 => texts += 1,
                0x8 => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    return (texts, code, String::from_utf8_lossy(&payload[2..]).into_owned());
                }
                _ => {}
            }
        }
    }

    /// Sends `bytes` from another task, so a send the server stops reading
    /// cannot block the reads of this test.
    fn send_in_background(&mut self, bytes: Vec<u8>) -> tokio::task::JoinHandle<()> {
        let mut write = self.write.take().expect("one background send");
        tokio::spawn(async move {
            // The server may hang up before it has read everything.
            let _ = write.write_all(&bytes).await;
            // Held open, as a client waiting for the close handshake would.
            tokio::time::sleep(Duration::from_secs(5)).await;
        })
    }
}

/// The seq of the order's last event, once it is finished.
async fn finished_last_seq(engine: &Engine, id: &str) -> u64 {
    let stream = engine.follow(id).await;
    assert_eq!(stream.close, 1000);
    stream.events.len() as u64
}

async fn since_past_the_last_event_is_refused_with_400_on_the_socket_and_events(backend: Backend) {
    let engine = Engine::start_on(backend, "");
    let id = engine.order(sol_usdc(1.0)).await;
    let last = finished_last_seq(&engine, &id).await;
    let past = last + 1;
    let upgrade = client::request(
        &engine.url,
        "GET",
        &format!("/api/orders/status/{id}?since={past}"),
        &UPGRADE,
        None,
    )
    .await
    .unwrap();
    assert_eq!(upgrade.status, 400, "refused before the 101");
    assert_eq!(upgrade.headers["content-type"], "application/json");
    let body = upgrade.json();
    assert_eq!(body["success"], false);
    assert_eq!(body["error"]["code"], "invalid_since");
    assert_eq!(body["error"]["field"], "since");

    let events = client::get(&engine.url, &format!("/api/orders/{id}/events?since={past}"))
        .await
        .unwrap();
    assert_eq!(events.status, 400);
    assert_eq!(events.json()["error"]["code"], "invalid_since");

    let malformed = client::get(&engine.url, &format!("/api/orders/status/{id}?since=-1"))
        .await
        .unwrap();
    assert_eq!(malformed.status, 400, "a plain GET checks since's form too");
    assert_eq!(malformed.json()["error"]["code"], "invalid_since");
    let plain = client::get(&engine.url, &format!("/api/orders/status/{id}?since={past}"))
        .await
        .unwrap();
    assert_eq!(plain.status, 200, "a plain GET has no use for since's value");

    let at_the_end = client::get(&engine.url, &format!("/api/orders/{id}/events?since={last}"))
        .await
        .unwrap();
    assert_eq!(at_the_end.status, 200, "since equal to the last seq is valid");
    assert_eq!(at_the_end.json()["events"].as_array().unwrap().len(), 0);
}

async fn since_at_the_terminal_event_gets_greetings_then_1000_at_once(backend: Backend) {
    let engine = Engine::start_on(backend, "");
    let id = engine.order(sol_usdc(1.0)).await;
    let last = finished_last_seq(&engine, &id).await;
    let mut socket = engine.watch(&id, Some(last)).await;
    // A correctness deadline, far above the time it takes (not a speed
    // assertion): the bug was a socket held open by pings forever.
    let stream = tokio::time::timeout(Duration::from_secs(10), read_stream(&mut socket))
        .await
        .expect("closed at once, not kept open by pings");
    assert_eq!(stream.greetings.len(), 2);
    assert!(stream.events.is_empty());
    assert_eq!(stream.close, 1000);
}

async fn a_frame_over_the_limit_closes_1009_and_other_watchers_get_every_event(backend: Backend) {
    let engine = Engine::start_on(backend, SLOW_VENUES);
    let id = engine.order(sol_usdc(1.0)).await;
    let mut others = Vec::new();
    for _ in 0..2 {
        let mut socket = engine.watch(&id, None).await;
        others.push(tokio::spawn(async move { read_stream(&mut socket).await }));
    }
    let mut offender = RawSocket::connect(&engine.url, &format!("/api/orders/status/{id}")).await;
    let sending = offender.send_in_background(client_frame(0x82, &vec![b'x'; 1024 * 1024]));
    let (_, code, reason) = offender.until_close().await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("too big"), "{reason}");
    sending.abort();

    let status = engine.status(&id).await;
    assert!(
        !["confirmed", "failed"].contains(&status["status"].as_str().unwrap()),
        "the order was still running when the frame was refused: {status}"
    );
    for other in others {
        let stream = other.await.unwrap();
        assert_gapless(&stream);
        assert_eq!(stream.types().last(), Some(&"confirmed"));
        assert_eq!(stream.close, 1000);
    }
}

async fn a_frame_with_reserved_bits_closes_1002(backend: Backend) {
    let engine = Engine::start_on(backend, SLOW_VENUES);
    let id = engine.order(sol_usdc(1.0)).await;
    let mut offender = RawSocket::connect(&engine.url, &format!("/api/orders/status/{id}")).await;
    // FIN + RSV1 + text: no extension was negotiated (RFC 6455, 5.2).
    let sending = offender.send_in_background(client_frame(0x80 | 0x40 | 0x1, b"hi"));
    let (_, code, reason) = offender.until_close().await;
    assert_eq!(code, 1002, "{reason}");
    sending.abort();
    let stream = engine.follow(&id).await;
    assert_eq!(stream.close, 1000, "the order itself is unaffected");
}

/// The server reads client frames with no buffer while the client is
/// quiet: a frame that comes in pieces, one after a quiet gap, and one that
/// shares a read with the start of the next are all read whole and in order.
async fn frames_in_pieces_and_after_quiet_gaps_are_all_answered(backend: Backend) {
    let engine = Engine::start_on(backend, SLOW_VENUES);
    let id = engine.order(sol_usdc(1.0)).await;
    let mut socket = RawSocket::connect(&engine.url, &format!("/api/orders/status/{id}")).await;
    let (one, two) = (client_frame(0x89, b"one"), client_frame(0x89, b"two"));
    let write = socket.write.as_mut().expect("the write half");
    // Half a header, the rest of it, then the payload.
    for piece in [&one[..1], &one[1..4], &one[4..]] {
        write.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Quiet; then a whole frame and two bytes of the next in one write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut joined = two.clone();
    joined.extend_from_slice(&one[..2]);
    write.write_all(&joined).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    write.write_all(&one[2..]).await.unwrap();

    let mut pongs = Vec::new();
    while pongs.len() < 3 {
        let (opcode, payload) = tokio::time::timeout(Duration::from_secs(10), socket.frame())
            .await
            .expect("every ping is answered");
        match opcode {
            0xA => pongs.push(String::from_utf8(payload).unwrap()),
            0x8 => panic!("closed before every ping was answered: {pongs:?}"),
            _ => {}
        }
    }
    assert_eq!(pongs, ["one", "two", "one"]);
}

crate::on_both_backends!(
    since_past_the_last_event_is_refused_with_400_on_the_socket_and_events,
    frames_in_pieces_and_after_quiet_gaps_are_all_answered,
    since_at_the_terminal_event_gets_greetings_then_1000_at_once,
    a_frame_over_the_limit_closes_1009_and_other_watchers_get_every_event,
    a_frame_with_reserved_bits_closes_1002,
);
