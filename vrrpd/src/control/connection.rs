//! One control connection: the request loop, the subscription's state-event stream with
//! its acks, and operator commands.
//!
//! The stream and the robustness rules it follows are described in the parent module.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use shared::control::{
    read_message, write_message, ControlError, ControlStats, DaemonStatus, Request, Response,
    StateEvent, MAX_LINE,
};
use shared::shutdown::Shutdown;
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

use super::access::{AccessPolicy, Peer, Refusal, Refusals, UidSlots};
use super::cache::StateCache;
use super::{
    AdminCommand, AdminRequest, Admission, SubscriberInfo, Subscribers, LBD_CLIENT, WRITE_TIMEOUT,
};

/// Unacknowledged events remembered per subscriber for the seq -> event id mapping; older
/// ones are forgotten (their acks then count for the newest id remembered before them).
const MAX_PENDING: usize = 4096;

/// How long a CLI command may take: a switchover drains lbd first.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds of the keepalive period on a subscription. It is half the shortest advert
/// interval, so lbd hears several keepalives within any Master_Down_Interval (its lost
/// timeout) even at 1-cs adverts, and needn't hear more than ten a second at slow ones.
const KEEPALIVE_MIN: Duration = Duration::from_millis(10);
const KEEPALIVE_MAX: Duration = Duration::from_millis(100);

/// What every connection task shares.
pub(super) struct ConnCtx {
    pub(super) status: watch::Receiver<DaemonStatus>,
    pub(super) events: broadcast::WeakSender<StateEvent>,
    pub(super) cache: Arc<StateCache>,
    pub(super) subscribers: Subscribers,
    pub(super) admin: Option<mpsc::Sender<AdminRequest>>,
    pub(super) policy: AccessPolicy,
    pub(super) refusals: Arc<Refusals>,
    pub(super) slots: Arc<UidSlots>,
}

impl ConnCtx {
    /// The daemon's status plus the control socket's own counters.
    fn status(&self) -> DaemonStatus {
        let mut status = self.status.borrow().clone();
        status.control = ControlStats {
            connections: self.slots.total() as u64,
            refused: self.refusals.snapshot(),
        };
        status
    }

    /// How often a subscriber hears `alive` (see [`KEEPALIVE_MIN`]).
    fn keepalive_period(&self) -> Duration {
        let shortest_cs = self
            .status
            .borrow()
            .instances
            .iter()
            .map(|i| i.advert_interval_cs)
            .min()
            .unwrap_or(u16::MAX);
        (Duration::from_millis(u64::from(shortest_cs) * 10) / 2).clamp(KEEPALIVE_MIN, KEEPALIVE_MAX)
    }
}

/// What the reader task passes to the connection loop.
enum Inbound {
    Request(Request),
    Malformed(String),
    TooLong,
}

/// Reads requests on its own, because `read_message` is not cancel-safe: inside a
/// `select!` with the event stream, a partly read line would be lost.
async fn read_loop(read: OwnedReadHalf, tx: mpsc::Sender<Inbound>) {
    let mut reader = BufReader::new(read);
    loop {
        let item = match read_message::<_, Request>(&mut reader).await {
            Ok(Some(req)) => Inbound::Request(req),
            Ok(None) => return,
            Err(ControlError::Malformed(e)) => Inbound::Malformed(e.to_string()),
            Err(ControlError::LineTooLong) => {
                let _ = tx.send(Inbound::TooLong).await;
                return;
            }
            Err(e) => {
                debug!(error = %e, "control connection read failed");
                return;
            }
        };
        if tx.send(item).await.is_err() {
            return;
        }
    }
}

/// A subscribed connection's state.
struct Subscription {
    rx: broadcast::Receiver<StateEvent>,
    /// Last per-connection seq sent.
    sent: u64,
    acked: u64,
    /// (per-connection seq, daemon event id) of sent, unacknowledged events.
    pending: VecDeque<(u64, u64)>,
}

/// Aborts the reader task and forgets the subscriber when the connection ends, however it
/// ends.
struct ConnGuard {
    reader: tokio::task::JoinHandle<()>,
    subscribers: Subscribers,
    conn: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.reader.abort();
        let conn = self.conn;
        self.subscribers
            .tx
            .send_if_modified(|subs| subs.remove(&conn).is_some());
    }
}

async fn next_event(sub: &mut Option<Subscription>) -> Result<StateEvent, RecvError> {
    match sub {
        Some(s) => s.rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn send<T: serde::Serialize>(write: &mut OwnedWriteHalf, msg: &T) -> bool {
    match tokio::time::timeout(WRITE_TIMEOUT, write_message(write, msg)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            debug!(error = %e, "control connection write failed");
            false
        }
        Err(_) => {
            warn!("control client not reading; closing its connection");
            false
        }
    }
}

fn error(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}

/// When a connection that sends nothing is closed: it must identify itself (one valid
/// request) quickly; after that an operator connection may idle for the idle timeout; a
/// subscription is kept (lbd is watched by its heartbeats instead).
fn quiet_deadline(policy: &AccessPolicy, identified: bool, subscribed: bool) -> Option<Duration> {
    match (identified, subscribed) {
        (_, true) => None,
        (false, false) => Some(policy.identify_timeout),
        (true, false) => Some(policy.idle_timeout),
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

pub(super) async fn connection(
    stream: UnixStream,
    ctx: Arc<ConnCtx>,
    conn: u64,
    shutdown: Shutdown,
    admission: Admission,
) {
    let peer = admission.peer;
    let (read, mut write) = stream.into_split();
    let (in_tx, mut in_rx) = mpsc::channel(8);
    let _guard = ConnGuard {
        reader: tokio::spawn(read_loop(read, in_tx).in_current_span()),
        subscribers: ctx.subscribers.clone(),
        conn,
    };
    let mut sub: Option<Subscription> = None;
    let mut identified = false;
    let mut quiet = quiet_deadline(&ctx.policy, false, false).map(|d| Instant::now() + d);
    let mut keepalive = Instant::now() + ctx.keepalive_period();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.fast() => break,
            _ = shutdown.triggered(), if sub.is_none() => break,
            _ = until(quiet) => {
                let (why, text) = if identified {
                    (Refusal::IdleTimeout, "operator connection idle for the idle timeout; closing it")
                } else {
                    (Refusal::IdentifyTimeout, "no request within the identification timeout; closing the connection")
                };
                ctx.refusals.record(why, Some(&peer), text);
                let _ = send(&mut write, &error(text)).await;
                break;
            }
            _ = tokio::time::sleep_until(keepalive), if sub.is_some() => {
                // Proof of life for lbd, which otherwise can't tell a hung vrrpd (socket
                // still open) from one with nothing to say.
                if !send(&mut write, &Response::Alive).await {
                    break;
                }
                keepalive = Instant::now() + ctx.keepalive_period();
            }
            inbound = in_rx.recv() => {
                // Only a valid request identifies a connection or keeps it from idling:
                // garbage every 900 ms must not hold a slot for ever.
                let valid = matches!(inbound, Some(Inbound::Request(_)));
                identified |= valid;
                let keep = match inbound {
                    None => false,
                    Some(Inbound::TooLong) => {
                        let _ = send(&mut write, &error(format!(
                            "request longer than {MAX_LINE} bytes; closing the connection"
                        ))).await;
                        false
                    }
                    Some(Inbound::Malformed(why)) => {
                        debug!(error = %why, "malformed control request");
                        send(&mut write, &error(format!(
                            "malformed request: {why} (valid: {{\"cmd\":\"status\"}}, {{\"cmd\":\"subscribe\",\"client\":NAME}}, {{\"cmd\":\"ack\",\"seq\":N}}, {{\"cmd\":\"heartbeat\",...}}, {{\"cmd\":\"switchover\"}}, {{\"cmd\":\"resume\"}})"
                        ))).await
                    }
                    Some(Inbound::Request(req)) => {
                        handle_request(req, &ctx, conn, &peer, &mut sub, &mut write).await
                    }
                };
                if !keep {
                    break;
                }
                // Measured from the end of the request: a long switchover isn't idleness.
                if valid {
                    quiet = quiet_deadline(&ctx.policy, identified, sub.is_some()).map(|d| Instant::now() + d);
                }
            }
            event = next_event(&mut sub) => {
                let Some(s) = sub.as_mut() else { break };
                match event {
                    Ok(ev) => {
                        if !send_event(s, ev, &ctx.subscribers, conn, &mut write).await {
                            break;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        warn!(missed, "control subscriber fell behind; closing it so it resubscribes");
                        break;
                    }
                    Err(RecvError::Closed) => {
                        debug!("event stream ended; closing subscriber");
                        break;
                    }
                }
            }
        }
    }
    if sub.is_some() {
        info!("control subscriber disconnected");
    }
}

/// Refuse a request the peer's role doesn't allow: count, log (rate-limited), answer.
async fn forbid(
    ctx: &ConnCtx,
    peer: &Peer,
    why: Refusal,
    message: String,
    write: &mut OwnedWriteHalf,
) -> bool {
    ctx.refusals.record(why, Some(peer), &message);
    send(write, &error(message)).await
}

/// Handle one request; `false` closes the connection.
async fn handle_request(
    req: Request,
    ctx: &ConnCtx,
    conn: u64,
    peer: &Peer,
    sub: &mut Option<Subscription>,
    write: &mut OwnedWriteHalf,
) -> bool {
    match req {
        Request::Status => send(write, &Response::Status(ctx.status())).await,
        Request::Subscribe { client } => {
            if sub.is_some() {
                return send(write, &error("already subscribed on this connection")).await;
            }
            if !ctx.policy.may_act_as_lbd(peer) {
                let message = format!(
                    "uid {} may not subscribe: the state stream is for lbd (root or the `lbd.user`)",
                    peer.uid
                );
                return forbid(ctx, peer, Refusal::NotLbd, message, write).await;
            }
            let Some(events) = ctx.events.upgrade() else {
                return send(write, &error("vrrpd is shutting down")).await;
            };
            // Order matters: live receiver first, snapshot second (see StateCache).
            let rx = events.subscribe();
            drop(events);
            let status = ctx.status.borrow().clone();
            let (snapshot, snapshot_id) = ctx.cache.snapshot(&status);
            let info = SubscriberInfo {
                client: client.clone(),
                sent_seq: 0,
                acked_seq: 0,
                // Nothing to acknowledge yet means caught up.
                acked_event: if snapshot.is_empty() { snapshot_id } else { 0 },
                heartbeat: None,
                heartbeat_at: None,
            };
            if let Some(holder) = insert_subscriber(&ctx.subscribers, conn, info) {
                let message = format!(
                    "another lbd is already subscribed (control connection {holder}); only one lbd at a time"
                );
                return forbid(ctx, peer, Refusal::SecondLbd, message, write).await;
            }
            info!(client = %client, uid = peer.uid, pid = peer.pid, instances = snapshot.len(), "control subscriber connected");
            let s = sub.insert(Subscription {
                rx,
                sent: 0,
                acked: 0,
                pending: VecDeque::new(),
            });
            if !send(write, &Response::Subscribed { next_seq: 1 }).await {
                return false;
            }
            for mut ev in snapshot {
                ev.seq = snapshot_id;
                if !send_event(s, ev, &ctx.subscribers, conn, write).await {
                    return false;
                }
            }
            true
        }
        Request::Ack { seq } => {
            let Some(s) = sub.as_mut() else {
                return send(write, &error("ack without subscribe")).await;
            };
            if seq > s.sent {
                return send(
                    write,
                    &error(format!(
                        "ack of seq {seq}, but the last seq sent is {}",
                        s.sent
                    )),
                )
                .await;
            }
            if seq <= s.acked {
                // Cumulative: an old or repeated ack changes nothing.
                return true;
            }
            s.acked = seq;
            let mut acked_event = None;
            while let Some(&(pseq, id)) = s.pending.front() {
                if pseq > seq {
                    break;
                }
                acked_event = Some(acked_event.map_or(id, |a: u64| a.max(id)));
                s.pending.pop_front();
            }
            ctx.subscribers.update(conn, |info| {
                info.acked_seq = seq;
                if let Some(id) = acked_event {
                    info.acked_event = info.acked_event.max(id);
                }
            });
            true
        }
        Request::Heartbeat(hb) => {
            if sub.is_none() {
                return send(write, &error("heartbeat without subscribe")).await;
            }
            let is_lbd = ctx
                .subscribers
                .tx
                .borrow()
                .get(&conn)
                .is_some_and(|s| s.client == LBD_CLIENT);
            if !is_lbd {
                let message = format!("heartbeats come from the {LBD_CLIENT:?} subscriber only");
                return forbid(ctx, peer, Refusal::NotLbd, message, write).await;
            }
            let now = tokio::time::Instant::now();
            ctx.subscribers.update(conn, |info| {
                info.heartbeat = Some(hb);
                info.heartbeat_at = Some(now);
            });
            // Proof of life for lbd, which cannot otherwise tell a hung vrrpd from a quiet one.
            send(write, &Response::Alive).await
        }
        Request::Switchover { instance } => {
            admin(ctx, peer, write, AdminCommand::Switchover { instance }).await
        }
        Request::Resume { instance } => {
            admin(ctx, peer, write, AdminCommand::Resume { instance }).await
        }
    }
}

/// Add a subscriber; a second `lbd` is not added, and the connection holding the role is
/// returned instead. One check-and-insert, so two racing subscriptions can't both win.
fn insert_subscriber(subscribers: &Subscribers, conn: u64, info: SubscriberInfo) -> Option<u64> {
    let mut holder = None;
    subscribers.tx.send_if_modified(|subs| {
        if info.client == LBD_CLIENT {
            holder = subs
                .iter()
                .find(|(_, s)| s.client == LBD_CLIENT)
                .map(|(c, _)| *c);
            if holder.is_some() {
                return false;
            }
        }
        subs.insert(conn, info);
        true
    });
    holder
}

/// Pass an operator command to the daemon and answer with its outcome.
async fn admin(
    ctx: &ConnCtx,
    peer: &Peer,
    write: &mut OwnedWriteHalf,
    command: AdminCommand,
) -> bool {
    let policy = ctx.policy.clone();
    let who = *peer;
    // The group lookup reads NSS files: keep it off the runtime's worker threads.
    let allowed = tokio::task::spawn_blocking(move || policy.may_administer(&who))
        .await
        .unwrap_or(false);
    if !allowed {
        let message = format!(
            "uid {} may not run {}: root or the `control.admin_group` only",
            peer.uid,
            command.name()
        );
        return forbid(ctx, peer, Refusal::NotAdmin, message, write).await;
    }
    info!(
        uid = peer.uid,
        pid = peer.pid,
        command = command.name(),
        "operator command"
    );
    let Some(tx) = ctx.admin.as_ref() else {
        return send(write, &error("this daemon does not take commands")).await;
    };
    let (reply, answer) = oneshot::channel();
    if tx.send(AdminRequest { command, reply }).await.is_err() {
        return send(write, &error("vrrpd is shutting down")).await;
    }
    let response = match tokio::time::timeout(ADMIN_TIMEOUT, answer).await {
        Ok(Ok(Ok(message))) => Response::Done { message },
        Ok(Ok(Err(e))) => Response::Error {
            message: e.to_string(),
        },
        Ok(Err(_)) => error("the daemon dropped the command"),
        Err(_) => error("the command did not finish in time"),
    };
    send(write, &response).await
}

/// Number an event for this connection, remember its daemon id, and write it.
async fn send_event(
    s: &mut Subscription,
    mut ev: StateEvent,
    subscribers: &Subscribers,
    conn: u64,
    write: &mut OwnedWriteHalf,
) -> bool {
    s.sent += 1;
    let daemon_id = ev.seq;
    ev.seq = s.sent;
    if s.pending.len() >= MAX_PENDING {
        s.pending.pop_front();
    }
    s.pending.push_back((s.sent, daemon_id));
    let sent = s.sent;
    subscribers.update(conn, |info| info.sent_seq = sent);
    send(write, &ev).await
}
