//! Directory-tree walks shared by the `reflink` and `copy` drivers: clone a
//! tree (FICLONE per file, or a plain byte copy) keeping directories,
//! regular files, symlinks, hard links, device nodes and fifos, permission
//! bits, ownership and timestamps; mark a tree immutable; remove a tree
//! (clearing immutable flags); and measure a tree's space.
//!
//! Not kept: extended attributes and ACLs, and holes of sparse files in
//! `copy` mode (a copied file is fully allocated).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{IoContext, Result, StorageError};
use crate::sys;

/// How file contents are duplicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileCopy {
    /// `FICLONE`: the new file shares the source's extents.
    Reflink,
    /// Read and write every byte.
    Copy,
}

struct Walker {
    mode: FileCopy,
    links: HashMap<(u64, u64), std::path::PathBuf>,
    buf: Vec<u8>,
}

/// Clones the tree at `src` to `dst` (which must not exist).
pub fn clone_tree(src: &Path, dst: &Path, mode: FileCopy) -> Result<()> {
    let mut w = Walker {
        mode,
        links: HashMap::new(),
        buf: Vec::new(),
    };
    let md = fs::symlink_metadata(src).ctx("stat", src)?;
    if !md.is_dir() {
        return Err(StorageError::io(
            "clone tree",
            src,
            io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    w.dir(src, dst, &md)
}

impl Walker {
    fn dir(&mut self, src: &Path, dst: &Path, md: &fs::Metadata) -> Result<()> {
        fs::create_dir(dst).ctx("create directory", dst)?;
        let mut entries: Vec<_> = fs::read_dir(src)
            .ctx("read directory", src)?
            .collect::<io::Result<Vec<_>>>()
            .ctx("read directory", src)?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let s = e.path();
            let d = dst.join(e.file_name());
            let m = fs::symlink_metadata(&s).ctx("stat", &s)?;
            self.entry(&s, &d, &m)?;
        }
        finish_attrs(dst, md, false)
    }

    fn entry(&mut self, s: &Path, d: &Path, m: &fs::Metadata) -> Result<()> {
        let ft = m.file_type();
        if ft.is_dir() {
            return self.dir(s, d, m);
        }
        if !ft.is_dir() && m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                return fs::hard_link(first, d).ctx("hard link", d);
            }
            self.links.insert((m.dev(), m.ino()), d.to_path_buf());
        }
        if ft.is_file() {
            self.file(s, d, m)
        } else if ft.is_symlink() {
            let target = fs::read_link(s).ctx("read symlink", s)?;
            std::os::unix::fs::symlink(&target, d).ctx("create symlink", d)?;
            finish_attrs(d, m, true)
        } else {
            let c = sys::cpath(d).ctx("create node", d)?;
            // SAFETY: `c` is a valid path; mode and rdev come from the source's stat.
            if unsafe {
                libc::mknod(
                    c.as_ptr(),
                    m.mode() as libc::mode_t,
                    m.rdev() as libc::dev_t,
                )
            } != 0
            {
                return Err(StorageError::io(
                    "create node",
                    d,
                    io::Error::last_os_error(),
                ));
            }
            let _ = ft.is_fifo();
            finish_attrs(d, m, false)
        }
    }

    fn file(&mut self, s: &Path, d: &Path, m: &fs::Metadata) -> Result<()> {
        let src = File::open(s).ctx("open", s)?;
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(d)
            .ctx("create file", d)?;
        match self.mode {
            FileCopy::Reflink => sys::ficlone(&dst, &src).ctx("clone file (FICLONE)", d)?,
            FileCopy::Copy => {
                if self.buf.is_empty() {
                    self.buf = vec![0u8; 1 << 20];
                }
                let mut src = src;
                loop {
                    let n = src.read(&mut self.buf).ctx("read", s)?;
                    if n == 0 {
                        break;
                    }
                    dst.write_all(&self.buf[..n]).ctx("write", d)?;
                }
            }
        }
        drop(dst);
        finish_attrs(d, m, false)
    }
}

/// Applies ownership, permission bits and timestamps of `m` to `p`.
fn finish_attrs(p: &Path, m: &fs::Metadata, symlink: bool) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(m.uid()), Some(m.gid())).ctx("change owner", p)?;
    if !symlink {
        fs::set_permissions(p, fs::Permissions::from_mode(m.mode() & 0o7777))
            .ctx("change mode", p)?;
    }
    let times = [
        libc::timespec {
            tv_sec: m.atime() as _,
            tv_nsec: m.atime_nsec() as _,
        },
        libc::timespec {
            tv_sec: m.mtime() as _,
            tv_nsec: m.mtime_nsec() as _,
        },
    ];
    let c = sys::cpath(p).ctx("set times", p)?;
    // SAFETY: `c` is a valid path and `times` holds two timespecs.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(StorageError::io("set times", p, io::Error::last_os_error()));
    }
    Ok(())
}

/// Calls `f` on every directory and regular file under `root` (children before parents).
fn walk_post(root: &Path, f: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<()>) -> Result<()> {
    let md = fs::symlink_metadata(root).ctx("stat", root)?;
    if md.is_dir() {
        for e in fs::read_dir(root).ctx("read directory", root)? {
            let e = e.ctx("read directory", root)?;
            walk_post(&e.path(), f)?;
        }
    }
    if md.is_dir() || md.is_file() {
        f(root, &md)?;
    }
    Ok(())
}

/// Sets or clears `FS_IMMUTABLE_FL` on every directory and regular file of
/// the tree; the root itself only when `include_root`.
pub fn set_tree_immutable(root: &Path, on: bool, include_root: bool) -> Result<()> {
    walk_post(root, &mut |p, _| {
        if p == root && !include_root {
            return Ok(());
        }
        sys::set_immutable(p, on).map(drop).ctx(
            if on {
                "set immutable flag"
            } else {
                "clear immutable flag"
            },
            p,
        )
    })
}

/// Removes a tree, clearing immutable flags first when `clear_flags`.
pub fn remove_tree(root: &Path, clear_flags: bool) -> Result<()> {
    if clear_flags {
        // Clearing may fail where flags are unsupported; then none are set either.
        let _ = walk_post(root, &mut |p, _| {
            let _ = sys::set_immutable(p, false);
            Ok(())
        });
    }
    match fs::symlink_metadata(root) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(root).ctx("remove tree", root),
        Ok(_) => fs::remove_file(root).ctx("remove", root),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("stat", root, e)),
    }
}

/// Allocated bytes of all regular files of a tree, split by FIEMAP into
/// (exclusive, shared).
pub fn fiemap_tree(root: &Path) -> Result<(u64, u64)> {
    let (mut ex, mut sh) = (0, 0);
    walk_post(root, &mut |p, m| {
        if m.is_file() && m.blocks() > 0 {
            let f = File::open(p).ctx("open", p)?;
            let (e, s) = sys::fiemap_usage(&f).ctx("FIEMAP", p)?;
            ex += e;
            sh += s;
        }
        Ok(())
    })?;
    Ok((ex, sh))
}

/// Allocated bytes (st_blocks) of all files and directories of a tree.
pub fn allocated_tree(root: &Path) -> Result<u64> {
    let mut n = 0;
    walk_post(root, &mut |_, m| {
        n += m.blocks() * 512;
        Ok(())
    })?;
    Ok(n)
}
