//! A TCP relay for fault tests: it sits on a free loopback port in front of
//! one backend (PostgreSQL, Redis) so a test can break the network between
//! the engine and that backend without touching the server other tests use.
//!
//! Faults, as real networks produce them:
//! - [`Relay::reset`]: every open connection is closed on both sides (the
//!   peer sees end-of-stream at once). New connections pass.
//! - [`Relay::black_hole`]: every open connection stays open but passes no
//!   byte ever again (a crashed host, a NAT or load-balancer that forgot the
//!   flow); new connections are refused for a while, then pass normally
//!   while the old ones stay dead. Only a client-side deadline or TCP
//!   keepalive can notice this.
//! - [`Relay::down`] / [`Relay::up`]: an outage with resets: open connections
//!   are closed and new ones refused until `up`.
//!
//!
//! "Refused" means accepted and closed at once, so a client's connect fails
//! promptly (as a stopped server answering RST would), never silently.

// Each fault test uses the faults and URLs of its own backend.
#![allow(dead_code)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
    time::Instant,
};

/// What happens to one relayed connection from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Bytes flow both ways.
    Pass,
    /// Both sides are closed.
    Close,
    /// Both sockets stay open, no byte flows, until the relay is dropped.
    Stall,
}

/// Whether new connections are relayed.
#[derive(Debug, Clone, Copy)]
enum Admission {
    Open,
    /// Refused until `up` is called (`None`) or until the instant.
    Refused(Option<Instant>),
}

#[derive(Debug)]
struct State {
    admission: Admission,
    /// One sender per live connection; a fault is sent to each.
    connections: Vec<watch::Sender<Fate>>,
}

/// A TCP relay with faults; dropping it closes every connection it holds.
#[derive(Debug)]
pub struct Relay {
    /// The loopback port clients connect to.
    pub port: u16,
    state: Arc<Mutex<State>>,
    /// Dropped with the relay: the accept loop and every connection task
    /// (stalled ones included) see the channel close and end.
    _alive: watch::Sender<()>,
}

impl Relay {
    /// Starts relaying `127.0.0.1:<port>` to `target` (`host:port`).
    pub async fn start(target: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State {
            admission: Admission::Open,
            connections: Vec::new(),
        }));
        let (alive, lives) = watch::channel(());
        let target = target.to_owned();
        let accepting = state.clone();
        tokio::spawn(async move {
            let mut ended = lives.clone();
            loop {
                let inbound = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((inbound, _)) => inbound,
                        Err(_) => continue,
                    },
                    _ = ended.changed() => return,
                };
                let fates = {
                    let mut state = accepting.lock().unwrap();
                    state.connections.retain(|c| !c.is_closed());
                    let open = match state.admission {
                        Admission::Open => true,
                        Admission::Refused(Some(until)) => Instant::now() >= until,
                        Admission::Refused(None) => false,
                    };
                    if !open {
                        drop(inbound); // refused: closed at once
                        continue;
                    }
                    state.admission = Admission::Open;
                    let (fate, fates) = watch::channel(Fate::Pass);
                    state.connections.push(fate);
                    fates
                };
                tokio::spawn(relay(inbound, target.clone(), fates, lives.clone()));
            }
        });
        Relay {
            port,
            state,
            _alive: alive,
        }
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`, PostgreSQL through
    /// this relay (trust auth, as the test server runs).
    pub fn postgres_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `redis://127.0.0.1:<port>`, Redis through this relay.
    pub fn redis_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Closes both sides of every open connection; new ones still pass.
    pub fn reset(&self) {
        self.strike(Fate::Close);
    }

    /// Keeps every open connection open but passes no byte on it ever again,
    /// and refuses new connections for `refuse_new_for`; after that, new
    /// connections pass normally (the stalled ones stay dead).
    pub fn black_hole(&self, refuse_new_for: Duration) {
        self.strike(Fate::Stall);
        self.state.lock().unwrap().admission = Admission::Refused(Some(Instant::now() + refuse_new_for));
    }

    /// Closes every open connection and refuses new ones until [`Relay::up`].
    pub fn down(&self) {
        self.state.lock().unwrap().admission = Admission::Refused(None);
        self.strike(Fate::Close);
    }

    /// Passes new connections again (ends a `down` or a `black_hole`'s
    /// refusal early); connections already stalled stay dead.
    pub fn up(&self) {
        self.state.lock().unwrap().admission = Admission::Open;
    }

    /// Sends `fate` to every open connection and forgets them: each fault
    /// is final for the connections it hits.
    fn strike(&self, fate: Fate) {
        let connections = std::mem::take(&mut self.state.lock().unwrap().connections);
        for connection in connections {
            let _ = connection.send(fate);
        }
    }
}

/// Relays one connection until either side closes or a fault strikes it.
async fn relay(
    mut inbound: TcpStream,
    target: String,
    mut fate: watch::Receiver<Fate>,
    mut alive: watch::Receiver<()>,
) {
    let Ok(mut outbound) = TcpStream::connect(&target).await else {
        return; // the client sees its connection close
    };
    let struck = tokio::select! {
        _ = copy_bidirectional(&mut inbound, &mut outbound) => return,
        changed = fate.changed() => match changed {
            Ok(()) => *fate.borrow_and_update(),
            Err(_) => Fate::Close, // the relay is gone
        },
        _ = alive.changed() => Fate::Close,
    };
    if struck == Fate::Stall {
        // Hold both sockets, read nothing, write nothing: the peers' writes
        // fill the kernel buffers and then block, as on a dead path.
        let _ = alive.changed().await;
    }
    drop((inbound, outbound));
}
