//! Thin, safe wrappers over the Linux calls the drivers need that std does
//! not offer: FICLONE, inode flags (FS_IMMUTABLE_FL), FIEMAP, statvfs,
//! `renameat2(RENAME_EXCHANGE)` and `syncfs`.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `FS_IMMUTABLE_FL` from `linux/fs.h`.
pub const FS_IMMUTABLE_FL: libc::c_long = 0x0000_0010;

nix::ioctl_write_int!(ioc_ficlone, 0x94, 9);
nix::ioctl_read!(ioc_getflags, b'f', 1, libc::c_long);
nix::ioctl_write_ptr!(ioc_setflags, b'f', 2, libc::c_long);
nix::ioctl_readwrite!(ioc_fiemap, b'f', 11, FiemapHeader);

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

pub(crate) fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Makes `dst` share all of `src`'s extents (a reflink copy of the whole file).
pub fn ficlone(dst: &File, src: &File) -> io::Result<()> {
    // SAFETY: both fds are open for the duration of the call; FICLONE takes the source fd by value.
    unsafe { ioc_ficlone(dst.as_raw_fd(), src.as_raw_fd() as _) }
        .map(drop)
        .map_err(nix_io)
}

/// Reads the inode flags (`FS_IOC_GETFLAGS`).
pub fn get_flags(f: &File) -> io::Result<libc::c_long> {
    let mut v: libc::c_long = 0;
    // SAFETY: the kernel writes at most an int into `v`, which is a valid, zeroed c_long.
    unsafe { ioc_getflags(f.as_raw_fd(), &mut v) }.map_err(nix_io)?;
    Ok(v & 0xffff_ffff)
}

/// Writes the inode flags (`FS_IOC_SETFLAGS`).
pub fn set_flags(f: &File, flags: libc::c_long) -> io::Result<()> {
    // SAFETY: the kernel reads at most an int from `flags`, a valid c_long.
    unsafe { ioc_setflags(f.as_raw_fd(), &flags) }
        .map(drop)
        .map_err(nix_io)
}

/// Opens a file or directory without following a final symlink, for flag ioctls.
pub fn open_for_flags(p: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(p)
}

/// Sets or clears `FS_IMMUTABLE_FL` on one inode. Returns whether it changed.
pub fn set_immutable(p: &Path, on: bool) -> io::Result<bool> {
    let f = open_for_flags(p)?;
    let flags = get_flags(&f)?;
    let new = if on {
        flags | FS_IMMUTABLE_FL
    } else {
        flags & !FS_IMMUTABLE_FL
    };
    if new == flags {
        return Ok(false);
    }
    set_flags(&f, new)?;
    Ok(true)
}

/// Whether an inode has `FS_IMMUTABLE_FL`.
pub fn is_immutable(p: &Path) -> io::Result<bool> {
    Ok(get_flags(&open_for_flags(p)?)? & FS_IMMUTABLE_FL != 0)
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

#[repr(C)]
#[derive(Default)]
pub(crate) struct FiemapHeader {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
}

const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_SHARED: u32 = 0x2000;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const BATCH: usize = 128;

#[repr(C)]
struct FiemapBuf {
    h: FiemapHeader,
    ext: [FiemapExtent; BATCH],
}

/// Allocated bytes of a file split into (exclusive, shared) by the
/// `FIEMAP_EXTENT_SHARED` flag. Holes count for nothing.
pub fn fiemap_usage(f: &File) -> io::Result<(u64, u64)> {
    let (mut excl, mut shared) = (0u64, 0u64);
    let mut start = 0u64;
    loop {
        let mut buf = FiemapBuf {
            h: FiemapHeader {
                fm_start: start,
                fm_length: u64::MAX - start,
                fm_flags: FIEMAP_FLAG_SYNC,
                fm_extent_count: BATCH as u32,
                ..Default::default()
            },
            ext: [FiemapExtent::default(); BATCH],
        };
        // SAFETY: `buf` is a fiemap header followed by room for `fm_extent_count` extents.
        unsafe { ioc_fiemap(f.as_raw_fd(), &mut buf.h) }.map_err(nix_io)?;
        let n = buf.h.fm_mapped_extents as usize;
        if n == 0 {
            break;
        }
        let mut last = false;
        for e in &buf.ext[..n.min(BATCH)] {
            if e.fe_flags & FIEMAP_EXTENT_SHARED != 0 {
                shared += e.fe_length;
            } else {
                excl += e.fe_length;
            }
            start = e.fe_logical + e.fe_length;
            last |= e.fe_flags & FIEMAP_EXTENT_LAST != 0;
        }
        if last || n < BATCH {
            break;
        }
    }
    Ok((excl, shared))
}

/// Space of the filesystem holding `p`, in bytes.
#[derive(Clone, Copy, Debug)]
pub struct FsSpace {
    /// Total size.
    pub size: u64,
    /// Used (size minus free blocks).
    pub used: u64,
    /// Available to unprivileged writers.
    pub avail: u64,
}

/// statvfs of the filesystem holding `p`.
pub fn fs_space(p: &Path) -> io::Result<FsSpace> {
    let s = nix::sys::statvfs::statvfs(p).map_err(nix_io)?;
    let fr = s.fragment_size() as u64;
    Ok(FsSpace {
        size: s.blocks() as u64 * fr,
        used: (s.blocks() as u64 - s.blocks_free() as u64) * fr,
        avail: s.blocks_available() as u64 * fr,
    })
}

/// Whether `p` is on btrfs.
pub fn is_btrfs(p: &Path) -> io::Result<bool> {
    let s = nix::sys::statfs::statfs(p).map_err(nix_io)?;
    Ok(s.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

/// Atomically swaps two paths (`renameat2(RENAME_EXCHANGE)`).
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let (ca, cb) = (cpath(a)?, cpath(b)?);
    // SAFETY: both are valid NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Renames without replacing an existing target (`RENAME_NOREPLACE`).
pub fn rename_noreplace(a: &Path, b: &Path) -> io::Result<()> {
    let (ca, cb) = (cpath(a)?, cpath(b)?);
    // SAFETY: both are valid NUL-terminated paths.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Flushes the filesystem holding `f` (so that btrfs qgroup numbers are current).
pub fn syncfs(f: &File) -> io::Result<()> {
    // SAFETY: `f` is an open fd.
    if unsafe { libc::syncfs(f.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether the process runs with root privileges.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
