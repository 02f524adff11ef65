//! Bad configs: every problem is reported with file, line, column, key and the valid values,
//! all of them in one run.

use shared::config::{ConfigError, Source};
use vrrpd::config::{validate, ChecksumMode, VrrpConfig};

const FILE: &str = "/etc/lbpair/test.toml";

const GLOBAL: &str = r#"[global]
control_socket = "/run/lbpair/vrrpd.sock"
log_format = "plain"
log_level = "info"
realtime = false
realtime_priority = 10
"#;

const INSTANCE: &str = r#"[[instance]]
name = "web"
interface = "eth0"
vrid = 51
priority = 150
advert_interval_cs = 100
preempt = true
preempt_delay_ms = 0
checksum_mode = "pseudo-header"
unicast_peers = []
garp_count = 5
garp_interval_ms = 200
garp_refresh_s = 0
vips = ["192.0.2.10/24", { address = "192.0.2.11/24", label = "eth0:web" }]
"#;

fn good_text() -> String {
    format!("{GLOBAL}\n{INSTANCE}")
}

/// The good config with the line starting `key =` replaced by `replacement` (or appended
/// to the instance when no such line exists).
fn with(key: &str, replacement: &str) -> String {
    let text = good_text();
    let prefix = format!("{key} =");
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) && !found {
                found = true;
                replacement.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        out.push(replacement.to_string());
    }
    out.join("\n") + "\n"
}

fn check(text: &str) -> Result<VrrpConfig, ConfigError> {
    validate(&Source::from_text(FILE, text))
}

/// Every error, rendered `FILE:LINE:COL: `key`: message`.
fn errors(text: &str) -> Vec<String> {
    match check(text) {
        Ok(_) => Vec::new(),
        Err(e) => {
            let path = std::path::PathBuf::from(FILE);
            e.errors().iter().map(|fe| fe.render(&path)).collect()
        }
    }
}

/// 1-based number of the first line starting with `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.starts_with(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in text"))
}

#[test]
fn the_base_config_is_valid_and_typed() {
    let cfg = check(&good_text()).unwrap_or_else(|e| panic!("{e}"));
    let i = &cfg.instances[0];
    assert_eq!(i.vrid, 51);
    assert_eq!(i.priority, 150);
    assert_eq!(i.checksum_mode, ChecksumMode::PseudoHeader);
    assert_eq!(i.vips.len(), 2);
    assert_eq!(i.vips[0].to_string(), "192.0.2.10/24");
    assert_eq!(i.vips[1].label.as_deref(), Some("eth0:web"));
    assert_eq!(i.garp_refresh, None);
    assert_eq!(i.advert_interval(), std::time::Duration::from_secs(1));
}

#[test]
fn defaults_apply_to_omitted_keys() {
    let text = "[[instance]]\nname = \"a\"\ninterface = \"eth0\"\nvrid = 1\npriority = 255\nvips = [\"192.0.2.1/32\"]\n";
    let cfg = check(text).unwrap_or_else(|e| panic!("{e}"));
    let i = &cfg.instances[0];
    assert_eq!(i.priority, 255, "the address owner's priority is allowed");
    assert_eq!(
        i.advert_interval_cs,
        vrrpd::config::DEFAULT_ADVERT_INTERVAL_CS
    );
    assert!(i.preempt);
    assert_eq!(i.garp_count, vrrpd::config::DEFAULT_GARP_COUNT);
    assert!(i.unicast_peers.is_empty());
    assert_eq!(
        cfg.global.control_socket,
        std::path::Path::new(shared::control::DEFAULT_VRRPD_SOCKET)
    );
}

/// (line to put in, key the error must name, text the line must contain, valid values
/// the message must list)
const BAD_VALUES: &[(&str, &str, &str, &str)] = &[
    ("vrid = 0", "instance[0].vrid", "vrid", "1..=255"),
    ("vrid = 256", "instance[0].vrid", "vrid", "1..=255"),
    (
        "priority = 0",
        "instance[0].priority",
        "priority",
        "1..=255",
    ),
    (
        "advert_interval_cs = 4096",
        "instance[0].advert_interval_cs",
        "advert_interval_cs",
        "1..=4095",
    ),
    (
        "advert_interval_cs = 0",
        "instance[0].advert_interval_cs",
        "advert_interval_cs",
        "1..=4095",
    ),
    (
        "preempt_delay_ms = 3600001",
        "instance[0].preempt_delay_ms",
        "preempt_delay_ms",
        "0..=3600000",
    ),
    (
        "garp_count = 0",
        "instance[0].garp_count",
        "garp_count",
        "1..=100",
    ),
    (
        "garp_interval_ms = 5",
        "instance[0].garp_interval_ms",
        "garp_interval_ms",
        "10..=10000",
    ),
    (
        "garp_refresh_s = -1",
        "instance[0].garp_refresh_s",
        "garp_refresh_s",
        "0..=86400",
    ),
    (
        "checksum_mode = \"rfc9568\"",
        "instance[0].checksum_mode",
        "checksum_mode",
        "\"pseudo-header\" or \"no-pseudo-header\"",
    ),
    (
        "name = \"web site\"",
        "instance[0].name",
        "name =",
        "A-Z a-z 0-9 _ -",
    ),
    (
        "interface = \"eth0:1\"",
        "instance[0].interface",
        "interface",
        "without '/', ':' or whitespace",
    ),
    (
        "interface = \"averyveryverylongname\"",
        "instance[0].interface",
        "interface",
        "1..=15 bytes",
    ),
    ("vips = []", "instance[0].vips", "vips", "1..=20"),
    (
        "vips = [\"192.0.2.10\"]",
        "instance[0].vips[0]",
        "vips",
        "prefix length 1..=32",
    ),
    (
        "vips = [\"192.0.2.10/33\"]",
        "instance[0].vips[0]",
        "vips",
        "prefix length 1..=32",
    ),
    (
        "vips = [\"192.0.2.10/0\"]",
        "instance[0].vips[0]",
        "vips",
        "prefix length 1..=32",
    ),
    (
        "vips = [\"192.0.2.0/24\"]",
        "instance[0].vips[0]",
        "vips",
        "host address",
    ),
    (
        "vips = [\"224.0.0.18/32\"]",
        "instance[0].vips[0]",
        "vips",
        "unicast IPv4",
    ),
    (
        "vips = [\"192.0.2.10/24\", \"192.0.2.10/32\"]",
        "instance[0].vips[1]",
        "vips",
        "each VIP once",
    ),
    (
        "vips = [{ address = \"192.0.2.10/24\", label = \"web\" }]",
        "instance[0].vips[0].label",
        "vips",
        "eth0:vip",
    ),
    (
        "vips = [{ address = \"192.0.2.10/24\", label = \"eth0:much-too-long\" }]",
        "instance[0].vips[0].label",
        "vips",
        "1..=15 bytes",
    ),
    (
        "vips = [{ address = \"192.0.2.10/24\", colour = \"red\" }]",
        "instance[0].vips[0].colour",
        "vips",
        "`address`, `label`",
    ),
    (
        "vips = [{ label = \"eth0:x\" }]",
        "instance[0].vips[0]",
        "vips",
        "a.b.c.d/len",
    ),
    ("vips = [42]", "instance[0].vips[0]", "vips", "a.b.c.d/len"),
    (
        "unicast_peers = [\"192.0.2.300\"]",
        "instance[0].unicast_peers[0]",
        "unicast_peers",
        "no prefix",
    ),
    (
        "unicast_peers = [\"224.0.0.18\"]",
        "instance[0].unicast_peers[0]",
        "unicast_peers",
        "unicast IPv4",
    ),
    (
        "unicast_peers = [\"192.0.2.10\"]",
        "instance[0].unicast_peers[0]",
        "unicast_peers",
        "peer's own primary",
    ),
    (
        "unicast_peers = [\"192.0.2.3\", \"192.0.2.3\"]",
        "instance[0].unicast_peers[1]",
        "unicast_peers",
        "each peer once",
    ),
    (
        "accept_from = [\"192.0.2.300\"]",
        "instance[0].accept_from[0]",
        "accept_from",
        "no prefix",
    ),
    (
        "accept_from = [\"192.0.2.10\"]",
        "instance[0].accept_from[0]",
        "accept_from",
        "peer's own primary",
    ),
    (
        "adopt_interval_cs = [50]",
        "instance[0].adopt_interval_cs",
        "adopt_interval_cs",
        "min <= max <= 4095",
    ),
    (
        "adopt_interval_cs = [200, 100]",
        "instance[0].adopt_interval_cs",
        "adopt_interval_cs",
        "1 <= min <= max",
    ),
    (
        "adopt_interval_cs = [0, 100]",
        "instance[0].adopt_interval_cs",
        "adopt_interval_cs",
        "1 <= min <= max",
    ),
    (
        "log_format = \"xml\"",
        "global.log_format",
        "log_format",
        "\"plain\" or \"json\"",
    ),
    (
        "log_level = \"loud\"",
        "global.log_level",
        "log_level",
        "trace, debug, info, warn, error, off",
    ),
    (
        "realtime_priority = 100",
        "global.realtime_priority",
        "realtime_priority",
        "1..=99",
    ),
    (
        "control_socket = \"vrrpd.sock\"",
        "global.control_socket",
        "control_socket",
        "absolute path",
    ),
];

#[test]
fn each_bad_value_names_file_line_key_and_valid_values() {
    for (line, key, line_needle, valid) in BAD_VALUES {
        let setting = line.split(" =").next().unwrap_or(line);
        let text = with(setting, line);
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{line}: expected one error, got {errs:#?}");
        let err = &errs[0];
        let lineno = line_of(&text, line_needle);
        assert!(
            err.starts_with(&format!("{FILE}:{lineno}:")),
            "{line}: wrong position, want line {lineno}: {err}"
        );
        assert!(
            err.contains(&format!("`{key}`")),
            "{line}: key {key} not named: {err}"
        );
        assert!(
            err.contains(valid),
            "{line}: valid values {valid:?} not listed: {err}"
        );
    }
}

#[test]
fn bad_values_are_quoted_in_the_message() {
    let errs = errors(&with("checksum_mode", "checksum_mode = \"rfc9568\""));
    assert!(errs[0].contains("\"rfc9568\""), "{errs:?}");
    let errs = errors(&with("vrid", "vrid = 300"));
    assert!(errs[0].contains("300 is out of range"), "{errs:?}");
}

#[test]
fn several_bad_fields_give_several_errors_at_once() {
    let text = good_text()
        .replace("vrid = 51", "vrid = 0")
        .replace("priority = 150", "priority = 300")
        .replace("\"pseudo-header\"", "\"sometimes\"")
        .replace("log_format = \"plain\"", "log_format = \"xml\"")
        .replace("192.0.2.10/24", "192.0.2.10");
    let errs = errors(&text);
    assert_eq!(errs.len(), 5, "{errs:#?}");
    for key in [
        "instance[0].vrid",
        "instance[0].priority",
        "instance[0].checksum_mode",
        "global.log_format",
        "instance[0].vips[0]",
    ] {
        assert!(
            errs.iter().any(|e| e.contains(&format!("`{key}`"))),
            "{key} missing: {errs:#?}"
        );
    }
    // The whole error renders every line, so the CLI and the daemon print them all.
    let whole = check(&text).unwrap_err().to_string();
    assert_eq!(whole.lines().count(), 6, "{whole}");
}

#[test]
fn missing_required_keys_are_all_reported() {
    let text = "[[instance]]\ninterface = \"eth0\"\n";
    let errs = errors(text);
    for key in ["name", "vrid", "priority", "vips"] {
        assert!(
            errs.iter()
                .any(|e| e.contains(&format!("`instance[0].{key}`")) && e.contains("missing")),
            "{key}: {errs:#?}"
        );
    }
    // A missing key points at its table.
    assert!(
        errs.iter().all(|e| e.starts_with(&format!("{FILE}:1:"))),
        "{errs:#?}"
    );
}

#[test]
fn a_config_without_instances_is_rejected() {
    let errs = errors(GLOBAL);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("`instance`") && errs[0].contains("at least one"),
        "{errs:?}"
    );
}

#[test]
fn unknown_keys_are_rejected_with_their_position() {
    let text = with("preempt", "preempt = true\ncolour = \"red\"");
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let lineno = line_of(&text, "colour");
    assert!(
        errs[0].starts_with(&format!("{FILE}:{lineno}:")),
        "{errs:?}"
    );
    assert!(errs[0].contains("unknown field `colour`"), "{errs:?}");
    assert!(
        errs[0].contains("`vrid`"),
        "the valid keys are listed: {errs:?}"
    );

    let text = good_text().replace("[global]", "[global]\nnotify = \"x\"");
    let errs = errors(&text);
    assert!(errs[0].starts_with(&format!("{FILE}:2:1")), "{errs:?}");

    let errs = errors(&format!("[globl]\n{INSTANCE}"));
    assert!(errs[0].contains("unknown field `globl`"), "{errs:?}");
}

#[test]
fn wrong_types_and_syntax_errors_have_positions() {
    let text = with("vrid", "vrid = \"51\"");
    let errs = errors(&text);
    let lineno = line_of(&text, "vrid");
    assert!(
        errs[0].starts_with(&format!("{FILE}:{lineno}:")),
        "{errs:?}"
    );
    let errs = errors("[[instance]\nname = \"x\"\n");
    assert!(errs[0].starts_with(&format!("{FILE}:1:")), "{errs:?}");
}

fn two_instances(second: &str) -> String {
    format!("{}\n{second}", good_text())
}

#[test]
fn vrids_are_unique_per_interface_only() {
    let second = "[[instance]]\nname = \"api\"\ninterface = \"eth0\"\nvrid = 51\npriority = 100\nvips = [\"192.0.2.20/24\"]\n";
    let text = two_instances(second);
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].contains("`instance[1].vrid`") && errs[0].contains("\"web\""),
        "{errs:?}"
    );
    let lineno = text
        .lines()
        .enumerate()
        .filter(|(_, l)| *l == "vrid = 51")
        .last()
        .map(|(i, _)| i + 1);
    assert!(
        errs[0].starts_with(&format!("{FILE}:{}:", lineno.unwrap_or(0))),
        "{errs:?}"
    );

    let other_if = second.replace("eth0", "eth1");
    assert!(errors(&two_instances(&other_if)).is_empty());
}

#[test]
fn names_and_vips_are_unique_across_instances() {
    let second = "[[instance]]\nname = \"web\"\ninterface = \"eth1\"\nvrid = 52\npriority = 100\nvips = [\"192.0.2.11/32\"]\n";
    let errs = errors(&two_instances(second));
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs.iter().any(|e| e.contains("`instance[1].name`")),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("`instance[1].vips[0]`") && e.contains("192.0.2.11")),
        "{errs:#?}"
    );
}

#[test]
fn reload_can_compare_instances() {
    let a = check(&good_text()).unwrap_or_else(|e| panic!("{e}"));
    let b = check(&good_text().replace("garp_count = 5", "garp_count = 6"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.global, b.global);
    assert_ne!(a.instances[0], b.instances[0]);
    let c = check(&good_text()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.instances[0], c.instances[0]);
}

#[test]
fn load_reports_a_missing_file() {
    let err = VrrpConfig::load("/nonexistent/vrrpd.toml").unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("/nonexistent/vrrpd.toml"));
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Arbitrary text: an error or a config, never a panic.
        #[test]
        fn on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = check(&text);
        }

        /// The good config with one line replaced by `key = <value>` for a plausible key and
        /// an arbitrary TOML-ish value: deeper into validation than random text gets.
        #[test]
        fn on_mutated_values(
            line in 0usize..24,
            value in prop_oneof![
                any::<i64>().prop_map(|v| v.to_string()),
                "\\PC{0,30}".prop_map(|s| format!("{s:?}")),
                proptest::collection::vec("[0-9./a-z:]{0,20}", 0..4)
                    .prop_map(|v| format!("{v:?}")),
                Just("[{ address = \"192.0.2.9/24\", label = 7 }]".to_string()),
                Just("{}".to_string()),
            ],
        ) {
            let text = good_text();
            let mutated: Vec<String> = text
                .lines()
                .enumerate()
                .map(|(i, l)| match l.split_once(" = ") {
                    Some((key, _)) if i == line => format!("{key} = {value}"),
                    _ => l.to_string(),
                })
                .collect();
            let text = mutated.join("\n");
            match check(&text) {
                Ok(cfg) => prop_assert!(!cfg.instances.is_empty()),
                Err(e) => {
                    let errs = e.errors();
                    prop_assert!(!errs.is_empty());
                    // Every error names a key except a whole-file syntax error.
                    prop_assert!(errs.iter().all(|fe| !fe.message.is_empty()));
                }
            }
        }
    }
}

#[test]
fn control_access_keys_are_typed_and_checked() {
    let text = format!(
        "{}\n[lbd]\nuser = \"lbpair\"\n\n[control]\nadmin_group = \"ops\"\nidle_timeout_ms = 5000\nmax_connections_per_uid = 4\n",
        good_text()
    );
    let cfg = check(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.control.lbd_user,
        vrrpd::config::LbdUser::Named("lbpair".into())
    );
    assert_eq!(cfg.control.admin_group.as_deref(), Some("ops"));
    assert_eq!(cfg.control.idle_timeout, std::time::Duration::from_secs(5));
    assert_eq!(cfg.control.max_connections_per_uid, 4);
    // Defaults: the lbpair user if it exists (resolved at startup), no admin group.
    let cfg = check(&good_text()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.control, vrrpd::config::ControlConfig::default());

    let bad = format!(
        "{}\n[lbd]\nuser = \"-x y\"\n\n[control]\nadmin_group = \"\"\nidle_timeout_ms = 10\nmax_connections_per_uid = 0\n",
        good_text()
    );
    let errs = errors(&bad);
    for key in [
        "`lbd.user`",
        "`control.admin_group`",
        "`control.idle_timeout_ms`",
        "`control.max_connections_per_uid`",
    ] {
        assert!(
            errs.iter().any(|e| e.contains(key)),
            "{key} missing from {errs:#?}"
        );
    }
    assert_eq!(errs.len(), 4, "{errs:#?}");
}

/// `accept_from` defaults to the unicast peers, is empty (any source) with multicast, and an
/// explicit list wins; `adopt_interval_cs` defaults to a quarter of our interval up to it.
#[test]
fn accept_from_and_adopt_window_defaults() {
    let peers = with("unicast_peers", "unicast_peers = [\"192.0.2.3\"]");
    let i = &check(&peers).unwrap_or_else(|e| panic!("{e}")).instances[0];
    let peer: std::net::Ipv4Addr = "192.0.2.3".parse().expect("address");
    assert_eq!(i.accept_from, vec![peer]);
    assert_eq!(i.adopt_interval_cs, (25, 100));
    assert!(!i.strict_interval);

    let i = &check(&good_text())
        .unwrap_or_else(|e| panic!("{e}"))
        .instances[0];
    assert!(i.accept_from.is_empty(), "multicast: any source by default");

    let explicit = with(
        "unicast_peers",
        "accept_from = [\"192.0.2.7\", \"192.0.2.8\"]",
    );
    let explicit = explicit.replace("advert_interval_cs = 100", "advert_interval_cs = 2");
    let i = &check(&explicit).unwrap_or_else(|e| panic!("{e}")).instances[0];
    assert_eq!(i.accept_from.len(), 2);
    assert_eq!(i.adopt_interval_cs, (1, 2), "never below 1 cs");

    let window = with(
        "adopt_interval_cs",
        "adopt_interval_cs = [50, 400]\nstrict_interval = true",
    );
    let i = &check(&window).unwrap_or_else(|e| panic!("{e}")).instances[0];
    assert_eq!(i.adopt_interval_cs, (50, 400));
    assert!(i.strict_interval);
    assert_eq!(i.fsm_config(peer).adopt_interval_cs, Some((50, 400)));
}
