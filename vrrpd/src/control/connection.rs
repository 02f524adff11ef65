//! One control connection: the request loop, the subscription's state-event stream with
//! its acks, and operator commands.
//!
//! The stream and the robustness rules it follows are described in the parent module.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use shared::control::{
    read_message, write_message, ControlError, DaemonStatus, Request, Response, StateEvent,
    MAX_LINE,
};
use shared::shutdown::Shutdown;
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc, oneshot, watch, OwnedSemaphorePermit};
use tracing::{debug, info, warn, Instrument};

use super::cache::StateCache;
use super::{AdminCommand, AdminRequest, SubscriberInfo, Subscribers, WRITE_TIMEOUT};

/// Unacknowledged events remembered per subscriber for the seq -> event id mapping; older
/// ones are forgotten (their acks then count for the newest id remembered before them).
const MAX_PENDING: usize = 4096;

/// How long a CLI command may take: a switchover drains lbd first.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);

/// What every connection task shares.
pub(super) struct ConnCtx {
    pub(super) status: watch::Receiver<DaemonStatus>,
    pub(super) events: broadcast::WeakSender<StateEvent>,
    pub(super) cache: Arc<StateCache>,
    pub(super) subscribers: Subscribers,
    pub(super) admin: Option<mpsc::Sender<AdminRequest>>,
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

pub(super) async fn connection(
    stream: UnixStream,
    ctx: Arc<ConnCtx>,
    conn: u64,
    shutdown: Shutdown,
    _permit: OwnedSemaphorePermit,
) {
    let (read, mut write) = stream.into_split();
    let (in_tx, mut in_rx) = mpsc::channel(8);
    let _guard = ConnGuard {
        reader: tokio::spawn(read_loop(read, in_tx).in_current_span()),
        subscribers: ctx.subscribers.clone(),
        conn,
    };
    let mut sub: Option<Subscription> = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.fast() => break,
            _ = shutdown.triggered(), if sub.is_none() => break,
            inbound = in_rx.recv() => {
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
                        handle_request(req, &ctx, conn, &mut sub, &mut write).await
                    }
                };
                if !keep {
                    break;
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

/// Handle one request; `false` closes the connection.
async fn handle_request(
    req: Request,
    ctx: &ConnCtx,
    conn: u64,
    sub: &mut Option<Subscription>,
    write: &mut OwnedWriteHalf,
) -> bool {
    match req {
        Request::Status => {
            let status = ctx.status.borrow().clone();
            send(write, &Response::Status(status)).await
        }
        Request::Subscribe { client } => {
            if sub.is_some() {
                return send(write, &error("already subscribed on this connection")).await;
            }
            let Some(events) = ctx.events.upgrade() else {
                return send(write, &error("vrrpd is shutting down")).await;
            };
            // Order matters: live receiver first, snapshot second (see StateCache).
            let rx = events.subscribe();
            drop(events);
            let status = ctx.status.borrow().clone();
            let (snapshot, snapshot_id) = ctx.cache.snapshot(&status);
            info!(client = %client, instances = snapshot.len(), "control subscriber connected");
            ctx.subscribers.tx.send_modify(|subs| {
                subs.insert(
                    conn,
                    SubscriberInfo {
                        client,
                        sent_seq: 0,
                        acked_seq: 0,
                        // Nothing to acknowledge yet means caught up.
                        acked_event: if snapshot.is_empty() { snapshot_id } else { 0 },
                        heartbeat: None,
                        heartbeat_at: None,
                    },
                );
            });
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
            let now = tokio::time::Instant::now();
            ctx.subscribers.update(conn, |info| {
                info.heartbeat = Some(hb);
                info.heartbeat_at = Some(now);
            });
            // Proof of life for lbd, which cannot otherwise tell a hung vrrpd from a quiet one.
            send(write, &Response::Alive).await
        }
        Request::Switchover { instance } => {
            admin(ctx, write, AdminCommand::Switchover { instance }).await
        }
        Request::Resume { instance } => admin(ctx, write, AdminCommand::Resume { instance }).await,
    }
}

/// Pass an operator command to the daemon and answer with its outcome.
async fn admin(ctx: &ConnCtx, write: &mut OwnedWriteHalf, command: AdminCommand) -> bool {
    let Some(tx) = ctx.admin.as_ref() else {
        return send(write, &error("this daemon does not take commands")).await;
    };
    let (reply, answer) = oneshot::channel();
    if tx.send(AdminRequest { command, reply }).await.is_err() {
        return send(write, &error("vrrpd is shutting down")).await;
    }
    let response = match tokio::time::timeout(ADMIN_TIMEOUT, answer).await {
        Ok(Ok(Ok(message))) => Response::Done { message },
        Ok(Ok(Err(message))) => Response::Error { message },
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
