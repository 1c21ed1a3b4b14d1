//! The lab's background processes: started inside a namespace in their own process group
//! (so the Ctrl-C meant for `keepstate lab` does not reach them before the orderly
//! teardown), recorded by pid in the state directory, and stopped by pid.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Starts `argv` inside namespace `ns` with stdout and stderr going to `log`.
/// `ip netns exec` execs the command, so the child's pid is the command's own.
pub fn spawn_in(ns: &str, argv: &[String], log: &Path) -> Result<Child> {
    let out = fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("open {}", log.display()))?;
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {} in {ns}", argv.join(" ")))
}

/// Appends `pid` to the state directory's `<name>.pid`.
pub fn record(state: &Path, name: &str, pid: u32) -> Result<()> {
    let path = state.join(format!("{name}.pid"));
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    writeln!(f, "{pid}").with_context(|| format!("write {}", path.display()))
}

pub fn recorded(state: &Path, name: &str) -> Vec<i32> {
    fs::read_to_string(state.join(format!("{name}.pid")))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .filter(|&p| p > 0)
        .collect()
}

/// Whether `pid` runs inside one of the lab's namespaces: a recorded pid is only signalled
/// while it still is ours, not after it exited and the number went to someone else.
pub fn in_namespaces(pid: i32, prefix: &str) -> bool {
    let Ok(link) = fs::read_link(format!("/proc/{pid}/ns/net")) else {
        return false;
    };
    let link = link.display().to_string();
    super::topo::existing_namespaces(prefix).iter().any(|ns| {
        fs::metadata(Path::new("/run/netns").join(ns))
            .map(|m| link == format!("net:[{}]", m.ino()))
            .unwrap_or(false)
    })
}

/// Running, as opposed to gone or a zombie waiting to be reaped.
pub fn alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold anything.
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .and_then(|rest| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; a pid that is gone gives ESRCH.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// SIGTERM, up to `grace` to exit, then SIGKILL.
pub fn stop(pids: &[i32], grace: Duration) -> Result<()> {
    let pids: Vec<i32> = pids.iter().copied().filter(|&p| p > 1).collect();
    for &p in &pids {
        signal(p, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stubborn: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    for &p in &stubborn {
        signal(p, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while stubborn.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<String> = stubborn
        .iter()
        .filter(|&&p| alive(p))
        .map(ToString::to_string)
        .collect();
    if !left.is_empty() {
        bail!("processes {} did not exit after SIGKILL", left.join(" "));
    }
    Ok(())
}

/// Waits for `file` to appear, failing early if `child` exits.
pub fn wait_for_file(child: &mut Child, file: &Path, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if file.exists() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("exited ({status}) before it was ready");
        }
        if Instant::now() > deadline {
            bail!("not ready after {} s", limit.as_secs());
        }
        super::check_interrupted()?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `lines` lines of a log, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    let shown = all.get(from..).unwrap_or_default().join("\n");
    if shown.is_empty() {
        format!("({} is empty)", path.display())
    } else {
        shown
    }
}
