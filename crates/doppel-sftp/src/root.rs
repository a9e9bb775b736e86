//! The confined view of one dataset directory.
//!
//! Every client path is resolved by the kernel with `openat2(2)` and
//! `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` relative to an `O_PATH` file
//! descriptor of the root, opened once. Operations that act on a name itself
//! (lstat, readlink, unlink, rename, mkdir, symlink, link) resolve the
//! *parent* that way and then use the `*at()` call on the last component, so
//! the final component is never followed.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An errno value, with the special case of a path that resolution refused
/// because it leads outside the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    Errno(i32),
    /// The path (or a symlink met on the way) leads outside the root.
    Escape,
    /// The request names the root itself where a child is required, or a
    /// final component of "." or "..".
    BadName,
    /// A special file (device, FIFO, socket) that the server refuses to open.
    NotRegular,
}

pub type FsResult<T> = Result<T, FsError>;

pub fn last_errno() -> FsError {
    FsError::Errno(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

fn check(ret: libc::c_int) -> FsResult<libc::c_int> {
    if ret < 0 {
        Err(last_errno())
    } else {
        Ok(ret)
    }
}

pub fn cstring(bytes: &[u8]) -> FsResult<CString> {
    CString::new(bytes).map_err(|_| FsError::Errno(libc::EINVAL))
}

const EMPTY: &CStr = c"";

pub fn fstat(fd: RawFd) -> FsResult<libc::stat> {
    // SAFETY: `st` is a valid out-pointer; fstatat with AT_EMPTY_PATH works on
    // any descriptor, including O_PATH ones, and never follows a symlink.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::fstatat(
            fd,
            EMPTY.as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        ))?;
        Ok(st)
    }
}

/// lstat of `name` inside the directory `dirfd` (never follows).
pub fn lstat_at(dirfd: RawFd, name: &CStr) -> FsResult<libc::stat> {
    // SAFETY: valid C string and out-pointer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::fstatat(
            dirfd,
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        ))?;
        Ok(st)
    }
}

pub struct Root {
    fd: OwnedFd,
    dev_ino: (u64, u64),
}

/// The relative form of a client path: the client's "/" is the root, and a
/// relative client path is relative to the root as well.
fn relative(path: &[u8]) -> &[u8] {
    let mut p = path;
    while let [b'/', rest @ ..] = p {
        p = rest;
    }
    if p.is_empty() {
        b"."
    } else {
        p
    }
}

impl Root {
    pub fn open(path: &Path) -> std::io::Result<Root> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: valid C string; the result is checked before use.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = fstat(fd.as_raw_fd()).map_err(|e| match e {
            FsError::Errno(n) => std::io::Error::from_raw_os_error(n),
            _ => std::io::Error::from_raw_os_error(libc::EINVAL),
        })?;
        Ok(Root {
            fd,
            dev_ino: (st.st_dev, st.st_ino),
        })
    }

    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn is_root(&self, st: &libc::stat) -> bool {
        (st.st_dev, st.st_ino) == self.dev_ino
    }

    /// openat2 beneath `dirfd` (the root or a directory resolved beneath it).
    fn openat2(dirfd: RawFd, rel: &CStr, flags: libc::c_int, mode: u32) -> FsResult<OwnedFd> {
        let mut how: libc::open_how = unsafe_zeroed_how();
        // openat2 rejects O_PATH combined with anything but O_DIRECTORY,
        // O_NOFOLLOW and O_CLOEXEC.
        let extra = if flags & libc::O_PATH != 0 {
            0
        } else {
            libc::O_NOCTTY
        };
        how.flags = (flags | libc::O_CLOEXEC | extra) as u64;
        how.mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
            u64::from(mode & 0o7777)
        } else {
            0
        };
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // The kernel answers EAGAIN when a concurrent rename could have let a
        // ".." walk escape; retrying is the documented remedy.
        for _ in 0..16 {
            // SAFETY: valid C string and open_how of the size passed.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    dirfd,
                    rel.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if ret >= 0 {
                // SAFETY: a fresh descriptor owned by nobody else.
                return Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
            }
            match last_errno() {
                FsError::Errno(libc::EAGAIN) => continue,
                FsError::Errno(libc::EXDEV) => return Err(FsError::Escape),
                e => return Err(e),
            }
        }
        Err(FsError::Errno(libc::EAGAIN))
    }

    /// Open a client path, following symlinks only while they stay beneath
    /// the root. `flags` may include O_PATH, O_NOFOLLOW, O_CREAT...
    pub fn open_path(&self, path: &[u8], flags: libc::c_int, mode: u32) -> FsResult<OwnedFd> {
        let rel = cstring(relative(path))?;
        Self::openat2(self.raw(), &rel, flags, mode)
    }

    /// Resolve the parent directory of a client path beneath the root and
    /// return it with the final component, which is never "", "." or "..".
    pub fn parent(&self, path: &[u8]) -> FsResult<(OwnedFd, CString)> {
        let mut p = relative(path);
        while let [rest @ .., b'/'] = p {
            p = rest;
        }
        let (dir, name): (&[u8], &[u8]) = match p.iter().rposition(|&b| b == b'/') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (b".", p),
        };
        if name.is_empty() || name == b"." || name == b".." {
            return Err(FsError::BadName);
        }
        let name = cstring(name)?;
        let dir = cstring(relative(dir))?;
        let fd = Self::openat2(self.raw(), &dir, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok((fd, name))
    }

    /// The client's view ("/..." relative to the root) of an existing path,
    /// with symlinks resolved; `None` if that cannot be established.
    pub fn client_view(&self, path: &[u8]) -> Option<Vec<u8>> {
        let fd = self.open_path(path, libc::O_PATH, 0).ok()?;
        let real = proc_fd_path(fd.as_raw_fd())?;
        let root = proc_fd_path(self.raw())?;
        if real == root {
            return Some(b"/".to_vec());
        }
        let rest = real.strip_prefix(root.as_slice())?;
        if rest.first() != Some(&b'/') && !root.ends_with(b"/") {
            return None;
        }
        let mut out = Vec::with_capacity(rest.len() + 1);
        if rest.first() != Some(&b'/') {
            out.push(b'/');
        }
        out.extend_from_slice(rest);
        Some(out)
    }
}

fn unsafe_zeroed_how() -> libc::open_how {
    // SAFETY: open_how is plain old data and must be zero-initialised.
    unsafe { std::mem::zeroed() }
}

fn proc_fd_path(fd: RawFd) -> Option<Vec<u8>> {
    let p = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let b = p.as_os_str().as_bytes();
    if b.ends_with(b" (deleted)") {
        return None;
    }
    Some(b.to_vec())
}

/// Lexically normalise a client path into "/..." form, clamping ".." at the
/// root (the way "/.." is "/" on any POSIX system).
pub fn normalize(path: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut out = Vec::with_capacity(path.len() + 1);
    for c in &parts {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative(b"/"), b".");
        assert_eq!(relative(b""), b".");
        assert_eq!(relative(b"//a/b"), b"a/b");
        assert_eq!(relative(b"a"), b"a");
    }

    #[test]
    fn normalize_clamps() {
        assert_eq!(normalize(b"/../etc"), b"/etc");
        assert_eq!(normalize(b"a/./b/../c/"), b"/a/c");
        assert_eq!(normalize(b".."), b"/");
        assert_eq!(normalize(b"."), b"/");
    }

    #[test]
    fn beneath_is_enforced() {
        let outer = tempfile::tempdir().unwrap();
        let root_dir = outer.path().join("root");
        std::fs::create_dir(&root_dir).unwrap();
        std::fs::write(outer.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink("../secret", root_dir.join("up")).unwrap();
        std::os::unix::fs::symlink("/etc", root_dir.join("etc")).unwrap();
        std::fs::create_dir(root_dir.join("d")).unwrap();
        std::fs::write(root_dir.join("d/f"), b"y").unwrap();
        std::os::unix::fs::symlink("d/f", root_dir.join("inside")).unwrap();
        let root = Root::open(&root_dir).unwrap();
        for p in [
            &b"../secret"[..],
            b"/../secret",
            b"up",
            b"etc/passwd",
            b"d/../../secret",
        ] {
            assert_eq!(
                root.open_path(p, libc::O_RDONLY, 0).err(),
                Some(FsError::Escape),
                "{p:?}"
            );
        }
        assert!(root.open_path(b"/inside", libc::O_RDONLY, 0).is_ok());
        assert!(root.open_path(b"/d/../d/f", libc::O_RDONLY, 0).is_ok());
        // The link itself is reachable with O_NOFOLLOW, its target is not.
        let r = root.open_path(b"up", libc::O_PATH | libc::O_NOFOLLOW, 0);
        assert!(r.is_ok(), "{:?}", r.err());
        assert_eq!(root.parent(b"/").err(), Some(FsError::BadName));
        assert_eq!(root.parent(b"/d/..").err(), Some(FsError::BadName));
        assert_eq!(root.parent(b"../x").err(), Some(FsError::Escape));
        assert_eq!(root.client_view(b"/inside").unwrap(), b"/d/f");
        assert_eq!(root.client_view(b"/").unwrap(), b"/");
        assert_eq!(root.client_view(b"etc"), None);
    }
}
