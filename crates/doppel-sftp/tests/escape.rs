//! Escape attempts and read-only mode, with a raw SFTP client speaking the
//! protocol directly to the server.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use common::client::*;
use doppel_sftp::ServeOptions;

const SECRET: &[u8] = b"SECRET-OUTSIDE-THE-ROOT";

/// outer/{secret, root/{file, link-etc -> /etc, up -> ../.., chain -> up/x,
/// sneaky -> ../secret, dir/}}
fn layout() -> common::Scratch {
    let sc = common::scratch();
    fs::write(sc.outer.join("secret"), SECRET).unwrap();
    fs::write(sc.root.join("file"), b"inside").unwrap();
    fs::create_dir(sc.root.join("dir")).unwrap();
    symlink("/etc", sc.root.join("link-etc")).unwrap();
    symlink("../..", sc.root.join("up")).unwrap();
    symlink("up/x", sc.root.join("chain")).unwrap();
    symlink("dir/../../secret", sc.root.join("sneaky")).unwrap();
    symlink("../../secret", sc.root.join("dir/rel-up")).unwrap();
    symlink("file", sc.root.join("ok-link")).unwrap();
    sc
}

fn denied(r: &Reply) -> bool {
    matches!(r.code(), Some(c) if c != FX_OK && c != FX_EOF)
}

fn outer_entries(sc: &common::Scratch) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(&sc.outer)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_through_escapes_fail() {
    let sc = layout();
    let before = outer_entries(&sc);
    let mut c = Client::start(&sc.root, ServeOptions::default()).await;
    for p in [
        "../../etc/passwd",
        "/../etc/passwd",
        "../secret",
        "/../secret",
        "/dir/../../secret",
        "link-etc/passwd",
        "/link-etc/passwd",
        "up/etc/passwd",
        "chain",
        "sneaky",
        "dir/rel-up",
    ] {
        let r = c.open(p, READ).await;
        assert!(denied(&r), "open {p}: {r:?}");
        let r = c.path_op(17, p).await;
        assert!(denied(&r), "stat {p}: {r:?}");
    }
    for p in ["/..", "../", "link-etc", "up", "/up/", "dir/rel-up"] {
        let r = c.path_op(11, p).await;
        assert!(denied(&r), "opendir {p}: {r:?}");
        let r = c.extended("statvfs@openssh.com", &[p]).await;
        assert!(denied(&r), "statvfs {p}: {r:?}");
    }
    // The escape is reported as permission denied, not as a missing file.
    assert_eq!(
        c.open("../secret", READ).await.code(),
        Some(FX_PERMISSION_DENIED)
    );

    // The links themselves are visible as links: their value is data.
    assert!(matches!(
        c.path_op(7, "link-etc").await,
        Reply::Attrs { .. }
    ));
    match c.path_op(19, "link-etc").await {
        Reply::Name(n) => assert_eq!(n, vec![b"/etc".to_vec()]),
        r => panic!("readlink: {r:?}"),
    }
    // A link that stays inside works.
    let Reply::Handle(h) = c.open("ok-link", READ).await else {
        panic!("open ok-link")
    };
    match c.read(&h, 0, 100).await {
        Reply::Data(d) => assert_eq!(d, b"inside"),
        r => panic!("read: {r:?}"),
    }
    assert!(c.close(&h).await.is_ok_status());

    // realpath answers in the client's view, never the engine's path.
    for (p, want) in [
        ("/", "/"),
        (".", "/"),
        ("/..", "/"),
        ("../../x", "/x"),
        ("ok-link", "/file"),
    ] {
        match c.path_op(16, p).await {
            Reply::Name(n) => assert_eq!(n, vec![want.as_bytes().to_vec()], "realpath {p}"),
            r => panic!("realpath {p}: {r:?}"),
        }
    }
    let root_str = sc.root.to_string_lossy().into_owned();
    for p in ["link-etc", "up", "sneaky", "dir"] {
        match c.path_op(16, p).await {
            Reply::Name(n) => {
                let s = String::from_utf8_lossy(&n[0]).into_owned();
                assert!(
                    s.starts_with('/') && !s.contains(&root_str) && !s.starts_with("/etc"),
                    "{p} -> {s}"
                );
            }
            r => panic!("realpath {p}: {r:?}"),
        }
    }
    // READDIR of the root never describes its parent.
    let Reply::Handle(h) = c.path_op(11, "/").await else {
        panic!("opendir /")
    };
    let Reply::Name(names) = c.with_handle(12, &h, &[]).await else {
        panic!("readdir")
    };
    assert!(names.contains(&b"file".to_vec()) && names.contains(&b"link-etc".to_vec()));
    assert!(!names.iter().any(|n| n == b"secret"));
    c.close(&h).await;
    c.finish().await.unwrap();
    assert_eq!(outer_entries(&sc), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_escapes_fail() {
    let sc = layout();
    let before = outer_entries(&sc);
    let secret_mode = fs::metadata(sc.outer.join("secret"))
        .unwrap()
        .permissions()
        .mode();
    let mut c = Client::start(&sc.root, ServeOptions::default()).await;

    for p in [
        "../created",
        "/../created",
        "up/created",
        "link-etc/created",
        "dir/rel-up",
        "sneaky",
    ] {
        let r = c.open(p, WRITE | CREAT | TRUNC).await;
        assert!(denied(&r), "create {p}: {r:?}");
    }
    // A symlink made through SFTP, pointing outside, then written through.
    assert!(c
        .two_paths(20, "../created-via-link", "evil")
        .await
        .is_ok_status());
    assert_eq!(
        fs::read_link(sc.root.join("evil")).unwrap().to_str(),
        Some("../created-via-link")
    );
    let abs = sc.outer.join("abs-created");
    assert!(c
        .two_paths(20, abs.to_str().unwrap(), "evil-abs")
        .await
        .is_ok_status());
    for p in ["evil", "evil-abs", "/evil"] {
        let r = c.open(p, WRITE | CREAT).await;
        assert!(denied(&r), "write through {p}: {r:?}");
        assert!(denied(&c.chmod(p, 0o777).await), "chmod through {p}");
    }
    assert!(denied(&c.chmod("sneaky", 0o777).await));
    assert!(denied(&c.chmod("../secret", 0o777).await));
    assert!(denied(&c.mkdir("../newdir").await));
    assert!(denied(&c.mkdir("up/newdir").await));
    assert!(denied(&c.path_op(13, "../secret").await), "remove outside");
    assert!(denied(&c.path_op(13, "up/secret").await), "remove via link");
    assert!(denied(&c.path_op(15, "..").await), "rmdir ..");
    assert!(denied(&c.path_op(15, "/").await), "rmdir root");
    assert!(
        denied(&c.two_paths(18, "file", "../outside").await),
        "rename out"
    );
    assert!(
        denied(&c.two_paths(18, "file", "up/outside").await),
        "rename out via link"
    );
    assert!(
        denied(&c.two_paths(18, "../secret", "stolen").await),
        "rename in"
    );
    assert!(denied(
        &c.extended("posix-rename@openssh.com", &["file", "../outside"])
            .await
    ));
    assert!(denied(
        &c.extended("posix-rename@openssh.com", &["../secret", "stolen"])
            .await
    ));
    assert!(
        denied(
            &c.extended("hardlink@openssh.com", &["../secret", "stolen"])
                .await
        ),
        "link in"
    );
    assert!(
        denied(
            &c.extended("hardlink@openssh.com", &["file", "../outside"])
                .await
        ),
        "link out"
    );
    assert!(
        denied(&c.two_paths(20, "x", "../outside-link").await),
        "symlink out"
    );
    // Hard-linking a symlink links the symlink itself, never its target.
    assert!(c
        .extended("hardlink@openssh.com", &["sneaky", "sneaky2"])
        .await
        .is_ok_status());
    assert!(fs::symlink_metadata(sc.root.join("sneaky2"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Renaming a link that points outside is fine: it moves the link.
    assert!(c.two_paths(18, "evil", "evil-moved").await.is_ok_status());

    c.finish().await.unwrap();
    assert_eq!(
        outer_entries(&sc),
        before,
        "nothing created beside the root"
    );
    assert_eq!(fs::read(sc.outer.join("secret")).unwrap(), SECRET);
    assert_eq!(
        fs::metadata(sc.outer.join("secret"))
            .unwrap()
            .permissions()
            .mode(),
        secret_mode
    );
    assert!(!sc.root.join("stolen").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_refuses_writes() {
    let sc = layout();
    let opts = ServeOptions {
        read_only: true,
        ..Default::default()
    };
    let mut c = Client::start(&sc.root, opts).await;
    let Reply::Handle(h) = c.open("file", READ).await else {
        panic!("open for read")
    };
    assert!(matches!(c.read(&h, 0, 10).await, Reply::Data(d) if d == b"inside"));
    assert_eq!(
        c.write(&h, 0, b"x").await.code(),
        Some(FX_PERMISSION_DENIED)
    );
    c.close(&h).await;
    for flags in [
        WRITE,
        READ | WRITE,
        WRITE | CREAT,
        APPEND,
        WRITE | TRUNC,
        CREAT | EXCL | WRITE,
    ] {
        assert_eq!(
            c.open("file", flags).await.code(),
            Some(FX_PERMISSION_DENIED),
            "{flags:#x}"
        );
    }
    assert_eq!(
        c.open("new", WRITE | CREAT).await.code(),
        Some(FX_PERMISSION_DENIED)
    );
    assert_eq!(c.mkdir("d2").await.code(), Some(FX_PERMISSION_DENIED));
    assert_eq!(
        c.path_op(13, "file").await.code(),
        Some(FX_PERMISSION_DENIED)
    );
    assert_eq!(
        c.path_op(15, "dir").await.code(),
        Some(FX_PERMISSION_DENIED)
    );
    assert_eq!(
        c.chmod("file", 0o600).await.code(),
        Some(FX_PERMISSION_DENIED)
    );
    assert_eq!(
        c.two_paths(18, "file", "f2").await.code(),
        Some(FX_PERMISSION_DENIED)
    );
    assert_eq!(
        c.two_paths(20, "file", "l2").await.code(),
        Some(FX_PERMISSION_DENIED)
    );
    assert_eq!(
        c.extended("posix-rename@openssh.com", &["file", "f2"])
            .await
            .code(),
        Some(FX_PERMISSION_DENIED)
    );
    assert_eq!(
        c.extended("hardlink@openssh.com", &["file", "f2"])
            .await
            .code(),
        Some(FX_PERMISSION_DENIED)
    );
    assert!(matches!(
        c.path_op(17, "file").await,
        Reply::Attrs { size: Some(6), .. }
    ));
    assert!(matches!(
        c.extended("statvfs@openssh.com", &["/"]).await,
        Reply::Extended(_)
    ));
    let stats = c.finish().await.unwrap();
    assert!(stats.errors >= 10);
    assert_eq!(fs::read(sc.root.join("file")).unwrap(), b"inside");
    assert!(!sc.root.join("new").exists() && !sc.root.join("d2").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_basics() {
    let sc = layout();
    let mut c = Client::start(&sc.root, ServeOptions::default()).await;
    for ext in [
        "posix-rename@openssh.com",
        "statvfs@openssh.com",
        "hardlink@openssh.com",
        "fsync@openssh.com",
    ] {
        assert!(c.extensions.iter().any(|e| e == ext), "{ext} advertised");
    }
    let Reply::Handle(h) = c.open("/new", WRITE | CREAT | EXCL).await else {
        panic!("create")
    };
    assert!(c.write(&h, 0, b"hello ").await.is_ok_status());
    assert!(c.write(&h, 6, b"world").await.is_ok_status());
    assert!(c.with_handle(200, b"", &[]).await.code().is_some()); // malformed ext
    let mut fsync = vec![];
    fsync.extend_from_slice(&(17u32).to_be_bytes());
    fsync.extend_from_slice(b"fsync@openssh.com");
    fsync.extend_from_slice(&(h.len() as u32).to_be_bytes());
    fsync.extend_from_slice(&h);
    assert!(c.call(200, &fsync).await.is_ok_status());
    assert!(c.close(&h).await.is_ok_status());
    assert_eq!(
        c.open("/new", WRITE | CREAT | EXCL).await.code(),
        Some(4),
        "EXCL on existing"
    );
    assert_eq!(fs::read(sc.root.join("new")).unwrap(), b"hello world");
    let Reply::Handle(h) = c.open("new", READ).await else {
        panic!("open")
    };
    assert_eq!(c.read(&h, 100, 10).await.code(), Some(FX_EOF));
    assert_eq!(c.close(&h).await.code(), Some(FX_OK));
    assert_eq!(c.close(&h).await.code(), Some(4), "double close");
    assert_eq!(c.path_op(17, "missing").await.code(), Some(FX_NO_SUCH_FILE));
    // RENAME (v3) does not overwrite; posix-rename does.
    fs::write(sc.root.join("other"), b"o").unwrap();
    assert!(!c.two_paths(18, "new", "other").await.is_ok_status());
    assert!(c
        .extended("posix-rename@openssh.com", &["new", "other"])
        .await
        .is_ok_status());
    assert_eq!(fs::read(sc.root.join("other")).unwrap(), b"hello world");
    // FIFOs are refused rather than stalling the session.
    nix::unistd::mkfifo(
        &sc.root.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    assert!(denied(&c.open("fifo", READ).await));
    let stats = c.finish().await.unwrap();
    assert_eq!(stats.bytes_written, 11);
}
