//! Request handling: one worker owns the handle table and answers requests in
//! the order they arrive (like OpenSSH's sftp-server), while the transport
//! tasks keep reading and writing so that the client can pipeline.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::root::{cstring, fstat, last_errno, lstat_at, normalize, FsError, FsResult, Root};
use crate::wire::*;
use crate::{ServeOptions, SessionStats};

/// A failed request, ready to become an SSH_FXP_STATUS.
pub struct Fail {
    pub code: u32,
    pub msg: String,
}

impl From<FsError> for Fail {
    fn from(e: FsError) -> Fail {
        match e {
            FsError::Escape => Fail {
                code: SSH_FX_PERMISSION_DENIED,
                msg: "path leads outside the served directory".into(),
            },
            FsError::BadName => Fail {
                code: SSH_FX_PERMISSION_DENIED,
                msg: "operation not allowed on this name".into(),
            },
            FsError::NotRegular => Fail {
                code: SSH_FX_PERMISSION_DENIED,
                msg: "not a regular file".into(),
            },
            FsError::Errno(e) => {
                let code = match e {
                    libc::ENOENT | libc::ENOTDIR | libc::EBADF | libc::ELOOP => SSH_FX_NO_SUCH_FILE,
                    libc::EPERM | libc::EACCES | libc::EFAULT | libc::EROFS => {
                        SSH_FX_PERMISSION_DENIED
                    }
                    libc::ENAMETOOLONG | libc::EINVAL => SSH_FX_BAD_MESSAGE,
                    libc::ENOSYS | libc::EOPNOTSUPP => SSH_FX_OP_UNSUPPORTED,
                    _ => SSH_FX_FAILURE,
                };
                let msg = std::io::Error::from_raw_os_error(e).to_string();
                let msg = match msg.find(" (os error") {
                    Some(i) => msg[..i].to_string(),
                    None => msg,
                };
                Fail { code, msg }
            }
        }
    }
}

impl From<Malformed> for Fail {
    fn from(_: Malformed) -> Fail {
        Fail {
            code: SSH_FX_BAD_MESSAGE,
            msg: "malformed request".into(),
        }
    }
}

fn fail(code: u32, msg: &str) -> Fail {
    Fail {
        code,
        msg: msg.into(),
    }
}

fn denied_read_only() -> Fail {
    fail(SSH_FX_PERMISSION_DENIED, "read-only")
}

type Reply = Result<Vec<u8>, Fail>;

struct DirHandle {
    dir: *mut libc::DIR,
    is_root: bool,
    done: bool,
}

impl Drop for DirHandle {
    fn drop(&mut self) {
        // SAFETY: `dir` came from fdopendir and is closed exactly once.
        unsafe { libc::closedir(self.dir) };
    }
}

enum Handle {
    File(OwnedFd),
    Dir(DirHandle),
}

// SAFETY: a DIR stream is only ever used by the one thread that owns the
// session at a time; it is moved between threads, never shared.
unsafe impl Send for Handle {}

pub struct Session {
    root: Root,
    opts: ServeOptions,
    handles: HashMap<u32, Handle>,
    next_handle: u32,
    space: FreeSpace,
    pub stats: SessionStats,
}

/// How often the free figure is read again: every second or every 16 MiB
/// written, and every MiB within 64 MiB of the reserve.
const SPACE_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);
const SPACE_RECHECK_BYTES: u64 = 16 << 20;
const SPACE_NEAR: u64 = 64 << 20;
const SPACE_NEAR_RECHECK_BYTES: u64 = 1 << 20;
/// Within this much of the reserve the filesystem is flushed before its free
/// figure is read. Data still in the page cache is not counted as used by
/// statvfs (with gigabytes of RAM, a whole small pool fits in it), so a
/// figure read without a flush runs ahead, for this session's writes and
/// for every other writer's.
const SPACE_FLUSH_BELOW: u64 = 1 << 30;

/// What the session believes is free on the served filesystem: the last
/// figure read, less what it has written since and what it wrote before
/// that reading without a flush in between. Other writers (other mounts of
/// the same pool) are seen at the next flushed reading, which comes often
/// enough near the reserve to keep the overshoot to a few MiB each.
#[derive(Default)]
struct FreeSpace {
    free: u64,
    read_at: Option<std::time::Instant>,
    written_since: u64,
    unflushed: u64,
}

/// Bytes available to writers on the filesystem of `fd`.
fn available(fd: RawFd) -> FsResult<u64> {
    // SAFETY: valid out-pointer; fstatvfs works on O_PATH descriptors.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        cvt(libc::fstatvfs(fd, &mut st))?;
        st
    };
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

const EXTENSIONS: &[(&str, &str)] = &[
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("fstatvfs@openssh.com", "2"),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
    ("lsetstat@openssh.com", "1"),
    ("limits@openssh.com", "1"),
    ("expand-path@openssh.com", "1"),
];

fn status(id: u32, code: u32, msg: &str) -> Vec<u8> {
    let mut o = Out::new(SSH_FXP_STATUS, Some(id));
    o.u32(code).string(msg.as_bytes()).string(b"en");
    o.finish()
}

fn ok(id: u32) -> Reply {
    Ok(status(id, SSH_FX_OK, "Success"))
}

fn cvt(ret: libc::c_int) -> FsResult<()> {
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

fn to_timespec(t: Option<(u32, u32)>) -> Option<[libc::timespec; 2]> {
    t.map(|(a, m)| {
        [
            libc::timespec {
                tv_sec: a as libc::time_t,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: m as libc::time_t,
                tv_nsec: 0,
            },
        ]
    })
}

/// chmod of the file an O_PATH descriptor refers to.
fn chmod_fd(fd: RawFd, mode: u32, nofollow: bool) -> FsResult<()> {
    let mut flags = libc::AT_EMPTY_PATH;
    if nofollow {
        flags |= libc::AT_SYMLINK_NOFOLLOW;
    }
    // SAFETY: fchmodat2(2) with an empty path acts on `fd` itself.
    let ret = unsafe { libc::syscall(libc::SYS_fchmodat2, fd, c"".as_ptr(), mode & 0o7777, flags) };
    if ret == 0 {
        return Ok(());
    }
    match last_errno() {
        // Kernels before 6.6: chmod through the descriptor's proc entry, which
        // names exactly the inode already resolved beneath the root.
        FsError::Errno(libc::ENOSYS) if !nofollow => {
            let p = cstring(format!("/proc/self/fd/{fd}").as_bytes())?;
            // SAFETY: valid C string.
            cvt(unsafe { libc::chmod(p.as_ptr(), (mode & 0o7777) as libc::mode_t) })
        }
        e => Err(e),
    }
}

fn chown_fd(fd: RawFd, uid: u32, gid: u32) -> FsResult<()> {
    // SAFETY: empty path with AT_EMPTY_PATH acts on `fd` itself.
    cvt(unsafe { libc::fchownat(fd, c"".as_ptr(), uid, gid, libc::AT_EMPTY_PATH) })
}

fn utimes_fd(fd: RawFd, ts: &[libc::timespec; 2]) -> FsResult<()> {
    // SAFETY: empty path with AT_EMPTY_PATH acts on `fd` itself.
    cvt(unsafe { libc::utimensat(fd, c"".as_ptr(), ts.as_ptr(), libc::AT_EMPTY_PATH) })
}

fn statvfs_reply(id: u32, fd: RawFd, read_only: bool, keep_free: u64) -> Reply {
    // SAFETY: valid out-pointer; fstatvfs works on O_PATH descriptors.
    let st = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        cvt(libc::fstatvfs(fd, &mut st))?;
        st
    };
    let mut flag = 0u64;
    if st.f_flag & libc::ST_RDONLY != 0 || read_only {
        flag |= 1;
    }
    if st.f_flag & libc::ST_NOSUID != 0 {
        flag |= 2;
    }
    // The reserve is not the host's to use: shown as used, like ext4 shows
    // its root-reserved blocks.
    let kept_blocks = keep_free.div_ceil((st.f_frsize as u64).max(1));
    let mut o = Out::new(SSH_FXP_EXTENDED_REPLY, Some(id));
    o.u64(st.f_bsize as u64)
        .u64(st.f_frsize as u64)
        .u64(st.f_blocks as u64)
        .u64(st.f_bfree as u64)
        .u64((st.f_bavail as u64).saturating_sub(kept_blocks))
        .u64(st.f_files as u64)
        .u64(st.f_ffree as u64)
        .u64(st.f_favail as u64)
        .u64(st.f_fsid as u64)
        .u64(flag)
        .u64(st.f_namemax as u64);
    Ok(o.finish())
}

impl Session {
    pub fn new(root: Root, opts: ServeOptions) -> Session {
        Session {
            root,
            opts,
            handles: HashMap::new(),
            next_handle: 1,
            space: FreeSpace::default(),
            stats: SessionStats::default(),
        }
    }

    pub fn version_reply() -> Vec<u8> {
        let mut o = Out::new(SSH_FXP_VERSION, None);
        o.u32(3);
        for (name, data) in EXTENSIONS {
            o.string(name.as_bytes()).string(data.as_bytes());
        }
        o.finish()
    }

    /// Answer one request (type byte and payload, without the length).
    pub fn handle(&mut self, pkt: &[u8]) -> Option<Vec<u8>> {
        self.stats.requests += 1;
        let mut m = Msg::new(pkt);
        let ty = m.u8().ok()?;
        if ty == SSH_FXP_INIT {
            return Some(Self::version_reply());
        }
        let Ok(id) = m.u32() else {
            self.stats.errors += 1;
            return None;
        };
        match self.dispatch(ty, id, &mut m) {
            Ok(v) => Some(v),
            Err(f) => {
                if f.code != SSH_FX_EOF {
                    self.stats.errors += 1;
                    tracing::debug!(ty, code = f.code, msg = %f.msg, "sftp request failed");
                }
                Some(status(id, f.code, &f.msg))
            }
        }
    }

    /// Admits a write of `len` bytes through `fd` unless it would eat into
    /// `keep_free`.
    fn admit_write(&mut self, fd: RawFd, len: u64) -> Result<(), Fail> {
        let keep = self.opts.keep_free;
        if keep == 0 {
            return Ok(());
        }
        let sp = &mut self.space;
        let needed = keep.saturating_add(len);
        let every = if sp.free < needed.saturating_add(SPACE_NEAR) {
            SPACE_NEAR_RECHECK_BYTES
        } else {
            SPACE_RECHECK_BYTES
        };
        let stale = sp
            .read_at
            .is_none_or(|at| sp.written_since >= every || at.elapsed() >= SPACE_RECHECK);
        // A refusal is always made on a fresh, flushed figure, never on the
        // estimate: space freed meanwhile (a deleted file) must count.
        let refusing = sp.free < needed;
        if stale || refusing {
            if refusing || sp.free < needed.saturating_add(SPACE_FLUSH_BELOW) {
                // SAFETY: plain syscall on a descriptor the session owns
                // (the served root is an O_PATH descriptor, which syncfs
                // refuses; the written file is on the same filesystem).
                cvt(unsafe { libc::syncfs(fd) })?;
                sp.unflushed = 0;
            }
            sp.free = available(fd)?.saturating_sub(sp.unflushed);
            sp.read_at = Some(std::time::Instant::now());
            sp.written_since = 0;
        }
        if sp.free < needed {
            self.stats.writes_refused += 1;
            return Err(fail(
                SSH_FX_FAILURE,
                &format!(
                    "no space: the Doppel pool keeps {keep} bytes free (its reserve) and has {} bytes free",
                    sp.free
                ),
            ));
        }
        sp.free -= len;
        sp.written_since += len;
        sp.unflushed += len;
        Ok(())
    }

    fn writable(&self) -> Result<(), Fail> {
        if self.opts.read_only {
            Err(denied_read_only())
        } else {
            Ok(())
        }
    }

    fn new_handle(&mut self, id: u32, h: Handle) -> Reply {
        if self.handles.len() >= self.opts.max_handles {
            return Err(fail(SSH_FX_FAILURE, "too many open handles"));
        }
        let mut n = self.next_handle;
        while self.handles.contains_key(&n) {
            n = n.wrapping_add(1);
        }
        self.next_handle = n.wrapping_add(1);
        self.handles.insert(n, h);
        let mut o = Out::new(SSH_FXP_HANDLE, Some(id));
        o.string(&n.to_be_bytes());
        Ok(o.finish())
    }

    fn handle_id(m: &mut Msg) -> Result<u32, Fail> {
        let h = m.string()?;
        let b: [u8; 4] = h
            .try_into()
            .map_err(|_| fail(SSH_FX_FAILURE, "invalid handle"))?;
        Ok(u32::from_be_bytes(b))
    }

    fn file(&self, m: &mut Msg) -> Result<RawFd, Fail> {
        match self.handles.get(&Self::handle_id(m)?) {
            Some(Handle::File(fd)) => Ok(fd.as_raw_fd()),
            _ => Err(fail(SSH_FX_FAILURE, "invalid handle")),
        }
    }

    fn name_reply(id: u32, name: &[u8], st: Option<&libc::stat>) -> Vec<u8> {
        let mut o = Out::new(SSH_FXP_NAME, Some(id));
        o.u32(1).string(name).string(&longname(name, st));
        match st {
            Some(st) => o.attrs(&Attrs::from_stat(st)),
            None => o.attrs(&Attrs::default()),
        };
        o.finish()
    }

    fn attrs_reply(id: u32, st: &libc::stat) -> Vec<u8> {
        let mut o = Out::new(SSH_FXP_ATTRS, Some(id));
        o.attrs(&Attrs::from_stat(st));
        o.finish()
    }

    /// Give a newly created object the configured owner.
    fn own_new(&self, dirfd: RawFd, name: &CStr) -> FsResult<()> {
        if let Some(o) = self.opts.new_file_owner {
            // SAFETY: valid C string; the name is not followed.
            cvt(unsafe {
                libc::fchownat(
                    dirfd,
                    name.as_ptr(),
                    o.uid,
                    o.gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
        }
        Ok(())
    }

    fn dispatch(&mut self, ty: u8, id: u32, m: &mut Msg) -> Reply {
        match ty {
            SSH_FXP_READ => {
                let fd = self.file(m)?;
                let off = m.u64()?;
                let len = m.u32()?.min(MAX_IO) as usize;
                let mut o = Out::with_capacity(SSH_FXP_DATA, Some(id), len + 4);
                let start = o.len() + 4;
                o.buf.resize(start + len, 0);
                // SAFETY: the buffer has `len` writable bytes from `start`.
                let n = unsafe {
                    libc::pread(
                        fd,
                        o.buf[start..].as_mut_ptr().cast(),
                        len,
                        off as libc::off_t,
                    )
                };
                if n < 0 {
                    return Err(last_errno().into());
                }
                if n == 0 && len > 0 {
                    return Err(fail(SSH_FX_EOF, "End of file"));
                }
                let n = n as usize;
                o.buf.truncate(start + n);
                o.buf[start - 4..start].copy_from_slice(&(n as u32).to_be_bytes());
                self.stats.bytes_read += n as u64;
                Ok(o.finish())
            }
            SSH_FXP_WRITE => {
                let fd = self.file(m)?;
                let mut off = m.u64()?;
                let mut data = m.string()?;
                self.writable()?;
                self.admit_write(fd, data.len() as u64)?;
                while !data.is_empty() {
                    // SAFETY: `data` is a valid readable slice.
                    let n = unsafe {
                        libc::pwrite(fd, data.as_ptr().cast(), data.len(), off as libc::off_t)
                    };
                    if n < 0 {
                        match last_errno() {
                            FsError::Errno(libc::EINTR) => continue,
                            e => return Err(e.into()),
                        }
                    }
                    if n == 0 {
                        return Err(fail(SSH_FX_FAILURE, "short write"));
                    }
                    data = &data[n as usize..];
                    off += n as u64;
                    self.stats.bytes_written += n as u64;
                }
                ok(id)
            }
            SSH_FXP_OPEN => {
                let path = m.string()?;
                let pflags = m.u32()?;
                let a = m.attrs()?;
                self.open(id, path, pflags, a)
            }
            SSH_FXP_CLOSE => {
                let h = Self::handle_id(m)?;
                match self.handles.remove(&h) {
                    Some(Handle::File(fd)) => {
                        // SAFETY: into_raw_fd hands ownership to close(2).
                        let r = unsafe { libc::close(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
                        if r < 0 {
                            return Err(last_errno().into());
                        }
                        ok(id)
                    }
                    Some(Handle::Dir(_)) => ok(id),
                    None => Err(fail(SSH_FX_FAILURE, "invalid handle")),
                }
            }
            SSH_FXP_STAT | SSH_FXP_LSTAT => {
                let path = m.string()?;
                let mut flags = libc::O_PATH;
                if ty == SSH_FXP_LSTAT {
                    flags |= libc::O_NOFOLLOW;
                }
                let fd = self.root.open_path(path, flags, 0)?;
                Ok(Self::attrs_reply(id, &fstat(fd.as_raw_fd())?))
            }
            SSH_FXP_FSTAT => {
                let fd = self.file(m)?;
                Ok(Self::attrs_reply(id, &fstat(fd)?))
            }
            SSH_FXP_SETSTAT => {
                let path = m.string()?;
                let a = m.attrs()?;
                self.writable()?;
                self.setstat_path(path, &a, false)?;
                ok(id)
            }
            SSH_FXP_FSETSTAT => {
                let fd = self.file(m)?;
                let a = m.attrs()?;
                self.writable()?;
                if let Some(size) = a.size {
                    // SAFETY: plain syscall on an owned descriptor.
                    cvt(unsafe { libc::ftruncate(fd, size as libc::off_t) })?;
                }
                if let Some(p) = a.perm {
                    // SAFETY: plain syscall on an owned descriptor.
                    cvt(unsafe { libc::fchmod(fd, (p & 0o7777) as libc::mode_t) })?;
                }
                if let Some(ts) = to_timespec(a.times) {
                    // SAFETY: `ts` holds two timespecs.
                    cvt(unsafe { libc::futimens(fd, ts.as_ptr()) })?;
                }
                if let Some((u, g)) = a.uid_gid {
                    // SAFETY: plain syscall on an owned descriptor.
                    cvt(unsafe { libc::fchown(fd, u, g) })?;
                }
                ok(id)
            }
            SSH_FXP_OPENDIR => {
                let path = m.string()?;
                let fd = self
                    .root
                    .open_path(path, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                let is_root = self.root.is_root(&fstat(fd.as_raw_fd())?);
                let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
                // SAFETY: fdopendir takes ownership of `raw` on success.
                let dir = unsafe { libc::fdopendir(raw) };
                if dir.is_null() {
                    let e = last_errno();
                    // SAFETY: still ours after a failed fdopendir.
                    unsafe { libc::close(raw) };
                    return Err(e.into());
                }
                self.new_handle(
                    id,
                    Handle::Dir(DirHandle {
                        dir,
                        is_root,
                        done: false,
                    }),
                )
            }
            SSH_FXP_READDIR => {
                let h = Self::handle_id(m)?;
                let Some(Handle::Dir(d)) = self.handles.get_mut(&h) else {
                    return Err(fail(SSH_FX_FAILURE, "invalid handle"));
                };
                Self::readdir(id, d, &self.root)
            }
            SSH_FXP_REMOVE | SSH_FXP_RMDIR => {
                let path = m.string()?;
                self.writable()?;
                let (dir, name) = self.root.parent(path)?;
                let flags = if ty == SSH_FXP_RMDIR {
                    libc::AT_REMOVEDIR
                } else {
                    0
                };
                // SAFETY: valid C string relative to a resolved directory.
                cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
                ok(id)
            }
            SSH_FXP_MKDIR => {
                let path = m.string()?;
                let a = m.attrs()?;
                self.writable()?;
                let (dir, name) = self.root.parent(path)?;
                let mode = a.perm.map(|p| p & 0o7777).unwrap_or(0o777);
                // SAFETY: valid C string relative to a resolved directory.
                cvt(unsafe {
                    libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t)
                })?;
                self.own_new(dir.as_raw_fd(), &name)?;
                ok(id)
            }
            SSH_FXP_REALPATH => {
                let path = m.string()?;
                let p = self.realpath(path);
                Ok(Self::name_reply(id, &p, None))
            }
            SSH_FXP_RENAME => {
                let old = m.string()?;
                let new = m.string()?;
                self.writable()?;
                self.rename(old, new, true)?;
                ok(id)
            }
            SSH_FXP_READLINK => {
                let path = m.string()?;
                let fd = self
                    .root
                    .open_path(path, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
                let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
                // SAFETY: readlinkat with an empty path reads the link `fd` is.
                let n = unsafe {
                    libc::readlinkat(
                        fd.as_raw_fd(),
                        c"".as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if n < 0 {
                    return Err(last_errno().into());
                }
                buf.truncate(n as usize);
                Ok(Self::name_reply(id, &buf, None))
            }
            SSH_FXP_SYMLINK => {
                // OpenSSH (and every client written against it) sends the
                // link's value first and the new link's path second.
                let target = m.string()?;
                let link = m.string()?;
                self.writable()?;
                let target = cstring(target)?;
                let (dir, name) = self.root.parent(link)?;
                // SAFETY: valid C strings; the value is stored, never resolved.
                cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
                self.own_new(dir.as_raw_fd(), &name)?;
                ok(id)
            }
            SSH_FXP_EXTENDED => {
                let name = m.string()?;
                self.extended(id, name, m)
            }
            _ => Err(fail(SSH_FX_OP_UNSUPPORTED, "unsupported request")),
        }
    }

    fn open(&mut self, id: u32, path: &[u8], pflags: u32, a: Attrs) -> Reply {
        let write = pflags & (SSH_FXF_WRITE | SSH_FXF_APPEND | SSH_FXF_CREAT | SSH_FXF_TRUNC) != 0;
        if write {
            self.writable()?;
        }
        let mut flags = match (pflags & SSH_FXF_READ != 0, pflags & SSH_FXF_WRITE != 0) {
            (true, true) => libc::O_RDWR,
            (false, true) => libc::O_WRONLY,
            _ => libc::O_RDONLY,
        };
        if pflags & SSH_FXF_APPEND != 0 {
            flags |= libc::O_APPEND;
        }
        if pflags & SSH_FXF_TRUNC != 0 {
            flags |= libc::O_TRUNC;
        }
        if pflags & SSH_FXF_CREAT != 0 {
            flags |= libc::O_CREAT;
            if pflags & SSH_FXF_EXCL != 0 {
                flags |= libc::O_EXCL;
            }
        }
        // O_NONBLOCK: opening a FIFO must not stall the session; regular
        // files ignore the flag.
        flags |= libc::O_NONBLOCK;
        let mode = a.perm.map(|p| p & 0o7777).unwrap_or(0o666);
        let mut created = false;
        let fd = if flags & libc::O_CREAT != 0
            && flags & libc::O_EXCL == 0
            && self.opts.new_file_owner.is_some()
        {
            // Find out whether this open creates the file, so that only new
            // files get the configured owner.
            loop {
                match self.root.open_path(path, flags | libc::O_EXCL, mode) {
                    Ok(fd) => {
                        created = true;
                        break fd;
                    }
                    Err(FsError::Errno(libc::EEXIST)) => {}
                    Err(e) => return Err(e.into()),
                }
                match self.root.open_path(path, flags & !libc::O_CREAT, mode) {
                    Ok(fd) => break fd,
                    Err(FsError::Errno(libc::ENOENT)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        } else {
            created = flags & libc::O_EXCL != 0;
            self.root.open_path(path, flags, mode)?
        };
        let st = fstat(fd.as_raw_fd())?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FsError::NotRegular.into());
        }
        if created {
            if let Some(o) = self.opts.new_file_owner {
                chown_fd(fd.as_raw_fd(), o.uid, o.gid)?;
            }
        }
        self.new_handle(id, Handle::File(fd))
    }

    fn readdir(id: u32, d: &mut DirHandle, root: &Root) -> Reply {
        if d.done {
            return Err(fail(SSH_FX_EOF, "End of file"));
        }
        // SAFETY: `d.dir` is a live DIR stream.
        let dfd = unsafe { libc::dirfd(d.dir) };
        let mut o = Out::with_capacity(SSH_FXP_NAME, Some(id), 16 * 1024);
        o.u32(0);
        let mut count = 0u32;
        while count < 128 && o.len() < 64 * 1024 {
            // SAFETY: errno is reset so that end-of-stream and error differ.
            let ent = unsafe {
                *libc::__errno_location() = 0;
                libc::readdir64(d.dir)
            };
            if ent.is_null() {
                // SAFETY: reading errno.
                let e = unsafe { *libc::__errno_location() };
                if e != 0 && count == 0 {
                    return Err(FsError::Errno(e).into());
                }
                d.done = true;
                break;
            }
            // SAFETY: readdir returned a valid entry with a NUL-terminated name.
            let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
            let st = if name.to_bytes() == b".." && d.is_root {
                // Never describe what lies above the root.
                fstat(root.raw()).ok()
            } else {
                lstat_at(dfd, name).ok()
            };
            o.string(name.to_bytes())
                .string(&longname(name.to_bytes(), st.as_ref()));
            match &st {
                Some(st) => o.attrs(&Attrs::from_stat(st)),
                None => o.attrs(&Attrs::default()),
            };
            count += 1;
        }
        if count == 0 {
            return Err(fail(SSH_FX_EOF, "End of file"));
        }
        o.buf[9..13].copy_from_slice(&count.to_be_bytes());
        Ok(o.finish())
    }

    fn setstat_path(&self, path: &[u8], a: &Attrs, nofollow: bool) -> FsResult<()> {
        let extra = if nofollow { libc::O_NOFOLLOW } else { 0 };
        if let Some(size) = a.size {
            let fd = self
                .root
                .open_path(path, libc::O_WRONLY | libc::O_NONBLOCK | extra, 0)?;
            if fstat(fd.as_raw_fd())?.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(FsError::NotRegular);
            }
            // SAFETY: plain syscall on an owned descriptor.
            cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) })?;
        }
        if a.perm.is_none() && a.times.is_none() && a.uid_gid.is_none() {
            return Ok(());
        }
        let fd = self.root.open_path(path, libc::O_PATH | extra, 0)?;
        let raw = fd.as_raw_fd();
        if let Some(p) = a.perm {
            chmod_fd(raw, p, nofollow)?;
        }
        if let Some(ts) = to_timespec(a.times) {
            utimes_fd(raw, &ts)?;
        }
        if let Some((u, g)) = a.uid_gid {
            chown_fd(raw, u, g)?;
        }
        Ok(())
    }

    fn rename(&self, old: &[u8], new: &[u8], noreplace: bool) -> FsResult<()> {
        let (od, on) = self.root.parent(old)?;
        let (nd, nn) = self.root.parent(new)?;
        let flags = if noreplace { libc::RENAME_NOREPLACE } else { 0 };
        let r = rename_at(&od, &on, &nd, &nn, flags);
        match r {
            // Filesystems without RENAME_NOREPLACE: check, then rename.
            Err(FsError::Errno(libc::EINVAL)) if noreplace => {
                if lstat_at(nd.as_raw_fd(), &nn).is_ok() {
                    return Err(FsError::Errno(libc::EEXIST));
                }
                rename_at(&od, &on, &nd, &nn, 0)
            }
            r => r,
        }
    }

    fn realpath(&self, path: &[u8]) -> Vec<u8> {
        let lexical = normalize(path);
        self.root.client_view(&lexical).unwrap_or(lexical)
    }

    fn extended(&mut self, id: u32, name: &[u8], m: &mut Msg) -> Reply {
        match name {
            b"posix-rename@openssh.com" => {
                let old = m.string()?;
                let new = m.string()?;
                self.writable()?;
                self.rename(old, new, false)?;
                ok(id)
            }
            b"hardlink@openssh.com" => {
                let old = m.string()?;
                let new = m.string()?;
                self.writable()?;
                let (od, on) = self.root.parent(old)?;
                let (nd, nn) = self.root.parent(new)?;
                // SAFETY: valid C strings relative to resolved directories;
                // flags 0: a symlink is linked itself, never followed.
                cvt(unsafe {
                    libc::linkat(od.as_raw_fd(), on.as_ptr(), nd.as_raw_fd(), nn.as_ptr(), 0)
                })?;
                ok(id)
            }
            b"fsync@openssh.com" => {
                let fd = self.file(m)?;
                // SAFETY: plain syscall on an owned descriptor.
                cvt(unsafe { libc::fsync(fd) })?;
                ok(id)
            }
            b"statvfs@openssh.com" => {
                let path = m.string()?;
                let fd = self.root.open_path(path, libc::O_PATH, 0)?;
                statvfs_reply(id, fd.as_raw_fd(), self.opts.read_only, self.opts.keep_free)
            }
            b"fstatvfs@openssh.com" => {
                let fd = self.file(m)?;
                statvfs_reply(id, fd, self.opts.read_only, self.opts.keep_free)
            }
            b"lsetstat@openssh.com" => {
                let path = m.string()?;
                let a = m.attrs()?;
                self.writable()?;
                self.setstat_path(path, &a, true)?;
                ok(id)
            }
            b"limits@openssh.com" => {
                let mut o = Out::new(SSH_FXP_EXTENDED_REPLY, Some(id));
                o.u64(MAX_PACKET as u64)
                    .u64(u64::from(MAX_IO))
                    .u64(u64::from(MAX_IO))
                    .u64(self.opts.max_handles as u64);
                Ok(o.finish())
            }
            b"expand-path@openssh.com" => {
                let path = m.string()?;
                // "~" is the served directory's root for every client.
                let p: Vec<u8> = if path == b"~" {
                    b"/".to_vec()
                } else if let Some(rest) = path.strip_prefix(b"~/") {
                    rest.to_vec()
                } else {
                    path.to_vec()
                };
                Ok(Self::name_reply(id, &self.realpath(&p), None))
            }
            _ => Err(fail(SSH_FX_OP_UNSUPPORTED, "unsupported extension")),
        }
    }
}

fn rename_at(
    od: &OwnedFd,
    on: &CString,
    nd: &OwnedFd,
    nn: &CString,
    flags: libc::c_uint,
) -> FsResult<()> {
    // SAFETY: valid C strings relative to resolved directories; renameat2
    // never follows the final components.
    cvt(unsafe {
        libc::renameat2(
            od.as_raw_fd(),
            on.as_ptr(),
            nd.as_raw_fd(),
            nn.as_ptr(),
            flags,
        )
    })
}
