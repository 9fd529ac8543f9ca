//! sd_notify: tells systemd (Type=notify) that the daemon is ready, what it
//! is doing, and that it is stopping, by sending `KEY=VALUE` lines as one
//! datagram to the unix socket named by `$NOTIFY_SOCKET` (a path, or an
//! abstract name when it starts with `@`). Without that variable it does
//! nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (e.g. "READY=1\nSTATUS=…"); errors are logged, never fatal.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&target.to_string_lossy(), state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

fn send(target: &str, state: &str) -> std::io::Result<()> {
    let addr = match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(target)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_arrives_as_one_datagram() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        send(&path.display().to_string(), "READY=1\nSTATUS=idle").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=idle");
    }
}
