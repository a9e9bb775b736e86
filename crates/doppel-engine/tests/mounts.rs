//! Engine storage mounted on a fake remote host over sshfs (passive mode,
//! served by the engine), checked from the host over SSH.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use doppel_engine::EngineError;
use doppel_model::MountRequest;
use doppel_testworld::World;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataset_mounted_on_a_remote_host_is_served_there_confined_and_restored_after_a_restart()
{
    let world = World::new(&["target"]);
    let host = world.host("target");
    let data = tempfile::tempdir().unwrap();
    let engine = common::open_engine(data.path()).await;
    let env = common::add_env(&engine, "target", host, "delphix").await["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    // Where the host's admin lets the environment user mount.
    host.mkdir("/srv/mnt", "delphix");

    let pool = engine.pool().clone();
    let v1 = doppel_storage::VolumeId::new("v1").unwrap();
    let v2 = doppel_storage::VolumeId::new("v2").unwrap();
    let p1 = pool.create_volume(&v1).unwrap();
    let p2 = pool.create_volume(&v2).unwrap();
    std::fs::write(p1.join("hello.txt"), b"from the engine\n").unwrap();
    std::fs::write(p2.join("secret.txt"), b"another dataset's secret\n").unwrap();
    // A link that would lead from v1 into v2 if the server followed it.
    std::os::unix::fs::symlink("../v2", p1.join("sibling")).unwrap();

    let mount = |path: &str| MountRequest {
        environment: env.clone(),
        user: None,
        volume: "v1".into(),
        subdirectory: String::new(),
        mount_path: path.into(),
        read_only: false,
        owner: None,
    };
    let m = engine.mount_volume(mount("/srv/mnt/v1")).await.unwrap();
    assert_eq!(m.kind, "sshfs");

    // Seen from the host, over SSH: the files are there, and writable.
    assert_eq!(
        host.sh("delphix", "cat /srv/mnt/v1/hello.txt"),
        "from the engine\n"
    );
    host.sh(
        "delphix",
        "echo from the host > /srv/mnt/v1/written.txt && mkdir /srv/mnt/v1/dir",
    );
    assert_eq!(
        std::fs::read(p1.join("written.txt")).unwrap(),
        b"from the host\n"
    );
    use std::os::unix::fs::MetadataExt;
    let uid = host.user("delphix").uid;
    assert_eq!(
        std::fs::metadata(p1.join("written.txt")).unwrap().uid(),
        uid,
        "files the host makes belong to its user"
    );
    assert_eq!(
        std::fs::metadata(&p1).unwrap().uid(),
        uid,
        "the dataset's top belongs to the mounting user"
    );
    // Not visible to the engine's own namespace, nor anything but v1 to the host.
    assert!(!std::path::Path::new("/srv/mnt/v1").exists());
    let listing = host.sh("delphix", "ls -A /srv/mnt/v1 | sort | tr '\\n' ' '");
    assert_eq!(listing, "dir hello.txt sibling written.txt ");
    let escape = host.sh_output(
        "delphix",
        "cat /srv/mnt/v1/sibling/secret.txt /srv/mnt/v1/../v2/secret.txt",
    );
    assert!(!escape.status.success());
    assert!(
        !String::from_utf8_lossy(&escape.stdout).contains("secret"),
        "another dataset leaked through the mount"
    );

    // The same path cannot be mounted twice; bad paths are refused.
    assert!(matches!(
        engine.mount_volume(mount("/srv/mnt/v1")).await,
        Err(EngineError::Conflict(_))
    ));
    assert!(matches!(
        engine.mount_volume(mount("relative")).await,
        Err(EngineError::InvalidInput { .. })
    ));
    assert!(matches!(
        engine.mount_volume(mount("/srv/../etc")).await,
        Err(EngineError::InvalidInput { .. })
    ));
    // A directory the host cannot make (under a file) is bad input that
    // names the field, not an engine fault.
    match engine.mount_volume(mount("/etc/hostname/v")).await {
        Err(EngineError::InvalidInput { field, reason }) => {
            assert_eq!(field, "mount_path");
            assert!(reason.contains("cannot mount on"), "{reason}");
        }
        other => panic!("a mount under a file must be refused: {other:?}"),
    }
    // An environment with mounts cannot be deleted.
    assert!(matches!(
        engine.delete_environment(&env).await,
        Err(EngineError::Conflict(_))
    ));

    // What a V2P copy cut short by a crash leaves: its temporary clone,
    // mounted read-only on the host, and the mount's record.
    let temp = doppel_storage::VolumeId::new("v2p-0123456789ab").unwrap();
    std::fs::write(
        pool.create_volume(&temp).unwrap().join("copying.txt"),
        b"half copied\n",
    )
    .unwrap();
    engine
        .mount_volume(MountRequest {
            volume: temp.to_string(),
            read_only: true,
            ..mount("/srv/mnt/v2p-copy")
        })
        .await
        .unwrap();
    assert_eq!(
        host.sh("delphix", "cat /srv/mnt/v2p-copy/copying.txt"),
        "half copied\n"
    );

    // A restart: the sessions die with the engine, the next start restores
    // them, and removes the V2P leftovers instead.
    engine.shutdown().await;
    drop(engine);
    // While nothing serves it, the mount point is a closed door: a write
    // through it fails, and nothing lands on the host's own disk (where it
    // would be hidden, not in the dataset, once the mount is back).
    let mut down = false;
    for _ in 0..200 {
        if !host
            .sh_output("delphix", "mountpoint -q /srv/mnt/v1")
            .status
            .success()
        {
            down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(down, "the mount did not end with its server");
    let write = host.sh_output("delphix", "echo lost > /srv/mnt/v1/while-down.txt");
    assert!(
        !write.status.success(),
        "a write under a lost mount succeeded"
    );
    assert!(
        String::from_utf8_lossy(&write.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
    assert_eq!(host.sh("delphix", "ls -A /srv/mnt/v1"), "");
    let engine = common::open_engine(data.path()).await;
    let mut restored = String::new();
    for _ in 0..200 {
        restored = host
            .sh_output("delphix", "cat /srv/mnt/v1/hello.txt 2>/dev/null")
            .stdout
            .iter()
            .map(|&b| b as char)
            .collect();
        if restored == "from the engine\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        restored, "from the engine\n",
        "the mount came back after the restart"
    );
    assert_eq!(engine.list_mounts().unwrap().len(), 1);
    assert!(
        !host
            .sh_output("delphix", "test -e /srv/mnt/v2p-copy")
            .status
            .success(),
        "the interrupted V2P copy's mount point is gone from the host"
    );
    // The restart reconciled the pool with the records: v1 (mounted) stays,
    // v2 (no record names it) is quarantined, not deleted, and the V2P
    // clone is destroyed.
    let volumes: Vec<String> = engine
        .pool()
        .list_volumes()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(volumes, vec!["v1".to_owned()]);
    assert_eq!(engine.pool().list_quarantine().unwrap().len(), 1);

    // A busy mount is not unmounted, and what holds it is named.
    host.sh(
        "delphix",
        "cd /srv/mnt/v1/dir && (setsid sleep 60 >/dev/null 2>&1 < /dev/null &)",
    );
    let busy = engine.unmount(m.id).await;
    match busy {
        Err(EngineError::Conflict(msg)) => {
            assert!(msg.contains("busy") && msg.contains("(sleep)"), "{msg}")
        }
        other => panic!("expected busy, got {other:?}"),
    }
    host.sh("delphix", "pkill -u delphix -x sleep; true");
    engine.unmount(m.id).await.unwrap();
    assert!(!host
        .sh_output("delphix", "mountpoint -q /srv/mnt/v1")
        .status
        .success());
    assert!(engine.list_mounts().unwrap().is_empty());
    assert!(p1.join("written.txt").exists(), "unmounting keeps the data");
    assert!(!p1.join("while-down.txt").exists());
    // The mount point was given back and removed: nothing was under it.
    assert!(!host.exists("/srv/mnt/v1"), "the mount point is left over");
    engine.delete_environment(&env).await.unwrap();
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_mount_whose_sshfs_dies_comes_back_by_itself() {
    let world = World::new(&["target"]);
    let host = world.host("target");
    let data = tempfile::tempdir().unwrap();
    let engine = common::open_engine(data.path()).await;
    let env = common::add_env(&engine, "target", host, "delphix").await["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    host.mkdir("/srv/mnt", "delphix");
    let v = doppel_storage::VolumeId::new("lost").unwrap();
    std::fs::write(
        engine.pool().create_volume(&v).unwrap().join("hello.txt"),
        b"still here\n",
    )
    .unwrap();
    // A path no other test uses: the kill below picks its sshfs by it.
    let path = format!("/srv/mnt/lost-{}", std::process::id());
    let m = engine
        .mount_volume(MountRequest {
            environment: env.clone(),
            user: None,
            volume: "lost".into(),
            subdirectory: String::new(),
            mount_path: path.clone(),
            read_only: false,
            owner: None,
        })
        .await
        .unwrap();
    assert_eq!(
        host.sh("delphix", &format!("cat {path}/hello.txt")),
        "still here\n"
    );

    // The host loses the mount (as after a dropped connection): the
    // engine notices its session ended and mounts it again.
    host.sh("delphix", &format!("pkill -KILL -f -- ' :/ {path}$'"));
    let mut seen = String::new();
    for _ in 0..300 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = String::from_utf8_lossy(
            &host
                .sh_output("delphix", &format!("cat {path}/hello.txt 2>&1"))
                .stdout,
        )
        .into_owned();
        if seen == "still here\n" {
            break;
        }
    }
    assert_eq!(seen, "still here\n", "the lost mount did not come back");
    // The host sees the mount a moment before the engine has checked it.
    let mut active = false;
    for _ in 0..100 {
        active = engine.list_mounts().unwrap()[0].active;
        if active {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(active, "the mount is in place again");
    assert_eq!(
        engine.list_mounts().unwrap().len(),
        1,
        "the same record serves it"
    );

    // An unmount is not undone by the watcher.
    engine.unmount(m.id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!host
        .sh_output("delphix", &format!("mountpoint -q {path}"))
        .status
        .success());
    engine.delete_environment(&env).await.unwrap();
    engine.shutdown().await;
}
