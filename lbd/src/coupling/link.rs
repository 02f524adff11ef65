//! The connection to vrrpd: subscribe, follow the ordered event stream, ack, heartbeat.
//!
//! One task does it all, so events are acted on strictly in order. Reading happens in a
//! helper task (a line read is not cancel-safe, so it can't sit in a `select!`); the main
//! loop selects over the next message, the heartbeat tick, a watchdog tick and a running
//! switchover drain. While a drain runs, no further event is taken (they wait, in order, in
//! the channel) but heartbeats go on, so vrrpd never mistakes a drain for a dead lbd.
//!
//! vrrpd answers every heartbeat with `alive`, and also sends `alive` on its own every
//! half advert interval (10..100 ms), its keepalive. Once it has said `alive` in a session
//! it is held to it: the controller's lost timeout (the instance's Master_Down_Interval, or
//! `lost_timeout_ms`) runs from the last line heard, so a vrrpd that hangs (SIGSTOP,
//! deadlock) with its socket open stops lbd serving exactly as a dead one does, after the
//! same timeout, because by then the peer holds the VIP. Giving an instance up ends the
//! session too: vrrpd never repeats a state it has sent, so when a resumed vrrpd is still
//! master only a new subscription's snapshot says so. A silence longer than
//! [`silence_limit`] also ends the session, to reconnect to a restarted vrrpd. (A vrrpd
//! that never says `alive`, an older one, is not held to it.) The reader task notes the
//! time of every line and swallows `alive`, so a long switchover drain, during which events
//! wait in the channel, can't look like silence.
//!
//! The session ends on EOF, an I/O error or timeout, a malformed line, a seq gap or that
//! silence; the task then reconnects every `reconnect_interval`, and the controller's lost
//! timer runs from the moment the connection went away.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use shared::control::{read_message, write_message, ControlError, Request, Response, StateEvent};
use tokio::io::BufReader;
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::controller::{Controller, Drain, Next};
use super::Host;
use crate::config::VrrpConfig;

/// When vrrpd last said anything on this session, and whether it ever said `alive`.
#[derive(Debug, Default)]
struct Heard {
    at: Option<Instant>,
    alive: bool,
}

impl Heard {
    fn silent(&self, now: Instant, limit: Duration) -> bool {
        self.alive
            && self
                .at
                .is_some_and(|t| now.saturating_duration_since(t) > limit)
    }
}

/// How long a vrrpd that answers heartbeats may stay silent: ten heartbeats, at least a
/// second, so a vrrpd that is merely slow (a busy machine) is not dropped.
pub fn silence_limit(heartbeat_interval: Duration) -> Duration {
    (heartbeat_interval * 10).max(Duration::from_secs(1))
}

/// The client name vrrpd expects from lbd.
pub const CLIENT: &str = "lbd";
/// Longest wait for connect + the `subscribed` answer, and for one write.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the lost timer and drain-mode expiry are checked.
const WATCHDOG_TICK: Duration = Duration::from_millis(10);

/// Why a subscription ended.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot connect to vrrpd: {0}")]
    Connect(#[source] std::io::Error),
    #[error("vrrpd closed the connection")]
    Closed,
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("timed out talking to vrrpd")]
    Timeout,
    #[error("vrrpd refused the subscription: {0}")]
    Refused(String),
    #[error("event seq {got} where {want} was expected: events were lost, resubscribing")]
    SeqGap { want: u64, got: u64 },
    #[error("vrrpd said nothing for {0:?} (hung?)")]
    Silent(Duration),
    #[error(
        "vrrpd silent for the lost timeout: stopped serving; resubscribing for a fresh snapshot"
    )]
    Lost,
    #[error("lbd is shutting down")]
    Shutdown,
}

/// Follow vrrpd until fast shutdown. Spawned by `app` when `[vrrp]` is configured.
pub async fn run(host: Arc<dyn Host>, cfg: VrrpConfig) {
    let mut ctl = Controller::new(host, cfg);
    let shutdown = ctl.host().engine().shutdown.clone();
    // Start of the current outage (None before the first attempt and while subscribed).
    let mut down_since: Option<Instant> = None;
    loop {
        let e = session(&mut ctl).await;
        if matches!(e, LinkError::Shutdown) {
            return;
        }
        let now = Instant::now();
        if matches!(e, LinkError::SeqGap { .. }) {
            ctl.update_status(|s| s.seq_gaps += 1);
        }
        let was_connected = ctl.host().coupling().status().connected;
        if was_connected || down_since.is_none() {
            // Logged once per outage, not on every retry.
            warn!(error = %e, socket = %ctl.config().socket.display(), "vrrpd link down");
            down_since = Some(now);
            ctl.on_disconnect(now);
        } else {
            debug!(error = %e, "vrrpd still unreachable");
        }
        ctl.update_status(|s| {
            s.connected = false;
            s.disconnected_ms =
                down_since.map(|t| now.saturating_duration_since(t).as_millis() as u64);
        });
        let pause = tokio::time::sleep(ctl.config().reconnect_interval);
        tokio::pin!(pause);
        let mut tick = tokio::time::interval(WATCHDOG_TICK);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                _ = tick.tick() => { ctl.check_deadlines(Instant::now()).await; }
                _ = shutdown.fast() => return,
            }
        }
    }
}

/// Aborts the reader task when the session ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type Incoming = Result<Option<Value>, ControlError>;

/// Await `fut` for at most [`IO_TIMEOUT`], running the controller's timers meanwhile: a
/// vrrpd that accepts but doesn't answer must not hold up the lost timeout.
async fn watched<F: std::future::Future>(
    ctl: &mut Controller,
    fut: F,
) -> Result<F::Output, LinkError> {
    let deadline = tokio::time::sleep(IO_TIMEOUT);
    tokio::pin!(deadline, fut);
    let mut tick = tokio::time::interval(WATCHDOG_TICK);
    loop {
        tokio::select! {
            out = &mut fut => return Ok(out),
            _ = tick.tick() => { ctl.check_deadlines(Instant::now()).await; }
            _ = &mut deadline => return Err(LinkError::Timeout),
        }
    }
}

async fn send(write: &mut OwnedWriteHalf, req: &Request) -> Result<(), LinkError> {
    match tokio::time::timeout(IO_TIMEOUT, write_message(write, req)).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(LinkError::Timeout),
    }
}

/// One subscription, from connect to its end (it always ends with an error).
async fn session(ctl: &mut Controller) -> LinkError {
    match subscribed(ctl).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn subscribed(ctl: &mut Controller) -> Result<std::convert::Infallible, LinkError> {
    let shutdown = ctl.host().engine().shutdown.clone();
    let socket = ctl.config().socket.clone();
    let stream = watched(ctl, UnixStream::connect(&socket))
        .await?
        .map_err(LinkError::Connect)?;
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Incoming>(64);
    let heard = Arc::new(Mutex::new(Heard::default()));
    let heard_by_reader = Arc::clone(&heard);
    let _reader = AbortOnDrop(tokio::spawn(async move {
        let mut reader = BufReader::new(read);
        loop {
            let msg = read_message::<_, Value>(&mut reader).await;
            let alive = matches!(&msg, Ok(Some(v)) if v.get("type").and_then(Value::as_str) == Some("alive"));
            if let Ok(mut h) = heard_by_reader.lock() {
                h.at = Some(Instant::now());
                h.alive |= alive;
            }
            if alive {
                continue;
            }
            let end = !matches!(msg, Ok(Some(_)));
            if tx.send(msg).await.is_err() || end {
                return;
            }
        }
    }));
    let silence = silence_limit(ctl.config().heartbeat_interval);
    send(
        &mut write,
        &Request::Subscribe {
            client: CLIENT.into(),
        },
    )
    .await?;
    let first = match watched(ctl, rx.recv()).await? {
        Some(m) => m?.ok_or(LinkError::Closed)?,
        None => return Err(LinkError::Closed),
    };
    let mut expected = match serde_json::from_value::<Response>(first) {
        Ok(Response::Subscribed { next_seq }) => next_seq,
        Ok(Response::Error { message }) => return Err(LinkError::Refused(message)),
        Ok(_) => return Err(ControlError::Unexpected.into()),
        Err(e) => return Err(ControlError::Malformed(e).into()),
    };
    info!(socket = %socket.display(), "subscribed to vrrpd");
    // A new vrrpd: what the old one last said vouches for nothing any more.
    ctl.set_last_heard(None);
    ctl.update_status(|s| {
        s.connected = true;
        s.disconnected_ms = None;
        s.connects += 1;
        s.last_seq = 0;
        s.acked_seq = 0;
    });
    let hb = ctl.heartbeat();
    send(&mut write, &Request::Heartbeat(hb)).await?;
    ctl.update_status(|s| s.heartbeats_sent += 1);

    let mut heartbeat = tokio::time::interval(ctl.config().heartbeat_interval);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    heartbeat.reset();
    let mut watchdog = tokio::time::interval(WATCHDOG_TICK);
    watchdog.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut drain: Option<(u64, Drain)> = None;
    let host = Arc::clone(ctl.host());
    let kick = host.coupling();
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { return Err(LinkError::Closed) };
                let Some(value) = msg? else { return Err(LinkError::Closed) };
                if value.get("type").is_some() {
                    // An answer to something we sent (an error: we send nothing else that
                    // gets one); log it, the stream goes on.
                    match serde_json::from_value::<Response>(value) {
                        Ok(Response::Error { message }) => warn!(message, "vrrpd reported an error"),
                        Ok(other) => debug!(?other, "unexpected answer from vrrpd"),
                        Err(e) => return Err(ControlError::Malformed(e).into()),
                    }
                    continue;
                }
                let ev: StateEvent = serde_json::from_value(value).map_err(ControlError::Malformed)?;
                if ev.seq != expected {
                    return Err(LinkError::SeqGap { want: expected, got: ev.seq });
                }
                expected += 1;
                info!(seq = ev.seq, instance = %ev.instance, state = %ev.state, draining = ev.draining,
                    reason = %ev.reason, "vrrpd event");
                ctl.update_status(|s| { s.last_seq = ev.seq; s.events += 1; });
                // A new event supersedes a wait still pending (vrrpd has moved on, e.g. master
                // again right after a handover, while requests were still in flight): ack the
                // waiting event now and act on the new one at once.
                if let Some((seq, _)) = drain.take() {
                    send(&mut write, &Request::Ack { seq }).await?;
                    ctl.update_status(|s| s.acked_seq = seq);
                }
                match ctl.handle(&ev).await {
                    Next::Ack => {
                        // The heartbeat first, so vrrpd already sees what we serve when it
                        // reads the ack.
                        let hb = ctl.heartbeat();
                        send(&mut write, &Request::Heartbeat(hb)).await?;
                        send(&mut write, &Request::Ack { seq: ev.seq }).await?;
                        ctl.update_status(|s| { s.acked_seq = ev.seq; s.heartbeats_sent += 1; });
                    }
                    Next::AckAfter(fut) => drain = Some((ev.seq, fut)),
                }
            }
            _ = async {
                match drain.as_mut() {
                    Some((_, fut)) => { fut.await; }
                    None => std::future::pending::<()>().await,
                }
            }, if drain.is_some() => {
                if let Some((seq, _)) = drain.take() {
                    send(&mut write, &Request::Ack { seq }).await?;
                    ctl.update_status(|s| s.acked_seq = seq);
                }
            }
            _ = heartbeat.tick() => {
                let hb = ctl.heartbeat();
                send(&mut write, &Request::Heartbeat(hb)).await?;
                ctl.update_status(|s| s.heartbeats_sent += 1);
            }
            _ = watchdog.tick() => {
                let now = Instant::now();
                let (silent, last_heard) = heard
                    .lock()
                    .map(|h| (h.silent(now, silence), h.alive.then_some(h.at).flatten()))
                    .unwrap_or((false, None));
                ctl.set_last_heard(last_heard);
                if ctl.check_deadlines(now).await {
                    // vrrpd won't say "master" again for a state it already reported: when
                    // it speaks again, only a new subscription's snapshot tells us.
                    return Err(LinkError::Lost);
                }
                if silent {
                    return Err(LinkError::Silent(silence));
                }
            }
            _ = kick.kicked() => {
                let hb = ctl.heartbeat();
                send(&mut write, &Request::Heartbeat(hb)).await?;
                ctl.update_status(|s| s.heartbeats_sent += 1);
            }
            _ = shutdown.fast() => return Err(LinkError::Shutdown),
        }
    }
}
