//! Installing plugins and calling every operation of the contract.

use serde_json::{json, Value};

use crate::support::*;

const ALL_OPS: &str = "doppel-all-ops-staged";

#[test]
fn template_plugin_installs_lists_runs_and_deletes_through_the_cli() {
    let engine = Engine::start();
    let artifact = template_artifact();
    let installed = engine.install(&artifact);
    assert_eq!(installed["name"], "template");
    assert_eq!(installed["kind"], "STAGED");
    let id = installed["id"].as_str().unwrap().to_owned();

    let list = engine.cli(&["plugin", "list", "-o", "json"]).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    let table = engine.cli(&["plugin", "list"]);
    assert!(
        table.ok().contains("template") && table.stdout.contains("STAGED"),
        "{}",
        table.stdout
    );

    let shown = engine
        .cli(&["plugin", "show", "template", "-o", "json"])
        .json();
    let ops: Vec<&str> = shown["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    assert!(
        ops.contains(&"discovery.repository") && ops.contains(&"virtual.configure"),
        "{ops:?}"
    );
    assert!(
        !ops.contains(&"virtual.status"),
        "the template does not implement status: {ops:?}"
    );

    // The template's repository discovery names the repository after the plugin id... whatever it
    // returns, it must be one repository whose parameters are JSON.
    let request =
        json!({"source_connection": conn("UNIX_HOST_ENVIRONMENT-1", "source")}).to_string();
    let out = engine
        .cli(&[
            "plugin",
            "invoke",
            "template",
            "discovery.repository",
            "--request",
            &request,
        ])
        .json();
    let repos = out["repositories"].as_array().unwrap();
    assert_eq!(repos.len(), 1, "{out}");
    assert!(params_of(&repos[0]).is_object());

    let err = engine.cli(&["plugin", "invoke", "template", "virtual.status"]);
    assert!(
        err.fails(3).contains("does not implement virtual.status"),
        "{}",
        err.stderr
    );

    engine.cli(&["plugin", "delete", &id]).ok();
    assert_eq!(
        engine.cli(&["plugin", "list", "-o", "json"]).json(),
        json!([])
    );
    assert!(
        !engine.data_dir.path().join("plugins").join(&id).exists(),
        "plugin files left behind"
    );
    engine.cli(&["plugin", "show", &id]).fails(4);
}

#[test]
fn every_operation_of_the_all_ops_plugin_gets_the_request_the_engine_built() {
    let engine = Engine::start();
    let summary = engine.install(&build_plugin("all-ops-staged"));
    assert_eq!(
        summary["migration_ids"],
        json!(["1.2", "1.3", "1.4", "1.5", "1.6", "1.10", "1.11", "1.12", "1.13", "2021.1.2"])
    );
    let c = engine.client();
    let call = |op: &str, req: Value| invoke_ok(&c, ALL_OPS, op, req);
    let ss = staged_source(linked_ok());
    let vs = virtual_source(virtual_ok());
    let policy = policy_sync();
    let resync = resync_params();

    let out = call("discovery.repository", discovery_request());
    assert_eq!(
        params_of(&out["repositories"][0])["name"],
        "repo-UNIX_HOST_ENVIRONMENT-1"
    );
    assert_eq!(
        params_of(&out["repositories"][0])["toolkitPath"],
        "/opt/toolkit"
    );
    let out = call("discovery.source_config", source_config_discovery_request());
    let names: Vec<Value> = out["source_configs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| params_of(s)["name"].clone())
        .collect();
    assert_eq!(
        names,
        vec![json!("repo1-config-1"), json!("repo1-config-2")]
    );

    let sn_req = |sp: &Value| sync_request(&ss, sp);
    assert_eq!(
        call("linked.staged_pre_snapshot", sn_req(&policy)),
        json!({})
    );
    let snap = params_of(&call("linked.staged_post_snapshot", sn_req(&policy))["snapshot"]);
    assert_eq!(snap["operation"], "linked.post_snapshot");
    assert_eq!(snap["guid"], "ls-guid-1");
    assert_eq!(snap["sourceConfigName"], "sc1");
    assert_eq!(snap["mountPath"], "/mnt/staging/ls1");
    assert!(
        snap.get("resync").is_none(),
        "a policy sync has no parameters: {snap}"
    );
    assert_eq!(
        params_of(&call("linked.staged_post_snapshot", sn_req(&resync))["snapshot"])["resync"],
        true
    );

    let rsc = |running: bool| staged_request(&ss, running);
    for op in [
        "linked.start_staging",
        "linked.stop_staging",
        "linked.worker",
        "linked.staged_pre_source_to_physical",
    ] {
        let mut req = rsc(true);
        if op.ends_with("physical") {
            req["snapshot"] = snapshot();
            req["physical_source"] = physical();
        }
        assert_eq!(call(op, req), json!({}), "{op}");
    }
    let mut req = rsc(true);
    req["snapshot"] = snapshot();
    req["physical_source"] = physical();
    assert_eq!(call("linked.staged_source_to_physical", req), json!({}));
    assert_eq!(call("linked.status", rsc(true))["status"], "ACTIVE");
    assert_eq!(call("linked.status", rsc(false))["status"], "INACTIVE");
    let spec = call(
        "linked.mount_specification",
        json!({"repository": repo(), "staged_source": ss}),
    );
    assert_eq!(spec["staged_mount"]["mount_path"], "/mnt/staging/ls1");
    assert_eq!(
        spec["staged_mount"]["remote_environment"]["reference"],
        "UNIX_HOST_ENVIRONMENT-2"
    );
    assert!(spec.get("ownership_spec").is_none(), "{spec}");
    // uint64 travels as a string in proto JSON.
    assert_eq!(
        call("linked.staged_source_size", rsc(true))["database_size"],
        "8192"
    );

    let v = |sc: bool| virtual_request(&vs, sc);
    let configured = params_of(
        &call(
            "virtual.configure",
            json!({"repository": repo(), "snapshot": snapshot(), "virtual_source": vs}),
        )["source_config"],
    );
    assert_eq!(
        configured,
        json!({"name": "vdb-vs-guid-1", "path": "/mnt/vdb1", "origin": "configure:sc1"})
    );
    let mut unconf = v(true);
    unconf["deleteFlag"] = json!(true);
    assert_eq!(call("virtual.unconfigure", unconf), json!({}));
    let mut reconf = v(true);
    reconf["snapshot"] = snapshot();
    let reconfigured = params_of(&call("virtual.reconfigure", reconf)["source_config"]);
    assert_eq!(reconfigured["origin"], "reconfigure:sc1");
    assert_eq!(reconfigured["running"], true);
    for op in [
        "virtual.cleanup",
        "virtual.start",
        "virtual.stop",
        "virtual.pre_snapshot",
    ] {
        assert_eq!(call(op, v(true)), json!({}), "{op}");
    }
    assert_eq!(
        params_of(&call("virtual.post_snapshot", v(true))["snapshot"])["operation"],
        "virtual.post_snapshot"
    );
    assert_eq!(call("virtual.status", v(true))["status"], "ACTIVE");
    assert_eq!(call("virtual.status", v(false))["status"], "INACTIVE");
    let init = params_of(
        &call(
            "virtual.initialize",
            json!({"repository": repo(), "virtual_source": vs}),
        )["source_config"],
    );
    assert_eq!(init["origin"], "initialize");
    let vspec = call(
        "virtual.mount_specification",
        json!({"repository": repo(), "virtual_source": vs}),
    );
    assert_eq!(vspec["mounts"][0]["mount_path"], "/mnt/vdb1");
    assert_eq!(
        call("virtual.virtual_source_size", v(true))["database_size"],
        "16384"
    );
    for op in [
        "virtual.virtual_pre_source_to_physical",
        "virtual.virtual_source_to_physical",
    ] {
        let mut req = v(true);
        req["snapshot"] = snapshot();
        req["physical_source"] = physical();
        assert_eq!(call(op, req), json!({}), "{op}");
    }

    // Migrations run in the order sent; ids of other object types are skipped.
    let up = |op: &str, ty: &str, ids: &[&str]| {
        let out = call(
            op,
            json!({"pre_upgrade_parameters": {"REF-1": json!({"name": "a"}).to_string()}, "type": ty, "migration_ids": ids}),
        );
        serde_json::from_str::<Value>(out["post_upgrade_parameters"]["REF-1"].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(
        up("upgrade.repository", "REPOSITORY", &["1.10", "1.2"])["migrations"],
        json!(["1.10", "1.2"])
    );
    assert_eq!(
        up("upgrade.snapshot", "SNAPSHOT", &["2021.1.2", "1.6", "1.2"])["migrations"],
        json!(["2021.1.2", "1.6"])
    );
    assert_eq!(
        up("upgrade.source_config", "SOURCECONFIG", &["1.3"])["migrations"],
        json!(["1.3"])
    );
    assert_eq!(
        up("upgrade.linked_source", "LINKEDSOURCE", &["1.12", "1.4"])["migrations"],
        json!(["1.12", "1.4"])
    );
    assert_eq!(
        up("upgrade.virtual_source", "VIRTUALSOURCE", &[]),
        json!({"name": "a"})
    );

    // Every operation logged its name into the plugin's info stream.
    let info = engine
        .cli(&["plugin", "logs", ALL_OPS, "--level", "info"])
        .ok()
        .to_owned();
    let not_in_dvp3 = [
        "linked.source_size",
        "linked.pre_source_to_physical",
        "linked.source_to_physical",
        "virtual.cleanup",
        "virtual.source_size",
        "virtual.pre_source_to_physical",
        "virtual.source_to_physical",
    ];
    for op in DVP3_STAGED_OPERATIONS.into_iter().chain(not_in_dvp3) {
        assert!(
            info.contains(&format!("op {op}\n")),
            "no 'op {op}' in the info log:\n{info}"
        );
    }
    assert!(
        info.contains("resource all-ops-staged resources ok"),
        "package resources did not load"
    );
    // Lines carry the worker, job-less context and operation.
    assert!(
        info.lines()
            .any(|l| l.contains("[Worker-")
                && l.contains("|virtual.configure] op virtual.configure")),
        "{info}"
    );
}

#[test]
fn a_direct_plugin_runs_its_direct_operations() {
    let engine = Engine::start();
    let summary = engine.install(&build_plugin("direct"));
    assert_eq!(summary["kind"], "DIRECT");
    assert_eq!(summary["build_number"], "2.0.10");
    let c = engine.client();
    let ds = json!({"connection": conn("UNIX_HOST_ENVIRONMENT-1", "source"), "linked_source": {"guid": "dls-1", "parameters": pdo(json!({}))}});
    let sc = json!({"parameters": pdo(json!({"name": "d", "path": "/var/lib/direct/data"}))});
    let repo = json!({"parameters": pdo(json!({"name": "r"}))});
    let req = json!({"direct_source": ds, "repository": repo, "source_config": sc, "snapshot_parameters": {"parameters": {"json": "null"}}});

    let snap = c
        .invoke(
            "doppel-direct",
            "linked.direct_post_snapshot",
            req.clone(),
            None,
        )
        .unwrap();
    assert_eq!(params_of(&snap["snapshot"])["path"], "/var/lib/direct/data");
    let size = c
        .invoke(
            "doppel-direct",
            "linked.direct_source_size",
            json!({"repository": repo, "source_config": sc, "direct_source": ds}),
            None,
        )
        .unwrap();
    assert_eq!(size["database_size"], "4096");

    // run_sync cannot reach a host yet: the plugin does not catch the
    // library error, so it surfaces as an unhandled library error.
    let err = c
        .invoke("doppel-direct", "linked.direct_pre_snapshot", req, None)
        .unwrap_err();
    let doppel_client::ClientError::Api(api) = err else {
        panic!("{err}")
    };
    assert_eq!(api.code, doppel_model::ErrorCode::PluginFailed);
    assert!(
        api.message.contains("did not handle a library error") && api.message.contains("run_sync"),
        "{}",
        api.message
    );

    // Staged-only operations are refused for a direct plugin before any worker is asked.
    let err = engine.cli(&[
        "plugin",
        "invoke",
        "doppel-direct",
        "linked.staged_pre_snapshot",
    ]);
    assert!(
        err.fails(3).contains("only for STAGED plugins"),
        "{}",
        err.stderr
    );
}

#[test]
fn parameters_are_checked_against_the_schema_with_every_violation_and_no_secret() {
    let engine = Engine::start();
    engine.install(&build_plugin("all-ops-staged"));
    let bad = json!({"behavior": "nope", "secret": "hunter2-secret", "recordSizeInKB": "big", "layout": {"ownerUid": -1}}).to_string();
    let out = engine.cli(&[
        "plugin",
        "validate",
        ALL_OPS,
        "virtualSource",
        "--params",
        &bad,
    ]);
    let stderr = out.fails(3);
    assert!(stderr.contains("invalid_parameters"), "{stderr}");
    for needle in [
        "/mountPath",
        "/behavior",
        "/recordSizeInKB",
        "/layout/ownerUid",
    ] {
        assert!(stderr.contains(needle), "{needle} missing from:\n{stderr}");
    }
    assert!(!stderr.contains("hunter2"), "a password leaked:\n{stderr}");

    let good =
        json!({"behavior": "ok", "mountPath": "/mnt/x", "secret": "hunter2-secret"}).to_string();
    let ok = engine
        .cli(&[
            "plugin",
            "validate",
            ALL_OPS,
            "virtualSource",
            "--params",
            &good,
            "-o",
            "json",
        ])
        .json();
    assert_eq!(ok["parameters"]["secret"], "********");
    assert_eq!(ok["parameters"]["mountPath"], "/mnt/x");
    engine
        .cli(&[
            "plugin",
            "validate",
            ALL_OPS,
            "nosuchschema",
            "--params",
            "{}",
        ])
        .fails(3);
    assert!(
        !engine.log().contains("hunter2"),
        "a password reached the engine log"
    );
}
