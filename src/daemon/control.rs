//! The control socket (`STATE_DIR/daemon.sock`): how the CLI asks a running
//! daemon to start an execution, so it runs under the daemon (and its
//! config) rather than in a child of the shell. One JSON line each way per
//! connection. When nothing listens there, the CLI runs executions itself
//! under the same guards.
//!
//! The socket starts tasks as the daemon's user, so it is private twice
//! over: made 0600 before it has its name (bound in a fresh 0700 directory,
//! then renamed into place: no moment at which the umask decides), and
//! every connection's peer uid, from `SO_PEERCRED`, must be root or the
//! daemon's own; anyone else is refused in words and logged.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Start {
        task: String,
        overrides: Vec<String>,
        /// The caller's config file (absolute; none: the default one): the
        /// daemon refuses to run a task of another file than its own.
        #[serde(default)]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error is the user's to fix (exit code 2).
    #[serde(default)]
    pub usage: bool,
    #[serde(default)]
    pub pid: u32,
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("daemon.sock")
}

/// Sends `req` to the daemon; None when no daemon listens (no socket, or a
/// stale one). A socket this user may not open is an error naming it.
pub async fn ask(state_dir: &Path, req: &Request) -> Option<std::io::Result<Response>> {
    let path = socket_path(state_dir);
    let mut stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Some(Err(std::io::Error::new(
                e.kind(),
                format!(
                    "the daemon's control socket {} is not open to this user: {e}",
                    path.display()
                ),
            )))
        }
        Err(_) => return None,
    };
    Some(exchange(&mut stream, req).await)
}

/// Binds the control socket at [`socket_path`] with mode 0600 from the
/// start: bound in a new 0700 directory beside it, narrowed, then renamed
/// over the old name.
pub fn bind(state_dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let nest = state_dir.join(format!(".sock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&nest);
    crate::shared::private::create_dir(&nest)?;
    let inner = nest.join("daemon.sock");
    let bound = tokio::net::UnixListener::bind(&inner).and_then(|l| {
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inner, socket_path(state_dir))?;
        Ok(l)
    });
    let _ = std::fs::remove_dir_all(&nest);
    bound
}

/// Whether the peer of `stream` may talk to the daemon: root, or the
/// daemon's own user. `Err` says who was refused, for the answer and log.
pub fn peer_allowed(stream: &UnixStream) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let own = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(c) if c.uid() == 0 || c.uid() == own => Ok(()),
        Ok(c) => Err(format!(
            "uid {} (pid {}) may not use this daemon's control socket: only root and uid {own} may",
            c.uid(),
            c.pid()
                .map_or_else(|| "unknown".to_string(), |p| p.to_string())
        )),
        Err(e) => Err(format!("the peer's credentials cannot be read: {e}")),
    }
}

async fn exchange(stream: &mut UnixStream, req: &Request) -> std::io::Result<Response> {
    let mut line = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).await?;
    serde_json::from_str(&answer)
        .map_err(|e| std::io::Error::other(format!("the daemon's answer `{}`: {e}", answer.trim())))
}

/// Reads one request from a connection and writes `answer(request)` back.
pub async fn serve_one<F, Fut>(stream: UnixStream, answer: F)
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let refused = peer_allowed(&stream);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let resp = match (refused, serde_json::from_str::<Request>(&line)) {
        (Err(who), _) => {
            tracing::warn!("control socket: refused {who}");
            Response {
                error: Some(format!("refused: {who}")),
                usage: true,
                ..Default::default()
            }
        }
        (Ok(()), Ok(req)) => answer(req).await,
        (Ok(()), Err(e)) => Response {
            error: Some(format!("bad request: {e}")),
            usage: true,
            ..Default::default()
        },
    };
    if let Ok(mut out) = serde_json::to_vec(&resp) {
        out.push(b'\n');
        let _ = write.write_all(&out).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_gets_its_answer_and_no_daemon_is_none() {
        let d = tempfile::tempdir().unwrap();
        assert!(ask(d.path(), &Request::Ping).await.is_none());
        let listener = tokio::net::UnixListener::bind(socket_path(d.path())).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            serve_one(s, |req| async move {
                match req {
                    Request::Start { task, .. } => Response {
                        execution_id: Some(format!("exec-for-{task}")),
                        ..Default::default()
                    },
                    Request::Ping => Response::default(),
                }
            })
            .await
        });
        let r = ask(
            d.path(),
            &Request::Start {
                task: "t".into(),
                overrides: vec![],
                config: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(r.execution_id.as_deref(), Some("exec-for-t"));
        server.await.unwrap();
    }
}
