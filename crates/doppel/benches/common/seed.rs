//! Records written straight into a running engine's metadata store, for
//! benches that need many objects and have no quick public way to make
//! them: an environment, a dSource with one snapshot, and VDBs of it
//! (parameters sealed with the engine's own key, as the engine seals
//! them). The engine reads them back like any other.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305};
use doppel_store::{
    DSourceRecord, DiscoveredRepository, EnvironmentRecord, EnvironmentUserRecord, SnapshotRecord,
    Store, VdbRecord,
};
use serde_json::json;

use crate::support::Engine;

/// Seals like the engine's secret box: `v1:` + base64(nonce ‖ ciphertext).
fn seal(cipher: &XChaCha20Poly1305, plaintext: &str) -> String {
    let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
    let mut out = nonce.to_vec();
    out.extend_from_slice(&cipher.encrypt(&nonce, plaintext.as_bytes()).unwrap());
    format!(
        "v1:{}",
        base64::engine::general_purpose::STANDARD.encode(out)
    )
}

/// `count` VDB records (`enabled` or not), from one snapshot of one
/// dSource, on one environment.
pub fn vdbs(engine: &Engine, plugin_id: &str, count: usize, enabled: bool) {
    let dir = engine.data_dir.path();
    let key = std::fs::read(dir.join("secrets.key")).expect("the engine's secrets.key");
    let cipher = XChaCha20Poly1305::new(Key::from_slice(&key));
    let store = Store::open(&dir.join("metadata.db")).unwrap();
    let now = "2026-01-01T00:00:00Z".to_owned();
    let env = EnvironmentRecord {
        id: 0,
        name: "bench".into(),
        host: "127.0.0.1".into(),
        port: 22,
        toolkit_path: "/toolkit".into(),
        scratch_path: "/scratch".into(),
        host_key: "ssh-ed25519 AAAA".into(),
        host_key_fingerprint: "SHA256:bench".into(),
        created_at: now.clone(),
    };
    let user = EnvironmentUserRecord {
        id: 0,
        environment_id: 0,
        name: "delphix".into(),
        auth: "password".into(),
        secret: seal(&cipher, "not-used"),
        is_primary: true,
    };
    let repo = DiscoveredRepository {
        plugin_id: plugin_id.into(),
        identity: "repo".into(),
        name: "repo".into(),
        parameters: json!({"name": "repo"}),
        source_configs: vec![("sc".into(), "sc".into(), json!({"name": "sc"}))],
    };
    let env_id = store.insert_environment(&env, &user, &[repo]).unwrap();
    let repo = store.list_repositories(Some(env_id)).unwrap().remove(0);
    let sc = store.list_source_configs(Some(repo.id)).unwrap().remove(0);
    let user = store.environment_users(env_id).unwrap().remove(0);
    let ds = DSourceRecord {
        id: 0,
        name: "bench-source".into(),
        plugin_id: plugin_id.into(),
        source_config_id: sc.id,
        staging_environment_id: Some(env_id),
        staging_user_id: Some(user.id),
        parameters: seal(&cipher, &json!({"mountPath": "/mnt/staging"}).to_string()),
        volume: "bench-source".into(),
        enabled: true,
        created_at: now.clone(),
    };
    let (_, timeflow) = store.insert_dsource(&ds).unwrap();
    let snap = store
        .insert_snapshot(&SnapshotRecord {
            id: 0,
            timeflow_id: timeflow,
            volume: "bench-source".into(),
            pool_snapshot: "bench-source@1".into(),
            metadata: json!({"note": "bench"}),
            created_at: now.clone(),
        })
        .unwrap();
    for i in 0..count {
        let v = VdbRecord {
            id: 0,
            name: format!("vdb-{i:04}"),
            plugin_id: plugin_id.into(),
            repository_id: repo.id,
            environment_id: env_id,
            user_id: user.id,
            parent_volume: "bench-source".into(),
            parameters: seal(
                &cipher,
                &json!({"mountPath": format!("/mnt/vdb-{i:04}"), "behavior": "ok"}).to_string(),
            ),
            source_config: Some(json!({"name": format!("vdb-{i:04}")})),
            volume: format!("bench-vdb-{i:04}"),
            enabled,
            created_at: now.clone(),
        };
        store.insert_vdb(&v, Some(snap)).unwrap();
    }
}
