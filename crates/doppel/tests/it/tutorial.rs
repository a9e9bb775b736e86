//! The README's tutorial, step by step through the CLI: the directory
//! plugin, a source, a staging and a target host, a real engine on btrfs.

use doppel_testworld::{plugins, Host, World};
use serde_json::json;

use crate::support::*;

#[test]
fn the_tutorial_from_link_to_rewind_through_the_cli() {
    let world = World::new(&["source", "staging", "target"]);
    let (source, staging, target) = (
        world.host("source"),
        world.host("staging"),
        world.host("target"),
    );
    source.mkdir("/srv/data/tree", "alice");
    source.put_file("/srv/data/tree/hello.txt", b"version 1\n", "alice");
    target.mkdir("/srv/vdbs", "delphix");

    let engine = Engine::start();
    assert_eq!(
        engine.cli(&["pool", "status", "-o", "json"]).json()["driver"],
        "btrfs"
    );
    engine.install(&plugins::build_example("directory"));
    let sc = add_directory_envs(&engine, source, staging, target);
    let params = json!({"sourceHost": source.address().to_string(), "sourceUser": "alice", "sshPort": source.port()}).to_string();
    // No --name: the dSource takes the source config's name.
    let linked = engine
        .cli(&[
            "dsource",
            "link",
            "--sourceconfig",
            &sc,
            "--staging-env",
            "staging",
            "--params",
            &params,
            "-o",
            "json",
        ])
        .json();
    assert_eq!(linked["snapshots"], 1, "{linked}");
    assert_eq!(linked["name"], "tree");

    let vdb = engine
        .cli(&[
            "vdb",
            "provision",
            "--name",
            "dev",
            "--from",
            "tree",
            "--env",
            "target",
            "--params",
            r#"{"mountPath": "/srv/vdbs/dev"}"#,
            "-o",
            "json",
        ])
        .json();
    assert_eq!(vdb["name"], "dev");
    assert_eq!(
        target.sh("delphix", "cat /srv/vdbs/dev/hello.txt"),
        "version 1\n"
    );
    let first_vdb_snapshot = engine
        .cli(&["snapshot", "list", "--dataset", "dev", "-o", "json"])
        .json()[0]["reference"]
        .as_str()
        .unwrap()
        .to_owned();

    operators_act_on_what_they_own_or_were_granted(&engine, target);

    // Change the source, sync, refresh: the VDB sees the new data.
    source.put_file("/srv/data/tree/hello.txt", b"version 2\n", "alice");
    engine.cli(&["dsource", "sync", "tree"]).ok();
    assert_eq!(
        engine
            .cli(&["snapshot", "list", "--dataset", "tree", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    engine.cli(&["vdb", "refresh", "dev"]).ok();
    assert_eq!(
        target.sh("delphix", "cat /srv/vdbs/dev/hello.txt"),
        "version 2\n"
    );

    // Rewind to the VDB's first snapshot.
    engine
        .cli(&["vdb", "rewind", "dev", "--to", &first_vdb_snapshot])
        .ok();
    assert_eq!(
        target.sh("delphix", "cat /srv/vdbs/dev/hello.txt"),
        "version 1\n"
    );
    let shown = engine.cli(&["vdb", "show", "dev", "-o", "json"]).json();
    assert_eq!(shown["timeflows"], 3);
    let table = engine.cli(&["mount", "list"]);
    assert!(table.ok().contains("/srv/vdbs/dev"), "{}", table.stdout);

    // Stop/start, disable/enable, hooks, through the CLI.
    engine
        .cli(&[
            "vdb",
            "hooks",
            "dev",
            "--set",
            "pre-stop=echo stopping >> ~/dev.log",
        ])
        .ok();
    engine.cli(&["vdb", "stop", "dev"]).ok();
    engine.cli(&["vdb", "start", "dev"]).ok();
    assert_eq!(target.sh("delphix", "cat ~/dev.log"), "stopping\n");
    assert_eq!(
        engine.cli(&["vdb", "hooks", "dev", "-o", "json"]).json(),
        json!({"pre-stop": "echo stopping >> ~/dev.log"})
    );
    engine
        .cli(&["vdb", "hooks", "dev", "--set", "bogus=x"])
        .fails(3);
    engine.cli(&["vdb", "disable", "dev"]).ok();
    assert!(!target.exists("/srv/vdbs/dev/hello.txt"));
    assert_eq!(
        engine.cli(&["vdb", "show", "dev", "-o", "json"]).json()["enabled"],
        false
    );
    engine.cli(&["vdb", "enable", "dev"]).ok();
    assert_eq!(
        target.sh("delphix", "cat /srv/vdbs/dev/hello.txt"),
        "version 1\n"
    );
    engine.cli(&["dsource", "disable", "tree"]).ok();
    engine.cli(&["dsource", "sync", "tree"]).fails(5);
    engine.cli(&["dsource", "enable", "tree"]).ok();

    // V2P: the VDB's current snapshot as a plain copy on the source host,
    // and a dSource's, named by a bookmark.
    source.mkdir("/srv/restore", "delphix");
    engine.cli(&["vdb", "snapshot", "dev"]).ok();
    engine
        .cli(&[
            "vdb",
            "export",
            "dev",
            "--env",
            "source",
            "--target",
            "/srv/restore/dev",
        ])
        .ok();
    assert_eq!(
        source.sh("delphix", "cat /srv/restore/dev/hello.txt"),
        "version 1\n"
    );
    engine
        .cli(&["bookmark", "add", "v2", "--snapshot", "tree"])
        .ok();
    engine
        .cli(&[
            "dsource",
            "export",
            "tree",
            "--snapshot",
            "v2",
            "--env",
            "source",
            "--target",
            "/srv/restore/tree",
        ])
        .ok();
    assert_eq!(
        source.sh("delphix", "cat /srv/restore/tree/hello.txt"),
        "version 2\n"
    );
    engine.cli(&["bookmark", "delete", "tree@v2"]).ok();
    // The plugin refuses a non-empty target (its pre_source_to_physical).
    let refused = engine.cli(&[
        "dsource",
        "export",
        "tree",
        "--env",
        "source",
        "--target",
        "/srv/restore/tree",
    ]);
    assert_eq!(refused.code, 6, "{}", refused.stderr);
    engine
        .cli(&[
            "vdb", "export", "dev", "--env", "source", "--target", "relative",
        ])
        .fails(3);
    assert_eq!(
        engine
            .cli(&["mount", "list", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        2,
        "no V2P mount left"
    );

    // Snapshots: the one dev's current timeflow starts at cannot go; an older one can.
    let tree_snaps = engine
        .cli(&["snapshot", "list", "--dataset", "tree", "-o", "json"])
        .json();
    let (oldest, newest) = (
        tree_snaps[0]["reference"].as_str().unwrap().to_owned(),
        tree_snaps[1]["reference"].as_str().unwrap().to_owned(),
    );
    engine.cli(&["vdb", "refresh", "dev"]).ok();
    let refused = engine.cli(&["snapshot", "delete", &newest]);
    assert!(refused.fails(5).contains("dev"), "{}", refused.stderr);
    engine.cli(&["snapshot", "delete", &oldest]).ok();
    assert_eq!(
        engine
            .cli(&["snapshot", "list", "--dataset", "tree", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    engine.cli(&["snapshot", "delete", "SNAPSHOT-999"]).fails(4);

    // Environments and source configs in use cannot be deleted.
    let busy = engine.cli(&["env", "delete", "target"]);
    assert!(busy.fails(5).contains("VDB dev"), "{}", busy.stderr);
    let busy = engine.cli(&["env", "delete", "source"]);
    assert!(busy.fails(5).contains("dSource tree"), "{}", busy.stderr);
    let busy = engine.cli(&["sourceconfig", "delete", &sc]);
    assert!(busy.fails(5).contains("tree"), "{}", busy.stderr);

    // Bad input through the CLI: clear errors, exit codes scripts can rely on.
    engine.cli(&["dsource", "delete", "tree"]).fails(5);
    engine.cli(&["vdb", "show", "nope"]).fails(4);
    engine
        .cli(&[
            "vdb",
            "provision",
            "--name",
            "x",
            "--from",
            "tree",
            "--env",
            "target",
            "--params",
            "{}",
        ])
        .fails(3);

    engine.cli(&["vdb", "delete", "dev"]).ok();
    engine.cli(&["dsource", "delete", "tree"]).ok();
    assert_eq!(
        engine.cli(&["mount", "list", "-o", "json"]).json(),
        json!([])
    );
    assert_eq!(
        engine.cli(&["pool", "status", "-o", "json"]).json()["volumes"],
        0,
        "no dataset left"
    );
    assert_eq!(
        target
            .sh("delphix", "grep -c fuse.sshfs /proc/mounts || true")
            .trim(),
        "0"
    );
}

#[test]
fn on_the_engines_own_machine_datasets_are_bind_mounted() {
    // The engine runs inside this host: its binary, worker Python and data
    // directory (in the checkout, wherever it is) must be visible there.
    let world = own_machine_world(&[]);
    let local = world.host("local");
    local.mkdir("/srv/data/tree", "alice");
    local.put_file("/srv/data/tree/hello.txt", b"here\n", "alice");
    trust_ssh(local, local);
    local.mkdir("/srv/vdbs", "alice");
    let secrets = tempfile::tempdir().unwrap();
    let key = secret_file(
        secrets.path(),
        "key",
        local.user("alice").private_key_pem.as_deref().unwrap(),
    );

    // The copy driver: the pool then needs no loop device in the host's namespace.
    let engine = Engine::start_in_namespace_of(local, POOL_ON_THE_MACHINES_DISK);
    engine.install(&plugins::build_example("directory"));
    let addr = local.address().to_string();
    let port = local.port().to_string();
    // One host in every role; alice (whose key can reach the host itself) runs them.
    engine
        .cli(&[
            "env",
            "add",
            "--name",
            "local",
            "--host",
            &addr,
            "--port",
            &port,
            "--user",
            "alice",
            "--key-file",
            &key,
        ])
        .ok();
    let repo = engine.cli(&["repository", "list", "-o", "json"]).json()[0]["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let sc = engine
        .cli(&[
            "sourceconfig",
            "add",
            "--env",
            "local",
            "--repository",
            &repo,
            "--params",
            r#"{"name": "tree", "path": "/srv/data/tree"}"#,
            "-o",
            "json",
        ])
        .json()["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let params =
        json!({"sourceHost": addr, "sourceUser": "alice", "sshPort": local.port()}).to_string();
    engine
        .cli(&[
            "dsource",
            "link",
            "--name",
            "tree",
            "--sourceconfig",
            &sc,
            "--staging-env",
            "local",
            "--params",
            &params,
        ])
        .ok();
    engine
        .cli(&[
            "vdb",
            "provision",
            "--name",
            "dev",
            "--from",
            "tree",
            "--env",
            "local",
            "--params",
            r#"{"mountPath": "/srv/vdbs/dev"}"#,
        ])
        .ok();

    let mounts = engine.cli(&["mount", "list", "-o", "json"]).json();
    let kinds: Vec<&str> = mounts
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["bind", "bind"], "{mounts}");
    assert_eq!(local.sh("alice", "cat /srv/vdbs/dev/hello.txt"), "here\n");
    assert_eq!(
        local
            .sh("alice", "grep -c fuse.sshfs /proc/mounts || true")
            .trim(),
        "0",
        "no FUSE needed"
    );
    assert!(
        mounts
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["active"] == true),
        "{mounts}"
    );
    local.sh("alice", "echo mine > /srv/vdbs/dev/mine.txt");

    // A bind mount taken down behind the engine's back comes back by itself.
    local.sh("root", "umount /srv/vdbs/dev");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !local
        .sh_output("alice", "test -e /srv/vdbs/dev/mine.txt")
        .status
        .success()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the bind mount did not come back"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let mounts = engine.cli(&["mount", "list", "-o", "json"]).json();
    assert!(
        mounts
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["active"] == true),
        "{mounts}"
    );

    engine.cli(&["vdb", "delete", "dev"]).ok();
    engine.cli(&["dsource", "delete", "tree"]).ok();
    assert_eq!(
        engine.cli(&["mount", "list", "-o", "json"]).json(),
        json!([])
    );
    assert!(
        !local.exists("/srv/vdbs/dev/mine.txt"),
        "unmounted and gone with the VDB"
    );
}

/// Rights on real objects: an operator provisions from a dSource and onto
/// an environment only once granted, owns what they make, and others may
/// not touch it.
fn operators_act_on_what_they_own_or_were_granted(engine: &Engine, target: &Host) {
    let token = |name: &str, role: &str| {
        engine
            .cli_as(
                &["user", "add", name, "--role", role],
                Some(&engine.token),
                None,
                Some(&format!("{name}-password\n")),
            )
            .ok();
        doppel_client::Client::new(&engine.url)
            .login(name, &format!("{name}-password"))
            .unwrap()
            .token
    };
    let (bob, olga, audrey) = (
        token("bob", "operator"),
        token("olga", "operator"),
        token("audrey", "auditor"),
    );
    let as_user = |t: &str, args: &[&str]| engine.cli_as(args, Some(t), None, None);
    let provision = [
        "vdb",
        "provision",
        "--name",
        "bobs",
        "--from",
        "tree",
        "--env",
        "target",
        "--params",
        r#"{"mountPath": "/srv/vdbs/bobs"}"#,
    ];
    let refused = as_user(&bob, &provision);
    assert!(
        refused
            .fails(12)
            .contains("lacks the provisioner right on dSource tree"),
        "{refused:?}"
    );
    let refused = as_user(&audrey, &provision);
    assert!(
        refused.fails(12).contains("needs the operator role"),
        "{refused:?}"
    );
    assert_eq!(
        engine
            .cli(&["vdb", "list", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len(),
        1,
        "a refused provision makes nothing"
    );
    // Only owners and administrators grant.
    as_user(
        &olga,
        &[
            "grant",
            "add",
            "dsource:tree",
            "--user",
            "bob",
            "--right",
            "provisioner",
        ],
    )
    .fails(12);
    engine
        .cli(&[
            "grant",
            "add",
            "dsource:tree",
            "--user",
            "bob",
            "--right",
            "provisioner",
        ])
        .ok();
    let refused = as_user(&bob, &provision);
    assert!(
        refused
            .fails(12)
            .contains("lacks the provisioner right on environment target"),
        "{refused:?}"
    );
    engine
        .cli(&[
            "grant",
            "add",
            "env:target",
            "--user",
            "bob",
            "--right",
            "provisioner",
        ])
        .ok();
    as_user(&bob, &provision).ok();
    assert_eq!(
        target.sh("delphix", "cat /srv/vdbs/bobs/hello.txt"),
        "version 1\n"
    );
    let grants = as_user(
        &audrey,
        &["grant", "list", "--object", "vdb:bobs", "-o", "json"],
    )
    .json();
    assert_eq!(grants.as_array().unwrap().len(), 1, "{grants}");
    assert_eq!(grants[0]["user"], "bob");
    assert_eq!(grants[0]["right"], "owner");
    // A provisioner of the dSource may not change it; another operator may
    // not touch bob's VDB; auditors grant nothing.
    let refused = as_user(&bob, &["dsource", "sync", "tree"]);
    assert!(
        refused.fails(12).contains("they are only provisioner"),
        "{refused:?}"
    );
    let refused = as_user(&olga, &["vdb", "delete", "bobs"]);
    assert!(
        refused
            .fails(12)
            .contains("lacks the owner right on VDB bobs"),
        "{refused:?}"
    );
    as_user(&audrey, &["vdb", "snapshot", "bobs"]).fails(12);
    let refused = engine.cli(&[
        "grant", "add", "vdb:bobs", "--user", "audrey", "--right", "owner",
    ]);
    assert!(refused.fails(3).contains("auditor"), "{refused:?}");
    // Owners hand rights on: olga may now snapshot it, then loses the right.
    as_user(
        &bob,
        &[
            "grant", "add", "vdb:bobs", "--user", "olga", "--right", "owner",
        ],
    )
    .ok();
    as_user(&olga, &["vdb", "snapshot", "bobs"]).ok();
    as_user(&bob, &["grant", "delete", "vdb:bobs", "--user", "olga"]).ok();
    as_user(&olga, &["vdb", "snapshot", "bobs"]).fails(12);
    as_user(&bob, &["vdb", "delete", "bobs"]).ok();
    assert!(
        engine
            .cli(&["grant", "list", "--user", "bob", "-o", "json"])
            .json()
            .as_array()
            .unwrap()
            .len()
            == 2,
        "the VDB's grants went with it; bob keeps his rights on tree and target"
    );
    for user in ["bob", "olga", "audrey"] {
        engine.cli(&["user", "delete", user]).ok();
    }
}
