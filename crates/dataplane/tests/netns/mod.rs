//! Throwaway network namespaces for the root tests: created by the test, removed when its
//! guard drops (with the veth ends inside them), and a way to run code inside one.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::os::fd::AsRawFd;
use std::process::Command;

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces this test created; removing a namespace removes the veth ends in it.
pub struct Netns(Vec<String>);

impl Netns {
    /// `None` (after printing the SKIPPED line) when namespaces cannot be made here.
    pub fn new(test: &str, names: &[String]) -> Option<Netns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED {test}: needs root (network namespaces)");
            return None;
        }
        let mut guard = Netns(Vec::new());
        for n in names {
            let ok = Command::new("ip")
                .args(["netns", "add", n])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!(
                    "SKIPPED {test}: needs root (network namespaces): `ip netns add {n}` failed"
                );
                return None;
            }
            guard.0.push(n.clone());
        }
        Some(guard)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `f` on a thread that entered network namespace `ns`; sockets it opens stay in that
/// namespace whichever thread uses them later.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(|| enter_then(ns, f)).join().unwrap())
}

pub fn enter_then<T>(ns: &str, f: impl FnOnce() -> T) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    // SAFETY: file is an open namespace file; setns changes only this thread's namespace.
    let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {ns}: {}", std::io::Error::last_os_error());
    f()
}
