//! The PostgreSQL example plugin end to end: a real cluster on a source
//! host, a streaming standby on a staging host, VDBs that are running
//! primaries on a target host, all through the CLI of a real engine.

use std::process::Command;

use doppel_testworld::{plugins, Host, World};
use serde_json::{json, Value};

use crate::support::*;

const BIN: &str = "/usr/lib/postgresql/15/bin";
const REPLICATION_PASSWORD: &str = "repl pass'word";

/// Runs SQL on a server over TCP from the test process (as the cluster's
/// superuser `delphix`, trusted from loopback); answers unaligned rows.
fn sql(host: &Host, port: u16, query: &str) -> String {
    let out = Command::new(format!("{BIN}/psql"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
        .arg(host.address().to_string())
        .args([
            "-p",
            &port.to_string(),
            "-U",
            "delphix",
            "-d",
            "postgres",
            "-c",
            query,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql on {}:{port} `{query}`: {}",
        host.address(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn count(host: &Host, port: u16, table: &str) -> i64 {
    sql(host, port, &format!("SELECT count(*) FROM {table}"))
        .parse()
        .unwrap()
}

/// A cluster owned by `delphix` on `host`, listening on its address.
fn make_source_cluster(host: &Host, port: u16) {
    let script = format!(
        r#"set -e
{BIN}/initdb -D /srv/data/pg -A trust -U delphix >/dev/null
cat >> /srv/data/pg/postgresql.conf <<EOF
listen_addresses = '{addr}'
port = {port}
unix_socket_directories = '/srv/data'
EOF
cat > /srv/data/pg/pg_hba.conf <<EOF
local all all trust
host replication repl 127.0.0.0/8 scram-sha-256
host all all 127.0.0.0/8 trust
EOF
{BIN}/pg_ctl -D /srv/data/pg -l /srv/data/pg.log -w start >/dev/null
{BIN}/psql -X -q -h /srv/data -p {port} -d postgres \
  -c "CREATE ROLE repl REPLICATION LOGIN PASSWORD \$\$`printf '%s' "$RP"`\$\$" \
  -c 'GRANT pg_checkpoint TO repl' \
  -c 'CREATE TABLE t (i int, note text)' \
  -c "INSERT INTO t SELECT g, 'source' FROM generate_series(1, 1000) g"
"#,
        addr = host.address()
    );
    let out = host.sh_output(
        "delphix",
        &format!("export RP={}; {script}", shell_quote(REPLICATION_PASSWORD)),
    );
    assert!(
        out.status.success(),
        "making the source cluster: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Server processes on `host` whose data directory lies below `prefix`.
fn servers_below(host: &Host, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        // Other tests' hosts run servers at the same paths.
        let ns = std::fs::read_link(entry.path().join("ns/mnt"));
        if !ns.is_ok_and(|n| n.to_string_lossy() == host.mount_namespace()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("/postgres"))
            && args.iter().any(|a| a.starts_with(prefix))
        {
            found.push(args.join(" "));
        }
    }
    found
}

/// Three hosts, a source cluster with table `t`, an engine with the
/// plugin and the three environments, and the source config `pg`.
struct Setup {
    world: World,
    engine: Engine,
    source_config: String,
    _secrets: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let world = World::new(&["source", "staging", "target"]);
        let (source, staging, target) = (
            world.host("source"),
            world.host("staging"),
            world.host("target"),
        );
        make_source_cluster(source, 5432);
        target.mkdir("/srv/vdbs", "delphix");
        target.mkdir("/srv/restore", "delphix");
        let secrets = tempfile::tempdir().unwrap();
        let pw = secrets.path().join("pw");
        std::fs::write(&pw, source.user("delphix").password.as_deref().unwrap()).unwrap();
        let pw = pw.to_str().unwrap();

        let engine = Engine::start();
        engine.install(&plugins::build_example("postgres"));
        for (name, host) in [("source", source), ("staging", staging), ("target", target)] {
            engine.add_env(name, host, "delphix", "--password-file", pw);
        }
        let repos = engine
            .cli(&["repository", "list", "--env", "source", "-o", "json"])
            .json();
        let repo = repos
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["parameters"]["binDir"] == BIN)
            .unwrap_or_else(|| panic!("discovery finds {BIN}: {repos}"));
        assert!(
            repo["parameters"]["version"]
                .as_str()
                .unwrap()
                .starts_with("15."),
            "{repo}"
        );
        let source_config = engine
            .cli(&[
                "sourceconfig", "add", "--env", "source",
                "--repository", repo["reference"].as_str().unwrap(),
                "--params",
                &json!({"name": "pg", "host": source.address().to_string(), "port": 5432, "dataDir": "/srv/data/pg"}).to_string(),
                "-o", "json",
            ])
            .json()["reference"]
            .as_str()
            .unwrap()
            .to_owned();
        Setup {
            world,
            engine,
            source_config,
            _secrets: secrets,
        }
    }

    fn link(&self) -> Value {
        let params = json!({"replicationUser": "repl", "replicationPassword": REPLICATION_PASSWORD, "stagingPort": 6543});
        self.engine
            .cli(&[
                "dsource",
                "link",
                "--sourceconfig",
                &self.source_config,
                "--staging-env",
                "staging",
                "--params",
                &params.to_string(),
                "-o",
                "json",
            ])
            .json()
    }
}

fn vdb_params(target: &Host, path: &str, port: u16) -> String {
    json!({"mountPath": path, "port": port, "listenAddresses": target.address().to_string()})
        .to_string()
}

#[test]
fn a_postgres_vdb_is_a_running_copy_through_link_refresh_rewind_and_v2p() {
    let setup = Setup::new();
    let (engine, sc) = (&setup.engine, &setup.source_config);
    let (source, staging, target) = (
        setup.world.host("source"),
        setup.world.host("staging"),
        setup.world.host("target"),
    );

    // A wrong replication password: the link fails with the plugin's
    // action and leaves no dSource, dataset or standby behind.
    let bad =
        json!({"replicationUser": "repl", "replicationPassword": "wrong", "stagingPort": 6543});
    let refused = engine.cli(&[
        "dsource",
        "link",
        "--sourceconfig",
        sc,
        "--staging-env",
        "staging",
        "--params",
        &bad.to_string(),
    ]);
    let err = refused.fails(6);
    assert!(err.contains("refused the base backup"), "{err}");
    assert!(err.contains("REPLICATION"), "says what to do: {err}");
    assert_eq!(
        engine.cli(&["dsource", "list", "-o", "json"]).json(),
        json!([])
    );
    assert!(servers_below(staging, "/home/delphix/.doppel/").is_empty());

    // The right password, but no `replication` entry in the source's
    // pg_hba.conf: refused the same way, the action naming pg_hba.conf.
    let hba = |edit: &str| {
        source.sh(
            "delphix",
            &format!("sed -i '{edit}' /srv/data/pg/pg_hba.conf && {BIN}/pg_ctl -D /srv/data/pg reload >/dev/null"),
        )
    };
    hba("s/^host replication/#host replication/");
    let good = json!({"replicationUser": "repl", "replicationPassword": REPLICATION_PASSWORD, "stagingPort": 6543});
    let refused = engine.cli(&[
        "dsource",
        "link",
        "--sourceconfig",
        sc,
        "--staging-env",
        "staging",
        "--params",
        &good.to_string(),
    ]);
    let err = refused.fails(6);
    assert!(err.contains("pg_hba.conf"), "says what to do: {err}");
    assert_eq!(
        engine.cli(&["dsource", "list", "-o", "json"]).json(),
        json!([])
    );
    assert!(servers_below(staging, "/home/delphix/.doppel/").is_empty());
    hba("s/^#host replication/host replication/");

    let linked = setup.link();
    assert_eq!(linked["snapshots"], 1, "{linked}");
    assert_eq!(
        servers_below(staging, "/home/delphix/.doppel/").len(),
        1,
        "the standby runs on staging"
    );
    let log = engine.log();
    assert!(
        !log.contains(REPLICATION_PASSWORD),
        "the password is never logged"
    );
    let snaps = engine
        .cli(&["snapshot", "list", "--dataset", "pg", "-o", "json"])
        .json();
    let meta = &snaps[0]["metadata"];
    assert!(meta["walLsn"].as_str().unwrap().contains('/'), "{meta}");
    assert_eq!(meta["timeline"], 1, "{meta}");
    assert!(
        meta["version"].as_str().unwrap().starts_with("15."),
        "{meta}"
    );
    assert_eq!(meta["superuser"], "delphix", "{meta}");

    let started = std::time::Instant::now();
    engine
        .cli(&[
            "vdb",
            "provision",
            "--name",
            "pgdev",
            "--from",
            "pg",
            "--env",
            "target",
            "--params",
            &vdb_params(target, "/srv/vdbs/pgdev", 5433),
        ])
        .ok();
    println!(
        "provision to accepting connections: {:?}",
        started.elapsed()
    );
    assert_eq!(count(target, 5433, "t"), 1000);
    assert_eq!(
        sql(target, 5433, "SELECT pg_is_in_recovery()"),
        "f",
        "a primary of its own"
    );
    let vdb = engine.cli(&["vdb", "show", "pgdev", "-o", "json"]).json();
    assert_eq!(vdb["source_config"]["port"], 5433, "{vdb}");
    assert_eq!(
        vdb["source_config"]["dataDir"], "/srv/vdbs/pgdev/data",
        "{vdb}"
    );

    // Writes on both sides; a sync and a refresh bring the source's.
    sql(target, 5433, "INSERT INTO t VALUES (-1, 'vdb')");
    sql(
        source,
        5432,
        "INSERT INTO t SELECT g, 'later' FROM generate_series(1001, 1500) g",
    );
    engine.cli(&["dsource", "sync", "pg"]).ok();
    engine.cli(&["vdb", "refresh", "pgdev"]).ok();
    assert_eq!(
        count(target, 5433, "t"),
        1500,
        "same port, the source's rows"
    );
    assert_eq!(
        sql(target, 5433, "SELECT count(*) FROM t WHERE note = 'vdb'"),
        "0"
    );

    // A VDB snapshot, more writes, a rewind: back at the snapshot.
    sql(target, 5433, "INSERT INTO t VALUES (-2, 'kept')");
    let snap = engine
        .cli(&["vdb", "snapshot", "pgdev", "-o", "json"])
        .json();
    let vdb_snaps = engine
        .cli(&["snapshot", "list", "--dataset", "pgdev", "-o", "json"])
        .json();
    let latest: &Value = vdb_snaps.as_array().unwrap().last().unwrap();
    let latest = latest["reference"].as_str().unwrap().to_owned();
    let _ = snap;
    sql(target, 5433, "INSERT INTO t VALUES (-3, 'lost')");
    engine
        .cli(&["vdb", "rewind", "pgdev", "--to", &latest])
        .ok();
    assert_eq!(count(target, 5433, "t"), 1501);
    assert_eq!(
        sql(target, 5433, "SELECT count(*) FROM t WHERE note = 'lost'"),
        "0"
    );

    // A child VDB of that snapshot, on its own port.
    engine
        .cli(&[
            "vdb",
            "provision",
            "--name",
            "pgchild",
            "--from",
            &format!("pgdev@{latest}"),
            "--env",
            "target",
            "--params",
            &vdb_params(target, "/srv/vdbs/pgchild", 5434),
        ])
        .ok();
    assert_eq!(count(target, 5434, "t"), 1501);

    // A port in use: refused by the plugin, nothing left behind.
    let clash = engine.cli(&[
        "vdb",
        "provision",
        "--name",
        "clash",
        "--from",
        "pg",
        "--env",
        "target",
        "--params",
        &vdb_params(target, "/srv/vdbs/clash", 5433),
    ]);
    assert!(
        clash.fails(6).contains("Port 5433 is already in use"),
        "{:?}",
        clash
    );
    assert!(servers_below(target, "/srv/vdbs/clash").is_empty());

    // Stop and start.
    engine.cli(&["vdb", "stop", "pgchild"]).ok();
    assert!(servers_below(target, "/srv/vdbs/pgchild").is_empty());
    engine.cli(&["vdb", "start", "pgchild"]).ok();
    assert_eq!(count(target, 5434, "t"), 1501);

    // V2P of the dSource's latest snapshot: a data directory that a plain
    // pg_ctl start runs.
    engine
        .cli(&[
            "dsource",
            "export",
            "pg",
            "--env",
            "target",
            "--target",
            "/srv/restore/pg",
            "--params",
            &json!({"port": 5435, "listenAddresses": target.address().to_string()}).to_string(),
        ])
        .ok();
    let started = target.sh_output(
        "delphix",
        &format!("{BIN}/pg_ctl -D /srv/restore/pg/data -l /srv/restore/pg.log -w start"),
    );
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    assert_eq!(count(target, 5435, "t"), 1500);
    target.sh(
        "delphix",
        &format!("{BIN}/pg_ctl -D /srv/restore/pg/data -m fast stop"),
    );

    for vdb in ["pgchild", "pgdev"] {
        engine.cli(&["vdb", "delete", vdb]).ok();
    }
    engine.cli(&["dsource", "delete", "pg"]).ok();
    assert!(
        servers_below(target, "/srv/vdbs").is_empty(),
        "no VDB server is left"
    );
    assert!(
        servers_below(staging, "/home/delphix/.doppel/").is_empty(),
        "no standby is left"
    );
    assert_eq!(
        engine.cli(&["mount", "list", "-o", "json"]).json(),
        json!([])
    );
}

#[test]
fn a_sync_under_write_load_gives_a_vdb_at_a_committed_state() {
    let setup = Setup::new();
    let (engine, source, target) = (
        &setup.engine,
        setup.world.host("source"),
        setup.world.host("target"),
    );
    // Every transaction adds to the ledger and to the balance together: a
    // copy at any committed state has the two agree.
    sql(
        source,
        5432,
        "CREATE TABLE ledger (id bigserial PRIMARY KEY, amount int NOT NULL); \
         CREATE TABLE balance (total bigint NOT NULL); INSERT INTO balance VALUES (0)",
    );
    source.put_file(
        "/srv/data/tx.sql",
        b"\\set amount random(1, 100)\nBEGIN;\nINSERT INTO ledger (amount) VALUES (:amount);\n\
          UPDATE balance SET total = total + :amount;\nCOMMIT;\n",
        "delphix",
    );
    setup.link();
    let consistent =
        "SELECT (SELECT coalesce(sum(amount), 0) FROM ledger) = (SELECT total FROM balance)";
    std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            source.sh_output(
                "delphix",
                &format!(
                    "{BIN}/pgbench -n -h /srv/data -p 5432 -c 4 -T 20 -f /srv/data/tx.sql postgres"
                ),
            )
        });
        // Syncs while the load runs.
        std::thread::sleep(std::time::Duration::from_secs(3));
        for _ in 0..2 {
            engine.cli(&["dsource", "sync", "pg"]).ok();
        }
        let out = load.join().unwrap();
        assert!(
            out.status.success(),
            "pgbench: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    let snapshots = engine
        .cli(&["snapshot", "list", "--dataset", "pg", "-o", "json"])
        .json();
    let snapshots = snapshots.as_array().unwrap();
    assert_eq!(snapshots.len(), 3);
    for (i, snap) in snapshots[1..].iter().enumerate() {
        let port = 5440 + i as u16;
        let name = format!("load{i}");
        engine
            .cli(&[
                "vdb",
                "provision",
                "--name",
                &name,
                "--from",
                &format!("pg@{}", snap["reference"].as_str().unwrap()),
                "--env",
                "target",
                "--params",
                &vdb_params(target, &format!("/srv/vdbs/{name}"), port),
            ])
            .ok();
        assert_eq!(
            sql(target, port, consistent),
            "t",
            "{name} is at a committed state"
        );
        let rows: i64 = sql(target, port, "SELECT count(*) FROM ledger")
            .parse()
            .unwrap();
        assert!(rows > 0, "{name} was taken under load, with rows: {rows}");
        let log = target.sh(
            "delphix",
            "cat /home/delphix/.doppel/toolkit/scratch/doppel-pg/*/run/server.log",
        );
        for bad in ["PANIC", "FATAL", "ERROR"] {
            assert!(!log.contains(bad), "the VDB's server log has {bad}:\n{log}");
        }
        println!("{name}: {rows} transactions, consistent");
        engine.cli(&["vdb", "delete", &name]).ok();
    }
    engine.cli(&["dsource", "delete", "pg"]).ok();
    assert!(servers_below(target, "/srv/vdbs").is_empty());
}

#[test]
fn on_the_engines_own_machine_the_readme_walkthrough_works() {
    // The engine runs inside this host (see the tutorial's own-machine
    // test): datasets are bind mounts, and one environment plays source,
    // staging and target.
    let world = own_machine_world(&[]);
    let local = world.host("local");
    make_source_cluster(local, 5432);
    local.mkdir("/srv/vdbs", "delphix");
    let secrets = tempfile::tempdir().unwrap();
    let pw = secrets.path().join("pw");
    std::fs::write(&pw, local.user("delphix").password.as_deref().unwrap()).unwrap();
    let engine = Engine::start_in_namespace_of(local, POOL_ON_THE_MACHINES_DISK);
    engine.install(&plugins::build_example("postgres"));
    engine.add_env(
        "db",
        local,
        "delphix",
        "--password-file",
        pw.to_str().unwrap(),
    );
    let repos = engine.cli(&["repository", "list", "-o", "json"]).json();
    let repo = repos
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["parameters"]["binDir"] == BIN)
        .unwrap()["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let sc = engine
        .cli(&[
            "sourceconfig",
            "add",
            "--env",
            "db",
            "--repository",
            &repo,
            "--params",
            &json!({"name": "src", "host": local.address().to_string(), "port": 5432}).to_string(),
            "-o",
            "json",
        ])
        .json()["reference"]
        .as_str()
        .unwrap()
        .to_owned();
    let params = json!({"replicationUser": "repl", "replicationPassword": REPLICATION_PASSWORD, "stagingPort": 6543});
    engine
        .cli(&[
            "dsource",
            "link",
            "--sourceconfig",
            &sc,
            "--staging-env",
            "db",
            "--params",
            &params.to_string(),
        ])
        .ok();
    engine
        .cli(&[
            "vdb",
            "provision",
            "--name",
            "dev",
            "--from",
            "src",
            "--env",
            "db",
            "--params",
            &vdb_params(local, "/srv/vdbs/dev", 5433),
        ])
        .ok();
    assert_eq!(count(local, 5433, "t"), 1000);
    sql(local, 5432, "INSERT INTO t VALUES (1001, 'later')");
    engine.cli(&["dsource", "sync", "src"]).ok();
    engine.cli(&["vdb", "refresh", "dev"]).ok();
    assert_eq!(count(local, 5433, "t"), 1001);
    engine.cli(&["vdb", "delete", "dev"]).ok();
    engine.cli(&["dsource", "delete", "src"]).ok();
    assert!(servers_below(local, "/srv/vdbs").is_empty());
    assert!(servers_below(local, "/home/delphix/.doppel/").is_empty());
}
