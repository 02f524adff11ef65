//! The only `unsafe` code in vrrpd.
//!
//! socket2 and nix cover almost everything the daemon needs safely. Three calls are left:
//! - `sendto` with a `sockaddr_ll` (nix's `LinkAddr` and socket2's `SockAddr` have no safe
//!   constructor for AF_PACKET addresses), needed to put a gratuitous ARP frame on a link;
//! - `sched_setscheduler` (nix 0.29 doesn't wrap it);
//! - registering a socket with tokio's reactor (`AsyncFd::register` is `unsafe` since tokio
//!   deprecated the safe `AsyncFd::new` for lack of I/O safety).
//!
//! Each function is a thin, checked wrapper: arguments are plain values or borrowed fds, so
//! callers can't hand the kernel a dangling pointer, and no fd is created or closed here.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::Socket;
use tokio::io::unix::AsyncFd;

/// Hand `sock` to tokio's reactor. Outside a tokio runtime this is an error, not a panic.
pub(crate) fn register_socket(sock: Socket) -> io::Result<AsyncFd<Socket>> {
    tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
    // SAFETY: `Socket` owns its fd (an `OwnedFd` inside) and `AsyncFd` takes ownership of
    // the `Socket`, so the fd stays open and unchanged until the `AsyncFd` is dropped, and
    // `Socket::as_raw_fd` always returns that same fd.
    unsafe { AsyncFd::register(sock) }.map_err(io::Error::from)
}

/// Send one complete Ethernet frame on `ifindex` through an AF_PACKET/SOCK_RAW socket.
///
/// `frame` already carries the Ethernet header; `dst_mac` and `ethertype` fill the
/// `sockaddr_ll`, which the kernel uses to pick the device and set `skb->protocol`.
pub(crate) fn packet_send_to(
    fd: BorrowedFd<'_>,
    ifindex: u32,
    dst_mac: [u8; 6],
    ethertype: u16,
    frame: &[u8],
) -> io::Result<usize> {
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    // SAFETY: sockaddr_ll is a plain C struct of integers and byte arrays; all-zero is a
    // valid value for every field.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = ethertype.to_be();
    addr.sll_ifindex = ifindex;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&dst_mac);
    // SAFETY: `fd` is a live descriptor for the duration of the borrow; `frame` is a valid
    // readable slice of `frame.len()` bytes; `addr` is a fully initialised sockaddr_ll that
    // outlives the call, and we pass its exact size. The kernel doesn't keep any pointer.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast::<libc::c_void>(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // n >= 0 was just checked, so the conversion can't fail.
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Put the calling *thread* under SCHED_FIFO at `priority` (1..=99).
///
/// Linux applies `sched_setscheduler(0, ..)` to the calling thread only; threads created
/// afterwards inherit it, which is why the daemon calls this before starting its runtime.
pub(crate) fn set_sched_fifo(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `param` is an initialised sched_param that lives across the call; pid 0 means
    // the calling thread; the kernel only reads the struct.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
