//! Per-plugin log streams (contract §6): `debug.log` holds everything,
//! `info.log` INFO and ERROR, `error.log` ERROR only. Each line carries the
//! context it came from: `[Worker-<pid>|JOB-<id>|<operation>]`.
//!
//! A plugin decides how much it logs, so every stream is bounded: a line is
//! cut at `LogLimits::line_bytes`, a file past `LogLimits::file_bytes`
//! rotates (`debug.log` → `debug.log.1` → ... → `debug.log.<kept>`, the
//! oldest dropped), and reading returns a page of lines from the end,
//! never the whole file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
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

/// How large a plugin's logs may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// A file rotates before it grows past this.
    pub file_bytes: u64,
    /// Rotated files kept per stream (`debug.log.1` is the newest).
    pub kept: usize,
    /// A longer line is cut here and ends with a `[truncated N bytes]`
    /// marker.
    pub line_bytes: usize,
}

/// 10 MiB a file and 3 old ones: 40 MiB per stream at most, a few hundred
/// thousand lines, far more than anyone reads while debugging a plugin.
/// 64 KiB a line keeps a stack trace or a dumped request whole.
pub const LOG_LIMITS: LogLimits = LogLimits {
    file_bytes: 10 * 1024 * 1024,
    kept: 3,
    line_bytes: 64 * 1024,
};

/// Lines a read returns when it does not say how many.
pub const DEFAULT_TAIL: usize = 1000;
/// Lines one read may return at most; older ones are paged with a cursor.
pub const MAX_TAIL: usize = 10_000;

const STREAMS: [&str; 3] = ["debug", "info", "error"];

/// One open stream and the inode it was opened on, to notice when another
/// writer rotated it away.
#[derive(Debug)]
struct Stream {
    file: File,
    ino: u64,
}

/// Opens a log file for appending, 0600 when it is new.
fn open_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The three log files of one plugin. Safe to share between workers.
#[derive(Debug)]
pub struct PluginLog {
    dir: PathBuf,
    limits: LogLimits,
    files: Mutex<[Option<Stream>; 3]>,
}

/// A page of log lines, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    pub lines: Vec<String>,
    /// Where the page starts: pass it as `before` for the lines before it.
    /// `None` when the page starts at the oldest line kept.
    pub before: Option<String>,
}

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    #[error("the cursor {0:?} is not one a log read returned")]
    BadCursor(String),
    #[error("the cursor {0:?} points into a log file that has rotated away since; read again without a cursor")]
    Gone(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A place in a stream: a file (by inode, which a rotation keeps) and a
/// byte offset in it where a line starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    ino: u64,
    offset: u64,
}

impl Cursor {
    fn encode(self) -> String {
        format!("{}-{}", self.ino, self.offset)
    }

    fn decode(s: &str) -> Option<Cursor> {
        let (ino, offset) = s.split_once('-')?;
        Some(Cursor {
            ino: ino.parse().ok()?,
            offset: offset.parse().ok()?,
        })
    }
}

impl PluginLog {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self::with_limits(dir, LOG_LIMITS)
    }

    pub fn with_limits(dir: impl Into<PathBuf>, limits: LogLimits) -> Self {
        PluginLog {
            dir: dir.into(),
            limits,
            files: Mutex::new([None, None, None]),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `debug.log`, or `debug.log.<n>` for the n-th rotated file.
    fn path(&self, stream: usize, generation: usize) -> PathBuf {
        let name = STREAMS[stream];
        self.dir.join(if generation == 0 {
            format!("{name}.log")
        } else {
            format!("{name}.log.{generation}")
        })
    }

    /// The stream's current file, ready for `len` more bytes: opened on
    /// first use, reopened when another writer rotated it, rotated when the
    /// bytes would take it past the limit.
    fn ready(&self, slot: &mut Option<Stream>, stream: usize, len: u64) -> std::io::Result<()> {
        let path = self.path(stream, 0);
        if let Some(s) = slot {
            let moved = std::fs::metadata(&path)
                .map(|m| m.ino() != s.ino)
                .unwrap_or(true);
            if moved {
                *slot = None;
            }
        }
        if slot.is_none() {
            // Plugin logs can hold anything a plugin prints: its user's only.
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&self.dir)?;
            }
            let file = open_private(&path)?;
            let ino = file.metadata()?.ino();
            *slot = Some(Stream { file, ino });
        }
        let size = slot.as_ref().expect("opened above").file.metadata()?.len();
        if size > 0 && size + len > self.limits.file_bytes {
            *slot = None;
            self.rotate(stream)?;
            let file = open_private(&path)?;
            let ino = file.metadata()?.ino();
            *slot = Some(Stream { file, ino });
        }
        Ok(())
    }

    fn rotate(&self, stream: usize) -> std::io::Result<()> {
        if self.limits.kept == 0 {
            return std::fs::remove_file(self.path(stream, 0));
        }
        // Renaming over the oldest drops it; a missing one is no gap.
        for generation in (0..self.limits.kept).rev() {
            match std::fs::rename(
                self.path(stream, generation),
                self.path(stream, generation + 1),
            ) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Cuts a line that is too long at a character boundary, saying how
    /// much was cut.
    fn cap<'a>(&self, line: &'a str) -> std::borrow::Cow<'a, str> {
        // Room for the marker of a message the worker already cut at the
        // same limit, so that its count of what was cut stays the true one.
        const MARKER_ROOM: usize = 64;
        if line.len() <= self.limits.line_bytes + MARKER_ROOM {
            return line.into();
        }
        let mut cut = self.limits.line_bytes;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}… [truncated {} bytes]", &line[..cut], line.len() - cut).into()
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
        let prefix = ctx.prefix();
        let targets: &[usize] = match level {
            PluginLogLevel::Debug => &[0],
            PluginLogLevel::Info => &[0, 1],
            PluginLogLevel::Error => &[0, 1, 2],
        };
        let mut lines: Vec<&str> = message.lines().collect();
        if lines.is_empty() {
            lines.push("");
        }
        let mut guard = self.files.lock().unwrap_or_else(|p| p.into_inner());
        // Line by line, so that one huge message still rotates in between.
        for line in lines {
            let text = if line.is_empty() {
                format!("{now} {label} {prefix}\n")
            } else {
                format!("{now} {label} {prefix} {}\n", self.cap(line))
            };
            for &i in targets {
                let slot = &mut guard[i];
                let written = self.ready(slot, i, text.len() as u64).and_then(|()| {
                    slot.as_mut()
                        .expect("ready")
                        .file
                        .write_all(text.as_bytes())
                });
                if let Err(e) = written {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write plugin log");
                    *slot = None;
                }
            }
        }
    }

    /// Files of one stream, newest first, that exist.
    fn files_of(&self, stream: usize) -> std::io::Result<Vec<(File, u64, u64)>> {
        let mut out = Vec::new();
        for generation in 0..=self.limits.kept {
            match File::open(self.path(stream, generation)) {
                Ok(f) => {
                    let m = f.metadata()?;
                    out.push((f, m.ino(), m.len()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The longest line a read returns: a capped message plus its time,
    /// level, context and marker always fit.
    fn read_cap(&self) -> usize {
        self.limits.line_bytes + 4096
    }

    /// Up to `limit` lines of one stream, the newest ones, or the newest of
    /// those before `before` (a cursor an earlier page returned). Reads
    /// backwards from the end, so the cost is that of the lines returned;
    /// rotated files continue the stream.
    pub fn read(
        &self,
        level: PluginLogLevel,
        limit: usize,
        before: Option<&str>,
    ) -> Result<LogPage, LogReadError> {
        let stream = STREAMS
            .iter()
            .position(|s| *s == level.as_str())
            .expect("every level has a stream");
        let files = self.files_of(stream)?;
        let (mut index, mut end) = match before {
            None => (0, files.first().map_or(0, |f| f.2)),
            Some(c) => {
                let cursor = Cursor::decode(c).ok_or_else(|| LogReadError::BadCursor(c.into()))?;
                let index = files
                    .iter()
                    .position(|f| f.1 == cursor.ino)
                    .ok_or_else(|| LogReadError::Gone(c.into()))?;
                if cursor.offset > files[index].2 {
                    return Err(LogReadError::BadCursor(c.into()));
                }
                (index, cursor.offset)
            }
        };
        // (file index, start, end) of each line, newest first.
        let mut found: Vec<(usize, u64, u64)> = Vec::new();
        let mut start_of_page = None;
        while index < files.len() && found.len() < limit {
            let file = &files[index].0;
            let lines = lines_before(file, end, limit - found.len())?;
            let reached_start = lines.last().is_none_or(|l| l.0 == 0);
            found.extend(lines.iter().map(|&(s, e)| (index, s, e)));
            if found.len() >= limit || !reached_start {
                break;
            }
            index += 1;
            end = files.get(index).map_or(0, |f| f.2);
        }
        if let Some(&(i, s, _)) = found.last() {
            // More before this page: in this file, or in an older one.
            let more = s > 0 || files.iter().skip(i + 1).any(|f| f.2 > 0);
            if more {
                start_of_page = Some(if s > 0 {
                    Cursor {
                        ino: files[i].1,
                        offset: s,
                    }
                } else {
                    let j = (i + 1..files.len())
                        .find(|&j| files[j].2 > 0)
                        .expect("checked");
                    Cursor {
                        ino: files[j].1,
                        offset: files[j].2,
                    }
                });
            }
        }
        let mut lines = Vec::with_capacity(found.len());
        for &(i, s, e) in found.iter().rev() {
            lines.push(read_line(&files[i].0, s, e, self.read_cap())?);
        }
        Ok(LogPage {
            lines,
            before: start_of_page.map(Cursor::encode),
        })
    }
}

/// Start and end offsets of up to `limit` lines ending at or before `end`,
/// newest first, found by reading backwards in blocks.
fn lines_before(file: &File, end: u64, limit: usize) -> std::io::Result<Vec<(u64, u64)>> {
    const BLOCK: u64 = 64 * 1024;
    let mut out = Vec::new();
    if end == 0 || limit == 0 {
        return Ok(out);
    }
    // A line's newline belongs to it: the last line ends before it.
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, end - 1)?;
    let mut line_end = if last[0] == b'\n' { end - 1 } else { end };
    let mut pos = line_end;
    let mut buf = vec![0u8; BLOCK as usize];
    while pos > 0 {
        let from = pos.saturating_sub(BLOCK);
        let chunk = &mut buf[..(pos - from) as usize];
        file.read_exact_at(chunk, from)?;
        for i in (0..chunk.len()).rev() {
            if chunk[i] == b'\n' {
                let at = from + i as u64;
                out.push((at + 1, line_end));
                line_end = at;
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        pos = from;
    }
    out.push((0, line_end));
    Ok(out)
}

/// One line's text, cut at `cap` bytes (lines written before lines were
/// capped can be longer).
fn read_line(file: &File, start: u64, end: u64, cap: usize) -> std::io::Result<String> {
    let len = (end - start) as usize;
    let mut buf = vec![0u8; len.min(cap)];
    file.read_exact_at(&mut buf, start)?;
    let mut line = String::from_utf8_lossy(&buf).into_owned();
    if len > cap {
        line.push_str(&format!("… [truncated {} bytes]", len - cap));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(log: &PluginLog, level: PluginLogLevel, limit: usize) -> Vec<String> {
        log.read(level, limit, None).unwrap().lines
    }

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
        let debug = lines(&log, PluginLogLevel::Debug, 100);
        assert_eq!(debug.len(), 4);
        assert!(
            debug[0].ends_with("DEBUG [Worker-42|JOB-7|virtual.status] d"),
            "{}",
            debug[0]
        );
        assert_eq!(lines(&log, PluginLogLevel::Info, 100).len(), 3);
        let errors = log.read(PluginLogLevel::Error, 1, None).unwrap();
        assert_eq!(errors.lines.len(), 1);
        assert!(errors.lines[0].ends_with("e2"));
        let older = log
            .read(PluginLogLevel::Error, 10, errors.before.as_deref())
            .unwrap();
        assert_eq!(older.lines.len(), 1);
        assert!(older.lines[0].ends_with("e1"));
        assert_eq!(older.before, None, "nothing before the first line");
    }

    const SMALL: LogLimits = LogLimits {
        file_bytes: 4096,
        kept: 3,
        line_bytes: 200,
    };

    fn sizes(dir: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_log_past_its_size_rotates_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let log = PluginLog::with_limits(dir.path(), SMALL);
        let ctx = LogContext::default();
        // One message of many lines, as a plugin printing in a loop sends.
        let flood: String = (0..2000).map(|i| format!("line {i:05}\n")).collect();
        log.write(PluginLogLevel::Debug, &ctx, &flood);
        let files = sizes(dir.path());
        let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
        assert_eq!(
            names,
            ["debug.log", "debug.log.1", "debug.log.2", "debug.log.3"]
        );
        for (name, size) in &files {
            assert!(*size <= SMALL.file_bytes, "{name} is {size} bytes");
        }
        // The newest lines are kept, and paging walks back through the
        // rotated files in order.
        let mut page = log.read(PluginLogLevel::Debug, 50, None).unwrap();
        assert!(page.lines.last().unwrap().ends_with("line 01999"));
        let mut all = page.lines.clone();
        while let Some(cursor) = page.before.clone() {
            page = log.read(PluginLogLevel::Debug, 50, Some(&cursor)).unwrap();
            assert!(!page.lines.is_empty());
            all.splice(0..0, page.lines.clone());
        }
        let numbers: Vec<u32> = all
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "no gap or repeat"
        );
        assert_eq!(*numbers.last().unwrap(), 1999);
        assert!(numbers[0] > 0, "the oldest lines were dropped");
        let kept: u64 = files.iter().map(|f| f.1).sum();
        assert_eq!(all.iter().map(|l| l.len() as u64 + 1).sum::<u64>(), kept);
    }

    #[test]
    fn long_lines_are_cut_with_a_marker() {
        let dir = tempfile::tempdir().unwrap();
        let log = PluginLog::with_limits(dir.path(), SMALL);
        let long = "é".repeat(1000);
        log.write(PluginLogLevel::Info, &LogContext::default(), &long);
        let line = &lines(&log, PluginLogLevel::Info, 10)[0];
        assert!(line.ends_with("… [truncated 1800 bytes]"), "{line}");
        assert!(line.len() < 300, "{}", line.len());
    }

    #[test]
    fn reading_a_page_does_not_need_the_whole_file_and_bad_cursors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = PluginLog::new(dir.path());
        // A file written before lines were capped: one huge line, then more.
        let mut big = vec![b'x'; 3 * LOG_LIMITS.line_bytes + 4096];
        big.extend(b"\nlast\n");
        std::fs::write(dir.path().join("info.log"), &big).unwrap();
        let page = log.read(PluginLogLevel::Info, 10, None).unwrap();
        assert_eq!(page.lines.len(), 2);
        assert_eq!(page.lines[1], "last");
        assert!(page.lines[0].ends_with(&format!(
            "… [truncated {} bytes]",
            2 * LOG_LIMITS.line_bytes
        )));
        assert!(page.before.is_none());
        assert!(matches!(
            log.read(PluginLogLevel::Info, 10, Some("nonsense")),
            Err(LogReadError::BadCursor(_))
        ));
        assert!(matches!(
            log.read(PluginLogLevel::Info, 10, Some("1-0")),
            Err(LogReadError::Gone(_))
        ));
        // A stream never written reads as empty.
        let none = log.read(PluginLogLevel::Error, 10, None).unwrap();
        assert!(none.lines.is_empty() && none.before.is_none());
    }
}
