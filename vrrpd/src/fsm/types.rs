//! The FSM's inputs and outputs: configuration, received adverts, actions, state names,
//! transition reasons and counters. Plain data; the behaviour is in the parent module.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::Serialize;

/// Priority of the IP address owner: it starts as Master and never waits.
pub const OWNER_PRIORITY: u8 = 255;
/// Priority sent by a Master that resigns (shutdown, local fault, switchover).
pub const RESIGN_PRIORITY: u8 = 0;

/// Static configuration of one virtual router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsmConfig {
    /// Virtual router id, 1..=255.
    pub vrid: u8,
    /// Configured priority, 1..=255 (255 = address owner).
    pub priority: u8,
    /// Our Advertisement_Interval in centiseconds, 1..=4095.
    pub advert_interval_cs: u16,
    /// Preempt_Mode: a Backup takes over from a lower-priority Master.
    pub preempt: bool,
    /// Time after startup during which we do not preempt (see the module docs).
    pub preempt_delay: Duration,
    /// Our primary address on the interface: the advert source, and the tie-breaker.
    pub primary_addr: Ipv4Addr,
    /// The virtual addresses, used to count adverts whose address list differs.
    pub vips: Vec<Ipv4Addr>,
    /// A Backup hearing priority 0 becomes Master at once instead of after Skew_Time.
    pub fast_takeover_on_zero: bool,
    /// `[min, max]` centiseconds: the Max Adver Int a Backup adopts from a master is clamped
    /// into this window, so no advert (forged or misconfigured) can stretch our
    /// Master_Down_Interval past the one our own interval gives (see the module docs).
    /// `None`: [`default_adopt_window`] of `advert_interval_cs`.
    pub adopt_interval_cs: Option<(u16, u16)>,
}

/// The default adopt window for our interval `cs`: `[max(1, cs / 4), cs]`. Never longer than
/// ours (a longer interval would only ever slow failover), never shorter than a quarter of it
/// (a forged short interval would make us declare the real master dead between its adverts).
pub fn default_adopt_window(cs: u16) -> (u16, u16) {
    ((cs / 4).max(1), cs.max(1))
}

/// A received advertisement that has passed `rx::validate` (RFC 5798 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// IP source address of the sender (its primary address).
    pub src: Ipv4Addr,
    /// Sender priority; 0 means the sender resigns as Master.
    pub priority: u8,
    /// Sender's advertisement interval, centiseconds.
    pub max_adver_int_cs: u16,
    /// Virtual addresses listed in the advert.
    pub addrs: Vec<Ipv4Addr>,
}

/// Work for the shell, in the order it must be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority (0 = resign) and our configured interval.
    SendAdvert { priority: u8 },
    /// Add the virtual addresses to the interface.
    AddVips,
    /// Remove the virtual addresses from the interface.
    RemoveVips,
    /// Send gratuitous ARP for every virtual address (after `AddVips`).
    SendGarp,
    /// Still Master, about to re-announce the VIPs that another master (`to`, which is
    /// stepping down or resigned) also held during a split: for the hand-off window, send
    /// it the packets of its connections that our GARP brings here. Comes before the
    /// `SendGarp` it precedes.
    HandOff { to: Ipv4Addr },
    /// The state changed; emitted first, before the exit actions (so lbd is told before the
    /// VIPs go) and the entry actions.
    Transition {
        from: StateKind,
        to: StateKind,
        reason: TransitionReason,
    },
}

/// The state without its timers, for display, logs and the control protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    Initialize,
    Backup,
    Master,
    Fault,
}

impl StateKind {
    pub const ALL: [StateKind; 4] = [Self::Initialize, Self::Backup, Self::Master, Self::Fault];

    /// Lower-case name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialize => "initialize",
            Self::Backup => "backup",
            Self::Master => "master",
            Self::Fault => "fault",
        }
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a local fault was raised (tracking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultReason {
    /// A tracked interface or check failed.
    Tracking,
    /// An operator asked for it.
    Admin,
}

impl FaultReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tracking => "tracking",
            Self::Admin => "admin",
        }
    }
}

/// Why a transition happened. `Display` gives the snake_case label used in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionReason {
    /// Initialize -> Backup at startup (or restart after a fault).
    Startup,
    /// Initialize -> Master: we own the addresses (priority 255).
    AddressOwner,
    /// Backup -> Master: no advert for Master_Down_Interval (or Skew_Time after priority 0).
    MasterDown,
    /// Backup -> Master: master-down fired after we discarded lower-priority adverts.
    PreemptLowerPriority,
    /// Backup -> Master at once on priority 0 (`fast_takeover_on_zero`).
    PriorityZeroReceived,
    /// Master -> Backup: an advert with a higher priority.
    HigherPriorityAdvert,
    /// Master -> Backup: an advert with equal priority from a higher primary address.
    EqualPriorityHigherAddress,
    /// Any -> Initialize: the daemon stops.
    Shutdown,
    /// Any -> Fault: the interface went down.
    LinkDown,
    /// Fault -> Initialize: the interface came back up.
    LinkUp,
    /// Any -> Fault: a local fault was raised.
    Fault(FaultReason),
    /// Fault -> Initialize: the local fault was cleared.
    FaultCleared,
    /// Master -> Backup: we were resigning (switchover) and a new master advertised.
    SwitchoverComplete,
    /// Initialize -> Master at once: the daemon restarted and found its VIPs still served
    /// (`Fsm::handle_startup_resume`).
    Resumed,
}

impl TransitionReason {
    /// Master -> Backup because another router now advertises as master: a planned
    /// switchover completed, or a better master appeared (preemption, a healed partition).
    /// That router added the VIPs before it advertised and clients follow its GARP, so ours
    /// only still serve the requests lbd has in flight: the shell keeps them until lbd is
    /// idle (bounded) rather than removing them at once, which would strand those
    /// responses. Every other exit from Master (fault, link down, shutdown) leaves no peer
    /// holding the VIPs yet, or the daemon is going: the VIPs go at once. lbd knows these
    /// by their labels, `shared::control::HANDED_OVER_REASONS`.
    pub fn hands_over_to_new_master(self) -> bool {
        matches!(
            self,
            Self::SwitchoverComplete
                | Self::HigherPriorityAdvert
                | Self::EqualPriorityHigherAddress
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::AddressOwner => "address_owner",
            Self::MasterDown => "master_down",
            Self::PreemptLowerPriority => "preempt_lower_priority",
            Self::PriorityZeroReceived => "priority_zero_received",
            Self::HigherPriorityAdvert => "higher_priority_advert",
            Self::EqualPriorityHigherAddress => "equal_priority_higher_address",
            Self::Shutdown => "shutdown",
            Self::LinkDown => "link_down",
            Self::LinkUp => "link_up",
            Self::Fault(FaultReason::Tracking) => "fault_tracking",
            Self::Fault(FaultReason::Admin) => "fault_admin",
            Self::FaultCleared => "fault_cleared",
            Self::SwitchoverComplete => "switchover_complete",
            Self::Resumed => "resumed",
        }
    }
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Monotonic counters for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FsmCounters {
    /// Every state change.
    pub transitions: u64,
    pub became_master: u64,
    pub became_backup: u64,
    pub entered_fault: u64,
    /// `SendAdvert` actions emitted, including priority 0.
    pub adverts_sent: u64,
    /// `SendAdvert { priority: 0 }` actions emitted.
    pub priority_zero_sent: u64,
    /// Adverts handled in Backup or Master.
    pub adverts_received: u64,
    /// Adverts ignored: our own, or received in Initialize or Fault.
    pub adverts_ignored: u64,
    pub priority_zero_received: u64,
    /// Lower-priority adverts a preempting Backup discarded.
    pub preempt_discards: u64,
    /// Adverts whose interval differs from our configured one (accepted anyway).
    pub interval_mismatch: u64,
    /// Learned intervals that fell outside the adopt window and were clamped into it.
    pub interval_clamped: u64,
    /// Replies (advert + GARP round) to worse or priority-0 adverts not sent because one
    /// already went out less than an advert interval ago.
    pub replies_suppressed: u64,
    /// Adverts whose address list differs from our VIPs (accepted anyway).
    pub addr_mismatch: u64,
    /// Master_Down_Timer expiries.
    pub master_down_expired: u64,
    /// Effective priority changes.
    pub priority_changes: u64,
    /// Switchovers started (`Fsm::handle_switchover` accepted by a Master).
    pub switchovers: u64,
    /// Switchovers abandoned because no new master advertised before the deadline.
    pub switchover_aborted: u64,
    /// Startups that resumed as Master (`Fsm::handle_startup_resume`).
    pub resumes: u64,
}
