//! Running commands on an exec channel: `run_bash`, `run_expect`.
//!
//! Variables never travel in the command line or through sshd's `AcceptEnv`:
//! the channel's command is a fixed bootstrap, and the variables (as quoted
//! `export` lines) and the command text are sent on the channel's stdin,
//! ahead of the caller's own stdin. The bootstrap reads exactly those bytes
//! (bash's `read -N` reads pipes byte by byte, so it never over-reads),
//! evaluates the exports, changes to the home directory, and `exec`s
//! `bash -c` (or `bash -l -c`) with the command; what is left on stdin is the
//! command's stdin.

use std::collections::BTreeMap;

use russh::ChannelMsg;

use crate::connection::Connection;
use crate::error::{Error, Result};

/// Output cap per stream by default: stdout and stderr together stay under
/// the plugin contract's 192 MiB limit for a library call.
pub const DEFAULT_OUTPUT_CAP_BYTES: usize = 64 * 1024 * 1024;

/// Exit code of the bootstrap when bash is missing (as a shell reports it).
const BASH_MISSING_EXIT: i32 = 127;
const BASH_MISSING_MARK: &str = "doppel: bash: command not found";

/// One command to run with bash on the host.
#[derive(Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The bash script.
    pub command: String,
    /// Environment variables for it (names must be shell identifiers).
    pub env: BTreeMap<String, String>,
    /// Run `bash -l` (sources `/etc/profile`, `~/.bash_profile`...).
    pub login_shell: bool,
    /// Bytes to feed on the command's stdin (none: empty stdin).
    pub stdin: Option<Vec<u8>>,
    /// Keep at most this many bytes of stdout, and as many of stderr.
    pub output_cap_bytes: usize,
}

impl ExecRequest {
    /// A request for `command` with no variables, not a login shell.
    pub fn new(command: impl Into<String>) -> ExecRequest {
        ExecRequest {
            command: command.into(),
            env: BTreeMap::new(),
            login_shell: false,
            stdin: None,
            output_cap_bytes: DEFAULT_OUTPUT_CAP_BYTES,
        }
    }

    /// Adds a variable.
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    /// Sets all variables.
    pub fn vars(mut self, env: BTreeMap<String, String>) -> Self {
        self.env = env;
        self
    }

    /// Asks for a login shell.
    pub fn login_shell(mut self, yes: bool) -> Self {
        self.login_shell = yes;
        self
    }

    /// Sets stdin.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// Sets the output cap.
    pub fn output_cap(mut self, bytes: usize) -> Self {
        self.output_cap_bytes = bytes;
        self
    }
}

impl std::fmt::Debug for ExecRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Variable values are secrets: show names only.
        f.debug_struct("ExecRequest")
            .field("command", &self.command)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("login_shell", &self.login_shell)
            .field("stdin", &self.stdin.as_ref().map(|s| s.len()))
            .field("output_cap_bytes", &self.output_cap_bytes)
            .finish()
    }
}

/// What a command did. A non-zero exit is a result, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code; 128+N when killed by signal N (as bash reports it).
    pub exit_code: i32,
    /// Signal name when the command was killed by a signal.
    pub signal: Option<String>,
    /// Stdout, up to the cap.
    pub stdout: Vec<u8>,
    /// Stderr, up to the cap.
    pub stderr: Vec<u8>,
    /// True when stdout or stderr went over the cap and was cut.
    pub truncated: bool,
    /// Full stdout size, including what was cut.
    pub stdout_bytes: u64,
    /// Full stderr size, including what was cut.
    pub stderr_bytes: u64,
}

impl ExecOutput {
    /// Stdout as text (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (lossy).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// `'...'` quoting for sh: safe for any bytes but NUL.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The channel command: checks for bash, then reads variables and command
/// from stdin. Its arguments are byte counts and a flag, nothing secret.
fn bootstrap(env_len: usize, cmd_len: usize, login: bool) -> String {
    let script = concat!(
        "if [ \"$1\" -gt 0 ]; then LC_ALL=C IFS= read -r -N \"$1\" __doppel_env || exit 125; ",
        "eval \"$__doppel_env\"; unset __doppel_env; fi; ",
        "__doppel_cmd=; if [ \"$2\" -gt 0 ]; then LC_ALL=C IFS= read -r -N \"$2\" __doppel_cmd || exit 125; fi; ",
        "cd || exit 125; ",
        "if [ \"$3\" = 1 ]; then exec bash -l -c \"$__doppel_cmd\"; else exec bash -c \"$__doppel_cmd\"; fi",
    );
    format!(
        "command -v bash >/dev/null 2>&1 || {{ echo '{BASH_MISSING_MARK}' >&2; exit {BASH_MISSING_EXIT}; }}; \
         exec bash -c {} doppel {env_len} {cmd_len} {}",
        sh_quote(script),
        u8::from(login)
    )
}

impl Connection {
    /// Runs a bash command as the connection's user, in their home directory.
    pub async fn exec(&self, request: &ExecRequest) -> Result<ExecOutput> {
        let mut header = String::new();
        for (name, value) in &request.env {
            if !valid_name(name) {
                return Err(Error::InvalidVariableName {
                    target: (*self.target).clone(),
                    command: request.command.clone(),
                    name: name.clone(),
                });
            }
            if value.contains('\0') {
                return Err(Error::Exec {
                    target: (*self.target).clone(),
                    command: request.command.clone(),
                    reason: format!("the value of variable {name} contains a NUL byte"),
                });
            }
            header.push_str(&format!("export {name}={}\n", sh_quote(value)));
        }
        if request.command.contains('\0') {
            return Err(self.exec_error(&request.command, "the command contains a NUL byte".into()));
        }
        let mut input = Vec::with_capacity(header.len() + request.command.len());
        input.extend_from_slice(header.as_bytes());
        input.extend_from_slice(request.command.as_bytes());
        if let Some(stdin) = &request.stdin {
            input.extend_from_slice(stdin);
        }
        let channel_command = bootstrap(header.len(), request.command.len(), request.login_shell);
        tracing::debug!(target = %self.target, command = %request.command, vars = ?request.env.keys().collect::<Vec<_>>(), "run bash");
        let out = self
            .exec_raw(&channel_command, &input, request.output_cap_bytes)
            .await
            .map_err(|e| match e {
                Error::Exec { target, reason, .. } => Error::Exec {
                    target,
                    command: request.command.clone(),
                    reason,
                },
                other => other,
            })?;
        if out.exit_code == BASH_MISSING_EXIT && out.stderr_str().starts_with(BASH_MISSING_MARK) {
            return Err(Error::BashNotFound {
                target: (*self.target).clone(),
                command: request.command.clone(),
            });
        }
        Ok(out)
    }

    /// `run_bash` of the plugin contract.
    pub async fn run_bash(
        &self,
        command: &str,
        variables: &BTreeMap<String, String>,
        use_login_shell: bool,
    ) -> Result<ExecOutput> {
        self.exec(
            &ExecRequest::new(command)
                .vars(variables.clone())
                .login_shell(use_login_shell),
        )
        .await
    }

    /// `run_expect` of the plugin contract: runs an expect (Tcl) script with
    /// the variables in its environment (`$env(NAME)`).
    pub async fn run_expect(
        &self,
        script: &str,
        variables: &BTreeMap<String, String>,
    ) -> Result<ExecOutput> {
        // The script goes in a quoted here-document on fd 3, so expect's own
        // stdin stays free and nothing in the script is expanded.
        let mut delimiter = String::from("DOPPEL_EXPECT_EOF");
        while script.lines().any(|l| l == delimiter) {
            delimiter.push('_');
        }
        let mut command = format!("exec expect -f /dev/fd/3 3<<'{delimiter}'\n{script}");
        if !script.ends_with('\n') {
            command.push('\n');
        }
        command.push_str(&delimiter);
        command.push('\n');
        let mut out = self
            .exec(&ExecRequest::new(command).vars(variables.clone()))
            .await?;
        if out.exit_code == 127
            && out.stderr_str().contains("expect")
            && out.stderr_str().contains("not found")
        {
            out.stderr
                .extend_from_slice(b"doppel: expect is not installed on the host\n");
        }
        Ok(out)
    }

    /// Whether `bash` can be found on the host (with the user's login shell).
    pub async fn has_bash(&self) -> Result<bool> {
        let out = self
            .exec_raw("command -v bash >/dev/null 2>&1", &[], 1024)
            .await?;
        Ok(out.exit_code == 0)
    }

    fn exec_error(&self, command: &str, reason: String) -> Error {
        Error::Exec {
            target: (*self.target).clone(),
            command: command.to_string(),
            reason,
        }
    }

    /// Runs `command` as given (through the user's login shell, as sshd does
    /// for `ssh host command`), feeding `input` on stdin then EOF.
    pub(crate) async fn exec_raw(
        &self,
        command: &str,
        input: &[u8],
        cap: usize,
    ) -> Result<ExecOutput> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.exec_error(command, format!("cannot open a channel: {e}")))?;
        channel
            .exec(true, command.as_bytes())
            .await
            .map_err(|e| self.exec_error(command, format!("exec request failed: {e}")))?;
        let (mut reader, writer) = channel.split();
        let feed = async {
            if !input.is_empty() {
                // The command may exit without reading its stdin: ignore errors.
                let _ = writer.data_bytes(input.to_vec()).await;
            }
            let _ = writer.eof().await;
        };
        let collect = async {
            let mut out = ExecOutput {
                exit_code: -1,
                signal: None,
                stdout: Vec::new(),
                stderr: Vec::new(),
                truncated: false,
                stdout_bytes: 0,
                stderr_bytes: 0,
            };
            let mut exit_seen = false;
            let mut exec_refused = false;
            while let Some(msg) = reader.wait().await {
                match msg {
                    ChannelMsg::Data { data } => {
                        out.stdout_bytes += data.len() as u64;
                        out.truncated |= append_capped(&mut out.stdout, &data, cap);
                    }
                    ChannelMsg::ExtendedData { data, .. } => {
                        out.stderr_bytes += data.len() as u64;
                        out.truncated |= append_capped(&mut out.stderr, &data, cap);
                    }
                    ChannelMsg::ExitStatus { exit_status } => {
                        out.exit_code = exit_status as i32;
                        exit_seen = true;
                    }
                    ChannelMsg::ExitSignal { signal_name, .. } => {
                        let name = format!("{signal_name:?}");
                        out.exit_code = 128 + signal_number(&name);
                        out.signal = Some(name);
                        exit_seen = true;
                    }
                    ChannelMsg::Failure => exec_refused = true,
                    ChannelMsg::Close => break,
                    _ => {}
                }
            }
            (out, exit_seen, exec_refused)
        };
        let ((), (out, exit_seen, exec_refused)) = tokio::join!(feed, collect);
        if exec_refused {
            return Err(self.exec_error(command, "the server refused to run the command".into()));
        }
        if !exit_seen {
            let reason = if self.is_closed() {
                "the connection was lost before the command finished"
            } else {
                "the channel closed without an exit status"
            };
            return Err(self.exec_error(command, reason.into()));
        }
        Ok(out)
    }
}

/// Appends up to the cap; true if something was cut.
fn append_capped(buf: &mut Vec<u8>, data: &[u8], cap: usize) -> bool {
    let room = cap.saturating_sub(buf.len());
    if data.len() <= room {
        buf.extend_from_slice(data);
        false
    } else {
        buf.extend_from_slice(&data[..room]);
        true
    }
}

fn signal_number(name: &str) -> i32 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_identifiers() {
        assert!(valid_name("A_1"));
        assert!(valid_name("_x"));
        assert!(!valid_name("1A"));
        assert!(!valid_name("A-B"));
        assert!(!valid_name(""));
        assert!(!valid_name("A;rm"));
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn cap_reports_truncation() {
        let mut b = Vec::new();
        assert!(!append_capped(&mut b, b"abc", 4));
        assert!(append_capped(&mut b, b"def", 4));
        assert_eq!(b, b"abcd");
        assert!(append_capped(&mut b, b"g", 4));
    }

    #[test]
    fn bootstrap_carries_no_secrets() {
        let b = bootstrap(10, 20, true);
        assert!(b.ends_with("doppel 10 20 1"));
    }
}
