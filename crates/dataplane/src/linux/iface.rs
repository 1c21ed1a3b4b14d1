//! Interface facts (index, MAC, MTU, flags, addresses) and bringing an interface up, plus
//! the error type of the whole `linux` module.

use std::ffi::CStr;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What went wrong, for callers that act on it (the message is in `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoErrorKind {
    /// The interface does not exist (in this network namespace).
    NoSuchInterface,
    /// Not a usable interface name (empty, too long, or with a NUL or '/').
    InvalidName,
    /// The process lacks root or the capability the operation needs.
    Permission,
    /// A [`crate::linux::RingConfig`] the kernel would refuse.
    InvalidConfig,
    /// The interface went away or down while in use.
    InterfaceGone,
    /// Any other failure of a system call.
    Os,
}

/// An I/O error that names the interface, the operation, and what to do about it.
#[derive(Debug, Clone)]
pub struct IoError {
    iface: String,
    kind: IoErrorKind,
    what: String,
    errno: Option<i32>,
}

impl IoError {
    pub(crate) fn new(
        iface: &str,
        kind: IoErrorKind,
        what: impl Into<String>,
        errno: Option<i32>,
    ) -> IoError {
        IoError {
            iface: iface.to_owned(),
            kind,
            what: what.into(),
            errno,
        }
    }

    /// From `errno` after the system call behind `what` failed. `cap` names the capability
    /// the operation needs, for the message given on EPERM/EACCES.
    pub(crate) fn os(iface: &str, what: &str, cap: &str, errno: i32) -> IoError {
        let kind = match errno {
            libc::EPERM | libc::EACCES => IoErrorKind::Permission,
            libc::ENODEV | libc::ENXIO => IoErrorKind::NoSuchInterface,
            _ => IoErrorKind::Os,
        };
        let what = match kind {
            IoErrorKind::Permission => format!("{what} needs root or {cap}"),
            IoErrorKind::NoSuchInterface => "no such interface".to_owned(),
            _ => format!("{what} failed"),
        };
        IoError::new(iface, kind, what, Some(errno))
    }

    pub(crate) fn last_os(iface: &str, what: &str, cap: &str) -> IoError {
        IoError::os(iface, what, cap, last_errno())
    }

    /// The interface the error is about.
    pub fn interface(&self) -> &str {
        &self.iface
    }

    pub fn kind(&self) -> IoErrorKind {
        self.kind
    }

    /// The `errno` behind it, when a system call failed.
    pub fn errno(&self) -> Option<i32> {
        self.errno
    }
}

pub(crate) fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// `setsockopt(fd, level, opt, val)` for the option structs and ints packet(7) and
/// AF_XDP take; on failure the error names the interface, `what` was being done and, for
/// EPERM, the capability `cap` that is missing.
pub(crate) fn set_opt<T>(
    fd: &std::os::fd::OwnedFd,
    name: &str,
    level: libc::c_int,
    opt: libc::c_int,
    val: &T,
    what: &str,
    cap: &str,
) -> Result<(), IoError> {
    use std::os::fd::AsRawFd;
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| IoError::new(name, IoErrorKind::Os, "socket option too large", None))?;
    // SAFETY: val points at a live T of `len` bytes, which is the type the option expects
    // (each caller passes the struct or int its option takes).
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, opt, (val as *const T).cast(), len) };
    if r < 0 {
        return Err(IoError::last_os(name, what, cap));
    }
    Ok(())
}

/// Waits up to `timeout_ms` for `events` on one socket of interface `name`:
/// `Ok(Some(revents))`, `Ok(None)` when a signal interrupted the wait (the caller returns to
/// its loop, which checks for a stop).
pub(crate) fn poll_one(
    fd: std::os::fd::RawFd,
    name: &str,
    cap: &str,
    events: libc::c_short,
    timeout_ms: i32,
) -> Result<Option<libc::c_short>, IoError> {
    let mut pfd = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if r >= 0 {
        return Ok(Some(pfd.revents));
    }
    match last_errno() {
        libc::EINTR => Ok(None),
        e => Err(IoError::os(name, "waiting for frames (poll)", cap, e)),
    }
}

/// An errno from a socket of interface `name`: the interface going down or away is its own
/// kind (the caller waits for it to come back), anything else is reported with `what`.
pub(crate) fn gone_or(name: &str, what: &str, cap: &str, e: i32) -> IoError {
    if matches!(e, libc::ENETDOWN | libc::ENXIO | libc::ENODEV) {
        IoError::new(
            name,
            IoErrorKind::InterfaceGone,
            "the interface went down or away",
            Some(e),
        )
    } else {
        IoError::os(name, what, cap, e)
    }
}

/// Reads and clears a socket's pending error (after poll said POLLERR).
pub(crate) fn take_socket_error(
    fd: std::os::fd::RawFd,
    name: &str,
    what: &str,
    cap: &str,
) -> Result<(), IoError> {
    let mut err: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(0);
    // SAFETY: SO_ERROR writes an int to err, whose size len gives.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r < 0 || err == 0 {
        return Ok(());
    }
    Err(gone_or(name, what, cap, err))
}

/// The symbolic name of the errno values a packet router meets; others by number.
fn errno_name(e: i32) -> Option<&'static str> {
    Some(match e {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENODEV => "ENODEV",
        libc::ENXIO => "ENXIO",
        libc::EINVAL => "EINVAL",
        libc::ENOMEM => "ENOMEM",
        libc::ENOBUFS => "ENOBUFS",
        libc::EAGAIN => "EAGAIN",
        libc::EBUSY => "EBUSY",
        libc::ENETDOWN => "ENETDOWN",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EINTR => "EINTR",
        libc::EFAULT => "EFAULT",
        _ => return None,
    })
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interface {}: {}", self.iface, self.what)?;
        match (self.kind, self.errno) {
            (IoErrorKind::NoSuchInterface, _) | (_, None) => Ok(()),
            (IoErrorKind::Permission, Some(e)) => write!(
                f,
                " (got {})",
                errno_name(e).unwrap_or("a permission error")
            ),
            (_, Some(e)) => {
                let msg = std::io::Error::from_raw_os_error(e);
                match errno_name(e) {
                    Some(n) => write!(f, ": {msg} ({n})"),
                    None => write!(f, ": {msg}"),
                }
            }
        }
    }
}

impl std::error::Error for IoError {}

/// What the daemon needs to know about an interface it takes over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfInfo {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Addresses the kernel has on the interface (the router normally wants none there).
    pub kernel_addrs: Vec<IpAddr>,
}

const CAP_ADMIN: &str = "CAP_NET_ADMIN";

/// An `ifreq` with the name filled in, after checking the name.
fn ifreq(name: &str) -> Result<libc::ifreq, IoError> {
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes.len() >= libc::IFNAMSIZ
        || bytes
            .iter()
            .any(|&b| b == 0 || b == b'/' || b.is_ascii_whitespace())
    {
        return Err(IoError::new(
            name,
            IoErrorKind::InvalidName,
            format!(
                "not a valid interface name (1 to {} bytes, no '/', NUL or spaces)",
                libc::IFNAMSIZ - 1
            ),
            None,
        ));
    }
    // SAFETY: ifreq is plain old data (integers, arrays and a union of them); all zeroes
    // is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    Ok(req)
}

/// A datagram socket to issue interface ioctls on. AF_INET needs no privilege to create;
/// a kernel without IPv4 still has AF_PACKET, though that needs CAP_NET_RAW.
fn ioctl_socket(name: &str) -> Result<OwnedFd, IoError> {
    for family in [libc::AF_INET, libc::AF_INET6, libc::AF_PACKET] {
        // SAFETY: socket() takes no pointers; the result is checked before use.
        let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd >= 0 {
            // SAFETY: fd was just returned by socket() and is owned by nothing else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(IoError::last_os(
        name,
        "opening a socket for interface ioctls",
        "CAP_NET_RAW",
    ))
}

/// Issues an interface ioctl that reads or writes `req`.
fn ioctl(
    sock: &OwnedFd,
    name: &str,
    op: libc::c_ulong,
    req: &mut libc::ifreq,
    what: &str,
    cap: &str,
) -> Result<(), IoError> {
    // SAFETY: every SIOC[GS]IF* request used here reads/writes a `struct ifreq`, and `req`
    // is a valid, exclusively borrowed ifreq for the duration of the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), op as _, req as *mut libc::ifreq) };
    if r < 0 {
        return Err(IoError::last_os(name, what, cap));
    }
    Ok(())
}

/// The interface's index, MAC, MTU, up flag and kernel addresses.
pub fn if_info(name: &str) -> Result<IfInfo, IoError> {
    let sock = ioctl_socket(name)?;
    let mut req = ifreq(name)?;
    ioctl(
        &sock,
        name,
        libc::SIOCGIFINDEX,
        &mut req,
        "reading the interface index",
        CAP_ADMIN,
    )?;
    // SAFETY: SIOCGIFINDEX filled the ifindex member of the union.
    let ifindex = unsafe { req.ifr_ifru.ifru_ifindex };
    let ifindex = u32::try_from(ifindex).map_err(|_| {
        IoError::new(
            name,
            IoErrorKind::Os,
            "kernel gave a negative ifindex",
            None,
        )
    })?;

    let mut req = ifreq(name)?;
    ioctl(
        &sock,
        name,
        libc::SIOCGIFHWADDR,
        &mut req,
        "reading the MAC address",
        CAP_ADMIN,
    )?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member (a sockaddr) of the union.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, &src) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *dst = u8::from_ne_bytes(src.to_ne_bytes());
    }

    let mut req = ifreq(name)?;
    ioctl(
        &sock,
        name,
        libc::SIOCGIFMTU,
        &mut req,
        "reading the MTU",
        CAP_ADMIN,
    )?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    let mtu = u32::try_from(mtu)
        .map_err(|_| IoError::new(name, IoErrorKind::Os, "kernel gave a negative MTU", None))?;

    let up = flags(&sock, name)? & libc::IFF_UP != 0;
    let kernel_addrs = kernel_addresses(name)?;
    Ok(IfInfo {
        name: name.to_owned(),
        ifindex,
        mac,
        mtu,
        up,
        kernel_addrs,
    })
}

fn flags(sock: &OwnedFd, name: &str) -> Result<libc::c_int, IoError> {
    let mut req = ifreq(name)?;
    ioctl(
        sock,
        name,
        libc::SIOCGIFFLAGS,
        &mut req,
        "reading the interface flags",
        CAP_ADMIN,
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    Ok(libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags }))
}

/// Sets `IFF_UP` (SIOCSIFFLAGS); a no-op when the interface is already up.
pub fn set_up(name: &str) -> Result<(), IoError> {
    let sock = ioctl_socket(name)?;
    let f = flags(&sock, name)?;
    if f & libc::IFF_UP != 0 {
        return Ok(());
    }
    let mut req = ifreq(name)?;
    // Flags are a short in ifreq: the kernel gave 16 bits, and gets the same 16 back.
    let bits = u16::try_from((f | libc::IFF_UP) & 0xffff).unwrap_or(1);
    req.ifr_ifru.ifru_flags = i16::from_ne_bytes(bits.to_ne_bytes());
    ioctl(
        &sock,
        name,
        libc::SIOCSIFFLAGS,
        &mut req,
        "bringing the interface up",
        CAP_ADMIN,
    )
}

/// The kernel's IPv4 and IPv6 addresses on the interface (link-local included), from
/// getifaddrs.
pub fn kernel_addresses(name: &str) -> Result<Vec<IpAddr>, IoError> {
    let _ = ifreq(name)?;
    let cname = std::ffi::CString::new(name).map_err(|_| {
        IoError::new(
            name,
            IoErrorKind::InvalidName,
            "interface name contains NUL",
            None,
        )
    })?;
    // SAFETY: cname is a valid NUL-terminated string.
    if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
        let e = last_errno();
        return Err(IoError::os(
            name,
            "looking up the interface",
            CAP_ADMIN,
            if e == 0 { libc::ENODEV } else { e },
        ));
    }
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head to the pointer we pass; freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(IoError::last_os(
            name,
            "listing addresses (getifaddrs)",
            CAP_ADMIN,
        ));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        if unsafe { CStr::from_ptr(ifa.ifa_name) }.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr points at a sockaddr at least as large as its family says.
        let family = libc::c_int::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: AF_INET addresses are sockaddr_in.
            let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
            out.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))));
        } else if family == libc::AF_INET6 {
            // SAFETY: AF_INET6 addresses are sockaddr_in6.
            let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
            out.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
        }
    }
    // SAFETY: head came from a successful getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = IoError::os(
            "wan0",
            "opening a packet socket",
            "CAP_NET_RAW",
            libc::EPERM,
        );
        assert_eq!(e.kind(), IoErrorKind::Permission);
        assert_eq!(
            e.to_string(),
            "interface wan0: opening a packet socket needs root or CAP_NET_RAW (got EPERM)"
        );
        let e = IoError::os("wan0", "reading the MTU", CAP_ADMIN, libc::ENODEV);
        assert_eq!(e.to_string(), "interface wan0: no such interface");
        let e = IoError::os(
            "wan0",
            "mapping the receive ring",
            "CAP_NET_RAW",
            libc::ENOMEM,
        );
        assert!(
            e.to_string()
                .starts_with("interface wan0: mapping the receive ring failed: "),
            "{e}"
        );
        assert!(e.to_string().ends_with("(ENOMEM)"), "{e}");
    }
}
