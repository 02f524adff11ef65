//! vrrpd's configuration, loaded in three stages (see `shared::config`).
//!
//! 1. [`FileConfig`] / [`FileGlobal`] / [`FileInstance`]: plain serde structs with
//!    `deny_unknown_fields`. Numbers are read as `i64`, enumerations and addresses as
//!    strings, and required keys as `Option`, so that a bad value is not a serde error that
//!    stops at the first problem but a validation error next to all the others.
//! 2. [`validate`] walks them with a [`Validator`], which records *every* problem with the
//!    key, the bad value and the valid values, and finds each key's line and column.
//! 3. The result is the typed runtime [`VrrpConfig`]: `Ipv4Addr`, prefix `u8`, `Duration`,
//!    [`ChecksumMode`], [`LogFormat`]. Nothing downstream parses strings again.
//!
//! Every default and limit is a documented `DEFAULT_*` / `MIN_*` / `MAX_*` constant; the
//! operator reference in `doc/vrrpd.md` lists the same values.
//!
//! Rules that are not obvious from the RFC:
//! - A VIP is written `a.b.c.d/len` with `len` in 1..=32: a prefix is required because the
//!   kernel needs one to add the address, and `/0` would claim a default route's worth of
//!   on-link addresses. The network and broadcast addresses of a /1../30 subnet are rejected.
//! - A VIP label is at most 15 bytes: the kernel keeps labels in an `IFNAMSIZ` (16 byte,
//!   NUL-terminated) buffer and its netlink policy rejects longer ones ("Attribute failed
//!   policy validation"). It must also start with the interface name (`eth0:web` on `eth0`):
//!   current kernels accept any label, but iproute2 before 6.x and busybox `ip` refuse
//!   others, and the `ifconfig` alias view (`eth0:web`) only makes sense with the prefix.
//! - An interface name follows the kernel's `dev_valid_name`: 1..=15 bytes, no `/`, `:` or
//!   whitespace, not `.` or `..`.
//! - A VIP may belong to only one instance: two virtual routers claiming one address would
//!   flap it between interfaces or fight over ARP.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use shared::config::{ConfigError, Source, Validator};
pub use shared::telemetry::LogFormat;
pub use shared::wire::vrrp::ChecksumMode;

use crate::fsm::FsmConfig;

mod addresses;
mod auth;
mod control;
mod pair;
use addresses::{
    check_cross_instance, check_ifname, validate_accept_from, validate_peers, validate_vips,
};
pub use addresses::{parse_cidr, CidrError};
pub use auth::{decode_key, AuthConfig, KeyError, MAX_KEY_FILE_BYTES, MIN_KEY_HEX_DIGITS};
pub use control::*;
pub use pair::*;

/// Where `vrrpd run` and `vrrpd status` look for the config by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/lbpair/vrrpd.toml";

// ----- [global] -----

/// `global.control_socket`.
pub const DEFAULT_CONTROL_SOCKET: &str = shared::control::DEFAULT_VRRPD_SOCKET;
/// Longest Unix socket path: `sun_path` is 108 bytes including the NUL.
pub const MAX_SOCKET_PATH_LEN: usize = 107;
/// `global.log_format`.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Plain;
/// `global.log_level`: a tracing filter; the `LBPAIR_LOG` env var overrides it.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// `global.realtime`: SCHED_FIFO + mlockall. On by default: with it off, a backup claimed the
/// VIP for under 1 ms while both cores were saturated (two holders), where keepalived's
/// defaults (it runs SCHED_RR) and `realtime = true` held. Needs CAP_SYS_NICE and
/// CAP_IPC_LOCK (granted by the shipped unit); without them it logs a warning and carries on.
pub const DEFAULT_REALTIME: bool = true;
/// `global.realtime_priority`, used when `realtime = true`.
pub const DEFAULT_REALTIME_PRIORITY: u8 = 10;
pub const MIN_REALTIME_PRIORITY: u8 = 1;
/// Highest SCHED_FIFO priority on Linux.
pub const MAX_REALTIME_PRIORITY: u8 = 99;

// ----- [[instance]] -----

/// Longest instance name; names are `[A-Za-z0-9_-]`.
pub const MAX_NAME_LEN: usize = 32;
/// Longest interface name and VIP label (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;
pub const MIN_VRID: u8 = 1;
pub const MAX_VRID: u8 = 255;
pub const MIN_PRIORITY: u8 = 1;
/// 255 is the address owner (RFC 5798 §5.2.4): it becomes Master at once.
pub const MAX_PRIORITY: u8 = 255;
/// `advert_interval_cs`: 1 s, the RFC default.
pub const DEFAULT_ADVERT_INTERVAL_CS: u16 = 100;
pub const MIN_ADVERT_INTERVAL_CS: u16 = 1;
/// The advert's interval field is 12 bits.
pub const MAX_ADVERT_INTERVAL_CS: u16 = 4095;
/// `preempt`: RFC 5798's Preempt_Mode default.
pub const DEFAULT_PREEMPT: bool = true;
/// `preempt_delay_ms`.
pub const DEFAULT_PREEMPT_DELAY_MS: u64 = 0;
/// One hour: longer is almost certainly a unit mistake.
pub const MAX_PREEMPT_DELAY_MS: u64 = 3_600_000;
/// `checksum_mode`: what keepalived and FRR send.
pub const DEFAULT_CHECKSUM_MODE: ChecksumMode = ChecksumMode::PseudoHeader;
/// Most unicast peers per instance.
pub const MAX_UNICAST_PEERS: usize = 32;
/// Most `accept_from` entries per instance.
pub const MAX_ACCEPT_FROM: usize = 32;
/// `strict_interval`: clamp (false) rather than discard adverts outside `adopt_interval_cs`.
pub const DEFAULT_STRICT_INTERVAL: bool = false;
/// `garp_count`: gratuitous ARPs sent on becoming Master.
pub const DEFAULT_GARP_COUNT: u16 = 5;
pub const MIN_GARP_COUNT: u16 = 1;
pub const MAX_GARP_COUNT: u16 = 100;
/// `garp_interval_ms`: spacing of that burst.
pub const DEFAULT_GARP_INTERVAL_MS: u64 = 200;
pub const MIN_GARP_INTERVAL_MS: u64 = 10;
pub const MAX_GARP_INTERVAL_MS: u64 = 10_000;
/// `garp_refresh_s`: 0 = no periodic GARP while Master.
pub const DEFAULT_GARP_REFRESH_S: u64 = 0;
/// One day.
pub const MAX_GARP_REFRESH_S: u64 = 86_400;
/// Most VIPs per instance (keeps an advert well inside one Ethernet frame).
pub const MAX_VIPS: usize = 20;

const CHECKSUM_MODES: &str = "\"pseudo-header\" or \"no-pseudo-header\"";
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

// ===== stage 1: file structs =====

/// The whole file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub global: FileGlobal,
    /// Present when vrrpd is coupled to a local lbd.
    pub lbd: Option<FileLbd>,
    /// Who may do what on the control socket.
    pub control: Option<FileControl>,
    #[serde(default)]
    pub instance: Vec<FileInstance>,
}

/// `[global]`. New sections (notify hooks, lbd coupling) are added as new optional keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGlobal {
    pub control_socket: Option<String>,
    pub log_format: Option<String>,
    pub log_level: Option<String>,
    pub realtime: Option<bool>,
    pub realtime_priority: Option<i64>,
}

/// One `[[instance]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInstance {
    pub name: Option<String>,
    pub interface: Option<String>,
    pub vrid: Option<i64>,
    pub priority: Option<i64>,
    pub advert_interval_cs: Option<i64>,
    pub preempt: Option<bool>,
    pub preempt_delay_ms: Option<i64>,
    pub checksum_mode: Option<String>,
    pub unicast_peers: Option<Vec<String>>,
    /// Absent: `unicast_peers` (empty with multicast = any source).
    pub accept_from: Option<Vec<String>>,
    /// `[min, max]` centiseconds; absent: `[interval / 4, interval]`.
    pub adopt_interval_cs: Option<Vec<i64>>,
    pub strict_interval: Option<bool>,
    pub garp_count: Option<i64>,
    pub garp_interval_ms: Option<i64>,
    pub garp_refresh_s: Option<i64>,
    pub track_lbd: Option<String>,
    pub track_lbd_weight: Option<i64>,
    pub fast_takeover: Option<bool>,
    pub notify: Option<Vec<String>>,
    pub notify_timeout_ms: Option<i64>,
    /// Path of the advert authentication key (relative to the config file's directory).
    pub auth_key_file: Option<String>,
    /// Each entry is `"a.b.c.d/len"` or `{ address = "a.b.c.d/len", label = "eth0:x" }`.
    /// Kept as raw TOML values so that each bad entry gets its own positioned error
    /// (an untagged serde enum would only say "did not match any variant").
    pub vips: Option<Vec<toml::Value>>,
}

// ===== stage 3: runtime config =====

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpConfig {
    pub global: GlobalConfig,
    /// The coupling to the local lbd, if `[lbd]` is present.
    pub lbd: Option<LbdConfig>,
    /// The control socket's access rules (`[control]` and `[lbd] user`).
    pub control: ControlConfig,
    pub instances: Vec<InstanceConfig>,
}

/// Daemon-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalConfig {
    pub control_socket: PathBuf,
    pub log_format: LogFormat,
    /// A tracing env-filter string.
    pub log_level: String,
    pub realtime: bool,
    /// SCHED_FIFO priority, 1..=99.
    pub realtime_priority: u8,
}

/// One virtual router. `PartialEq` lets a reload tell changed instances from unchanged ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    /// 1..=255; 255 = address owner.
    pub priority: u8,
    /// 1..=4095 centiseconds.
    pub advert_interval_cs: u16,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub checksum_mode: ChecksumMode,
    /// Empty = multicast to 224.0.0.18.
    pub unicast_peers: Vec<Ipv4Addr>,
    /// Adverts from any other source are discarded before the FSM. Empty = any source.
    pub accept_from: Vec<Ipv4Addr>,
    /// `[min, max]` cs: a Backup clamps the master's interval into it (see `FsmConfig`).
    pub adopt_interval_cs: (u16, u16),
    /// Discard adverts whose interval is outside `adopt_interval_cs` instead of clamping.
    pub strict_interval: bool,
    /// 1..=100.
    pub garp_count: u16,
    pub garp_interval: Duration,
    /// `None` = no periodic GARP while Master.
    pub garp_refresh: Option<Duration>,
    /// At least one, at most [`MAX_VIPS`], no address twice.
    pub vips: Vec<VipConfig>,
    /// lbd tracking, fast takeover, notify hook.
    pub pair: InstancePair,
    /// `Some`: adverts carry, and must carry, an HMAC trailer (`auth_key_file`).
    pub auth: Option<AuthConfig>,
}

/// One virtual address with its prefix and optional label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VipConfig {
    pub address: Ipv4Addr,
    /// 1..=32.
    pub prefix_len: u8,
    pub label: Option<String>,
}

impl fmt::Display for VipConfig {
    /// `a.b.c.d/len`, the form used in status output and state events.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            control_socket: PathBuf::from(DEFAULT_CONTROL_SOCKET),
            log_format: DEFAULT_LOG_FORMAT,
            log_level: DEFAULT_LOG_LEVEL.to_string(),
            realtime: DEFAULT_REALTIME,
            realtime_priority: DEFAULT_REALTIME_PRIORITY,
        }
    }
}

impl VrrpConfig {
    /// Read, parse and validate a config file.
    pub fn load(path: impl AsRef<Path>) -> Result<VrrpConfig, ConfigError> {
        validate(&Source::read(path)?)
    }

    /// The instance with this name.
    pub fn instance(&self, name: &str) -> Option<&InstanceConfig> {
        self.instances.iter().find(|i| i.name == name)
    }
}

impl InstanceConfig {
    /// The VIP addresses without prefix or label.
    pub fn vip_addrs(&self) -> Vec<Ipv4Addr> {
        self.vips.iter().map(|v| v.address).collect()
    }

    /// Our advert interval as a `Duration`.
    pub fn advert_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.advert_interval_cs) * 10)
    }

    /// The state machine's configuration, given the interface's primary address.
    pub fn fsm_config(&self, primary_addr: Ipv4Addr) -> FsmConfig {
        FsmConfig {
            vrid: self.vrid,
            priority: self.priority,
            advert_interval_cs: self.advert_interval_cs,
            preempt: self.preempt,
            preempt_delay: self.preempt_delay,
            primary_addr,
            vips: self.vip_addrs(),
            fast_takeover_on_zero: self.pair.fast_takeover,
            adopt_interval_cs: Some(self.adopt_interval_cs),
        }
    }
}

// ===== stage 2: validation =====

/// Parse and validate a config text, reporting every problem at once.
pub fn validate(source: &Source) -> Result<VrrpConfig, ConfigError> {
    let file: FileConfig = source.parse()?;
    file.validate(source)
}

impl FileConfig {
    /// Check every field; on success the typed config, else all errors with positions.
    pub fn validate(&self, source: &Source) -> Result<VrrpConfig, ConfigError> {
        let mut v = Validator::new(source);
        let global = validate_global(&mut v, &self.global);
        let lbd = self.lbd.as_ref().map(|f| pair::validate_lbd(&mut v, f));
        let control = control::validate_control(
            &mut v,
            self.control.as_ref(),
            self.lbd.as_ref().and_then(|l| l.user.as_deref()),
        );
        if self.instance.is_empty() {
            v.error(
                "instance",
                "no [[instance]] defined (at least one virtual router is required)",
            );
        }
        let instances: Vec<InstanceConfig> = self
            .instance
            .iter()
            .enumerate()
            .map(|(i, inst)| validate_instance(&mut v, i, inst, lbd.is_some()))
            .collect();
        check_cross_instance(&mut v, &instances);
        v.finish()?;
        Ok(VrrpConfig {
            global,
            lbd,
            control,
            instances,
        })
    }
}

fn validate_global(v: &mut Validator<'_>, g: &FileGlobal) -> GlobalConfig {
    let mut out = GlobalConfig::default();
    if let Some(path) = &g.control_socket {
        let key = "global.control_socket";
        if path.is_empty() || !path.starts_with('/') {
            v.error(
                key,
                format!("{path:?} is not an absolute path (e.g. \"{DEFAULT_CONTROL_SOCKET}\")"),
            );
        } else if path.len() > MAX_SOCKET_PATH_LEN || path.ends_with('/') {
            v.error(
                key,
                format!("{path:?} is not a usable socket path (a file path of at most {MAX_SOCKET_PATH_LEN} bytes)"),
            );
        } else {
            out.control_socket = PathBuf::from(path);
        }
    }
    if let Some(format) = &g.log_format {
        match format.as_str() {
            "plain" => out.log_format = LogFormat::Plain,
            "json" => out.log_format = LogFormat::Json,
            other => v.error(
                "global.log_format",
                format!(
                    "{other:?} is not a log format (valid: {})",
                    LogFormat::VALID
                ),
            ),
        }
    }
    if let Some(level) = &g.log_level {
        match check_log_filter(level) {
            Ok(()) => out.log_level = level.clone(),
            Err(why) => v.error(
                "global.log_level",
                format!(
                    "{level:?} is not a log filter: {why} (valid: one of {} or a tracing filter such as \"info,vrrpd::rx=debug\")",
                    LOG_LEVELS.join(", ")
                ),
            ),
        }
    }
    out.realtime = g.realtime.unwrap_or(DEFAULT_REALTIME);
    out.realtime_priority = int_or_default(
        v,
        "global.realtime_priority",
        g.realtime_priority,
        DEFAULT_REALTIME_PRIORITY,
        MIN_REALTIME_PRIORITY,
        MAX_REALTIME_PRIORITY,
    );
    out
}

/// A bare word must be a level (a typo like "infoo" would otherwise be read by env-filter
/// as "everything from target `infoo`", silently logging nothing); anything else must parse
/// as an env-filter.
fn check_log_filter(s: &str) -> Result<(), LogFilterError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(LogFilterError::Empty);
    }
    let is_word = s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if is_word && !LOG_LEVELS.contains(&s.to_ascii_lowercase().as_str()) {
        return Err(LogFilterError::NotALevel);
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| ())
        .map_err(LogFilterError::Invalid)
}

/// Why `global.log_level` is not a usable filter.
#[derive(Debug, thiserror::Error)]
enum LogFilterError {
    #[error("it is empty")]
    Empty,
    #[error("not a level")]
    NotALevel,
    #[error("{0}")]
    Invalid(tracing_subscriber::filter::ParseError),
}

fn validate_instance(
    v: &mut Validator<'_>,
    i: usize,
    f: &FileInstance,
    lbd_coupled: bool,
) -> InstanceConfig {
    let k = |field: &str| format!("instance[{i}].{field}");

    let name = match &f.name {
        None => {
            v.error(
                k("name"),
                "missing (required: 1..=32 characters of A-Z a-z 0-9 _ -)",
            );
            format!("instance{i}")
        }
        Some(name) => {
            let ok = !name.is_empty()
                && name.len() <= MAX_NAME_LEN
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                v.error(
                    k("name"),
                    format!("{name:?} is not a valid name (valid: 1..={MAX_NAME_LEN} characters of A-Z a-z 0-9 _ -)"),
                );
            }
            name.clone()
        }
    };

    let interface = match &f.interface {
        None => {
            v.error(
                k("interface"),
                "missing (required: an interface name such as \"eth0\")",
            );
            String::new()
        }
        Some(ifname) => {
            if let Err(why) = check_ifname(ifname) {
                v.error(
                    k("interface"),
                    format!("{ifname:?} is not a valid interface name: {why} (valid: 1..={MAX_IFNAME_LEN} bytes without '/', ':' or whitespace)"),
                );
                String::new()
            } else {
                ifname.clone()
            }
        }
    };

    let vrid = required_int(v, &k("vrid"), f.vrid, MIN_VRID, MAX_VRID).unwrap_or(MIN_VRID);
    let priority = required_int(v, &k("priority"), f.priority, MIN_PRIORITY, MAX_PRIORITY)
        .unwrap_or(MIN_PRIORITY);
    let advert_interval_cs = int_or_default(
        v,
        &k("advert_interval_cs"),
        f.advert_interval_cs,
        DEFAULT_ADVERT_INTERVAL_CS,
        MIN_ADVERT_INTERVAL_CS,
        MAX_ADVERT_INTERVAL_CS,
    );
    let preempt = f.preempt.unwrap_or(DEFAULT_PREEMPT);
    let preempt_delay = Duration::from_millis(int_or_default(
        v,
        &k("preempt_delay_ms"),
        f.preempt_delay_ms,
        DEFAULT_PREEMPT_DELAY_MS,
        0,
        MAX_PREEMPT_DELAY_MS,
    ));
    let checksum_mode = match f.checksum_mode.as_deref() {
        None => DEFAULT_CHECKSUM_MODE,
        Some("pseudo-header") => ChecksumMode::PseudoHeader,
        Some("no-pseudo-header") => ChecksumMode::NoPseudoHeader,
        Some(other) => {
            v.error(
                k("checksum_mode"),
                format!("{other:?} is not a checksum mode (valid: {CHECKSUM_MODES})"),
            );
            DEFAULT_CHECKSUM_MODE
        }
    };
    let garp_count = int_or_default(
        v,
        &k("garp_count"),
        f.garp_count,
        DEFAULT_GARP_COUNT,
        MIN_GARP_COUNT,
        MAX_GARP_COUNT,
    );
    let garp_interval = Duration::from_millis(int_or_default(
        v,
        &k("garp_interval_ms"),
        f.garp_interval_ms,
        DEFAULT_GARP_INTERVAL_MS,
        MIN_GARP_INTERVAL_MS,
        MAX_GARP_INTERVAL_MS,
    ));
    let garp_refresh_s = int_or_default(
        v,
        &k("garp_refresh_s"),
        f.garp_refresh_s,
        DEFAULT_GARP_REFRESH_S,
        0,
        MAX_GARP_REFRESH_S,
    );
    let garp_refresh = (garp_refresh_s > 0).then(|| Duration::from_secs(garp_refresh_s));

    let vips = validate_vips(v, i, f.vips.as_deref(), &interface);
    let unicast_peers = validate_peers(v, i, f.unicast_peers.as_deref().unwrap_or(&[]), &vips);
    let auth = f
        .auth_key_file
        .as_deref()
        .and_then(|file| auth::validate_auth(v, &k("auth_key_file"), file));
    let accept_from = match f.accept_from.as_deref() {
        None => unicast_peers.clone(),
        Some(raw) => validate_accept_from(v, i, raw, &vips),
    };
    let adopt_interval_cs =
        validate_adopt_window(v, &k("adopt_interval_cs"), f.adopt_interval_cs.as_deref())
            .unwrap_or_else(|| crate::fsm::default_adopt_window(advert_interval_cs));
    let strict_interval = f.strict_interval.unwrap_or(DEFAULT_STRICT_INTERVAL);

    InstanceConfig {
        name,
        interface,
        vrid,
        priority,
        advert_interval_cs,
        preempt,
        preempt_delay,
        checksum_mode,
        unicast_peers,
        accept_from,
        adopt_interval_cs,
        strict_interval,
        garp_count,
        garp_interval,
        garp_refresh,
        vips,
        pair: pair::validate_instance_pair(
            v,
            i,
            &FileInstancePair {
                track_lbd: f.track_lbd.clone(),
                track_lbd_weight: f.track_lbd_weight,
                fast_takeover: f.fast_takeover,
                notify: f.notify.clone(),
                notify_timeout_ms: f.notify_timeout_ms,
            },
            lbd_coupled,
            priority,
        ),
        auth,
    }
}

/// `adopt_interval_cs = [min, max]`: two intervals in 1..=4095 cs, min <= max. `None` when
/// absent or invalid (the error is recorded; the caller uses the default).
fn validate_adopt_window(
    v: &mut Validator<'_>,
    key: &str,
    raw: Option<&[i64]>,
) -> Option<(u16, u16)> {
    let raw = raw?;
    let valid = format!(
        "[min, max] centiseconds, {MIN_ADVERT_INTERVAL_CS} <= min <= max <= {MAX_ADVERT_INTERVAL_CS}"
    );
    let &[min, max] = raw else {
        v.error(key, format!("{raw:?} is not a pair (valid: {valid})"));
        return None;
    };
    let in_range = |x: i64| {
        (i64::from(MIN_ADVERT_INTERVAL_CS)..=i64::from(MAX_ADVERT_INTERVAL_CS)).contains(&x)
    };
    if !in_range(min) || !in_range(max) || min > max {
        v.error(
            key,
            format!("[{min}, {max}] is out of range (valid: {valid})"),
        );
        return None;
    }
    Some((u16::try_from(min).ok()?, u16::try_from(max).ok()?))
}

/// The limits are small constants; saturate rather than panic if one ever isn't.
fn to_i64<T>(x: T) -> i64
where
    i64: TryFrom<T>,
{
    i64::try_from(x).unwrap_or(i64::MAX)
}

/// An optional integer with a default, range-checked; the default is kept on error so
/// validation can go on and report the other fields.
pub(crate) fn int_or_default<T>(
    v: &mut Validator<'_>,
    key: &str,
    value: Option<i64>,
    default: T,
    min: T,
    max: T,
) -> T
where
    T: Copy + TryFrom<i64>,
    i64: TryFrom<T>,
{
    match value {
        None => default,
        Some(x) => {
            if v.check_range(key.to_string(), x, to_i64(min), to_i64(max)) {
                T::try_from(x).unwrap_or(default)
            } else {
                default
            }
        }
    }
}

/// A required integer, range-checked; `None` after recording an error.
fn required_int<T>(
    v: &mut Validator<'_>,
    key: &str,
    value: Option<i64>,
    min: T,
    max: T,
) -> Option<T>
where
    T: Copy + TryFrom<i64> + fmt::Display,
    i64: TryFrom<T>,
{
    match value {
        None => {
            v.error(
                key.to_string(),
                format!("missing (required: {min}..={max})"),
            );
            None
        }
        Some(x) => {
            if v.check_range(key.to_string(), x, to_i64(min), to_i64(max)) {
                T::try_from(x).ok()
            } else {
                None
            }
        }
    }
}
