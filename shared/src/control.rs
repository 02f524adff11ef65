//! The local control protocol: vrrpd's Unix socket, spoken by the `status` CLI and by lbd.
//!
//! Framing is line-delimited JSON: one message per `\n`-terminated line, at most
//! [`MAX_LINE`] bytes, so a broken or hostile peer can't make the daemon buffer without
//! bound. Clients send [`Request`]s. The daemon answers each with one [`Response`], except
//! `subscribe`, after which it streams [`StateEvent`]s, each with a sequence number that
//! increases by one per event on that connection. The subscriber acknowledges events with
//! `{"cmd":"ack","seq":N}` (cumulative), which is how vrrpd knows lbd has acted on a
//! state change before it claims the VIP.
//!
//! The pair protocol between vrrpd and lbd, on one subscribed connection:
//! - vrrpd -> lbd: [`StateEvent`]s. `master` means "start serving this instance's VIPs";
//!   lbd binds its listeners (IP_FREEBIND, so the VIP need not be present yet) and acks;
//!   only then does vrrpd add the VIP and send GARP. `backup`/`fault`/`initialize` come
//!   after vrrpd removed the VIP; lbd stops accepting and drains. An event with
//!   `draining: true` asks lbd to drain the instance's connections (answer with
//!   `Connection: close`, wait for in-flight requests, bounded) and ack when done; that is
//!   the first step of a planned switchover.
//! - lbd -> vrrpd: acks, and a [`Heartbeat`] every interval saying whether lbd can serve
//!   (`able`), whether it is ready to take over (`ready`: listeners up, healthy backends),
//!   and which instances' VIPs it is serving. vrrpd acts at once on a disconnect, a missed
//!   heartbeat or `able: false`.
//! - vrrpd -> lbd, unprompted: `{"type":"alive"}` every half advert interval (10..100 ms),
//!   the keepalive; the same line answers each heartbeat. lbd counts its lost timeout from
//!   the last line heard, so a hung vrrpd with its socket open is lost like a dead one.
//!   Older lbds already skip `alive` lines, so the addition is compatible both ways.
//! - Who may send what is decided by the kernel-reported peer uid (SO_PEERCRED), not by the
//!   messages: see vrrpd's `control` module and doc/vrrpd.md.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Longest line either side accepts.
pub const MAX_LINE: usize = 64 * 1024;

/// Default path of vrrpd's control socket.
pub const DEFAULT_VRRPD_SOCKET: &str = "/run/lbpair/vrrpd.sock";

/// A client's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// One status snapshot.
    Status,
    /// Start the ordered state stream on this connection.
    Subscribe {
        /// Who is subscribing, for logs (e.g. "lbd").
        client: String,
    },
    /// Cumulative acknowledgement of every event up to `seq`.
    Ack { seq: u64 },
    /// lbd's periodic health report, on its subscribed connection. No answer.
    Heartbeat(Heartbeat),
    /// Planned switchover: drain lbd, then hand mastership to the peer, make-before-break.
    /// `instance: None` means every instance that is master here.
    Switchover {
        #[serde(default)]
        instance: Option<String>,
    },
    /// Lift the hold a switchover leaves (so this node may preempt again).
    Resume {
        #[serde(default)]
        instance: Option<String>,
    },
}

/// What lbd reports about itself, several times a second.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// lbd can serve traffic (its configured "unable" conditions are all false).
    pub able: bool,
    /// lbd is ready to take over: listeners can bind and every pool has a healthy backend
    /// (later also: peer state synced). A backup preempts only when ready.
    pub ready: bool,
    /// Instances whose VIP listeners lbd has bound right now.
    #[serde(default)]
    pub serving: Vec<String>,
    /// Why lbd is not able or not ready, for logs and status.
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// The daemon's answer to a non-streaming request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Status(DaemonStatus),
    /// `subscribe` accepted: the snapshot of current states follows as events.
    Subscribed {
        next_seq: u64,
    },
    /// A command was carried out.
    Done {
        message: String,
    },
    Error {
        message: String,
    },
    /// vrrpd's answer to each heartbeat on a subscribed connection: proof of life. Without
    /// it, a vrrpd that hangs with its socket still open looks exactly like one with nothing
    /// to say, and lbd would go on serving after the peer has taken the VIP.
    Alive,
}

/// A state change of one instance, as streamed to subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEvent {
    pub seq: u64,
    pub instance: String,
    pub vrid: u8,
    pub interface: String,
    /// "initialize", "backup", "master" or "fault".
    pub state: String,
    pub priority: u8,
    /// VIPs as "address/prefix".
    pub vips: Vec<String>,
    pub reason: String,
    /// For `master`: drain this instance's connections, then ack (planned switchover).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// The longest a backup may wait before taking over a silent master (Master_Down_Interval
    /// at the lowest backup priority, 1, and this instance's advert interval). lbd stops
    /// serving a VIP if it loses vrrpd for this long, because by then the peer holds it.
    #[serde(default)]
    pub master_down_ms: u64,
    /// For a `backup` that hands the VIP to a new master (`HANDED_OVER_REASONS`): the hold.
    /// The new master forwards to us, for a little less than this (vrrpd's `[lbd]
    /// handoff_ms`), the packets of connections it doesn't know (handshakes that straddled
    /// the MAC move, keep-alive connections of ours), so lbd keeps accepting and answering
    /// on the VIP listeners this long before it acks. 0: no hand-off window (stop accepting
    /// at once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub handoff_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The `reason`s of a `backup` event that hands the VIP to another router now master (a
/// completed switchover, a better master: preemption or a healed partition). vrrpd keeps
/// its copy of the VIP until lbd acks such an event, and lbd acks it once no request is in
/// flight on the instance's listeners, so responses still being written can leave the host.
/// The labels of vrrpd's `TransitionReason::hands_over_to_new_master`.
pub const HANDED_OVER_REASONS: [&str; 3] = [
    "switchover_complete",
    "higher_priority_advert",
    "equal_priority_higher_address",
];

/// `vrrpd status` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub uptime_ms: u64,
    pub config_path: String,
    pub instances: Vec<InstanceStatus>,
    /// The control socket's own counters (absent from older daemons).
    #[serde(default)]
    pub control: ControlStats,
    /// Log lines dropped because stderr was blocked and the writer's queue was full
    /// (`shared::telemetry`; absent from older daemons).
    #[serde(default)]
    pub log_lines_dropped: u64,
}

/// The control socket as the daemon sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStats {
    /// Connections open now.
    pub connections: u64,
    /// Connections and requests refused, by reason (`not_lbd`, `not_admin`, `second_lbd`,
    /// `uid_limit`, `connection_limit`, `identify_timeout`, `idle_timeout`,
    /// `peer_credentials`).
    pub refused: BTreeMap<String, u64>,
}

/// One VRRP instance's state and counters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub state: String,
    /// The priority in use now (after tracking adjustments).
    pub priority: u8,
    pub configured_priority: u8,
    /// Who this node believes is master (itself when master).
    pub master_addr: Option<Ipv4Addr>,
    /// The advert interval in effect: ours as master, the master's as backup.
    pub advert_interval_cs: u16,
    pub time_in_state_ms: u64,
    pub vips: Vec<String>,
    pub counters: InstanceCounters,
    /// The local lbd as vrrpd sees it (absent when the coupling is off).
    #[serde(default)]
    pub lbd: Option<LbdView>,
    /// A planned switchover is under way (master resigning, keeping its VIP meanwhile).
    #[serde(default)]
    pub resigning: bool,
    /// After a switchover this node doesn't preempt until `vrrpd resume`.
    #[serde(default)]
    pub switchover_hold: bool,
}

/// vrrpd's view of its local lbd.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbdView {
    pub connected: bool,
    pub able: bool,
    pub ready: bool,
    /// What tracking does about it now: "ok", "fault" or "priority -N".
    pub effect: String,
    pub reasons: Vec<String>,
}

/// Per-instance counters, all monotonic since the instance started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceCounters {
    pub adverts_sent: u64,
    pub adverts_received: u64,
    pub transitions: u64,
    pub became_master: u64,
    /// Timers that fired more than half an advert interval late.
    pub late_timers: u64,
    /// Received packets dropped, by reason (ttl, checksum, vrid, ...).
    pub discards: BTreeMap<String, u64>,
    /// Valid adverts by the checksum mode the peer used.
    pub checksum_modes: BTreeMap<String, u64>,
    pub garps_sent: u64,
    pub send_errors: u64,
    /// Learned advert intervals clamped into the adopt window.
    #[serde(default)]
    pub interval_clamped: u64,
    /// Replies to worse or priority-0 adverts not sent: one already went out less than an
    /// advert interval ago (so a flood is not amplified).
    #[serde(default)]
    pub replies_suppressed: u64,
    /// Hand-off tables loaded: takeovers from a live master, and re-announces over another
    /// master as a split heals (at most one per window and linger).
    #[serde(default)]
    pub handoff_tables: u64,
}

/// Errors of the control protocol.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("control message longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("malformed control message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("daemon answered with an error: {0}")]
    Remote(String),
    #[error("unexpected answer from daemon")]
    Unexpected,
}

/// Write one message as a JSON line.
pub async fn write_message<W, T>(writer: &mut W, message: &T) -> Result<(), ControlError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.flush().await?;
    Ok(())
}

/// Read one JSON line; `Ok(None)` at a clean end of stream. Lines over [`MAX_LINE`] are an
/// error rather than an allocation.
pub async fn read_message<R, T>(reader: &mut R) -> Result<Option<T>, ControlError>
where
    R: AsyncBufRead + Unpin,
    T: DeserializeOwned,
{
    let mut line = Vec::new();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return if line.is_empty() {
                Ok(None)
            } else {
                Err(ControlError::Io(std::io::ErrorKind::UnexpectedEof.into()))
            };
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if line.len() + chunk.len() > MAX_LINE {
            return Err(ControlError::LineTooLong);
        }
        line.extend_from_slice(chunk);
        let consumed = done.unwrap_or(chunk.len());
        reader.consume(consumed);
        if done.is_some() {
            return Ok(Some(serde_json::from_slice(&line)?));
        }
    }
}

/// One request, one answer: what `vrrpd status` does.
pub async fn request(socket: &Path, req: &Request) -> Result<Response, ControlError> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    write_message(&mut write, req).await?;
    let mut reader = BufReader::new(read);
    match read_message::<_, Response>(&mut reader).await? {
        Some(Response::Error { message }) => Err(ControlError::Remote(message)),
        Some(resp) => Ok(resp),
        None => Err(ControlError::Unexpected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let ack = serde_json::to_string(&Request::Ack { seq: 7 }).unwrap();
        assert_eq!(ack, r#"{"cmd":"ack","seq":7}"#);
        let sub: Request = serde_json::from_str(r#"{"cmd":"subscribe","client":"lbd"}"#).unwrap();
        assert_eq!(
            sub,
            Request::Subscribe {
                client: "lbd".into()
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
    }

    #[tokio::test]
    async fn lines_round_trip_and_oversize_is_rejected() {
        let mut buf = Vec::new();
        write_message(&mut buf, &Request::Status).await.unwrap();
        write_message(&mut buf, &Request::Ack { seq: 1 })
            .await
            .unwrap();
        let mut r = BufReader::new(&buf[..]);
        assert_eq!(
            read_message::<_, Request>(&mut r).await.unwrap(),
            Some(Request::Status)
        );
        assert_eq!(
            read_message::<_, Request>(&mut r).await.unwrap(),
            Some(Request::Ack { seq: 1 })
        );
        assert_eq!(read_message::<_, Request>(&mut r).await.unwrap(), None);

        let huge = vec![b'x'; MAX_LINE + 10];
        let mut r = BufReader::new(&huge[..]);
        assert!(matches!(
            read_message::<_, Request>(&mut r).await,
            Err(ControlError::LineTooLong)
        ));
        let mut r = BufReader::new(&b"{not json}\n"[..]);
        assert!(matches!(
            read_message::<_, Request>(&mut r).await,
            Err(ControlError::Malformed(_))
        ));
    }
}
