//! `run_sync` from a real plugin: the direct test plugin's pre_snapshot
//! copies a directory of a fake host into a pool dataset.

// A test or benchmark stops at its first surprise: there an unwrap is an assert.
#![allow(clippy::unwrap_used)]

use doppel_engine::PluginInvocation;
use doppel_testworld::{plugins, World};
use serde_json::json;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_plugin_syncs_a_host_directory_into_a_dataset() {
    let world = World::new(&["source"]);
    let host = world.host("source");
    // The direct plugin syncs the source config's path; give it one with content.
    host.mkdir("/srv/direct", "delphix");
    host.put_file("/srv/direct/a.txt", b"alpha\n", "delphix");
    host.mkdir("/srv/direct/sub", "delphix");
    host.put_file("/srv/direct/sub/b.txt", b"beta\n", "delphix");

    let data = tempfile::tempdir().unwrap();
    let engine = common::open_engine(data.path()).await;
    let artifact = std::fs::read(plugins::build_plugin("direct")).unwrap();
    engine
        .install_plugin(&engine.principal("admin").unwrap(), &artifact)
        .await
        .unwrap();
    let env = common::add_env(&engine, "source", host, "delphix").await;
    let volume = doppel_storage::VolumeId::new("ds-1").unwrap();
    let dest = engine.pool().create_volume(&volume).unwrap();
    std::fs::write(dest.join("stale.txt"), b"left from an earlier sync").unwrap();

    let conn = json!({
        "environment": {"name": "source", "reference": env["reference"],
            "host": {"name": "h", "reference": "UNIX_HOST-1", "binary_path": env["toolkit_path"], "scratch_path": env["scratch_path"]}},
        "user": {"name": "delphix", "reference": env["users"][0]["reference"]},
    });
    let pdo = |v: serde_json::Value| json!({"json": v.to_string()});
    let request = json!({
        "direct_source": {"connection": conn, "linked_source": {"guid": "dls-1", "parameters": pdo(json!({}))}},
        "repository": {"parameters": pdo(json!({"name": "r"}))},
        "source_config": {"parameters": pdo(json!({"name": "d", "path": "/srv/direct"}))},
        "snapshot_parameters": {"parameters": {"json": "null"}},
    });
    let call = |sync_volume: Option<&str>| PluginInvocation {
        operation: "linked.direct_pre_snapshot".into(),
        request: request.clone(),
        deadline: None,
        job: None,
        sync_volume: sync_volume.map(str::to_owned),
    };

    // Without a dataset to fill, run_sync is refused and the plugin says so.
    let err = engine
        .invoke_plugin("doppel-direct", call(None))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("only available during a direct dSource's sync"),
        "{err}"
    );

    engine
        .invoke_plugin("doppel-direct", call(Some("ds-1")))
        .await
        .unwrap();
    assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), b"alpha\n");
    assert_eq!(std::fs::read(dest.join("sub/b.txt")).unwrap(), b"beta\n");
    assert!(
        !dest.join("stale.txt").exists(),
        "a sync mirrors the source"
    );

    // Incremental: a change on the host arrives, a deletion is mirrored.
    host.put_file("/srv/direct/a.txt", b"alpha, changed\n", "delphix");
    host.command(&["rm", "/srv/direct/sub/b.txt"]);
    engine
        .invoke_plugin("doppel-direct", call(Some("ds-1")))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(dest.join("a.txt")).unwrap(),
        b"alpha, changed\n"
    );
    assert!(!dest.join("sub/b.txt").exists());

    let err = engine
        .invoke_plugin("doppel-direct", call(Some("no-such")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no dataset"), "{err}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_dsource_links_and_syncs_through_run_sync() {
    use doppel_model::{AddSourceConfig, JobState, LinkDSource};
    let world = World::new(&["source"]);
    let host = world.host("source");
    host.mkdir("/srv/direct", "delphix");
    host.put_file("/srv/direct/a.txt", b"one\n", "delphix");
    let data = tempfile::tempdir().unwrap();
    let engine = common::open_engine(data.path()).await;
    engine
        .install_plugin(
            &engine.principal("admin").unwrap(),
            &std::fs::read(plugins::build_plugin("direct")).unwrap(),
        )
        .await
        .unwrap();
    common::add_env(&engine, "source", host, "delphix").await;
    let repo = engine
        .list_repositories(Some("source"))
        .unwrap()
        .pop()
        .unwrap();
    let sc = engine
        .add_source_config(AddSourceConfig {
            repository: repo.reference,
            parameters: json!({"name": "d", "path": "/srv/direct"}),
        })
        .unwrap();
    let link = LinkDSource {
        name: "direct".into(),
        source_config: sc.reference.clone(),
        staging_environment: None,
        staging_user: None,
        parameters: json!({}),
        hooks: Default::default(),
    };
    // A direct plugin takes no staging environment.
    let staged = LinkDSource {
        staging_environment: Some("source".into()),
        ..link.clone()
    };
    assert!(engine
        .link_dsource(&engine.principal("admin").unwrap(), staged)
        .is_err());
    let j = common::wait(
        &engine,
        engine
            .link_dsource(&engine.principal("admin").unwrap(), link)
            .unwrap(),
    )
    .await;
    assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    let ds = engine.get_dsource("direct").unwrap();
    let dir = engine
        .pool()
        .volume_path(&doppel_storage::VolumeId::new(ds.dataset.as_str()).unwrap());
    assert_eq!(
        std::fs::read(dir.join("a.txt")).unwrap(),
        b"one\n",
        "run_sync filled the dataset"
    );
    assert!(
        engine.list_mounts().unwrap().is_empty(),
        "a direct dSource mounts nothing"
    );
    host.put_file("/srv/direct/b.txt", b"two\n", "delphix");
    let j = common::wait(
        &engine,
        engine
            .sync_dsource("direct", Some(json!({"resync": false})), false)
            .unwrap(),
    )
    .await;
    assert_eq!(j.state, JobState::Succeeded, "{j:?}");
    assert_eq!(std::fs::read(dir.join("b.txt")).unwrap(), b"two\n");
    let snaps = engine.list_snapshots(Some("direct")).await.unwrap();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1].metadata["path"], "/srv/direct");
    assert_eq!(
        common::wait(&engine, engine.delete_dsource("direct").unwrap())
            .await
            .state,
        JobState::Succeeded
    );
    assert!(engine.pool().list_volumes().unwrap().is_empty());
    engine.shutdown().await;
}
