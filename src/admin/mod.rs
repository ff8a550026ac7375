//! The admin server: `/metrics`, `/healthz`, `/readyz`, `/status`. Read-only by design
//! (safety invariant 8): GET and HEAD only, small buffers, and no request body is ever
//! read.
//!
//! It must stay answerable whatever clients do, because `/healthz` is the liveness probe:
//! a probe that goes unanswered gets the daemon restarted, back in `startup_grace`, and
//! never promoting. So:
//!
//! - It runs on its own thread and runtime: admin traffic never takes a worker from the
//!   group loops, and busy group loops never delay a health answer.
//! - It always accepts. At [`Limits::max_connections`] it closes the connection that has
//!   waited longest for a request (then, if none waits, the oldest one) to make room:
//!   a flood of idle or slow connections cannot keep the next probe out, and the kernel's
//!   listen backlog ([`LISTEN_BACKLOG`]) is drained as fast as connections arrive.
//! - A connection must deliver a complete request head within [`Limits::read_timeout`]
//!   of being accepted or of its previous answer: this bounds idle keep-alive
//!   connections and slow-header (slowloris) clients alike.
//! - A write that makes no progress for [`Limits::write_timeout`] closes the connection:
//!   a client that pipelines requests and never reads the answers is dropped.
//! - At most [`Limits::max_requests`] requests per connection; the last answer carries
//!   `Connection: close`.
//! - `/healthz` and `/readyz` answer from atomics; `/status` is serialized once per
//!   change (a tick's status, or a group's role), not per request; `/metrics` is encoded
//!   at most once per [`METRICS_MAX_AGE`], off the server's thread, and a request that
//!   arrives while it is being encoded gets the previous copy. No answer waits behind
//!   another.
//! - A group's coordination role (`/status`) and `kube_failover_leader` are read from the
//!   coordination state at the request, not from the group's last finished tick: a
//!   leader whose tick waits on an unreachable standby stops saying `leader` at the
//!   instant it stops writing.
//!
//! Files: `state.rs` (what the server shows, kept by the group loops), `server.rs` (the
//! listener, connections and their bounds), `routes.rs` (the routing table), `tests.rs`.

mod routes;
mod server;
mod state;
#[cfg(test)]
mod tests;

pub use server::{bind, serve};
pub use state::AdminState;

use std::net::SocketAddr;
use std::time::Duration;

/// Read buffer per connection; requests larger than this are refused.
const MAX_BUF: usize = 16 * 1024;
/// Connections the kernel may hold for the server before it accepts them. The server
/// accepts at once, so this only absorbs bursts (1,000 clients connecting at once).
/// Linux caps it at `net.core.somaxconn` (4096 by default).
pub const LISTEN_BACKLOG: u32 = 1024;
/// Kernel send and receive buffer of each connection (Linux doubles it).
const SOCKET_BUFFER: u32 = 64 * 1024;
/// `/metrics` answers are at most this old.
pub const METRICS_MAX_AGE: Duration = Duration::from_secs(1);
/// Backstop for a request being answered: the answer is produced without waiting on
/// anything but the metrics encoding, so this only ends a connection stuck otherwise.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one summary line of dropped connections per this period.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Bounds on the admin server's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most; a new one closes the connection that has waited
    /// longest for a request.
    pub max_connections: usize,
    /// A complete request head within this time of the connection being accepted or
    /// of its previous answer (idle keep-alive and slow headers).
    pub read_timeout: Duration,
    /// A write that makes no progress for this long closes the connection.
    pub write_timeout: Duration,
    /// Requests per connection.
    pub max_requests: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // Well below the 1024 open files systemd gives a service by default, and
            // about 256 × 20 KiB of buffers at most.
            max_connections: 256,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            max_requests: 100,
        }
    }
}

/// Errors of the admin server.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("cannot listen on {addr} (daemon.listen)")]
    /// The admin address cannot be bound.
    Bind {
        /// The address from `daemon.listen`.
        addr: SocketAddr,
        #[source]
        /// Why.
        source: std::io::Error,
    },
}

/// The longest a group loop may go without a sign of progress before `/healthz` turns
/// 503 and the systemd watchdog pings stop.
///
/// The longest legitimate gap between two beats of a loop is the longest of: the wait
/// for the next tick (one interval), the probes (each bounded by `probe_timeout` or a
/// check's timeout, which validation keeps below the interval), and one Kubernetes call
/// of an action (bounded by the actuator's call timeout, 10 s). The limit is twice that
/// call timeout and at least three intervals (the old bound on a whole tick): 20 s
/// with the default 5 s interval. A tick that needs several slow calls keeps beating
/// after each; a loop stuck anywhere stops.
pub fn stall_limit(interval: Duration) -> Duration {
    (interval * 3).max(crate::actuate::Actuator::DEFAULT_CALL_TIMEOUT * 2)
}
