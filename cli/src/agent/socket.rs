//! The unix socket serving snapshots to `ksight top --connect` (protocol:
//! `ksight_export::protocol`). Root only: the socket is created with mode 0600.
//! Each client gets its own short-lived thread with I/O timeouts, and at most
//! `MAX_CLIENTS` at once: clients that send garbage, stall or vanish only lose their own
//! connection.

use super::Shared;
use super::log::{debug, warning};
use anyhow::{Context, Result, bail};
use ksight_export::protocol;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

const MAX_CLIENTS: usize = 8;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

pub struct SocketServer {
    pub path: PathBuf,
    inode: u64,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Removes a socket left by an agent that died; refuses to take over a live one.
fn clear_stale(path: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        bail!("{} exists and is not a socket", path.display());
    }
    if UnixStream::connect(path).is_ok() {
        bail!(
            "another ksight agent is serving snapshots on {}; stop it or change [socket] path",
            path.display()
        );
    }
    std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))
}

impl SocketServer {
    pub fn start(path: &Path, shared: Arc<Shared>) -> Result<Self> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        clear_stale(path)?;
        // The socket is born 0600: no window in which others could connect.
        // SAFETY: umask has no preconditions; restored right after.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let listener =
            bound.with_context(|| format!("cannot create the socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let inode = std::fs::metadata(path)?.ino();
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("ksight-socket".into())
                .spawn(move || accept_loop(&listener, &shared, &stop))?
        };
        Ok(Self {
            path: path.to_path_buf(),
            inode,
            stop,
            thread: Some(thread),
        })
    }
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>, stop: &AtomicBool) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, 200) };
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                warning!("accepting a socket client: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_CLIENTS {
            debug!("socket: {MAX_CLIENTS} clients already; refusing one");
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (shared, active) = (shared.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("ksight-client".into())
            .spawn(move || {
                serve_client(stream, &shared);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            warning!("socket: cannot start a client thread");
        }
    }
}

fn serve_client(mut stream: UnixStream, shared: &Shared) {
    let setup = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(CLIENT_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(CLIENT_TIMEOUT)));
    if let Err(e) = setup {
        debug!("socket client: {e}");
        return;
    }
    let snapshot = shared.published().agent;
    if let Err(e) = protocol::serve(&mut stream, &snapshot) {
        debug!("socket client dropped: {e}");
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Only our own socket: a successor may already have replaced it.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
