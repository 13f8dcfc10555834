//! `ksight top` end to end: the interactive view runs in a tmux pane with real eBPF
//! capture, is driven with `send-keys` and read with `capture-pane` while the ground-truth
//! workload runs. Needs root and tmux (`apt-get install tmux`); fails, never skips,
//! without them. Every wait is bounded, and the tmux server is killed even on failure.

use ksight_integration_tests::*;
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long ksight may take to load its programs and draw.
const START: Duration = Duration::from_secs(30);
/// How long a key press or a new interval may take to show.
const SHOW: Duration = Duration::from_secs(15);

fn require_tmux() {
    let ok = Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test drives ksight top in tmux: install it (apt-get install tmux)"
    );
}

/// A tmux server of its own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `command` in a detached session of `width`×`height`; the pane stays after it
    /// exits (the shell sleeps), so its last screen and exit status can be read.
    fn start(tag: &str, width: u16, height: u16, command: &str) -> Self {
        require_tmux();
        let tmux = Tmux {
            socket: format!("ksight-test-{tag}-{}", std::process::id()),
        };
        let wrapped = format!("{command}; echo KSIGHT_TOP_EXIT=$?; sleep 600");
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            &wrapped,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keys as tmux names them ("Enter", "Escape", "C-c") or literal text.
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    fn literal(&self, text: &str) {
        self.run(&["send-keys", "-t", "top", "-l", text]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    fn alternate_screen(&self) -> bool {
        self.run(&["display-message", "-p", "-t", "top", "#{alternate_on}"])
            .trim()
            == "1"
    }

    fn resize(&self, width: u16, height: u16) {
        self.run(&[
            "resize-window",
            "-t",
            "top",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
        ]);
    }

    /// Polls the screen until `ok` holds; panics with the last screen after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// Runs the TCP workload again and again until dropped.
struct WorkloadLoop {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u32>>,
}

impl WorkloadLoop {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let workload = workload_bin();
        let handle = std::thread::spawn(move || {
            let mut runs = 0;
            while !flag.load(Ordering::SeqCst) {
                let ok = Command::new(&workload)
                    .args(["tcp", "4000", "6000"])
                    .status()
                    .is_ok_and(|s| s.success());
                assert!(ok, "ksight-workload tcp failed");
                runs += 1;
                std::thread::sleep(Duration::from_millis(400));
            }
            runs
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for WorkloadLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Long-lived processes with known pids, killed on drop.
struct Sleepers(Vec<Child>);

impl Sleepers {
    fn start(n: usize) -> Self {
        Self(
            (0..n)
                .map(|_| Command::new("sleep").arg("300").spawn().expect("sleep"))
                .collect(),
        )
    }

    /// Their pids, smallest first.
    fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.0.iter().map(Child::id).collect();
        pids.sort();
        pids
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Index of the screen line that is the table row of `pid` (its first column).
fn row_of(screen: &str, pid: u32) -> Option<usize> {
    let pid = pid.to_string();
    screen
        .lines()
        .position(|l| l.split_whitespace().next() == Some(pid.as_str()))
}

/// The table rows: lines between the column header (starting with `first_column`) and the
/// footer (the last non-empty line).
fn table_rows<'a>(screen: &'a str, first_column: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = screen.lines().collect();
    let Some(header) = lines
        .iter()
        .position(|l| l.trim_start().starts_with(first_column))
    else {
        return Vec::new();
    };
    let footer = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .unwrap_or(lines.len());
    lines[header + 1..footer]
        .iter()
        .copied()
        .filter(|l| !l.trim().is_empty())
        .collect()
}

fn top_command() -> String {
    format!("{} top --backend ebpf --delay 1", ksight_bin().display())
}

#[test]
fn top_shows_sorts_filters_and_quits_cleanly() {
    require_root();
    let tmux = Tmux::start("main", 160, 50, &top_command());
    tmux.wait_for("the processes view", START, |s| {
        s.contains("1 Processes") && s.contains("PID▼")
    });

    // Known processes and connections, made while ksight captures.
    let sleepers = Sleepers::start(2);
    let [low, high] = sleepers.pids()[..] else {
        unreachable!()
    };
    let _workload = WorkloadLoop::start();

    // `/` filters: only the sleeps, newest (highest pid) first by default. Every check is
    // part of what is waited for: a capture may catch a frame half drawn.
    tmux.literal("/sleep");
    tmux.keys(&["Enter"]);
    tmux.wait_for(
        "both sleeps, the highest pid first, nothing else",
        SHOW,
        |s| {
            let (low_row, high_row) = (row_of(s, low), row_of(s, high));
            low_row.is_some()
                && high_row < low_row
                && s.contains("filter \"sleep\"")
                && table_rows(s, "PID").iter().all(|r| r.contains("sleep"))
        },
    );

    // `r` reverses the sort: the order of the two rows flips.
    tmux.keys(&["r"]);
    tmux.wait_for("PID sorted ascending", SHOW, |s| {
        let (low_row, high_row) = (row_of(s, low), row_of(s, high));
        s.contains("PID▲") && low_row.is_some() && low_row < high_row
    });
    // `>` sorts by the next column.
    tmux.keys(&[">"]);
    tmux.wait_for("sort by PPID", SHOW, |s| s.contains("PPID▼"));

    // Another filter: the workload's processes (with their executable's path), and no
    // other row.
    tmux.keys(&["Escape"]);
    tmux.literal("/ksight-workload");
    tmux.keys(&["Enter"]);
    tmux.wait_for("only the workload's processes", SHOW, |s| {
        let rows = table_rows(s, "PID");
        s.contains("filter \"ksight-workload\"")
            && rows.iter().any(|r| r.contains("/ksight-workload"))
            && rows.iter().all(|r| r.contains("ksight-workload"))
            && row_of(s, low).is_none()
            && row_of(s, high).is_none()
    });

    // TCP view (same filter): the workload's connection with its exact byte counts
    // (4000 sent, 6000 received by the client).
    tmux.keys(&["3"]);
    tmux.wait_for("the workload's connection", SHOW, |s| {
        s.contains("REMOTE")
            && table_rows(s, "LOCAL").iter().any(|r| {
                r.contains("127.0.0.1:")
                    && r.contains("ksight-workload")
                    && r.contains("CLOSE")
                    && r.contains("3.9K   5.9K")
            })
    });

    // Containers: cgroups by owner; `o` groups a container's cgroups into one row.
    // (Escape alone: followed at once by a key it would read as Alt+key.)
    tmux.keys(&["Escape"]);
    tmux.wait_for("the filter cleared", SHOW, |s| !s.contains("filter \""));
    tmux.keys(&["2"]);
    tmux.wait_for("the containers view, by owner", SHOW, |s| {
        s.lines().any(|l| l.trim_end().ends_with("OWNER"))
            && s.contains("cgroups ")
            && !s.contains("grouped by")
    });
    tmux.keys(&["o"]);
    tmux.wait_for("the containers view grouped by owner", SHOW, |s| {
        s.contains("grouped by owner") && s.contains("owners ") && s.contains("OWNER")
    });
    tmux.keys(&["3"]);
    tmux.wait_for("the TCP view again", SHOW, |s| s.contains("REMOTE"));

    // 80×24 still shows a usable view; too small says so; back again.
    tmux.resize(80, 24);
    tmux.wait_for("the 80×24 layout", SHOW, |s| {
        s.contains("1 Processes")
            && s.contains("REMOTE")
            && s.lines().count() <= 24
            && s.lines().all(|l| l.chars().count() <= 80)
    });
    tmux.resize(40, 10);
    tmux.wait_for("the too-small message", SHOW, |s| {
        s.contains("Terminal too small")
    });
    tmux.resize(160, 50);
    tmux.wait_for("the full layout again", SHOW, |s| {
        s.contains("5 Health") && s.contains("LOCAL") && !s.contains("too small")
    });

    // The socket I/O views: UDP flows and DNS rows (their traffic is the host's own).
    tmux.keys(&["6"]);
    tmux.wait_for("the UDP view", SHOW, |s| {
        s.contains("DGR↑/s") && s.contains("flows ") && s.contains("sort TX/s")
    });
    tmux.keys(&["7"]);
    tmux.wait_for("the DNS view", SHOW, |s| {
        s.contains("QNAME") && s.contains("RCODE") && s.contains("queries/s")
    });

    // Health: the backend, every signal's status, the socket I/O counters.
    tmux.keys(&["5"]);
    tmux.wait_for("the health view", SHOW, |s| {
        s.contains("lost events")
            && s.contains("ebpf backend")
            && s.contains("sock:inet_sock_set_state")
            && s.contains("socket I/O")
            && s.contains("socket_io")
            && !s.contains("LOCAL")
    });

    // `q` quits with status 0 and gives the terminal back.
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("ksight to exit", SHOW, |s| s.contains("KSIGHT_TOP_EXIT="));
    assert!(screen.contains("KSIGHT_TOP_EXIT=0"), "{screen}");
    assert!(
        !screen.contains("1 Processes"),
        "the view is still shown:\n{screen}"
    );
    assert!(!tmux.alternate_screen(), "still on the alternate screen");
    drop(sleepers);
}

#[test]
fn ctrl_c_and_sigterm_restore_the_terminal() {
    require_root();
    let tmux = Tmux::start("ctrlc", 100, 30, &top_command());
    tmux.wait_for("the view", START, |s| s.contains("1 Processes"));
    tmux.keys(&["C-c"]);
    let screen = tmux.wait_for("ksight to exit", SHOW, |s| s.contains("KSIGHT_TOP_EXIT="));
    assert!(screen.contains("KSIGHT_TOP_EXIT=0"), "{screen}");
    assert!(!tmux.alternate_screen());
    drop(tmux);

    // SIGTERM from elsewhere: the wrapper shell records the pid it then becomes.
    let dir = TempDir::new("top-term");
    let pidfile = dir.path.join("pid");
    let command = format!(
        "sh -c 'echo $$ > {}; exec {}'",
        pidfile.display(),
        top_command()
    );
    let tmux = Tmux::start("term", 100, 30, &command);
    tmux.wait_for("the view", START, |s| s.contains("1 Processes"));
    let pid = std::fs::read_to_string(&pidfile).expect("pid file");
    let status = Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status()
        .unwrap();
    assert!(status.success());
    let screen = tmux.wait_for("ksight to exit", SHOW, |s| s.contains("KSIGHT_TOP_EXIT="));
    assert!(screen.contains("KSIGHT_TOP_EXIT=0"), "{screen}");
    assert!(!tmux.alternate_screen());
}

#[test]
fn attached_to_a_missing_agent_it_says_so_and_keeps_running() {
    let dir = TempDir::new("top-attach");
    let socket = dir.path.join("agent.sock");
    let command = format!(
        "{} top --connect {} --delay 0.5",
        ksight_bin().display(),
        socket.display()
    );
    let tmux = Tmux::start("attach", 100, 30, &command);
    let screen = tmux.wait_for("the reconnecting banner", START, |s| {
        s.contains("agent unreachable") && s.contains("attempt 2")
    });
    assert!(screen.contains(&socket.display().to_string()), "{screen}");
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("ksight to exit", SHOW, |s| s.contains("KSIGHT_TOP_EXIT="));
    assert!(screen.contains("KSIGHT_TOP_EXIT=0"), "{screen}");
}

/// A `ksight agent` with its socket (and nothing else) in a temporary directory.
struct Agent {
    dir: TempDir,
    child: Option<Child>,
}

impl Agent {
    fn start() -> Self {
        let dir = TempDir::new("top-agent");
        let config = dir.path.join("ksight.toml");
        std::fs::write(
            &config,
            format!(
                "backend = \"ebpf\"\n[prometheus]\nenabled = false\n[socket]\nenabled = true\npath = \"{}\"\n",
                dir.path.join("agent.sock").display()
            ),
        )
        .unwrap();
        let mut agent = Agent { dir, child: None };
        agent.restart();
        agent
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path.join("agent.sock")
    }

    /// (Re)starts the agent and waits until its socket exists.
    fn restart(&mut self) {
        self.stop();
        let child = Command::new(ksight_bin())
            .args(["agent", "--config"])
            .arg(self.dir.path.join("ksight.toml"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("ksight agent");
        self.child = Some(child);
        let deadline = Instant::now() + START;
        while !self.socket().exists() {
            assert!(Instant::now() < deadline, "the agent made no socket");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
            let _ = std::fs::remove_file(self.socket());
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn attached_it_follows_an_agent_through_a_restart() {
    require_root();
    let mut agent = Agent::start();
    let command = format!(
        "{} top --connect {} --delay 0.5",
        ksight_bin().display(),
        agent.socket().display()
    );
    let tmux = Tmux::start("follow", 160, 40, &command);
    tmux.wait_for("the view", START, |s| s.contains("1 Processes"));
    let _workload = WorkloadLoop::start();
    tmux.literal("/ksight-workload");
    tmux.keys(&["Enter", "3"]);
    tmux.wait_for("the workload's connection, through the agent", SHOW, |s| {
        table_rows(s, "LOCAL")
            .iter()
            .any(|r| r.contains("ksight-workload") && r.contains("3.9K   5.9K"))
    });
    agent.stop();
    tmux.wait_for("the reconnecting banner", SHOW, |s| {
        s.contains("agent unreachable") && s.contains("reconnect attempt")
    });
    agent.restart();
    tmux.wait_for("data again", SHOW, |s| {
        !s.contains("agent unreachable")
            && table_rows(s, "LOCAL")
                .iter()
                .any(|r| r.contains("ksight-workload") && r.contains("3.9K   5.9K"))
    });
    tmux.keys(&["q"]);
    let screen = tmux.wait_for("ksight to exit", SHOW, |s| s.contains("KSIGHT_TOP_EXIT="));
    assert!(screen.contains("KSIGHT_TOP_EXIT=0"), "{screen}");
}
