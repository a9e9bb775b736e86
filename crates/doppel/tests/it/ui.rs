//! The web UI in a real headless Chromium against a real `doppel serve`
//! and a fake host: the tutorial's life cycle, done by clicking. One flow,
//! since a browser is slow to start; it saves a screenshot of each screen
//! (in `target/ui-screenshots/`) and runs axe-core on each.

use doppel_testworld::{plugins, World, DELPHIX_PASSWORD};

use crate::browser::{group_members, Browser, ENTER, TAB};
use crate::support::*;

/// Waits for the job view in `scope` to show a job other than `before`
/// finished, and returns its id; fails on any end but success.
fn job_done(b: &Browser, scope: &str, before: &Option<String>) -> String {
    let sel = format!("{scope} .job");
    let id = b.wait("a new job", || {
        let id = b
            .script(&format!(
                "const j = document.querySelector({sel:?}); return j && ['succeeded','failed','canceled'].includes(j.dataset.state) ? j.dataset.job : null"
            ))
            .as_str()
            .map(str::to_owned)?;
        (Some(&id) != before.as_ref()).then_some(id)
    });
    let state = b.attr(&sel, "data-state").unwrap();
    assert_eq!(state, "succeeded", "{id}: {}", b.wait_text(&sel, &id));
    id
}

/// Clicks the destructive button in `scope`, then says yes when asked.
fn confirm_danger(b: &Browser, scope: &str) {
    b.click(&format!("{scope} button.danger"));
    b.click(&format!("{scope} .confirm button.danger"));
}

fn current_job(b: &Browser, scope: &str) -> Option<String> {
    b.script(&format!(
        "const j = document.querySelector({:?}); return j ? j.dataset.job : null",
        format!("{scope} .job")
    ))
    .as_str()
    .map(str::to_owned)
}

#[test]
fn an_operator_runs_the_tutorial_in_the_web_ui() {
    let world = World::new(&["host"]);
    let host = world.host("host");
    // One host is source, staging and target: alice may ssh to herself.
    trust_ssh(host, host);
    host.mkdir("/srv/data/tree", "alice");
    host.put_file("/srv/data/tree/hello.txt", b"version 1\n", "alice");
    host.mkdir("/srv/vdbs", "alice");
    let artifact = plugins::build_example("directory");

    let engine = Engine::start();
    let client = engine.client();
    let b = Browser::start();

    // Login, by keyboard only.
    b.goto(&engine.url);
    b.find("#login-user");
    assert!(
        b.script("return document.title").as_str() == Some("Doppel"),
        "the engine serves no built web UI at /: run scripts/setup.sh, then build again"
    );
    b.screenshot("01-login");
    b.assert_accessible("login");
    b.click("#login-user");
    b.type_keys(TAB);
    assert_eq!(b.focused("id"), "login-password");
    b.type_keys("wrong password");
    b.type_keys(ENTER);
    b.wait_text(".error", "unauthorized");
    b.fill("#login-password", ADMIN_PASSWORD);
    b.type_keys(ENTER);
    b.wait_text("main", "Storage pool");
    b.wait_text(".gauge", "Free");
    b.screenshot("02-overview");
    b.assert_accessible("overview");

    // Install the plugin by uploading its artifact.
    b.click("a[href='#/plugins']");
    // Something that is no artifact first: the engine's refusal, as it words it.
    let file = b.find("#plugin-file");
    let not_artifact = workspace_root().join("ui/package.json");
    b.keys_to(&file, not_artifact.to_str().unwrap());
    b.click("form[aria-labelledby=install-h] button[type=submit]");
    b.wait_text("form[aria-labelledby=install-h] .error", "invalid_artifact");
    let file = b.find("#plugin-file");
    b.keys_to(&file, artifact.to_str().unwrap());
    b.click("form[aria-labelledby=install-h] button[type=submit]");
    b.wait_text("[role=status]", "Installed directory");
    b.click("a[href='#/plugins/directory']");
    b.wait_text("#plugin-h", "directory");
    b.click("details.card summary");
    b.find("#preview0_sourceHost");
    b.screenshot("03-plugins");
    b.assert_accessible("plugins");

    // Add the host as an environment, logging in with alice's key.
    b.click("a[href='#/environments']");
    b.fill("#env-name", "box");
    b.fill("#env-host", &host.address().to_string());
    b.fill("#env-port", &host.port().to_string());
    b.fill("#env-user", "alice");
    b.click("#env-auth-key");
    b.fill(
        "#env-key",
        host.user("alice").private_key_pem.as_deref().unwrap(),
    );
    b.click("form[aria-labelledby=add-env-h] button[type=submit]");
    job_done(&b, "form[aria-labelledby=add-env-h]", &None);
    // Discovery found the host's repository; add the directory to it.
    b.wait_text("#env-detail-h", "box");
    b.wait_text(".detail", "Discovered repositories");
    let repo = client.list_repositories(Some("box")).unwrap()[0]
        .reference
        .clone();
    b.fill(&format!("#sc-{repo}_name"), "tree");
    b.fill(&format!("#sc-{repo}_path"), "/srv/data/tree");
    b.click(".detail div.card > form.card button[type=submit]");
    b.wait_text(".detail", "Source config tree");
    // A second host user, by password, then taken away again.
    b.fill("#envuser-name", "delphix");
    b.fill("#envuser-password", DELPHIX_PASSWORD);
    b.click("form[aria-labelledby=env-user-add-h] button[type=submit]");
    b.find("tr[data-user=delphix]");
    assert_eq!(b.value("#envuser-password"), "", "the password is not kept");
    assert_eq!(client.get_environment("box").unwrap().users.len(), 2);
    b.screenshot("04-environments");
    b.assert_accessible("environments");
    confirm_danger(&b, "tr[data-user=delphix]");
    b.wait_gone("tr[data-user=delphix]");
    assert_eq!(client.get_environment("box").unwrap().users.len(), 1);

    // Link through the form drawn from the plugin's schema: a wrong value
    // first, which the engine refuses at its field.
    b.click("a[href='#/datasets']");
    b.choose("#link-sc", "tree");
    b.choose("#link-staging", "box");
    b.fill("#link_sourceHost", "not a host!");
    b.fill("#link_sourceUser", "alice");
    // The schema's default is filled in.
    assert_eq!(b.value("#link_sshPort"), "22");
    b.fill("#link_sshPort", &host.port().to_string());
    b.click("form[aria-labelledby=link-h] button[type=submit]");
    let refusal = b.wait_text("#link_sourceHost-err", "");
    assert!(!refusal.is_empty());
    assert_eq!(
        b.attr("#link_sourceHost", "aria-invalid").as_deref(),
        Some("true")
    );
    assert!(b
        .attr("#link_sourceHost", "aria-describedby")
        .unwrap()
        .contains("link_sourceHost-err"),);
    assert!(b.find_none("#link_sourceUser-err"));
    b.screenshot("05-link-refused");
    b.assert_accessible("link form with an error");
    assert!(client.list_dsources().unwrap().is_empty(), "nothing linked");
    b.fill("#link_sourceHost", &host.address().to_string());
    b.click("form[aria-labelledby=link-h] button[type=submit]");
    let scope = "section[aria-labelledby=tree-h] .card";
    let linked = job_done(&b, scope, &None);
    b.wait_text(".tree", "tree");

    // Provision from a chosen snapshot (the first), on the same host.
    b.click(".tree a[href='#/datasets/dsource/tree']");
    b.wait_text("#ds-h", "tree");
    let first = client.list_snapshots(Some("tree")).unwrap()[0]
        .reference
        .clone();
    b.fill("#prov-name", "dev");
    b.choose("#prov-snapshot", &first);
    b.choose("#prov-env", "box");
    b.fill("#prov_mountPath", "/srv/vdbs/dev");
    b.click("form[aria-labelledby=prov-h] button[type=submit]");
    let provisioned = job_done(&b, scope, &Some(linked));
    assert_eq!(
        host.sh("alice", "cat /srv/vdbs/dev/hello.txt"),
        "version 1\n"
    );
    assert_eq!(client.get_vdb("dev").unwrap().name, "dev");

    // A new snapshot of the source, then refresh the VDB to it.
    host.put_file("/srv/data/tree/hello.txt", b"version 2\n", "alice");
    // With the snapshot parameters' form, which the plugin reads.
    b.click(".detail details.sync summary");
    b.click("#sync_resync");
    b.click("form[aria-label='Sync with snapshot parameters'] button[type=submit]");
    let synced = job_done(&b, scope, &Some(provisioned));
    b.wait_text(&format!("{scope} .job .events"), "resync of /srv/data/tree");
    b.click(".tree a[href='#/datasets/vdb/dev']");
    b.wait_text("#ds-h", "dev");
    let vdb_first = client.list_snapshots(Some("dev")).unwrap()[0]
        .reference
        .clone();
    b.click("form[aria-label='Refresh from the parent'] button");
    let refreshed = job_done(&b, scope, &Some(synced));
    assert_eq!(
        host.sh("alice", "cat /srv/vdbs/dev/hello.txt"),
        "version 2\n"
    );
    // The dSource's timeline: dev now hangs from its latest snapshot.
    let latest = client.list_snapshots(Some("tree")).unwrap().pop().unwrap();
    assert_eq!(
        client.get_vdb("dev").unwrap().parent_snapshot.as_deref(),
        Some(latest.reference.as_str())
    );
    b.click(".tree a[href='#/datasets/dsource/tree']");
    b.wait_text("#ds-h", "tree");
    b.wait_text(
        &format!("li[data-snapshot='{}'] .hangs", latest.reference),
        "dev",
    );
    assert!(b.find_none(&format!("li[data-snapshot='{first}'] .hangs")));
    b.script("window.scrollTo(0, 0)");
    b.screenshot("06-datasets");
    b.assert_accessible("dSources and VDBs");
    b.click(".tree a[href='#/datasets/vdb/dev']");
    b.wait_text("#ds-h", "dev");

    // Rewind to the VDB's first snapshot, chosen in the list.
    b.choose("#rewind-to", &vdb_first);
    b.click("form[aria-label='Rewind to an own snapshot'] button");
    let rewound = job_done(&b, scope, &Some(refreshed));
    assert_eq!(
        host.sh("alice", "cat /srv/vdbs/dev/hello.txt"),
        "version 1\n"
    );
    b.wait_text(".detail", "Timeflows");
    let dev = client.get_vdb("dev").unwrap();
    assert_eq!(dev.timeflows, 3);
    // The timeline says which VDB hangs from which snapshot: after the
    // rewind, dev's current timeflow starts at its own first snapshot.
    assert_eq!(dev.parent_snapshot.as_deref(), Some(vdb_first.as_str()));
    b.wait_text(&format!("li[data-snapshot='{vdb_first}'] .hangs"), "dev");

    // Hooks, kept by the engine.
    b.click(".detail details.card summary");
    b.fill("#hook-post-snapshot", "echo snapped");
    b.click(".detail form[aria-label='Hooks of dev'] button[type=submit]");
    b.wait_text(
        ".detail form[aria-label='Hooks of dev'] [role=status]",
        "Hooks saved",
    );
    assert_eq!(
        client
            .hooks("dev")
            .unwrap()
            .get("post-snapshot")
            .map(String::as_str),
        Some("echo snapped")
    );

    // V2P of the first snapshot: a relative directory first, refused at its field.
    host.mkdir("/srv/export", "alice");
    b.choose("#export-snapshot", &vdb_first);
    b.choose("#export-env", "box");
    b.fill("#export-target", "relative");
    b.click("form[aria-labelledby=export-h] button[type=submit]");
    b.wait_text("#export-target-err", "absolute");
    assert_eq!(
        b.attr("#export-target", "aria-invalid").as_deref(),
        Some("true")
    );
    b.fill("#export-target", "/srv/export/dev");
    b.click("form[aria-labelledby=export-h] button[type=submit]");
    let exported = job_done(&b, scope, &Some(rewound));
    assert_eq!(
        host.sh("alice", "cat /srv/export/dev/hello.txt"),
        "version 1\n"
    );
    b.screenshot("07-export");
    b.assert_accessible("VDB with hooks and V2P");

    // The jobs screen shows a job's events.
    b.goto(&format!("{}/#/jobs/{exported}", engine.url));
    b.wait_text(&format!(".job[data-job='{exported}']"), "succeeded");
    b.find(&format!(".job[data-job='{exported}'] .events li"));
    b.screenshot("08-jobs");
    b.assert_accessible("jobs");

    // Delete the VDB, asked once more.
    b.goto(&format!("{}/#/datasets/vdb/dev", engine.url));
    b.wait_text("#ds-h", "dev");
    let before = current_job(&b, scope);
    confirm_danger(&b, ".detail .actions");
    job_done(&b, scope, &before);
    assert!(client.list_vdbs().unwrap().is_empty(), "the VDB is gone");
    assert!(!host.exists("/srv/vdbs/dev/hello.txt"));
    b.wait("the VDB gone from the tree", || {
        (!b.text_of(".tree").unwrap_or_default().contains("dev")).then_some(())
    });

    // A plugin with every kind of field: the form drawn from its schema,
    // checked by the engine, which names nested fields by their path.
    let all_ops = std::fs::read(build_plugin("all-ops-staged")).unwrap();
    let plugin = client.install_plugin(all_ops).unwrap();
    b.goto(&format!("{}/#/plugins/{}", engine.url, plugin.name));
    b.wait_text("#plugin-h", &plugin.name);
    b.click("details.card summary");
    let kind = |css: &str| {
        b.script(&format!(
            "const e = document.querySelector({css:?}); return e.tagName + ':' + (e.type || '')"
        ))
        .as_str()
        .unwrap()
        .to_owned()
    };
    b.find("#preview0_behavior");
    assert_eq!(kind("#preview0_behavior"), "SELECT:select-one");
    assert_eq!(
        b.value("#preview0_behavior"),
        "\"ok\"",
        "the default is chosen"
    );
    assert_eq!(kind("#preview0_secret"), "INPUT:password");
    assert_eq!(kind("#preview0_recordSizeInKB"), "INPUT:number");
    assert_eq!(kind("#preview0_mountEnvironment"), "SELECT:select-one");
    b.choose("#preview0_mountEnvironment", "box");
    assert_eq!(kind("#preview0_layout_subsetMounts"), "INPUT:number");
    b.script(
        "[...document.querySelectorAll('details[open] button')].find(x => x.textContent.startsWith('Add to')).click()",
    );
    b.find("#preview0_migrations_0");
    b.fill("#preview0_secret", "hunter2");
    b.fill("#preview0_layout_subsetMounts", "9");
    b.fill("#preview0_recordSizeInKB", "0");
    b.click("details[open] form button[type=submit]");
    b.wait_text("#preview0_layout_subsetMounts-err", "");
    b.wait_text("#preview0_recordSizeInKB-err", "");
    assert!(b.find_none("#preview0_secret-err"));
    assert!(!b.text_of("body").unwrap().contains("hunter2"));
    b.screenshot("09-schema-form");
    b.assert_accessible("plugin schema form");
    b.fill("#preview0_layout_subsetMounts", "2");
    b.fill("#preview0_recordSizeInKB", "128");
    b.fill("#preview0_migrations_0", "m1");
    b.click("details[open] form button[type=submit]");
    b.wait_text("details[open] [role=status]", "Valid");

    // An empty VDB of that plugin, once discovery has found its repository on box.
    b.goto(&format!("{}/#/environments/box", engine.url));
    b.wait_text("#env-detail-h", "box");
    b.click(".detail .actions button:first-child");
    job_done(&b, ".detail", &None);
    b.goto(&format!("{}/#/datasets", engine.url));
    b.choose("#empty-plugin", &plugin.name);
    b.fill("#empty-name", "blank");
    b.choose("#empty-env", "box");
    b.fill("#empty_mountPath", "/srv/vdbs/blank");
    b.click("form[aria-labelledby=empty-h] button[type=submit]");
    job_done(&b, scope, &None);
    b.wait_text(".tree", "blank");
    assert!(host
        .sh_output("alice", "mountpoint -q /srv/vdbs/blank")
        .status
        .success());

    // Users: added with a password the page never shows, given another
    // role and a right, then deleted.
    b.click("a[href='#/users']");
    b.find("tr[data-user=admin]");
    b.fill("#user-name", "olga");
    b.fill("#user-password", "short");
    b.click("form[aria-labelledby=add-user-h] button[type=submit]");
    b.wait_text("#user-password-err", "characters");
    b.fill("#user-password", "olga-password-1");
    b.click("form[aria-labelledby=add-user-h] button[type=submit]");
    b.wait_text(
        "form[aria-labelledby=add-user-h] [role=status]",
        "Added olga",
    );
    assert_eq!(b.value("#user-password"), "");
    assert!(!b.text_of("body").unwrap().contains("olga-password-1"));
    b.find("tr[data-user=olga]");
    let env = client.get_environment("box").unwrap().reference;
    b.choose("#grant-object", "environment box");
    b.choose("#grant-user", "olga");
    b.click("form[aria-labelledby=grant-h] button[type=submit]");
    let grant = format!("tr[data-grant='{env} olga']");
    b.wait_text(&grant, "provisioner");
    // Auditors hold no rights: the engine says so, and changes nothing.
    b.choose("#role-olga", "auditor");
    b.wait_text("section[aria-labelledby=users-h] .error", "revoke it first");
    assert_eq!(b.value("#role-olga"), "operator");
    b.screenshot("10-users");
    b.assert_accessible("users");
    confirm_danger(&b, &grant);
    b.wait_gone(&grant);
    assert!(client.list_grants(None, Some("olga")).unwrap().is_empty());
    b.choose("#role-olga", "auditor");
    b.wait("olga an auditor", || {
        let users = client.list_users().unwrap();
        users
            .iter()
            .any(|u| u.name == "olga" && u.role.as_str() == "auditor")
            .then_some(())
    });
    // The engine keeps its last administrator, and says so.
    b.choose("#role-admin", "auditor");
    b.wait_text(
        "section[aria-labelledby=users-h] .error",
        "last administrator",
    );
    assert_eq!(b.value("#role-admin"), "admin");
    confirm_danger(&b, "tr[data-user=olga]");
    b.wait_gone("tr[data-user=olga]");
    assert_eq!(client.list_users().unwrap().len(), 1);

    println!("screenshots in {}", b.shots.display());
    // Closing the browser ends the driver, Chromium and its helpers alike.
    let group = b.process_group();
    assert!(
        group_members(group).len() > 1,
        "Chromium runs in the driver's process group"
    );
    drop(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !group_members(group).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(group_members(group), Vec::<u32>::new(), "left running");
}
