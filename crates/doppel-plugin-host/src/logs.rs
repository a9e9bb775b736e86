//! Per-plugin log streams (contract §6): `debug.log` holds everything,
//! `info.log` INFO and ERROR, `error.log` ERROR only. Each line carries the
//! context it came from: `[Worker-<pid>|JOB-<id>|<operation>]`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use doppel_model::PluginLogLevel;

/// Where a log line came from.
#[derive(Debug, Clone, Default)]
pub struct LogContext {
    pub worker_pid: Option<u32>,
    pub job: Option<String>,
    pub operation: Option<String>,
}

impl LogContext {
    fn prefix(&self) -> String {
        let mut parts = Vec::new();
        if let Some(pid) = self.worker_pid {
            parts.push(format!("Worker-{pid}"));
        }
        if let Some(job) = &self.job {
            parts.push(job.clone());
        }
        if let Some(op) = &self.operation {
            parts.push(op.clone());
        }
        if parts.is_empty() {
            parts.push("engine".into());
        }
        format!("[{}]", parts.join("|"))
    }
}

/// The three log files of one plugin. Safe to share between workers.
#[derive(Debug)]
pub struct PluginLog {
    dir: PathBuf,
    files: Mutex<Option<[File; 3]>>,
}

impl PluginLog {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PluginLog {
            dir: dir.into(),
            files: Mutex::new(None),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open(&self) -> std::io::Result<[File; 3]> {
        // Plugin logs can hold anything a plugin prints: its user's only.
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)?;
        }
        let f = |name: &str| {
            use std::os::unix::fs::OpenOptionsExt;
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(self.dir.join(name))
        };
        Ok([f("debug.log")?, f("info.log")?, f("error.log")?])
    }

    /// Appends one entry. Logging must never fail an operation, so I/O
    /// errors are reported to the engine's own log and otherwise dropped.
    pub fn write(&self, level: PluginLogLevel, ctx: &LogContext, message: &str) {
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let label = match level {
            PluginLogLevel::Debug => "DEBUG",
            PluginLogLevel::Info => "INFO",
            PluginLogLevel::Error => "ERROR",
        };
        let mut text = String::new();
        let prefix = ctx.prefix();
        for line in message.lines() {
            text.push_str(&format!("{now} {label} {prefix} {line}\n"));
        }
        if text.is_empty() {
            text = format!("{now} {label} {prefix}\n");
        }
        let mut guard = self.files.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            match self.open() {
                Ok(files) => *guard = Some(files),
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot open plugin log");
                    return;
                }
            }
        }
        let files = guard.as_mut().expect("opened above");
        let targets: &[usize] = match level {
            PluginLogLevel::Debug => &[0],
            PluginLogLevel::Info => &[0, 1],
            PluginLogLevel::Error => &[0, 1, 2],
        };
        for &i in targets {
            if let Err(e) = files[i].write_all(text.as_bytes()) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write plugin log");
            }
        }
    }

    /// The last `tail` lines of one stream (all lines when `tail` is None).
    pub fn read(&self, level: PluginLogLevel, tail: Option<usize>) -> std::io::Result<Vec<String>> {
        let path = self.dir.join(format!("{}.log", level.as_str()));
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut lines: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        for line in BufReader::new(file).lines() {
            lines.push_back(line?);
            if let Some(t) = tail {
                if lines.len() > t {
                    lines.pop_front();
                }
            }
        }
        Ok(lines.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_fan_out_to_streams() {
        let dir = tempfile::tempdir().unwrap();
        let log = PluginLog::new(dir.path());
        let ctx = LogContext {
            worker_pid: Some(42),
            job: Some("JOB-7".into()),
            operation: Some("virtual.status".into()),
        };
        log.write(PluginLogLevel::Debug, &ctx, "d");
        log.write(PluginLogLevel::Info, &ctx, "i");
        log.write(PluginLogLevel::Error, &ctx, "e1\ne2");
        let debug = log.read(PluginLogLevel::Debug, None).unwrap();
        assert_eq!(debug.len(), 4);
        assert!(
            debug[0].ends_with("DEBUG [Worker-42|JOB-7|virtual.status] d"),
            "{}",
            debug[0]
        );
        assert_eq!(log.read(PluginLogLevel::Info, None).unwrap().len(), 3);
        let errors = log.read(PluginLogLevel::Error, Some(1)).unwrap();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].ends_with("e2"));
    }
}
