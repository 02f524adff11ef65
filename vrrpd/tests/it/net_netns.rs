//! vrrpd's kernel-facing layer (`vrrpd::net`) against a real kernel, inside throwaway network
//! namespaces.
//!
//! Each test builds its own pair of namespaces joined by a veth (`va` in A, `vb` in B) with
//! `ip` (fine in tests; the daemon itself only uses netlink), runs the code under test on a
//! dedicated thread that has `setns`-ed into a namespace (setns moves only that thread, and
//! the sockets it opens belong to that namespace), and removes both namespaces in `Drop`,
//! so they go away even when an assertion panics.
//!
//! Needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN for setns). Without it the tests
//! print a SKIP line and pass; CI runs as root so they really run there.
//!
//! Waiting is always on a condition with a deadline. `LBPAIR_TEST_PATIENCE` multiplies the
//! deadlines on a slow machine.
//!
//! Run: `cargo test -p vrrpd --test it -- net_netns::`

use std::fs::File;
use std::future::Future;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sched::CloneFlags;
use shared::wire::vrrp::{ChecksumMode, Packet, Repr};
use vrrpd::net::garp::send_garp;
use vrrpd::net::link::{interface_info, interface_info_excluding, LinkEvent, LinkWatcher};
use vrrpd::net::socket::{Received, VrrpSocket, MAX_DATAGRAM};
use vrrpd::net::vip::{Vip, VipManager};
use vrrpd::net::VRRP_GROUP;

const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);

fn patience() -> Duration {
    let factor = std::env::var("LBPAIR_TEST_PATIENCE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    Duration::from_secs(5) * factor
}

/// True if the tests can run; otherwise prints why they are skipped.
fn have_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("SKIP {test}: needs root (CAP_NET_ADMIN) to create network namespaces");
    false
}

/// Run `ip ARGS`, panicking with its stderr on failure.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("the ip command (iproute2) must be installed");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth: `va` (10.77.0.1/24) in `a`, `vb` (10.77.0.2/24) in `b`.
/// Both namespaces are deleted on drop, which also deletes the veth.
struct NetnsPair {
    a: String,
    b: String,
}

impl NetnsPair {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("lbpnet-{}-{id}", std::process::id());
        // The guard exists before the first namespace, so a failure half-way is cleaned up.
        let pair = Self {
            a: format!("{prefix}-a"),
            b: format!("{prefix}-b"),
        };
        ip(&["netns", "add", &pair.a]);
        ip(&["netns", "add", &pair.b]);
        ip(&[
            "-n", &pair.a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns",
            &pair.b,
        ]);
        for (ns, dev, addr) in [
            (&pair.a, "va", "10.77.0.1/24"),
            (&pair.b, "vb", "10.77.0.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", "dev", dev, "up"]);
            ip(&["-n", ns, "link", "set", "dev", "lo", "up"]);
        }
        pair
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            // Ignore failures: the namespace may not have been created.
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Start `f` on a new thread inside namespace `ns`, on its own current-thread runtime.
fn spawn_in<F, Fut, T>(ns: &str, f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&file, CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(f())
    })
}

/// Wait for a thread, re-raising its panic in the test thread.
fn join<T>(h: std::thread::JoinHandle<T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn run_in<F, Fut, T>(ns: &str, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    join(spawn_in(ns, f))
}

/// Receive one datagram within the deadline and parse its VRRP payload.
async fn recv_advert(sock: &VrrpSocket) -> (Received, Repr, ChecksumMode) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let r = tokio::time::timeout(patience(), sock.recv(&mut buf))
        .await
        .expect("an advert within the deadline")
        .expect("recv");
    let payload = &buf[r.payload_range.clone()];
    let packet = Packet::new_checked(payload).expect("a VRRP packet");
    let (repr, mode) = Repr::parse(&packet, r.src, r.dst).expect("a well-formed advert");
    (r, repr, mode)
}

fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn interface_info_reports_index_mac_state_and_primary() {
    if !have_root("interface_info_reports_index_mac_state_and_primary") {
        return;
    }
    let pair = NetnsPair::new();
    let link = ip(&["-n", &pair.a, "-o", "link", "show", "dev", "va"]);
    let info = run_in(&pair.a, || async {
        interface_info("va").await.expect("va exists")
    });
    assert!(
        link.starts_with(&format!("{}: va@", info.index)),
        "index {} vs {link}",
        info.index
    );
    assert!(
        link.contains(&format!("link/ether {}", mac_string(info.mac))),
        "mac {} vs {link}",
        mac_string(info.mac)
    );
    assert!(info.up, "va is up and its peer is up");
    assert_eq!(info.primary_v4, Some(ADDR_A));

    let missing = run_in(&pair.a, || async { interface_info("nosuch0").await });
    assert_eq!(
        missing.expect_err("no such interface").kind(),
        std::io::ErrorKind::NotFound
    );
}

#[test]
fn vip_add_remove_present_is_idempotent_and_visible_to_ip() {
    if !have_root("vip_add_remove_present_is_idempotent_and_visible_to_ip") {
        return;
    }
    let pair = NetnsPair::new();
    let ns = pair.a.clone();
    run_in(&pair.a, move || async move {
        let show = || ip(&["-n", &ns, "-4", "addr", "show", "dev", "va"]);
        let ifindex = interface_info("va").await.expect("va").index;
        let mgr = VipManager::new().expect("netlink");
        let vip = Vip::new(VIP, 24).with_label("va:vip");
        let host_vip = Vip::new(Ipv4Addr::new(10, 77, 9, 9), 32);

        assert!(!mgr.present(ifindex, &vip).await.expect("present"));
        mgr.add(ifindex, &vip).await.expect("add");
        mgr.add(ifindex, &vip).await.expect("adding twice is Ok");
        assert!(mgr.present(ifindex, &vip).await.expect("present"));
        let out = show();
        assert!(out.contains("inet 10.77.0.100/24"), "{out}");
        assert!(out.contains("va:vip"), "label missing: {out}");

        let addrs = mgr.addresses(ifindex).await.expect("addresses");
        let listed = addrs.iter().find(|a| a.addr == VIP).expect("VIP is listed");
        assert!(listed.secondary, "same-subnet VIP is secondary: {addrs:?}");
        assert_eq!(listed.label.as_deref(), Some("va:vip"));

        // A /32 VIP is primary of its own subnet; it must not become the advert source.
        mgr.add(ifindex, &host_vip).await.expect("add /32");
        let info = interface_info_excluding("va", &[VIP, host_vip.addr])
            .await
            .expect("va");
        assert_eq!(info.primary_v4, Some(ADDR_A));
        assert!(show().contains("inet 10.77.9.9/32"));

        mgr.remove(ifindex, &vip).await.expect("remove");
        mgr.remove(ifindex, &vip)
            .await
            .expect("removing twice is Ok");
        mgr.remove(ifindex, &host_vip).await.expect("remove /32");
        assert!(!mgr.present(ifindex, &vip).await.expect("present"));
        let out = show();
        assert!(!out.contains("10.77.0.100"), "{out}");
        assert!(!out.contains("10.77.9.9"), "{out}");
        assert!(
            out.contains("inet 10.77.0.1/24"),
            "primary untouched: {out}"
        );
    });
}

#[test]
fn multicast_advert_crosses_the_link_with_ttl_255_and_is_not_looped_back() {
    if !have_root("multicast_advert_crosses_the_link_with_ttl_255_and_is_not_looped_back") {
        return;
    }
    let pair = NetnsPair::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();

    let b = spawn_in(&pair.b, move || async move {
        let sock = VrrpSocket::open("vb", ADDR_B, &[]).expect("socket on vb");
        ready_tx.send(()).expect("A is waiting");
        let (r, repr, mode) = recv_advert(&sock).await;
        // Answer only after A's advert went out: if A's socket looped its own advert back,
        // that copy would already be queued at A ahead of this one.
        let reply = Repr::advertisement(8, 100, 100, vec![VIP]);
        sock.send_advert(&reply, ChecksumMode::PseudoHeader)
            .await
            .expect("send from B");
        (r, repr, mode)
    });

    ready_rx
        .recv_timeout(patience())
        .expect("B opened its socket");
    let a = spawn_in(&pair.a, || async {
        let sock = VrrpSocket::open("va", ADDR_A, &[]).expect("socket on va");
        let advert = Repr::advertisement(7, 200, 100, vec![VIP]);
        sock.send_advert(&advert, ChecksumMode::PseudoHeader)
            .await
            .expect("send from A");
        recv_advert(&sock).await
    });

    let (r, repr, mode) = join(b);
    assert_eq!(r.src, ADDR_A);
    assert_eq!(r.dst, VRRP_GROUP);
    assert_eq!(r.ttl, 255);
    assert_eq!(mode, ChecksumMode::PseudoHeader);
    assert_eq!(repr, Repr::advertisement(7, 200, 100, vec![VIP]));

    let (r, repr, _) = join(a);
    assert_eq!(
        (r.src, repr.vrid),
        (ADDR_B, 8),
        "A's first datagram must be B's advert, not its own"
    );
    assert_eq!(r.ttl, 255);
}

#[test]
fn unicast_advert_reaches_each_peer_with_ttl_255_and_its_own_checksum() {
    if !have_root("unicast_advert_reaches_each_peer_with_ttl_255_and_its_own_checksum") {
        return;
    }
    let pair = NetnsPair::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let b = spawn_in(&pair.b, move || async move {
        let sock = VrrpSocket::open("vb", ADDR_B, &[ADDR_A]).expect("socket on vb");
        ready_tx.send(()).expect("A is waiting");
        recv_advert(&sock).await
    });
    ready_rx
        .recv_timeout(patience())
        .expect("B opened its socket");
    run_in(&pair.a, || async {
        let sock = VrrpSocket::open("va", ADDR_A, &[ADDR_B]).expect("socket on va");
        let advert = Repr::advertisement(9, 150, 50, vec![VIP]);
        sock.send_advert(&advert, ChecksumMode::PseudoHeader)
            .await
            .expect("send");
    });
    let (r, repr, mode) = join(b);
    assert_eq!((r.src, r.dst, r.ttl), (ADDR_A, ADDR_B, 255));
    assert_eq!(mode, ChecksumMode::PseudoHeader);
    assert_eq!(repr.vrid, 9);
}

#[test]
fn try_recv_drains_without_waiting_and_set_source_changes_the_sender() {
    if !have_root("try_recv_drains_without_waiting_and_set_source_changes_the_sender") {
        return;
    }
    let pair = NetnsPair::new();
    let new_src = Ipv4Addr::new(10, 77, 0, 5);
    ip(&["-n", &pair.a, "addr", "add", "10.77.0.5/24", "dev", "va"]);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel::<()>();
    let b = spawn_in(&pair.b, move || async move {
        let sock = VrrpSocket::open("vb", ADDR_B, &[]).expect("socket on vb");
        let mut buf = vec![0u8; MAX_DATAGRAM];
        assert_eq!(
            sock.try_recv(&mut buf).expect("try_recv"),
            None,
            "nothing queued"
        );
        ready_tx.send(()).expect("A is waiting");
        tokio::time::timeout(patience(), sent_rx)
            .await
            .expect("A sent within the deadline")
            .expect("A is alive");
        // The advert may still be on its way through the veth; poll, never block.
        tokio::time::timeout(patience(), async {
            loop {
                if let Some(r) = sock.try_recv(&mut buf).expect("try_recv") {
                    return r;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the advert within the deadline")
    });
    ready_rx
        .recv_timeout(patience())
        .expect("B opened its socket");
    run_in(&pair.a, move || async move {
        let mut sock = VrrpSocket::open("va", ADDR_A, &[]).expect("socket on va");
        sock.set_source(new_src);
        assert_eq!(sock.source(), new_src);
        let advert = Repr::advertisement(7, 100, 100, vec![VIP]);
        sock.send_advert(&advert, ChecksumMode::PseudoHeader)
            .await
            .expect("send");
        sent_tx.send(()).expect("B is waiting");
    });
    let r = join(b);
    assert_eq!((r.src, r.dst, r.ttl), (new_src, VRRP_GROUP, 255));
}

#[test]
fn gratuitous_arp_updates_the_peer_neighbour_entry() {
    if !have_root("gratuitous_arp_updates_the_peer_neighbour_entry") {
        return;
    }
    let pair = NetnsPair::new();
    // Linux updates an *existing* entry from a gratuitous request (arp_accept=0 ignores
    // unknown senders), so plant a stale entry pointing elsewhere.
    ip(&[
        "-n",
        &pair.b,
        "neigh",
        "add",
        "10.77.0.100",
        "lladdr",
        "00:11:22:33:44:55",
        "dev",
        "vb",
        "nud",
        "stale",
    ]);
    let planted = ip(&["-n", &pair.b, "neigh", "show", "10.77.0.100", "dev", "vb"]);
    assert!(planted.contains("00:11:22:33:44:55"), "{planted}");

    let b = pair.b.clone();
    run_in(&pair.a, move || async move {
        let info = interface_info("va").await.expect("va");
        send_garp(info.index, info.mac, VIP).expect("send GARP");
        let want = mac_string(info.mac);
        let moved = tokio::time::timeout(patience(), async {
            loop {
                let now = ip(&["-n", &b, "neigh", "show", "10.77.0.100", "dev", "vb"]);
                if now.contains(&want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            moved.is_ok(),
            "B's entry for the VIP never moved to {want}: {}",
            ip(&["-n", &b, "neigh", "show", "10.77.0.100", "dev", "vb"])
        );
    });
}

/// The next event about `ifindex`, within the deadline.
async fn next_event_for(watcher: &mut LinkWatcher, ifindex: u32) -> LinkEvent {
    tokio::time::timeout(patience(), async {
        loop {
            let ev = watcher.recv().await.expect("link events");
            if ev.ifindex == ifindex {
                return ev;
            }
        }
    })
    .await
    .expect("a link event within the deadline")
}

#[test]
fn link_watcher_reports_admin_down_carrier_loss_and_recovery() {
    if !have_root("link_watcher_reports_admin_down_carrier_loss_and_recovery") {
        return;
    }
    let pair = NetnsPair::new();
    let (a, b) = (pair.a.clone(), pair.b.clone());
    run_in(&pair.a, move || async move {
        let ifindex = interface_info("va").await.expect("va").index;
        let mut watcher = LinkWatcher::new().await.expect("subscribe");
        assert_eq!(watcher.is_up(ifindex), Some(true));

        ip(&["-n", &a, "link", "set", "dev", "va", "down"]);
        let ev = next_event_for(&mut watcher, ifindex).await;
        assert_eq!(ev, LinkEvent { ifindex, up: false });
        ip(&["-n", &a, "link", "set", "dev", "va", "up"]);
        let ev = next_event_for(&mut watcher, ifindex).await;
        assert_eq!(ev, LinkEvent { ifindex, up: true });

        // The peer going down takes va's carrier away while va stays administratively up.
        ip(&["-n", &b, "link", "set", "dev", "vb", "down"]);
        let ev = next_event_for(&mut watcher, ifindex).await;
        assert_eq!(ev, LinkEvent { ifindex, up: false });
        assert!(!interface_info("va").await.expect("va").up);
        ip(&["-n", &b, "link", "set", "dev", "vb", "up"]);
        let ev = next_event_for(&mut watcher, ifindex).await;
        assert_eq!(ev, LinkEvent { ifindex, up: true });
    });
}

#[test]
fn socket_on_a_missing_interface_is_an_error() {
    // No privileges needed: the interface lookup fails before any socket is made.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let err = rt
        .block_on(async { VrrpSocket::open("nosuch-vrrp0", ADDR_A, &[]) })
        .expect_err("no such interface");
    assert_eq!(err.raw_os_error(), Some(libc::ENODEV), "{err}");
}

/// (policy, rt_priority) of the calling thread, from /proc/thread-self/stat.
fn thread_sched() -> (u32, u32) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("procfs");
    // Fields after the command name (which may contain spaces) start at field 3 (state).
    let rest = &stat[stat.rfind(')').expect("comm field") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields[n - 3].parse::<u32>().expect("numeric field");
    (field(41), field(40))
}

#[test]
fn realtime_switches_the_calling_thread_to_fifo_and_locks_memory() {
    if !have_root("realtime_switches_the_calling_thread_to_fifo_and_locks_memory") {
        return;
    }
    // A dedicated thread: SCHED_FIFO applies to the calling thread only.
    let (outcome, sched) = join(std::thread::spawn(|| {
        let outcome = vrrpd::net::realtime::enable_realtime(200);
        (outcome, thread_sched())
    }));
    // mlockall is process-wide; undo it so the other tests run as usual.
    let _ = nix::sys::mman::munlockall();
    outcome.memory_lock.expect("root may lock memory");
    match outcome.scheduler {
        Ok(p) => {
            assert_eq!(p, 99, "priority clamped to the SCHED_FIFO maximum");
            assert_eq!(sched, (1, 99), "SCHED_FIFO (policy 1) at priority 99");
        }
        // A container without a real-time budget refuses even root; that must be reported,
        // not fatal, and leave the thread under its old policy.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            eprintln!("NOTE: SCHED_FIFO refused here ({e}); checked that it was reported");
            assert_eq!(sched.0, 0, "still SCHED_OTHER");
        }
        Err(e) => panic!("unexpected scheduler error: {e}"),
    }
}

/// The daemon shares these across tasks of a multi-threaded runtime; this fails to compile
/// if one of them stops being `Send`/`Sync` or holds a non-`Send` value across an await.
#[allow(dead_code)]
fn net_types_and_futures_can_move_between_threads(
    mgr: &'static VipManager,
    sock: &'static VrrpSocket,
    watcher: &'static mut LinkWatcher,
    vip: &'static Vip,
    buf: &'static mut [u8],
    repr: &'static Repr,
) {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    send_sync(mgr);
    send_sync(sock);
    send_sync(&vrrpd::net::garp::GarpSender::open());
    send(mgr.add(1, vip));
    send(mgr.remove(1, vip));
    send(mgr.present(1, vip));
    send(sock.recv(buf));
    send(sock.send_advert(repr, ChecksumMode::PseudoHeader));
    send(watcher.recv());
    send(interface_info("x"));
    send(LinkWatcher::new());
}
