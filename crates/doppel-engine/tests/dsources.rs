//! dSources with the tutorial directory plugin: a source host, a staging
//! host, the dataset mounted on the staging host, data copied by the
//! plugin's rsync from the source host, snapshots in the pool.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

use doppel_engine::EngineError;
use doppel_model::LinkDSource;
use doppel_model::{AddSourceConfig, JobState};
use doppel_testworld::{plugins, World};
use serde_json::json;

mod common;
use common::{add_env, open_engine, trust, wait};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staged_dsource_links_syncs_and_deletes_with_the_directory_plugin() {
    let world = World::new(&["source", "staging"]);
    let (source, staging) = (world.host("source"), world.host("staging"));
    source.mkdir("/srv/data/tree", "alice");
    source.put_file("/srv/data/tree/a.txt", b"one\n", "alice");
    source.mkdir("/srv/data/tree/sub", "alice");
    source.put_file("/srv/data/tree/sub/b.txt", b"two\n", "alice");
    trust(staging, source, "alice");

    let data = tempfile::tempdir().unwrap();
    let engine = open_engine(data.path()).await;
    engine
        .install_plugin(
            &engine.principal("admin").unwrap(),
            &std::fs::read(plugins::build_example("directory")).unwrap(),
        )
        .await
        .unwrap();
    add_env(&engine, "source", source, "delphix").await;
    add_env(&engine, "staging", staging, "alice").await;
    let repo = engine
        .list_repositories(Some("source"))
        .unwrap()
        .pop()
        .expect("a repository on the source host");
    let sc = engine
        .add_source_config(AddSourceConfig {
            repository: repo.reference.clone(),
            parameters: json!({"name": "tree", "path": "/srv/data/tree"}),
        })
        .unwrap();
    let link = |name: &str, host: String| LinkDSource {
        name: name.into(),
        source_config: sc.reference.clone(),
        staging_environment: Some("staging".into()),
        staging_user: None,
        parameters: json!({"sourceHost": host, "sourceUser": "alice", "sshPort": source.port()}),
        hooks: Default::default(),
    };

    // Bad parameters are refused before any job starts.
    let bad = LinkDSource {
        parameters: json!({"sshPort": "x"}),
        ..link("bad", String::new())
    };
    assert!(matches!(
        engine.link_dsource(&engine.principal("admin").unwrap(), bad),
        Err(EngineError::InvalidParameters { .. })
    ));

    // A link whose first sync fails (the source host cannot be reached)
    // fails with the plugin's message and leaves nothing behind.
    let failed = wait(
        &engine,
        engine
            .link_dsource(
                &engine.principal("admin").unwrap(),
                link("broken", "127.0.0.1".into()),
            )
            .unwrap(),
    )
    .await;
    assert_eq!(failed.state, JobState::Failed);
    let err = failed.error.unwrap();
    assert_eq!(
        err.code,
        doppel_model::ErrorCode::PluginUserError,
        "{err:?}"
    );
    assert!(engine.list_dsources().unwrap().is_empty());
    assert!(engine.list_mounts().unwrap().is_empty());
    assert!(
        engine.pool().list_volumes().unwrap().is_empty(),
        "no dataset left behind"
    );
    assert_eq!(
        staging
            .sh("alice", "grep -c fuse.sshfs /proc/mounts || true")
            .trim(),
        "0",
        "no mount left on the staging host"
    );

    // The real link: mount on staging, rsync from source, first snapshot.
    let linked = wait(
        &engine,
        engine
            .link_dsource(
                &engine.principal("admin").unwrap(),
                link("tree", source.address().to_string()),
            )
            .unwrap(),
    )
    .await;
    assert_eq!(linked.state, JobState::Succeeded, "{linked:?}");
    let ds = engine.get_dsource("tree").unwrap();
    assert_eq!(ds.snapshots, 1);
    // The plugin's log lines are part of the job's events.
    let events = engine.jobs().events(&linked.id, 0).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.message.starts_with("plugin: copying alice@")),
        "{events:?}"
    );
    let dataset = engine
        .pool()
        .volume_path(&doppel_storage::VolumeId::new(ds.dataset.as_str()).unwrap());
    assert_eq!(std::fs::read(dataset.join("a.txt")).unwrap(), b"one\n");
    assert_eq!(std::fs::read(dataset.join("sub/b.txt")).unwrap(), b"two\n");
    let mounts = engine.list_mounts().unwrap();
    assert_eq!(
        mounts.len(),
        1,
        "the staging dataset stays mounted while the dSource is enabled"
    );
    assert_eq!(
        staging.sh("alice", &format!("cat {}/a.txt", mounts[0].mount_path)),
        "one\n"
    );
    let snaps = engine.list_snapshots(Some("tree")).await.unwrap();
    assert_eq!(snaps[0].metadata["fileCount"], 2, "{:?}", snaps[0].metadata);

    // Change the source, sync: a second snapshot; the first is unchanged.
    source.put_file("/srv/data/tree/a.txt", b"one, changed\n", "alice");
    source.put_file("/srv/data/tree/c.txt", b"three\n", "alice");
    let synced = wait(
        &engine,
        engine
            .sync_dsource("tree", Some(json!({"resync": false})), false)
            .unwrap(),
    )
    .await;
    assert_eq!(synced.state, JobState::Succeeded, "{synced:?}");
    let snaps = engine.list_snapshots(Some("tree")).await.unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1].metadata["fileCount"], 3);
    // Snapshots are immutable: the first still holds what the first sync copied.
    let volume = doppel_storage::VolumeId::new(ds.dataset.as_str()).unwrap();
    let first = engine
        .pool()
        .snapshot_path(&doppel_storage::SnapshotRef::new(
            volume.clone(),
            doppel_storage::SnapshotId::new(snaps[0].pool_snapshot.as_str()).unwrap(),
        ));
    assert_eq!(std::fs::read(first.join("a.txt")).unwrap(), b"one\n");
    assert!(!first.join("c.txt").exists());
    assert_eq!(
        std::fs::read(dataset.join("a.txt")).unwrap(),
        b"one, changed\n"
    );
    assert!(matches!(
        engine.sync_dsource("tree", Some(json!({"resync": "yes"})), false),
        Err(EngineError::InvalidParameters { .. })
    ));

    // Delete: unmounted on staging, dataset and records gone.
    let deleted = wait(&engine, engine.delete_dsource("tree").unwrap()).await;
    assert_eq!(deleted.state, JobState::Succeeded, "{deleted:?}");
    assert!(engine.list_dsources().unwrap().is_empty());
    assert!(engine.list_mounts().unwrap().is_empty());
    assert!(engine.list_snapshots(None).await.unwrap().is_empty());
    assert!(engine.pool().list_volumes().unwrap().is_empty());
    assert_eq!(
        staging
            .sh("alice", "grep -c fuse.sshfs /proc/mounts || true")
            .trim(),
        "0"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vdbs_are_provisioned_refreshed_rewound_and_deleted_with_the_directory_plugin() {
    let world = World::new(&["source", "staging", "target"]);
    let (source, staging, target) = (
        world.host("source"),
        world.host("staging"),
        world.host("target"),
    );
    source.mkdir("/srv/data/tree", "alice");
    source.put_file("/srv/data/tree/a.txt", b"v1\n", "alice");
    trust(staging, source, "alice");
    target.mkdir("/srv/vdbs", "delphix");

    let data = tempfile::tempdir().unwrap();
    let engine = open_engine(data.path()).await;
    engine
        .install_plugin(
            &engine.principal("admin").unwrap(),
            &std::fs::read(plugins::build_example("directory")).unwrap(),
        )
        .await
        .unwrap();
    add_env(&engine, "source", source, "delphix").await;
    add_env(&engine, "staging", staging, "alice").await;
    add_env(&engine, "target", target, "delphix").await;
    let repo = engine
        .list_repositories(Some("source"))
        .unwrap()
        .pop()
        .unwrap();
    let sc = engine
        .add_source_config(AddSourceConfig {
            repository: repo.reference,
            parameters: json!({"name": "tree", "path": "/srv/data/tree"}),
        })
        .unwrap();
    let link = LinkDSource {
        name: "tree".into(),
        source_config: sc.reference,
        staging_environment: Some("staging".into()),
        staging_user: None,
        parameters: json!({"sourceHost": source.address().to_string(), "sourceUser": "alice", "sshPort": source.port()}),
        hooks: [
            (
                "pre-sync".to_owned(),
                "echo \"pre-sync $DOPPEL_OBJECT\" >> ~/hooks.log".to_owned(),
            ),
            (
                "post-sync".to_owned(),
                "echo post-sync >> ~/hooks.log".to_owned(),
            ),
        ]
        .into(),
    };
    assert_eq!(
        wait(
            &engine,
            engine
                .link_dsource(&engine.principal("admin").unwrap(), link)
                .unwrap()
        )
        .await
        .state,
        JobState::Succeeded
    );
    // Hooks of a staged dSource run on the staging host as its user.
    assert_eq!(
        staging.sh("alice", "cat ~/hooks.log"),
        "pre-sync DSOURCE-1\npost-sync\n"
    );
    let first = engine.get_dsource("tree").unwrap().latest_snapshot.unwrap();

    use doppel_model::ProvisionVdb;
    let provision = |name: &str, from: &str, path: &str| ProvisionVdb {
        name: name.into(),
        from: from.into(),
        snapshot: None,
        environment: "target".into(),
        user: None,
        parameters: json!({"mountPath": path}),
        hooks: Default::default(),
    };
    let with_hook = ProvisionVdb {
        hooks: [(
            "configure-clone".to_owned(),
            "echo configured > /srv/vdbs/dev/by-hook.txt".to_owned(),
        )]
        .into(),
        ..provision("dev", "tree", "/srv/vdbs/dev")
    };
    let p = wait(
        &engine,
        engine
            .provision_vdb(&engine.principal("admin").unwrap(), with_hook)
            .unwrap(),
    )
    .await;
    assert_eq!(p.state, JobState::Succeeded, "{p:?}");
    assert_eq!(
        target.sh("delphix", "cat /srv/vdbs/dev/a.txt"),
        "v1\n",
        "the VDB's files are on the target host"
    );
    let vdb = engine.get_vdb("dev").unwrap();
    assert_eq!(vdb.source_config.as_ref().unwrap()["path"], "/srv/vdbs/dev");
    assert_eq!(vdb.snapshots, 1, "provision takes the first VDB snapshot");
    assert_eq!(
        target.sh("delphix", "cat /srv/vdbs/dev/by-hook.txt"),
        "configured\n",
        "configure-clone ran on the target"
    );

    // A failing Pre hook stops the operation: no snapshot is taken.
    engine
        .set_hooks(
            "dev",
            &[(
                "pre-snapshot".to_owned(),
                "echo not now >&2; exit 3".to_owned(),
            )]
            .into(),
        )
        .unwrap();
    let refused = wait(&engine, engine.snapshot_vdb("dev").unwrap()).await;
    assert_eq!(refused.state, JobState::Failed);
    let err = refused.error.unwrap();
    assert_eq!(err.code, doppel_model::ErrorCode::HookFailed);
    assert!(
        err.message.contains("pre-snapshot hook failed (exit 3)")
            && err.output.unwrap_or_default().contains("not now")
    );
    assert_eq!(engine.get_vdb("dev").unwrap().snapshots, 1);
    engine
        .set_hooks("dev", &[("pre-snapshot".to_owned(), String::new())].into())
        .unwrap();
    assert!(!engine.hooks("dev").unwrap().contains_key("pre-snapshot"));
    assert!(matches!(
        engine.set_hooks("dev", &[("pre-lunch".to_owned(), "x".to_owned())].into()),
        Err(EngineError::InvalidInput { .. })
    ));

    // Post-Sync runs even when the sync fails.
    source.command(&["chmod", "000", "/srv/data/tree"]);
    let broken = wait(&engine, engine.sync_dsource("tree", None, false).unwrap()).await;
    source.command(&["chmod", "755", "/srv/data/tree"]);
    assert_eq!(broken.state, JobState::Failed);
    assert_eq!(staging.sh("alice", "tail -1 ~/hooks.log"), "post-sync\n");

    // Writes on the VDB stay in the VDB.
    target.sh("delphix", "echo local > /srv/vdbs/dev/local.txt");
    let vdb_snap = wait(&engine, engine.snapshot_vdb("dev").unwrap()).await;
    assert_eq!(vdb_snap.state, JobState::Succeeded, "{vdb_snap:?}");
    let with_local = vdb_snap.result.unwrap()["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    target.sh(
        "delphix",
        "rm /srv/vdbs/dev/local.txt && echo mess > /srv/vdbs/dev/a.txt",
    );

    // The source changes and is synced; refresh brings the VDB to it.
    source.put_file("/srv/data/tree/a.txt", b"v2\n", "alice");
    assert_eq!(
        wait(&engine, engine.sync_dsource("tree", None, false).unwrap())
            .await
            .state,
        JobState::Succeeded
    );
    let r = wait(&engine, engine.refresh_vdb("dev", None, false).unwrap()).await;
    assert_eq!(r.state, JobState::Succeeded, "{r:?}");
    assert_eq!(target.sh("delphix", "cat /srv/vdbs/dev/a.txt"), "v2\n");
    assert!(!target.exists("/srv/vdbs/dev/local.txt"));
    assert_eq!(
        engine.get_vdb("dev").unwrap().timeflows,
        2,
        "refresh starts a new timeflow, the old one stays"
    );

    // Rewind to the VDB's own snapshot: its writes come back.
    let w = wait(
        &engine,
        engine.refresh_vdb("dev", Some(&with_local), true).unwrap(),
    )
    .await;
    assert_eq!(w.state, JobState::Succeeded, "{w:?}");
    assert_eq!(
        target.sh("delphix", "cat /srv/vdbs/dev/a.txt /srv/vdbs/dev/local.txt"),
        "v1\nlocal\n"
    );
    assert_eq!(engine.get_vdb("dev").unwrap().timeflows, 3);

    // Stop and start run the plugin and the hooks; disable unmounts, enable
    // (the plugin says INACTIVE) mounts and reconfigures again.
    let log = "echo \"$DOPPEL_HOOK\" >> ~/power.log";
    engine
        .set_hooks(
            "dev",
            &[
                ("pre-stop".to_owned(), log.to_owned()),
                ("post-start".to_owned(), log.to_owned()),
            ]
            .into(),
        )
        .unwrap();
    for action in ["stop", "start"] {
        let j = wait(&engine, engine.vdb_power("dev", action).unwrap()).await;
        assert_eq!(j.state, JobState::Succeeded, "{action}: {j:?}");
    }
    assert_eq!(
        target.sh("delphix", "cat ~/power.log"),
        "pre-stop\npost-start\n"
    );
    assert_eq!(
        wait(&engine, engine.vdb_power("dev", "disable").unwrap())
            .await
            .state,
        JobState::Succeeded
    );
    assert!(
        !target
            .sh_output("delphix", "mountpoint -q /srv/vdbs/dev")
            .status
            .success(),
        "disabled: unmounted"
    );
    assert!(!engine.get_vdb("dev").unwrap().enabled);
    assert_eq!(
        wait(&engine, engine.vdb_power("dev", "enable").unwrap())
            .await
            .state,
        JobState::Succeeded
    );
    assert_eq!(
        target.sh("delphix", "cat /srv/vdbs/dev/a.txt"),
        "v1\n",
        "enabled: mounted again with its data"
    );
    assert!(engine.get_vdb("dev").unwrap().enabled);
    assert!(matches!(
        engine.vdb_power("dev", "reboot"),
        Err(EngineError::InvalidInput { .. })
    ));
    // A disabled dSource is unmounted from staging and not synced.
    assert_eq!(
        wait(&engine, engine.dsource_power("tree", false).unwrap())
            .await
            .state,
        JobState::Succeeded
    );
    assert_eq!(
        staging
            .sh("alice", "grep -c fuse.sshfs /proc/mounts || true")
            .trim(),
        "0"
    );
    assert!(matches!(
        engine.sync_dsource("tree", None, false),
        Err(EngineError::Conflict(_))
    ));
    assert_eq!(
        wait(&engine, engine.dsource_power("tree", true).unwrap())
            .await
            .state,
        JobState::Succeeded
    );
    assert_eq!(
        staging
            .sh("alice", "grep -c fuse.sshfs /proc/mounts || true")
            .trim(),
        "1"
    );

    // A child VDB from the VDB's snapshot; an older dSource snapshot too.
    let child = ProvisionVdb {
        snapshot: Some(with_local.clone()),
        ..provision("child", "dev", "/srv/vdbs/child")
    };
    assert_eq!(
        wait(
            &engine,
            engine
                .provision_vdb(&engine.principal("admin").unwrap(), child)
                .unwrap()
        )
        .await
        .state,
        JobState::Succeeded
    );
    assert_eq!(
        target.sh("delphix", "cat /srv/vdbs/child/local.txt"),
        "local\n"
    );
    let old = ProvisionVdb {
        snapshot: Some(first.clone()),
        ..provision("old", "tree", "/srv/vdbs/old")
    };
    assert_eq!(
        wait(
            &engine,
            engine
                .provision_vdb(&engine.principal("admin").unwrap(), old)
                .unwrap()
        )
        .await
        .state,
        JobState::Succeeded
    );
    assert_eq!(target.sh("delphix", "cat /srv/vdbs/old/a.txt"), "v1\n");

    // Bad input: a taken mount path fails the job and leaves nothing; bad parameters are refused.
    let taken = wait(
        &engine,
        engine
            .provision_vdb(
                &engine.principal("admin").unwrap(),
                provision("clash", "tree", "/srv/vdbs/dev"),
            )
            .unwrap(),
    )
    .await;
    assert_eq!(taken.state, JobState::Failed);
    assert!(taken.error.unwrap().message.contains("in use"));
    assert!(engine.get_vdb("clash").is_err());
    assert!(matches!(
        engine.provision_vdb(
            &engine.principal("admin").unwrap(),
            ProvisionVdb {
                parameters: json!({}),
                ..provision("x", "tree", "/x")
            }
        ),
        Err(EngineError::InvalidParameters { .. })
    ));
    assert!(
        matches!(engine.delete_dsource("tree"), Err(EngineError::Conflict(m)) if m.contains("dev"))
    );
    assert!(
        matches!(engine.delete_vdb("dev"), Err(EngineError::Conflict(m)) if m.contains("child"))
    );

    for name in ["child", "dev", "old"] {
        let d = wait(&engine, engine.delete_vdb(name).unwrap()).await;
        assert_eq!(d.state, JobState::Succeeded, "{d:?}");
    }
    assert_eq!(
        wait(&engine, engine.delete_dsource("tree").unwrap())
            .await
            .state,
        JobState::Succeeded
    );
    assert!(engine.list_vdbs().unwrap().is_empty() && engine.list_dsources().unwrap().is_empty());
    assert!(engine.list_mounts().unwrap().is_empty());
    assert!(
        engine.pool().list_volumes().unwrap().is_empty(),
        "no dataset left"
    );
    assert_eq!(
        target
            .sh("delphix", "grep -c fuse.sshfs /proc/mounts || true")
            .trim(),
        "0"
    );
    engine.shutdown().await;
}

/// Requests that race each other or a disable: one name or one mount path
/// asked for at once, and operations queued behind a disable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_requests_conflict_cleanly_and_a_queued_disable_counts() {
    use doppel_model::{ErrorCode, ProvisionVdb};
    let world = World::new(&["source", "staging", "target"]);
    let (source, staging, target) = (
        world.host("source"),
        world.host("staging"),
        world.host("target"),
    );
    source.mkdir("/srv/data/tree", "alice");
    source.put_file("/srv/data/tree/a.txt", b"v1\n", "alice");
    trust(staging, source, "alice");
    target.mkdir("/srv/vdbs", "delphix");

    let data = tempfile::tempdir().unwrap();
    let engine = open_engine(data.path()).await;
    let admin = engine.principal("admin").unwrap();
    engine
        .install_plugin(
            &admin,
            &std::fs::read(plugins::build_example("directory")).unwrap(),
        )
        .await
        .unwrap();
    add_env(&engine, "source", source, "delphix").await;
    add_env(&engine, "staging", staging, "alice").await;
    add_env(&engine, "target", target, "delphix").await;
    let repo = engine
        .list_repositories(Some("source"))
        .unwrap()
        .pop()
        .unwrap();
    let sc = engine
        .add_source_config(AddSourceConfig {
            repository: repo.reference,
            parameters: json!({"name": "tree", "path": "/srv/data/tree"}),
        })
        .unwrap();
    let link = |name: &str| LinkDSource {
        name: name.into(),
        source_config: sc.reference.clone(),
        staging_environment: Some("staging".into()),
        staging_user: None,
        parameters: json!({"sourceHost": source.address().to_string(), "sourceUser": "alice", "sshPort": source.port()}),
        hooks: Default::default(),
    };
    // Three links with one name, sent together: one wins. A loser is
    // refused at the request (the winner is recorded by then) or by its job
    // (it was not yet); either way a conflict naming the winner.
    async fn outcomes(
        engine: &std::sync::Arc<doppel_engine::Engine>,
        requests: Vec<Result<doppel_model::Job, EngineError>>,
    ) -> Vec<Result<doppel_model::Job, doppel_model::ApiError>> {
        let mut out = Vec::new();
        for r in requests {
            out.push(match r {
                Err(e) => Err(e.to_api()),
                Ok(j) => {
                    let j = wait(engine, j).await;
                    if j.state == JobState::Succeeded {
                        Ok(j)
                    } else {
                        Err(j.error.unwrap())
                    }
                }
            });
        }
        out
    }
    let links = (0..3)
        .map(|_| engine.link_dsource(&admin, link("tree")))
        .collect();
    let links = outcomes(&engine, links).await;
    assert_eq!(links.iter().filter(|r| r.is_ok()).count(), 1, "{links:?}");
    for err in links.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.code, ErrorCode::Conflict, "{err:?}");
        assert!(err.message.contains("DSOURCE-1"), "{err:?}");
    }
    assert_eq!(engine.list_dsources().unwrap().len(), 1);
    assert_eq!(engine.pool().list_volumes().unwrap().len(), 1);

    let provision = |name: &str, path: &str| ProvisionVdb {
        name: name.into(),
        from: "tree".into(),
        snapshot: None,
        environment: "target".into(),
        user: None,
        parameters: json!({"mountPath": path}),
        hooks: Default::default(),
    };
    // 20 provisions of one name.
    let jobs = (0..20)
        .map(|i| engine.provision_vdb(&admin, provision("same", &format!("/srv/vdbs/same{i}"))))
        .collect();
    let jobs = outcomes(&engine, jobs).await;
    assert_eq!(jobs.iter().filter(|r| r.is_ok()).count(), 1, "{jobs:?}");
    assert!(
        jobs[0].is_ok(),
        "the first request wins: jobs of one name run in order"
    );
    let same = engine.get_vdb("same").unwrap();
    for err in jobs.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.code, ErrorCode::Conflict, "{err:?}");
        let expected = format!("a VDB named \"same\" exists already ({})", same.reference);
        assert!(err.message.contains(&expected), "{err:?}");
    }
    assert_eq!(engine.list_vdbs().unwrap().len(), 1);
    assert_eq!(engine.list_mounts().unwrap().len(), 2, "staging and same");

    // Five provisions to one mount path, all at once.
    let jobs = (0..5)
        .map(|i| engine.provision_vdb(&admin, provision(&format!("p{i}"), "/srv/vdbs/shared")))
        .collect();
    let results = outcomes(&engine, jobs).await;
    let winner: Vec<usize> = (0..5).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winner.len(), 1, "{results:?}");
    let holder = engine.get_vdb(&format!("p{}", winner[0])).unwrap();
    for err in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.code, ErrorCode::Conflict, "{err:?}");
        let expected = format!("in use by VDB {} ({})", holder.name, holder.reference);
        assert!(err.message.contains(&expected), "{err:?}");
    }
    // Nothing half-made: two VDBs, their datasets and mounts, one sshfs
    // mount per VDB on the target.
    assert_eq!(engine.list_vdbs().unwrap().len(), 2);
    assert_eq!(engine.pool().list_volumes().unwrap().len(), 3);
    assert_eq!(engine.list_mounts().unwrap().len(), 3);
    let on_target = target.sh("delphix", "grep fuse.sshfs /proc/mounts || true");
    assert_eq!(
        on_target.lines().count(),
        2,
        "{on_target}\n{:?}\n{results:?}",
        engine.list_mounts().unwrap()
    );
    assert_eq!(
        target.sh(
            "delphix",
            "cat /srv/vdbs/shared/a.txt /srv/vdbs/same0/a.txt"
        ),
        "v1\nv1\n"
    );

    // A sync queued right behind a disable is refused when it runs.
    let before = engine.get_dsource("tree").unwrap().snapshots;
    let disable = engine.dsource_power("tree", false).unwrap();
    let sync = engine.sync_dsource("tree", None, false).unwrap();
    assert_eq!(wait(&engine, disable).await.state, JobState::Succeeded);
    let sync = wait(&engine, sync).await;
    assert_eq!(sync.state, JobState::Failed);
    let err = sync.error.unwrap();
    assert_eq!(err.code, ErrorCode::Conflict);
    assert!(err.message.contains("disabled"), "{err:?}");
    assert_eq!(engine.get_dsource("tree").unwrap().snapshots, before);
    assert_eq!(
        staging
            .sh("alice", "grep -c fuse.sshfs /proc/mounts || true")
            .trim(),
        "0",
        "the refused sync did not mount staging again"
    );

    // Likewise a VDB snapshot behind a disable; a later one is refused at once.
    let disable = engine.vdb_power("same", "disable").unwrap();
    let snap = engine.snapshot_vdb("same").unwrap();
    assert_eq!(wait(&engine, disable).await.state, JobState::Succeeded);
    let snap = wait(&engine, snap).await;
    assert_eq!(snap.state, JobState::Failed);
    assert!(snap.error.unwrap().message.contains("disabled"));
    assert_eq!(engine.get_vdb("same").unwrap().snapshots, same.snapshots);
    assert!(matches!(
        engine.snapshot_vdb("same"),
        Err(EngineError::Conflict(m)) if m.contains("disabled")
    ));

    // Enable brings the files back even when the plugin's status says
    // ACTIVE (the directory plugin only looks for the mount directory).
    let path = "/srv/vdbs/same0";
    assert!(!target
        .sh_output("delphix", &format!("mountpoint -q {path}"))
        .status
        .success());
    target.mkdir(path, "delphix");
    let enabled = wait(&engine, engine.vdb_power("same", "enable").unwrap()).await;
    assert_eq!(enabled.state, JobState::Succeeded, "{enabled:?}");
    assert_eq!(target.sh("delphix", &format!("cat {path}/a.txt")), "v1\n");
    assert!(engine.get_vdb("same").unwrap().enabled);

    // Accepted-but-wrong input is refused naming the field, changing nothing.
    let field_of = |r: Result<_, EngineError>| match r {
        Err(EngineError::InvalidInput { field, .. }) => field,
        Err(other) => panic!("not invalid input: {other:?}"),
        Ok(_) => panic!("accepted"),
    };
    let one = |point: &str, script: &str| [(point.to_owned(), script.to_owned())].into();
    assert_eq!(
        field_of(
            engine
                .set_hooks("tree", &one("pre-snapshot", "true"))
                .map(|_| ())
        ),
        "hooks.pre-snapshot"
    );
    assert_eq!(
        field_of(
            engine
                .set_hooks("same", &one("pre-sync", "true"))
                .map(|_| ())
        ),
        "hooks.pre-sync"
    );
    let huge = "#".repeat(1_900_000);
    assert_eq!(
        field_of(
            engine
                .set_hooks("tree", &one("post-sync", &huge))
                .map(|_| ())
        ),
        "hooks.post-sync"
    );
    assert!(engine.hooks("tree").unwrap().is_empty() && engine.hooks("same").unwrap().is_empty());
    let vdbs = engine.list_vdbs().unwrap().len();
    assert_eq!(
        field_of(
            engine
                .provision_vdb(
                    &admin,
                    ProvisionVdb {
                        hooks: one("post-sync", "true"),
                        ..provision("hooked", "/srv/vdbs/hooked")
                    }
                )
                .map(|_| ())
        ),
        "hooks.post-sync"
    );
    // The directory plugin has no initialize: it cannot make empty VDBs.
    let plugin = engine.get_vdb("same").unwrap().plugin;
    assert_eq!(
        field_of(
            engine
                .create_empty_vdb(
                    &admin,
                    doppel_model::CreateEmptyVdb {
                        name: "empty".into(),
                        plugin,
                        environment: "target".into(),
                        user: None,
                        parameters: json!({"mountPath": "/srv/vdbs/empty"}),
                        hooks: Default::default(),
                    }
                )
                .map(|_| ())
        ),
        "plugin"
    );
    assert_eq!(engine.list_vdbs().unwrap().len(), vdbs);
    let long = "a".repeat(254);
    for host in [
        "",
        "db 1",
        "db1;reboot",
        "ssh://db1",
        "alice@db1",
        long.as_str(),
    ] {
        let req = doppel_model::AddEnvironment {
            name: "bad".into(),
            host: host.into(),
            port: 22,
            user: "delphix".into(),
            credentials: doppel_model::UserCredentials::Password {
                password: "x".into(),
            },
            toolkit_path: None,
        };
        assert_eq!(
            field_of(engine.add_environment(&admin, req).map(|_| ())),
            "host",
            "{host:?}"
        );
    }
    assert_eq!(engine.list_environments().unwrap().len(), 3);
    let configs = engine.list_source_configs(None).unwrap().len();
    let repo = engine
        .list_repositories(Some("source"))
        .unwrap()
        .pop()
        .unwrap();
    let long_path = format!("/{}", "p".repeat(1_500_000));
    assert_eq!(
        field_of(
            engine
                .add_source_config(AddSourceConfig {
                    repository: repo.reference,
                    parameters: json!({"name": "long", "path": long_path}),
                })
                .map(|_| ())
        ),
        "parameters.path"
    );
    assert_eq!(engine.list_source_configs(None).unwrap().len(), configs);

    for name in ["same", &holder.name] {
        let d = wait(&engine, engine.delete_vdb(name).unwrap()).await;
        assert_eq!(d.state, JobState::Succeeded, "{d:?}");
    }
    let d = wait(&engine, engine.delete_dsource("tree").unwrap()).await;
    assert_eq!(d.state, JobState::Succeeded, "{d:?}");
    assert!(engine.list_mounts().unwrap().is_empty());
    assert!(engine.pool().list_volumes().unwrap().is_empty());
    engine.shutdown().await;
}
