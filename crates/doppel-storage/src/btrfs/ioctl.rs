//! The btrfs ioctls the driver uses, from `linux/btrfs.h` and
//! `linux/btrfs_tree.h`: subvolume create, snapshot (read-only or writable),
//! subvolume destroy, subvolume id lookup, quota enable, tree search (to read
//! qgroup items and the list of deleted-but-uncleaned subvolumes) and sync
//! (which also wakes the cleaner).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;

const MAGIC: u8 = 0x94;
const SUBVOL_NAME_MAX: usize = 4039;

/// `BTRFS_SUBVOL_RDONLY`.
pub const SUBVOL_RDONLY: u64 = 1 << 1;

/// `struct btrfs_ioctl_vol_args_v2` (4096 bytes).
#[repr(C)]
pub struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
pub struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

/// `struct btrfs_ioctl_search_key`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

const SEARCH_BUF: usize = 4096 - std::mem::size_of::<SearchKey>();

/// `struct btrfs_ioctl_search_args`.
#[repr(C)]
pub struct SearchArgs {
    key: SearchKey,
    buf: [u8; SEARCH_BUF],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
pub struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

nix::ioctl_write_ptr!(ioc_snap_create_v2, MAGIC, 23, VolArgsV2);
nix::ioctl_write_ptr!(ioc_subvol_create_v2, MAGIC, 24, VolArgsV2);
nix::ioctl_write_ptr!(ioc_snap_destroy_v2, MAGIC, 63, VolArgsV2);
nix::ioctl_readwrite!(ioc_quota_ctl, MAGIC, 40, QuotaCtlArgs);
nix::ioctl_none!(ioc_quota_rescan_wait, MAGIC, 46);
nix::ioctl_none!(ioc_sync, MAGIC, 8);
nix::ioctl_readwrite!(ioc_tree_search, MAGIC, 17, SearchArgs);
nix::ioctl_readwrite!(ioc_ino_lookup, MAGIC, 18, InoLookupArgs);

fn err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn vol_args(name: &OsStr, fd: i64, flags: u64) -> io::Result<Box<VolArgsV2>> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > SUBVOL_NAME_MAX || b.contains(&0) || b.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut a = Box::new(VolArgsV2 {
        fd,
        transid: 0,
        flags,
        unused: [0; 4],
        name: [0; SUBVOL_NAME_MAX + 1],
    });
    a.name[..b.len()].copy_from_slice(b);
    Ok(a)
}

/// Creates subvolume `name` in directory `parent`.
pub fn subvol_create(parent: &File, name: &OsStr) -> io::Result<()> {
    let a = vol_args(name, 0, 0)?;
    // SAFETY: `a` is a fully initialised vol_args_v2 and `parent` an open directory.
    unsafe { ioc_subvol_create_v2(parent.as_raw_fd(), &*a) }
        .map(drop)
        .map_err(err)
}

/// Snapshots subvolume `src` as `name` in directory `parent` (`flags`: [`SUBVOL_RDONLY`] or 0).
pub fn snap_create(parent: &File, name: &OsStr, src: &File, flags: u64) -> io::Result<()> {
    let a = vol_args(name, src.as_raw_fd() as i64, flags)?;
    // SAFETY: as above; `src` stays open for the call.
    unsafe { ioc_snap_create_v2(parent.as_raw_fd(), &*a) }
        .map(drop)
        .map_err(err)
}

/// Destroys subvolume `name` in directory `parent` (space is reclaimed in the background).
pub fn snap_destroy(parent: &File, name: &OsStr) -> io::Result<()> {
    let a = vol_args(name, 0, 0)?;
    // SAFETY: as above.
    unsafe { ioc_snap_destroy_v2(parent.as_raw_fd(), &*a) }
        .map(drop)
        .map_err(err)
}

/// Quota modes of `BTRFS_IOC_QUOTA_CTL`.
pub const QUOTA_CTL_ENABLE: u64 = 1;
/// Simple quotas (kernel 6.7 and later).
pub const QUOTA_CTL_ENABLE_SIMPLE_QUOTA: u64 = 4;

/// Enables quotas on the filesystem of `f` with `cmd`.
pub fn quota_ctl(f: &File, cmd: u64) -> io::Result<()> {
    let mut a = QuotaCtlArgs { cmd, status: 0 };
    // SAFETY: `a` is a valid quota_ctl_args.
    unsafe { ioc_quota_ctl(f.as_raw_fd(), &mut a) }
        .map(drop)
        .map_err(err)
}

/// Waits for a running qgroup rescan to finish.
pub fn quota_rescan_wait(f: &File) -> io::Result<()> {
    // SAFETY: no argument.
    unsafe { ioc_quota_rescan_wait(f.as_raw_fd()) }
        .map(drop)
        .map_err(err)
}

/// Commits the filesystem and wakes the cleaner thread (`BTRFS_IOC_SYNC`),
/// so that destroyed subvolumes are cleaned now rather than at the next
/// periodic commit.
pub fn sync(f: &File) -> io::Result<()> {
    // SAFETY: no argument.
    unsafe { ioc_sync(f.as_raw_fd()) }.map(drop).map_err(err)
}

/// Subvolume (tree) id of the subvolume holding `f`.
pub fn subvol_id(f: &File) -> io::Result<u64> {
    let mut a = Box::new(InoLookupArgs {
        treeid: 0,
        objectid: 256,
        name: [0; 4080],
    });
    // SAFETY: `a` is a valid ino_lookup_args.
    unsafe { ioc_ino_lookup(f.as_raw_fd(), &mut *a) }.map_err(err)?;
    Ok(a.treeid)
}

/// One item found by [`tree_search`].
#[derive(Debug)]
pub struct Item {
    /// Key objectid.
    pub objectid: u64,
    /// Key type.
    pub kind: u32,
    /// Key offset.
    pub offset: u64,
    /// Item data.
    pub data: Vec<u8>,
}

/// All items of tree `tree_id` with keys between `min` and `max`
/// (objectid, type, offset) inclusive. Needs CAP_SYS_ADMIN.
pub fn tree_search(
    f: &File,
    tree_id: u64,
    min: (u64, u32, u64),
    max: (u64, u32, u64),
) -> io::Result<Vec<Item>> {
    let mut out = Vec::new();
    let mut cur = min;
    loop {
        let mut a = Box::new(SearchArgs {
            key: SearchKey {
                tree_id,
                min_objectid: cur.0,
                min_type: cur.1,
                min_offset: cur.2,
                max_objectid: max.0,
                max_type: max.1,
                max_offset: max.2,
                max_transid: u64::MAX,
                nr_items: 4096,
                ..Default::default()
            },
            buf: [0; SEARCH_BUF],
        });
        // SAFETY: `a` is a valid search_args of the size the ioctl number encodes.
        unsafe { ioc_tree_search(f.as_raw_fd(), &mut *a) }.map_err(err)?;
        let n = a.key.nr_items;
        if n == 0 {
            return Ok(out);
        }
        let mut off = 0usize;
        let mut last = cur;
        for _ in 0..n {
            let h = &a.buf[off..off + 32];
            let objectid = u64::from_ne_bytes(bytes_at(h, 8));
            let offset = u64::from_ne_bytes(bytes_at(h, 16));
            let kind = u32::from_ne_bytes(bytes_at(h, 24));
            let len = u32::from_ne_bytes(bytes_at(h, 28)) as usize;
            off += 32;
            out.push(Item {
                objectid,
                kind,
                offset,
                data: a.buf[off..off + len].to_vec(),
            });
            off += len;
            last = (objectid, kind, offset);
        }
        // Next key after `last`.
        cur = if last.2 < u64::MAX {
            (last.0, last.1, last.2 + 1)
        } else if last.1 < u32::from(u8::MAX) {
            (last.0, last.1 + 1, 0)
        } else if last.0 < u64::MAX {
            (last.0 + 1, 0, 0)
        } else {
            return Ok(out);
        };
        if cur > max {
            return Ok(out);
        }
    }
}

/// The `N` bytes at `at` of a search header, whose layout is fixed (32
/// bytes, checked above), so the slice always has the length.
fn bytes_at<const N: usize>(h: &[u8], at: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&h[at..at + N]);
    out
}

/// Little-endian u64 at byte `at` of an on-disk item.
pub fn le64(data: &[u8], at: usize) -> u64 {
    data.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(std::mem::size_of::<SearchKey>(), 104);
        assert_eq!(std::mem::size_of::<SearchArgs>(), 4096);
        assert_eq!(std::mem::size_of::<InoLookupArgs>(), 4096);
    }
}
