//! A real sshfs in passive mode, talking to `serve_sftp` over pipes; every
//! effect made through the mountpoint is checked directly in the root.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::process::Command;

use common::{Mount, Server};
use doppel_sftp::{Owner, ServeOptions};

macro_rules! require_tools {
    () => {
        if !common::tools_available() {
            eprintln!("skipped: sshfs, fusermount3 or /dev/fuse missing");
            return;
        }
    };
}

#[test]
fn file_operations_through_sshfs() {
    require_tools!();
    let sc = common::scratch();
    let m = Mount::new(
        Server::Doppel(ServeOptions::default()),
        &sc.root,
        &sc.mnt,
        "",
    );
    let (root, mnt) = (&sc.root, &sc.mnt);

    // create + write, read back directly
    fs::write(mnt.join("a.txt"), b"hello").unwrap();
    assert_eq!(fs::read(root.join("a.txt")).unwrap(), b"hello");
    // read what was written directly
    fs::write(root.join("direct.txt"), b"from the root").unwrap();
    assert_eq!(fs::read(mnt.join("direct.txt")).unwrap(), b"from the root");
    // append
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("a.txt"))
        .unwrap();
    f.write_all(b" world").unwrap();
    drop(f);
    assert_eq!(fs::read(root.join("a.txt")).unwrap(), b"hello world");
    // overwrite in the middle
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("a.txt"))
        .unwrap();
    f.seek(SeekFrom::Start(6)).unwrap();
    f.write_all(b"WORLD").unwrap();
    drop(f);
    assert_eq!(fs::read(root.join("a.txt")).unwrap(), b"hello WORLD");
    // truncate
    fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("a.txt"))
        .unwrap()
        .set_len(5)
        .unwrap();
    assert_eq!(fs::read(root.join("a.txt")).unwrap(), b"hello");
    // mkdir / rmdir
    fs::create_dir(mnt.join("d")).unwrap();
    assert!(root.join("d").is_dir());
    fs::write(mnt.join("d/inner"), b"x").unwrap();
    assert_eq!(fs::read(root.join("d/inner")).unwrap(), b"x");
    fs::remove_file(mnt.join("d/inner")).unwrap();
    assert!(!root.join("d/inner").exists());
    fs::remove_dir(mnt.join("d")).unwrap();
    assert!(!root.join("d").exists());
    // rename, and rename over an existing file
    fs::rename(mnt.join("a.txt"), mnt.join("b.txt")).unwrap();
    assert!(!root.join("a.txt").exists());
    assert_eq!(fs::read(root.join("b.txt")).unwrap(), b"hello");
    fs::rename(mnt.join("b.txt"), mnt.join("direct.txt")).unwrap();
    assert_eq!(fs::read(root.join("direct.txt")).unwrap(), b"hello");
    assert!(!root.join("b.txt").exists());
    // symlink + readlink: the value is stored verbatim
    symlink("direct.txt", mnt.join("l")).unwrap();
    assert_eq!(
        fs::read_link(root.join("l")).unwrap().to_str(),
        Some("direct.txt")
    );
    assert_eq!(
        fs::read_link(mnt.join("l")).unwrap().to_str(),
        Some("direct.txt")
    );
    assert_eq!(fs::read(mnt.join("l")).unwrap(), b"hello");
    // hard link
    fs::hard_link(mnt.join("direct.txt"), mnt.join("hard")).unwrap();
    let (a, b) = (
        fs::metadata(root.join("direct.txt")).unwrap(),
        fs::metadata(root.join("hard")).unwrap(),
    );
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    // chmod
    fs::set_permissions(mnt.join("direct.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        fs::metadata(root.join("direct.txt")).unwrap().mode() & 0o7777,
        0o640
    );
    // chown (the test runs as root)
    std::os::unix::fs::chown(mnt.join("direct.txt"), Some(1234), Some(5678)).unwrap();
    let md = fs::metadata(root.join("direct.txt")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    // utimes
    let t = nix::sys::time::TimeSpec::new(1_000_000_000, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &mnt.join("direct.txt"),
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    )
    .unwrap();
    let md = fs::metadata(root.join("direct.txt")).unwrap();
    assert_eq!((md.atime(), md.mtime()), (1_000_000_000, 1_000_000_000));
    // ls -la
    let out = Command::new("ls").arg("-la").arg(mnt).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["direct.txt", "hard", "l -> direct.txt"] {
        assert!(text.contains(name), "ls -la shows {name}:\n{text}");
    }
    // df (statvfs@openssh.com)
    let out = Command::new("df").arg(mnt).output().unwrap();
    assert!(
        out.status.success(),
        "df: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vm = nix::sys::statvfs::statvfs(mnt.as_path()).unwrap();
    let vr = nix::sys::statvfs::statvfs(root.as_path()).unwrap();
    let (sm, sr) = (
        vm.blocks() * vm.fragment_size(),
        vr.blocks() * vr.fragment_size(),
    );
    assert!(
        sm > 0 && sm.abs_diff(sr) <= sr / 100 + (1 << 20),
        "df size {sm} vs {sr}"
    );

    let stats = m.finish().expect("server result").expect("server ok");
    assert!(stats.requests > 20);
}

#[test]
fn large_file_round_trip() {
    require_tools!();
    let sc = common::scratch();
    let m = Mount::new(
        Server::Doppel(ServeOptions::default()),
        &sc.root,
        &sc.mnt,
        "",
    );
    let data = common::pattern(64 << 20, 7);
    {
        let mut f = fs::File::create(sc.mnt.join("big")).unwrap();
        for chunk in data.chunks(1 << 20) {
            f.write_all(chunk).unwrap();
        }
    }
    let want = {
        let p = sc.outer.join("expected");
        fs::write(&p, &data).unwrap();
        common::checksum(&p)
    };
    assert_eq!(
        common::checksum(&sc.root.join("big")),
        want,
        "written through sshfs"
    );
    fs::write(sc.root.join("big2"), &data).unwrap();
    assert_eq!(
        common::checksum(&sc.mnt.join("big2")),
        want,
        "read through sshfs"
    );
    // A partial read at an odd offset.
    let mut f = fs::File::open(sc.mnt.join("big2")).unwrap();
    f.seek(SeekFrom::Start(12_345_677)).unwrap();
    let mut buf = vec![0u8; 100_003];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[..], &data[12_345_677..12_345_677 + 100_003]);
    drop(f);
    let stats = m.finish().unwrap().unwrap();
    assert!(stats.bytes_written >= 64 << 20 && stats.bytes_read >= 64 << 20);
}

#[test]
fn symlink_to_outside_is_not_followed_by_the_server() {
    require_tools!();
    let sc = common::scratch();
    fs::write(sc.outer.join("secret"), b"SECRET").unwrap();
    symlink("/etc", sc.root.join("link-to-etc")).unwrap();
    symlink("../secret", sc.root.join("up")).unwrap();
    // follow_symlinks makes sshfs ask the server to resolve links: the
    // server must refuse rather than serve the engine's files.
    let m = Mount::new(
        Server::Doppel(ServeOptions::default()),
        &sc.root,
        &sc.mnt,
        "follow_symlinks",
    );
    let out = Command::new("cat")
        .arg(sc.mnt.join("link-to-etc/passwd"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "cat must fail");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("root:"),
        "engine /etc/passwd shown"
    );
    assert!(fs::read(sc.mnt.join("up")).is_err());
    assert!(fs::read_dir(sc.mnt.join("link-to-etc")).is_err());
    assert!(fs::write(sc.mnt.join("up"), b"overwrite").is_err());
    assert_eq!(fs::read(sc.outer.join("secret")).unwrap(), b"SECRET");
    drop(m);

    // Without follow_symlinks the link is shown as a link whose value is
    // kept verbatim (on a real host the host's kernel resolves it).
    // (This sshfs/FUSE combination answers EPERM to readlink of a link whose
    // value starts with "/" or "..", with OpenSSH's sftp-server as well; the
    // raw-protocol tests check the value the server returns.)
    let m = Mount::new(
        Server::Doppel(ServeOptions::default()),
        &sc.root,
        &sc.mnt,
        "",
    );
    symlink("up", sc.root.join("rel")).unwrap();
    assert_eq!(
        fs::read_link(sc.mnt.join("rel")).unwrap().to_str(),
        Some("up")
    );
    assert!(fs::symlink_metadata(sc.mnt.join("link-to-etc"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::symlink_metadata(sc.mnt.join("up"))
        .unwrap()
        .file_type()
        .is_symlink());
    drop(m);
    assert!(!common::is_fuse_mount(&sc.mnt));
}

#[test]
fn read_only_mount() {
    require_tools!();
    let sc = common::scratch();
    fs::write(sc.root.join("f"), b"data").unwrap();
    let opts = ServeOptions {
        read_only: true,
        ..Default::default()
    };
    let m = Mount::new(Server::Doppel(opts), &sc.root, &sc.mnt, "");
    assert_eq!(fs::read(sc.mnt.join("f")).unwrap(), b"data");
    assert!(fs::write(sc.mnt.join("f"), b"x").is_err());
    assert!(fs::write(sc.mnt.join("new"), b"x").is_err());
    assert!(fs::create_dir(sc.mnt.join("d")).is_err());
    assert!(fs::remove_file(sc.mnt.join("f")).is_err());
    assert!(fs::set_permissions(sc.mnt.join("f"), fs::Permissions::from_mode(0o600)).is_err());
    drop(m);
    assert_eq!(fs::read(sc.root.join("f")).unwrap(), b"data");
    assert!(!sc.root.join("new").exists() && !sc.root.join("d").exists());
}

#[test]
fn new_files_get_the_configured_owner() {
    require_tools!();
    let sc = common::scratch();
    let opts = ServeOptions {
        new_file_owner: Some(Owner {
            uid: 4321,
            gid: 8765,
        }),
        ..Default::default()
    };
    let m = Mount::new(Server::Doppel(opts), &sc.root, &sc.mnt, "");
    fs::write(sc.mnt.join("f"), b"x").unwrap();
    fs::create_dir(sc.mnt.join("d")).unwrap();
    symlink("f", sc.mnt.join("l")).unwrap();
    drop(m);
    for n in ["f", "d", "l"] {
        let md = fs::symlink_metadata(sc.root.join(n)).unwrap();
        assert_eq!((md.uid(), md.gid()), (4321, 8765), "{n}");
    }
}
