//! One CPython worker process running one plugin version, spoken to with
//! the line protocol of `PROTOCOL.md`.
//!
//! A worker serves one call at a time. A call that overruns its deadline, or
//! a worker that exits mid-call, kills the whole process group: the next call
//! starts a fresh worker (see `host.rs`).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use doppel_model::PluginLogLevel;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::time::{timeout_at, Instant};

use crate::error::InvokeError;
use crate::libs::{LibraryCall, LibraryHandler};
use crate::logs::{LogContext, PluginLog};
use crate::operations::Operation;
use crate::sandbox::{worker_command, Cgroup, Prepared, Sandbox, WorkerLaunch};

/// How many lines of a worker's stderr are kept for error messages.
const STDERR_TAIL: usize = 20;

/// The longest protocol line a worker may send: the contract's 4 MiB limit
/// on an operation's input and output plus room for the JSON envelope. A
/// longer line is never buffered: the worker is killed once it passes this.
pub const MAX_PROTOCOL_LINE: usize = 8 << 20;
/// Longer stderr lines are cut, the rest counted and dropped.
pub const MAX_STDERR_LINE: usize = 16 << 10;
/// How much of a worker's stderr one call (or the load) may write into the
/// plugin's log; the rest is read and dropped after one marker line.
pub const STDERR_PER_CALL: u64 = 1 << 20;
/// Longer plugin log messages are cut with a marker (the worker cuts them
/// too; this holds whatever it sends).
pub const MAX_LOG_MESSAGE: usize = 64 << 10;

/// Says how much of a text was cut: appended to what is kept.
fn truncated_marker(dropped: u64) -> String {
    format!("… [truncated {dropped} bytes]")
}

/// `text`, cut to at most `max` bytes (at a character boundary) with a marker.
pub(crate) fn cap_text(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}{}",
        &text[..end],
        truncated_marker((text.len() - end) as u64)
    )
    .into()
}

/// One line from a [`CappedLines`].
#[derive(Debug, PartialEq)]
pub(crate) enum Line {
    Full(Vec<u8>),
    /// The first `max` bytes of a longer line, and how many were dropped.
    Cut {
        head: Vec<u8>,
        dropped: u64,
    },
    /// A line passed `max` and cutting was not asked for: what was read of
    /// it is gone, the stream is mid-line.
    TooLong,
    End,
}

/// Newline-separated lines that never take more than `max` bytes of memory
/// however long a line is. Cancel-safe: what a dropped `next` read stays in
/// `buf`, so it can run under a timeout.
pub(crate) struct CappedLines<R> {
    inner: BufReader<R>,
    buf: Vec<u8>,
    dropped: u64,
    max: usize,
}

impl<R: tokio::io::AsyncRead + Unpin> CappedLines<R> {
    pub(crate) fn new(reader: R, max: usize) -> Self {
        CappedLines {
            inner: BufReader::with_capacity(64 << 10, reader),
            buf: Vec::new(),
            dropped: 0,
            max,
        }
    }

    /// The next line without its newline; `cut` says whether a line longer
    /// than `max` is cut ([`Line::Cut`]) or refused ([`Line::TooLong`]).
    pub(crate) async fn next(&mut self, cut: bool) -> std::io::Result<Line> {
        loop {
            let avail = self.inner.fill_buf().await?;
            if avail.is_empty() {
                if self.buf.is_empty() && self.dropped == 0 {
                    return Ok(Line::End);
                }
                return Ok(self.take());
            }
            let newline = memchr::memchr(b'\n', avail);
            let chunk = &avail[..newline.unwrap_or(avail.len())];
            let used = newline.map_or(avail.len(), |i| i + 1);
            let room = self.max.saturating_sub(self.buf.len());
            if chunk.len() > room {
                if !cut {
                    self.inner.consume(used);
                    self.buf = Vec::new();
                    return Ok(Line::TooLong);
                }
                self.buf.extend_from_slice(&chunk[..room]);
                self.dropped += (chunk.len() - room) as u64;
            } else {
                self.buf.extend_from_slice(chunk);
            }
            self.inner.consume(used);
            if newline.is_some() {
                return Ok(self.take());
            }
        }
    }

    fn take(&mut self) -> Line {
        let head = std::mem::take(&mut self.buf);
        match std::mem::take(&mut self.dropped) {
            0 => Line::Full(head),
            dropped => Line::Cut { head, dropped },
        }
    }
}

/// How much stderr the current call has written to the plugin log.
#[derive(Default)]
struct StderrBudget {
    used: std::sync::atomic::AtomicU64,
    exhausted: std::sync::atomic::AtomicBool,
}

impl StderrBudget {
    fn reset(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.used.store(0, Relaxed);
        self.exhausted.store(false, Relaxed);
    }
}

/// Everything needed to start a worker.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub plugin_id: String,
    pub python: PathBuf,
    pub script: PathBuf,
    /// The extracted `sourceCode`.
    pub root: PathBuf,
    /// The plugin's private writable directory (HOME and TMPDIR).
    pub scratch: PathBuf,
    pub entry_point: String,
    pub start_deadline: Duration,
    /// None runs the worker unconfined (`--plugin-sandbox off`).
    pub sandbox: Option<Arc<Sandbox>>,
}

/// Receives one plugin log line.
pub type LogLineFn = dyn Fn(PluginLogLevel, &str) + Send + Sync;

/// Where a call's plugin log lines go besides the plugin's own log (a job's events).
#[derive(Clone)]
pub struct LogSink(pub Arc<LogLineFn>);

impl std::fmt::Debug for LogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogSink")
    }
}

/// Who is calling, for logs and for library callbacks.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Also receives every line the plugin logs during the call.
    pub log_sink: Option<LogSink>,
    pub job: Option<String>,
    /// The dataset directory a `run_sync` of this call fills (a direct
    /// dSource's sync); the contract's request has no target of its own.
    pub sync_target: Option<PathBuf>,
    /// The call is a migration of a plugin upgrade, when the contract
    /// allows `upgrade_password` and no other library call.
    pub upgrading: bool,
}

pub struct Worker {
    child: Child,
    pid: u32,
    stdin: ChildStdin,
    stdout: CappedLines<ChildStdout>,
    stderr_budget: Arc<StderrBudget>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    log: Arc<PluginLog>,
    next_id: u64,
    sandboxed: bool,
    /// Last, so the process is killed before its cgroup is emptied and removed.
    cgroup: Option<Cgroup>,
}

impl Worker {
    /// Starts a worker and waits for it to load the plugin.
    pub async fn start(spec: &WorkerSpec, log: Arc<PluginLog>) -> Result<Worker, InvokeError> {
        let launch = WorkerLaunch {
            plugin_id: &spec.plugin_id,
            python: &spec.python,
            script: &spec.script,
            root: &spec.root,
            scratch: &spec.scratch,
            entry_point: &spec.entry_point,
        };
        let Prepared {
            mut cmd,
            cgroup,
            inherited,
        } = worker_command(&launch, spec.sandbox.as_deref())
            .map_err(|e| InvokeError::Sandbox(e.to_string()))?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            // Its own process group, so a kill also reaches what the plugin
            // spawned (unconfined; confined, its PID namespace does that).
            .process_group(0);
        let program = cmd.as_std().get_program().to_owned();
        let mut child = cmd
            .spawn()
            .map_err(|e| InvokeError::Start(format!("{}: {e}", Path::new(&program).display())))?;
        drop(inherited);
        let pid = child.id().unwrap_or(0);
        let stdin = child.stdin.take().expect("piped");
        let stdout = CappedLines::new(child.stdout.take().expect("piped"), MAX_PROTOCOL_LINE);
        let stderr_budget = Arc::new(StderrBudget::default());
        let stderr = child.stderr.take().expect("piped");
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        {
            let tail = stderr_tail.clone();
            let log = log.clone();
            let budget = stderr_budget.clone();
            tokio::spawn(async move {
                use std::sync::atomic::Ordering::Relaxed;
                let mut lines = CappedLines::new(stderr, MAX_STDERR_LINE);
                let ctx = LogContext {
                    worker_pid: Some(pid),
                    job: None,
                    operation: Some("stderr".into()),
                };
                // Read to the end whatever the budget says: a worker blocked
                // on a full pipe would hang its call.
                loop {
                    let line = match lines.next(true).await {
                        Ok(Line::Full(b)) => String::from_utf8_lossy(&b).into_owned(),
                        Ok(Line::Cut { head, dropped }) => format!(
                            "{}{}",
                            String::from_utf8_lossy(&head),
                            truncated_marker(dropped)
                        ),
                        Ok(Line::TooLong) => continue,
                        Ok(Line::End) | Err(_) => break,
                    };
                    let size = line.len() as u64 + 1;
                    if budget.used.fetch_add(size, Relaxed) + size <= STDERR_PER_CALL {
                        log.write(PluginLogLevel::Debug, &ctx, &line);
                    } else if !budget.exhausted.swap(true, Relaxed) {
                        log.write(
                            PluginLogLevel::Debug,
                            &ctx,
                            &format!(
                                "[stderr limit of {} MiB for this call reached: the rest of its stderr is dropped]",
                                STDERR_PER_CALL >> 20
                            ),
                        );
                    }
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    t.push_back(line);
                    if t.len() > STDERR_TAIL {
                        t.pop_front();
                    }
                }
            });
        }
        let mut worker = Worker {
            child,
            pid,
            stdin,
            stdout,
            stderr_budget,
            stderr_tail,
            log,
            next_id: 0,
            sandboxed: spec.sandbox.is_some(),
            cgroup,
        };
        let deadline = Instant::now() + spec.start_deadline;
        let ctx = LogContext {
            worker_pid: Some(pid),
            job: None,
            operation: Some("load".into()),
        };
        loop {
            let msg = match worker.read(deadline).await {
                Ok(m) => m,
                Err(ReadError::Timeout) => {
                    worker.kill().await;
                    return Err(InvokeError::Start(format!(
                        "the worker did not load the plugin within {}s",
                        spec.start_deadline.as_secs()
                    )));
                }
                Err(ReadError::Closed) => {
                    let status = worker.reap().await;
                    return Err(InvokeError::Start(format!(
                        "the worker exited while loading ({status}).{}",
                        worker.stderr_text()
                    )));
                }
                Err(ReadError::Garbled(e)) => {
                    worker.kill().await;
                    return Err(InvokeError::Protocol(e));
                }
                Err(ReadError::TooLong) => {
                    worker.kill().await;
                    return Err(InvokeError::OutputLimit {
                        operation: "loading".into(),
                        limit: MAX_PROTOCOL_LINE >> 20,
                    });
                }
            };
            match msg.get("type").and_then(|t| t.as_str()) {
                Some("ready") => {
                    worker
                        .log
                        .write(PluginLogLevel::Debug, &ctx, &format!("worker ready: {msg}"));
                    return Ok(worker);
                }
                Some("load_error") => {
                    let e = msg.get("error").cloned().unwrap_or(Value::Null);
                    let s = |k: &str| {
                        e.get(k)
                            .and_then(|x| x.as_str())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let err = InvokeError::Load {
                        exception_type: s("type"),
                        message: s("message"),
                        call_stack: s("call_stack"),
                    };
                    worker.log.write(
                        PluginLogLevel::Error,
                        &ctx,
                        &format!("{err}\n{}", s("call_stack")),
                    );
                    worker.reap().await;
                    return Err(err);
                }
                Some("log") => {
                    worker.log_message(&msg, &ctx);
                }
                _ => {
                    worker.kill().await;
                    return Err(InvokeError::Protocol(format!(
                        "unexpected message while loading: {msg}"
                    )));
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The worker's cgroup directories (one per hierarchy), if it has any.
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        self.cgroup.as_ref().map(Cgroup::dirs).unwrap_or_default()
    }

    /// Calls one operation. On `Deadline`, `WorkerDied` and `Protocol` errors
    /// the worker is dead and must be dropped.
    pub async fn invoke(
        &mut self,
        op: &Operation,
        request: Value,
        call: &CallContext,
        deadline: Duration,
        libs: &dyn LibraryHandler,
    ) -> Result<Value, InvokeError> {
        self.next_id += 1;
        let id = self.next_id;
        let name = op.name();
        let ctx = LogContext {
            worker_pid: Some(self.pid),
            job: call.job.clone(),
            operation: Some(name.clone()),
        };
        let msg = json!({
            "type": "invoke", "id": id, "group": op.group, "method": op.method,
            "request_type": op.request_type, "request": request,
        });
        let until = Instant::now() + deadline;
        self.stderr_budget.reset();
        if let Err(e) = self.send(&msg).await {
            let status = self.reap().await;
            return Err(InvokeError::WorkerDied {
                operation: name,
                status: format!("{status}; writing the request failed: {e}"),
                stderr_tail: self.stderr_text(),
            });
        }
        loop {
            let msg = match self.read(until).await {
                Ok(m) => m,
                Err(ReadError::Timeout) => {
                    self.kill().await;
                    let err = InvokeError::Deadline {
                        operation: name,
                        deadline,
                    };
                    self.log
                        .write(PluginLogLevel::Error, &ctx, &err.to_string());
                    return Err(err);
                }
                Err(ReadError::Closed) => {
                    let status = self.reap().await;
                    let err = InvokeError::WorkerDied {
                        operation: name,
                        status,
                        stderr_tail: self.stderr_text(),
                    };
                    self.log
                        .write(PluginLogLevel::Error, &ctx, &err.to_string());
                    return Err(err);
                }
                Err(ReadError::Garbled(e)) => {
                    self.kill().await;
                    return Err(InvokeError::Protocol(e));
                }
                Err(ReadError::TooLong) => {
                    self.kill().await;
                    let err = InvokeError::OutputLimit {
                        operation: name,
                        limit: MAX_PROTOCOL_LINE >> 20,
                    };
                    self.log
                        .write(PluginLogLevel::Error, &ctx, &err.to_string());
                    return Err(err);
                }
            };
            match msg.get("type").and_then(|t| t.as_str()) {
                Some("log") => {
                    let (level, text) = self.log_message(&msg, &ctx);
                    if let Some(sink) = &call.log_sink {
                        (sink.0)(level, &text);
                    }
                }
                Some("lib_call") => {
                    let call_id = msg.get("call").cloned().unwrap_or(Value::Null);
                    let method = msg
                        .get("method")
                        .and_then(|m| m.as_str())
                        .unwrap_or_default()
                        .to_owned();
                    let request = msg.get("request").cloned().unwrap_or(Value::Null);
                    self.log.write(
                        PluginLogLevel::Debug,
                        &ctx,
                        &format!("library call {method}"),
                    );
                    let response = libs
                        .call(LibraryCall {
                            method: &method,
                            request,
                            job: call.job.as_deref(),
                            sync_target: call.sync_target.as_deref(),
                            upgrading: call.upgrading,
                        })
                        .await;
                    let reply = json!({"type": "lib_reply", "call": call_id, "response": response});
                    if let Err(e) = self.send(&reply).await {
                        let status = self.reap().await;
                        return Err(InvokeError::WorkerDied {
                            operation: name,
                            status: format!("{status}; answering {method} failed: {e}"),
                            stderr_tail: self.stderr_text(),
                        });
                    }
                }
                Some("result") if msg.get("id").and_then(|i| i.as_u64()) == Some(id) => {
                    let response = msg.get("response").cloned().unwrap_or(Value::Null);
                    if let Some(v) = response.get("return_value") {
                        return Ok(v.clone());
                    }
                    if let Some(e) = response.get("error") {
                        let err = InvokeError::from_plugin_error(e);
                        let detail = err.detail().unwrap_or_default();
                        self.log
                            .write(PluginLogLevel::Error, &ctx, &format!("{err}\n{detail}"));
                        return Err(err);
                    }
                    return Err(InvokeError::Protocol(format!(
                        "result without return_value or error: {msg}"
                    )));
                }
                _ => {
                    self.kill().await;
                    return Err(InvokeError::Protocol(format!(
                        "unexpected message during {name}: {msg}"
                    )));
                }
            }
        }
    }

    /// Asks the worker to exit, killing it if it does not within a second.
    pub async fn shutdown(mut self) {
        let _ = self.send(&json!({"type": "shutdown"})).await;
        if tokio::time::timeout(Duration::from_secs(1), self.child.wait())
            .await
            .is_err()
        {
            self.kill().await;
        }
    }

    fn log_message(&self, msg: &Value, ctx: &LogContext) -> (PluginLogLevel, String) {
        let level = match msg.get("level").and_then(|l| l.as_str()) {
            Some("DEBUG") => PluginLogLevel::Debug,
            Some("INFO") => PluginLogLevel::Info,
            _ => PluginLogLevel::Error,
        };
        let text = msg
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or_default();
        let text = cap_text(text, MAX_LOG_MESSAGE);
        self.log.write(level, ctx, &text);
        (level, text.into_owned())
    }

    async fn send(&mut self, msg: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(msg).expect("json values serialise");
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await
    }

    async fn read(&mut self, until: Instant) -> Result<Value, ReadError> {
        match timeout_at(until, self.stdout.next(false)).await {
            Err(_) => Err(ReadError::Timeout),
            Ok(Err(_)) | Ok(Ok(Line::End)) => Err(ReadError::Closed),
            Ok(Ok(Line::TooLong | Line::Cut { .. })) => Err(ReadError::TooLong),
            Ok(Ok(Line::Full(line))) => serde_json::from_slice(&line).map_err(|e| {
                let line = String::from_utf8_lossy(&line);
                ReadError::Garbled(format!(
                    "worker sent a line that is not JSON ({e}): {line:.200}"
                ))
            }),
        }
    }

    async fn kill(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with a negative pid signals the worker's own
            // process group, created by `process_group(0)` at spawn.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
        let _ = self.child.kill().await;
    }

    /// Waits briefly for the exited worker and describes how it ended.
    async fn reap(&mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => {
                use std::os::unix::process::ExitStatusExt;
                match (status.code(), status.signal()) {
                    // bwrap reports its child's death by signal N as exit
                    // status 128+N, as shells do.
                    (Some(c), _) if self.sandboxed && (129..=192).contains(&c) => {
                        format!("killed by signal {}", c - 128)
                    }
                    (Some(c), _) => format!("exit status {c}"),
                    (None, Some(s)) => format!("killed by signal {s}"),
                    _ => status.to_string(),
                }
            }
            _ => {
                self.kill().await;
                "stopped answering; killed".into()
            }
        }
    }

    fn stderr_text(&self) -> String {
        let t = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

enum ReadError {
    Timeout,
    Closed,
    Garbled(String),
    /// A line passed [`MAX_PROTOCOL_LINE`].
    TooLong,
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize, cut: bool) -> Vec<Line> {
        let mut r = CappedLines::new(input, max);
        let mut out = Vec::new();
        loop {
            let l = r.next(cut).await.unwrap();
            let end = l == Line::End;
            out.push(l);
            if end || out.len() > 10 {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn lines_up_to_the_limit_pass_whole() {
        assert_eq!(
            lines(b"abcd\n\nxy", 4, false).await,
            [
                Line::Full(b"abcd".to_vec()),
                Line::Full(Vec::new()),
                Line::Full(b"xy".to_vec()),
                Line::End
            ]
        );
    }

    #[tokio::test]
    async fn a_longer_line_is_refused_or_cut_and_counted() {
        let big = [vec![b'x'; 300_000], b"\nok\n".to_vec()].concat();
        assert_eq!(lines(&big, 1000, false).await[0], Line::TooLong);
        assert_eq!(
            lines(&big, 1000, true).await,
            [
                Line::Cut {
                    head: vec![b'x'; 1000],
                    dropped: 299_000
                },
                Line::Full(b"ok".to_vec()),
                Line::End
            ]
        );
    }

    #[test]
    fn text_is_cut_at_a_character_boundary_with_a_marker() {
        assert_eq!(cap_text("short", 10), "short");
        assert_eq!(cap_text("ééé", 3), "é… [truncated 4 bytes]");
    }
}
