//! Client of Doppel's HTTP API. The CLI talks to the engine only through
//! this crate, so anything the CLI can do a script can do over HTTP.

pub mod config;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use doppel_model::{ApiError, ErrorCode, PluginSummary};
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// The engine's default listen address, also the client's default URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7878";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The engine answered with an error.
    #[error("{0}")]
    Api(ApiError),
    #[error("cannot reach the Doppel engine at {url}: {reason}. Is `doppel serve` running? (set --url or DOPPEL_URL)")]
    Unreachable { url: String, reason: String },
    /// The engine's TLS certificate is not the trusted one.
    #[error("{message}")]
    Untrusted { url: String, message: String },
    #[error("the engine at {url} answered HTTP {status} with something that is not a Doppel answer: {body:.300}")]
    Unexpected {
        url: String,
        status: u16,
        body: String,
    },
}

impl ClientError {
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            _ => None,
        }
    }
}

/// What a job's event stream says, as it happens.
#[derive(Debug, Clone)]
pub enum JobUpdate {
    /// The job's state, progress or step changed.
    Job(Box<doppel_model::Job>),
    /// The job recorded an event.
    Event(doppel_model::JobEvent),
}

pub struct Client {
    base: String,
    http: Http,
    /// Sent as `Authorization: Bearer`.
    token: Option<String>,
    /// Checks `https://` engines' certificates; knows why one was refused.
    verifier: Arc<tls::Verifier>,
}

impl Client {
    /// A client that trusts the public CAs only.
    pub fn new(url: &str) -> Client {
        Client::with_trust(url, None, &tls::Trust::default())
            .expect("trusting the public CAs needs no file")
    }

    /// A client that authenticates with `token` (from `doppel login`).
    pub fn with_token(url: &str, token: Option<String>) -> Client {
        Client {
            token,
            ..Client::new(url)
        }
    }

    /// A client with `token` that also trusts what `trust` names.
    pub fn with_trust(
        url: &str,
        token: Option<String>,
        trust: &tls::Trust,
    ) -> Result<Client, tls::TrustError> {
        let verifier = Arc::new(tls::Verifier::new(trust)?);
        let http = Http::builder()
            // Plugin operations can legitimately run for a long time.
            .timeout(None::<Duration>)
            .connect_timeout(Duration::from_secs(10))
            .use_preconfigured_tls(tls::client_config(verifier.clone()))
            .build()
            .expect("an HTTP client with a rustls configuration builds");
        Ok(Client {
            base: url.trim_end_matches('/').to_owned(),
            http,
            token,
            verifier,
        })
    }

    /// A request that got no answer: a refused certificate says which and
    /// what to do, anything else is an unreachable engine.
    fn no_answer(&self, e: &dyn std::error::Error) -> ClientError {
        match self.verifier.take_refusal() {
            Some(r) => ClientError::Untrusted {
                url: self.base.clone(),
                message: r.message(&self.base),
            },
            None => ClientError::Unreachable {
                url: self.base.clone(),
                reason: root_cause(e),
            },
        }
    }

    pub fn url_base(&self) -> &str {
        &self.base
    }

    fn authed(&self, req: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// `<base>/api/v1/<segments...>`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&self.base)
            .unwrap_or_else(|_| reqwest::Url::parse(DEFAULT_URL).expect("valid"));
        url.path_segments_mut()
            .expect("http URLs have paths")
            .pop_if_empty()
            .extend(["api", "v1"])
            .extend(segments);
        url
    }

    fn send<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let resp = self.authed(req).send().map_err(|e| self.no_answer(&e))?;
        self.decode(resp)
    }

    fn decode<T: DeserializeOwned>(&self, resp: Response) -> Result<T, ClientError> {
        let status = resp.status().as_u16();
        let body = resp.text().map_err(|e| self.no_answer(&e))?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&body).map_err(|_| ClientError::Unexpected {
                url: self.base.clone(),
                status,
                body,
            });
        }
        #[derive(serde::Deserialize)]
        struct Wrapper {
            error: ApiError,
        }
        match serde_json::from_str::<Wrapper>(&body) {
            Ok(w) => Err(ClientError::Api(w.error)),
            Err(_) => Err(ClientError::Unexpected {
                url: self.base.clone(),
                status,
                body,
            }),
        }
    }

    pub fn health(&self) -> Result<Value, ClientError> {
        self.send(self.http.get(self.url(&["health"])))
    }

    pub fn install_plugin(&self, artifact: Vec<u8>) -> Result<PluginSummary, ClientError> {
        self.send(
            self.http
                .post(self.url(&["plugins"]))
                .header("content-type", "application/json")
                .body(artifact),
        )
    }

    pub fn list_plugins(&self) -> Result<Vec<PluginSummary>, ClientError> {
        self.send(self.http.get(self.url(&["plugins"])))
    }

    pub fn get_plugin(&self, plugin: &str) -> Result<PluginSummary, ClientError> {
        self.send(self.http.get(self.url(&["plugins", plugin])))
    }

    pub fn delete_plugin(&self, plugin: &str) -> Result<PluginSummary, ClientError> {
        self.send(self.http.delete(self.url(&["plugins", plugin])))
    }

    pub fn plugin_logs(
        &self,
        plugin: &str,
        level: &str,
        tail: Option<usize>,
        before: Option<&str>,
    ) -> Result<Value, ClientError> {
        let mut q = vec![("level", level.to_owned())];
        if let Some(t) = tail {
            q.push(("tail", t.to_string()));
        }
        if let Some(b) = before {
            q.push(("before", b.to_owned()));
        }
        self.send(
            self.http
                .get(self.url(&["plugins", plugin, "logs"]))
                .query(&q),
        )
    }

    pub fn plugin_worker(&self, plugin: &str) -> Result<Value, ClientError> {
        self.send(self.http.get(self.url(&["plugins", plugin, "worker"])))
    }

    /// Calls one plugin operation; returns its result as proto JSON.
    pub fn invoke(
        &self,
        plugin: &str,
        operation: &str,
        request: Value,
        deadline_seconds: Option<f64>,
    ) -> Result<Value, ClientError> {
        let mut body = json!({ "request": request });
        if let Some(d) = deadline_seconds {
            body["deadline_seconds"] = json!(d);
        }
        let url = self.url(&["plugins", plugin, "operations", operation]);
        let v: Value = self.send(self.http.post(url).json(&body))?;
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }

    pub fn validate(
        &self,
        plugin: &str,
        definition: &str,
        params: Value,
    ) -> Result<Value, ClientError> {
        let url = self.url(&["plugins", plugin, "validate", definition]);
        self.send(self.http.post(url).json(&params))
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Jobs.
impl Client {
    pub fn list_jobs(
        &self,
        state: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<doppel_model::Job>, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(s) = state {
            q.push(("state", s.to_owned()));
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        self.send(self.http.get(self.url(&["jobs"])).query(&q))
    }

    pub fn get_job(&self, id: &str) -> Result<doppel_model::Job, ClientError> {
        self.send(self.http.get(self.url(&["jobs", id])))
    }

    pub fn job_events(
        &self,
        id: &str,
        after: i64,
    ) -> Result<Vec<doppel_model::JobEvent>, ClientError> {
        self.send(
            self.http
                .get(self.url(&["jobs", id, "events"]))
                .query(&[("after", after)]),
        )
    }

    /// Follows a job over its server-sent event stream, calling `seen` for
    /// each change and event as it happens; returns the finished job.
    pub fn follow_job(
        &self,
        id: &str,
        mut seen: impl FnMut(JobUpdate),
    ) -> Result<doppel_model::Job, ClientError> {
        use std::io::BufRead;
        let unreachable = |e: &dyn std::fmt::Display| ClientError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        };
        let resp = self
            .authed(self.http.get(self.url(&["jobs", id, "stream"])))
            .send()
            .map_err(|e| self.no_answer(&e))?;
        if !resp.status().is_success() {
            return self.decode(resp);
        }
        let bad = |what: &str, data: &str| ClientError::Unexpected {
            url: self.base.clone(),
            status: 200,
            body: format!("{what}: {data}"),
        };
        let (mut kind, mut data) = (String::new(), String::new());
        for line in std::io::BufReader::new(resp).lines() {
            let line = line.map_err(|e| unreachable(&e))?;
            if let Some(v) = line.strip_prefix("event:") {
                kind = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            } else if line.is_empty() && !data.is_empty() {
                // One event is complete.
                match kind.as_str() {
                    "job" => seen(JobUpdate::Job(
                        serde_json::from_str(&data).map_err(|_| bad("job", &data))?,
                    )),
                    "event" => seen(JobUpdate::Event(
                        serde_json::from_str(&data).map_err(|_| bad("event", &data))?,
                    )),
                    "end" => return serde_json::from_str(&data).map_err(|_| bad("end", &data)),
                    "error" => {
                        return Err(ClientError::Api(
                            serde_json::from_str(&data).map_err(|_| bad("error", &data))?,
                        ))
                    }
                    _ => {}
                }
                kind.clear();
                data.clear();
            }
        }
        Err(unreachable(
            &"the job's event stream ended before the job did",
        ))
    }

    pub fn cancel_job(&self, id: &str) -> Result<doppel_model::Job, ClientError> {
        self.send(self.http.post(self.url(&["jobs", id, "cancel"])))
    }
}

/// The storage pool.
impl Client {
    /// Driver, capabilities, space and notices, as the engine reports them.
    pub fn pool_status(&self) -> Result<Value, ClientError> {
        self.send(self.http.get(self.url(&["pool"])))
    }
}

/// Environments, their users, repositories and source configs.
impl Client {
    pub fn add_environment(
        &self,
        req: &doppel_model::AddEnvironment,
    ) -> Result<doppel_model::Job, ClientError> {
        self.send(self.http.post(self.url(&["environments"])).json(req))
    }

    pub fn list_environments(&self) -> Result<Vec<doppel_model::Environment>, ClientError> {
        self.send(self.http.get(self.url(&["environments"])))
    }

    pub fn get_environment(&self, env: &str) -> Result<doppel_model::Environment, ClientError> {
        self.send(self.http.get(self.url(&["environments", env])))
    }

    pub fn delete_environment(&self, env: &str) -> Result<doppel_model::Environment, ClientError> {
        self.send(self.http.delete(self.url(&["environments", env])))
    }

    pub fn refresh_environment(&self, env: &str) -> Result<doppel_model::Job, ClientError> {
        self.send(self.http.post(self.url(&["environments", env, "refresh"])))
    }

    pub fn add_environment_user(
        &self,
        env: &str,
        req: &doppel_model::AddEnvironmentUser,
    ) -> Result<doppel_model::EnvironmentUser, ClientError> {
        self.send(
            self.http
                .post(self.url(&["environments", env, "users"]))
                .json(req),
        )
    }

    pub fn delete_environment_user(&self, env: &str, user: &str) -> Result<(), ClientError> {
        let resp = self
            .authed(
                self.http
                    .delete(self.url(&["environments", env, "users", user])),
            )
            .send()
            .map_err(|e| self.no_answer(&e))?;
        if resp.status().is_success() {
            return Ok(());
        }
        self.decode::<Value>(resp).map(|_| ())
    }

    pub fn list_repositories(
        &self,
        env: Option<&str>,
    ) -> Result<Vec<doppel_model::Repository>, ClientError> {
        let q: Vec<(&str, &str)> = env.map(|e| vec![("environment", e)]).unwrap_or_default();
        self.send(self.http.get(self.url(&["repositories"])).query(&q))
    }

    pub fn list_source_configs(
        &self,
        env: Option<&str>,
    ) -> Result<Vec<doppel_model::SourceConfig>, ClientError> {
        let q: Vec<(&str, &str)> = env.map(|e| vec![("environment", e)]).unwrap_or_default();
        self.send(self.http.get(self.url(&["sourceconfigs"])).query(&q))
    }

    pub fn add_source_config(
        &self,
        req: &doppel_model::AddSourceConfig,
    ) -> Result<doppel_model::SourceConfig, ClientError> {
        self.send(self.http.post(self.url(&["sourceconfigs"])).json(req))
    }

    pub fn get_source_config(&self, sc: &str) -> Result<doppel_model::SourceConfig, ClientError> {
        self.send(self.http.get(self.url(&["sourceconfigs", sc])))
    }

    pub fn update_source_config(
        &self,
        sc: &str,
        parameters: Value,
    ) -> Result<doppel_model::SourceConfig, ClientError> {
        self.send(
            self.http
                .put(self.url(&["sourceconfigs", sc]))
                .json(&json!({ "parameters": parameters })),
        )
    }

    pub fn delete_source_config(
        &self,
        sc: &str,
    ) -> Result<doppel_model::SourceConfig, ClientError> {
        self.send(self.http.delete(self.url(&["sourceconfigs", sc])))
    }
}

/// Logging in, and the API's users.
impl Client {
    /// Checks a password and returns a new API token (this client keeps using
    /// whatever token it had).
    pub fn login(
        &self,
        user: &str,
        password: &str,
    ) -> Result<doppel_model::LoginResponse, ClientError> {
        let body = doppel_model::LoginRequest {
            user: user.to_owned(),
            password: password.to_owned(),
        };
        self.send(self.http.post(self.url(&["login"])).json(&body))
    }

    pub fn whoami(&self) -> Result<doppel_model::ApiUser, ClientError> {
        self.send(self.http.get(self.url(&["whoami"])))
    }

    pub fn list_users(&self) -> Result<Vec<doppel_model::ApiUser>, ClientError> {
        self.send(self.http.get(self.url(&["users"])))
    }

    pub fn add_user(
        &self,
        req: &doppel_model::AddUser,
    ) -> Result<doppel_model::ApiUser, ClientError> {
        self.send(self.http.post(self.url(&["users"])).json(req))
    }

    pub fn set_user_role(
        &self,
        name: &str,
        role: doppel_model::Role,
    ) -> Result<doppel_model::ApiUser, ClientError> {
        let req = doppel_model::SetRole { role };
        self.send(self.http.put(self.url(&["users", name, "role"])).json(&req))
    }

    pub fn delete_user(&self, name: &str) -> Result<Value, ClientError> {
        self.send(self.http.delete(self.url(&["users", name])))
    }

    pub fn list_grants(
        &self,
        object: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<doppel_model::Grant>, ClientError> {
        let mut q = Vec::new();
        if let Some(o) = object {
            q.push(("object", o));
        }
        if let Some(u) = user {
            q.push(("user", u));
        }
        self.send(self.http.get(self.url(&["grants"])).query(&q))
    }

    pub fn grant(
        &self,
        req: &doppel_model::GrantRequest,
    ) -> Result<doppel_model::Grant, ClientError> {
        self.send(self.http.post(self.url(&["grants"])).json(req))
    }

    pub fn revoke(
        &self,
        req: &doppel_model::GrantRequest,
    ) -> Result<doppel_model::GrantRequest, ClientError> {
        self.send(self.http.delete(self.url(&["grants"])).json(req))
    }
}

/// dSources, snapshots, VDBs and mounts.
impl Client {
    pub fn link_dsource(
        &self,
        req: &doppel_model::LinkDSource,
    ) -> Result<doppel_model::Job, ClientError> {
        self.send(self.http.post(self.url(&["dsources"])).json(req))
    }

    pub fn list_dsources(&self) -> Result<Vec<doppel_model::DSource>, ClientError> {
        self.send(self.http.get(self.url(&["dsources"])))
    }

    pub fn get_dsource(&self, ds: &str) -> Result<doppel_model::DSource, ClientError> {
        self.send(self.http.get(self.url(&["dsources", ds])))
    }

    /// `parameters` None: a policy sync; `resync`: re-ingest everything.
    pub fn sync_dsource(
        &self,
        ds: &str,
        parameters: Option<Value>,
        resync: bool,
    ) -> Result<doppel_model::Job, ClientError> {
        let mut body = json!({ "resync": resync });
        if let Some(p) = parameters {
            body["parameters"] = p;
        }
        self.send(
            self.http
                .post(self.url(&["dsources", ds, "sync"]))
                .json(&body),
        )
    }

    pub fn delete_dsource(&self, ds: &str) -> Result<doppel_model::Job, ClientError> {
        self.send(self.http.delete(self.url(&["dsources", ds])))
    }

    pub fn list_snapshots(
        &self,
        dataset: Option<&str>,
    ) -> Result<Vec<doppel_model::Snapshot>, ClientError> {
        let q: Vec<(&str, &str)> = dataset.map(|d| vec![("dataset", d)]).unwrap_or_default();
        self.send(self.http.get(self.url(&["snapshots"])).query(&q))
    }

    pub fn provision_vdb(
        &self,
        req: &doppel_model::ProvisionVdb,
    ) -> Result<doppel_model::Job, ClientError> {
        self.send(self.http.post(self.url(&["vdbs"])).json(req))
    }

    pub fn list_vdbs(&self) -> Result<Vec<doppel_model::Vdb>, ClientError> {
        self.send(self.http.get(self.url(&["vdbs"])))
    }

    pub fn get_vdb(&self, vdb: &str) -> Result<doppel_model::Vdb, ClientError> {
        self.send(self.http.get(self.url(&["vdbs", vdb])))
    }

    /// `action`: `snapshot`, `refresh` or `rewind`; `to` a snapshot for the last two.
    pub fn vdb_action(
        &self,
        vdb: &str,
        action: &str,
        to: Option<&str>,
    ) -> Result<doppel_model::Job, ClientError> {
        let body = match to {
            Some(t) => json!({ "to": t }),
            None => json!({}),
        };
        let req = self.http.post(self.url(&["vdbs", vdb, action]));
        self.send(if action == "snapshot" {
            req
        } else {
            req.json(&body)
        })
    }

    pub fn delete_vdb(&self, vdb: &str) -> Result<doppel_model::Job, ClientError> {
        self.send(self.http.delete(self.url(&["vdbs", vdb])))
    }

    pub fn list_mounts(&self) -> Result<Vec<doppel_model::Mount>, ClientError> {
        self.send(self.http.get(self.url(&["mounts"])))
    }
}

/// Power actions and hooks.
impl Client {
    /// `enable` or `disable` a dSource.
    pub fn dsource_power(&self, ds: &str, action: &str) -> Result<doppel_model::Job, ClientError> {
        self.send(self.http.post(self.url(&["dsources", ds, action])))
    }

    /// `start`, `stop`, `enable` or `disable` a VDB.
    pub fn vdb_power(&self, vdb: &str, action: &str) -> Result<doppel_model::Job, ClientError> {
        self.send(self.http.post(self.url(&["vdbs", vdb, "power", action])))
    }

    pub fn hooks(
        &self,
        object: &str,
    ) -> Result<std::collections::BTreeMap<String, String>, ClientError> {
        self.send(self.http.get(self.url(&["hooks", object])))
    }

    pub fn set_hooks(
        &self,
        object: &str,
        hooks: &std::collections::BTreeMap<String, String>,
    ) -> Result<std::collections::BTreeMap<String, String>, ClientError> {
        self.send(self.http.put(self.url(&["hooks", object])).json(hooks))
    }
}

impl Client {
    pub fn delete_snapshot(&self, snapshot: &str) -> Result<doppel_model::Snapshot, ClientError> {
        self.send(self.http.delete(self.url(&["snapshots", snapshot])))
    }
}

impl Client {
    pub fn create_empty_vdb(
        &self,
        req: &doppel_model::CreateEmptyVdb,
    ) -> Result<doppel_model::Job, ClientError> {
        self.send(self.http.post(self.url(&["empty-vdbs"])).json(req))
    }
}

impl Client {
    pub fn export_snapshot(
        &self,
        req: &doppel_model::ExportSnapshot,
    ) -> Result<doppel_model::Job, ClientError> {
        self.send(self.http.post(self.url(&["exports"])).json(req))
    }

    pub fn list_policies(&self) -> Result<Vec<doppel_model::Policy>, ClientError> {
        self.send(self.http.get(self.url(&["policies"])))
    }

    pub fn add_policy(
        &self,
        spec: &doppel_model::PolicySpec,
    ) -> Result<doppel_model::Policy, ClientError> {
        self.send(self.http.post(self.url(&["policies"])).json(spec))
    }

    pub fn get_policy(&self, policy: &str) -> Result<doppel_model::Policy, ClientError> {
        self.send(self.http.get(self.url(&["policies", policy])))
    }

    pub fn update_policy(
        &self,
        policy: &str,
        spec: &doppel_model::PolicySpec,
    ) -> Result<doppel_model::Policy, ClientError> {
        self.send(self.http.put(self.url(&["policies", policy])).json(spec))
    }

    pub fn delete_policy(&self, policy: &str) -> Result<doppel_model::Policy, ClientError> {
        self.send(self.http.delete(self.url(&["policies", policy])))
    }

    pub fn apply_policy(
        &self,
        policy: &str,
        req: &doppel_model::ApplyPolicy,
    ) -> Result<doppel_model::ApplyOutcome, ClientError> {
        self.send(
            self.http
                .post(self.url(&["policies", policy, "apply"]))
                .json(req),
        )
    }

    pub fn unapply_policy(
        &self,
        policy: &str,
        object: &str,
    ) -> Result<doppel_model::Policy, ClientError> {
        self.send(
            self.http
                .delete(self.url(&["policies", policy, "objects", object])),
        )
    }

    pub fn schedule_runs(
        &self,
        object: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<doppel_model::ScheduleRun>, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(o) = object {
            q.push(("object", o.to_owned()));
        }
        if let Some(l) = limit {
            q.push(("limit", l.to_string()));
        }
        self.send(self.http.get(self.url(&["schedule-runs"])).query(&q))
    }

    /// Sets the clock of an engine started with `--test-clock` and runs one
    /// scheduling pass.
    pub fn set_test_clock(&self, now: &str) -> Result<doppel_model::SchedulerPass, ClientError> {
        self.send(
            self.http
                .post(self.url(&["test-clock"]))
                .json(&doppel_model::SetTestClock {
                    now: now.to_owned(),
                }),
        )
    }

    pub fn list_webhooks(&self) -> Result<Vec<doppel_model::Webhook>, ClientError> {
        self.send(self.http.get(self.url(&["webhooks"])))
    }

    pub fn add_webhook(
        &self,
        req: &doppel_model::AddWebhook,
    ) -> Result<doppel_model::Webhook, ClientError> {
        self.send(self.http.post(self.url(&["webhooks"])).json(req))
    }

    /// One webhook with its last deliveries.
    pub fn get_webhook(&self, webhook: &str) -> Result<doppel_model::Webhook, ClientError> {
        self.send(self.http.get(self.url(&["webhooks", webhook])))
    }

    pub fn delete_webhook(&self, webhook: &str) -> Result<doppel_model::Webhook, ClientError> {
        self.send(self.http.delete(self.url(&["webhooks", webhook])))
    }

    /// Sends a `ping` to the webhook and says how its receiver answered.
    pub fn test_webhook(
        &self,
        webhook: &str,
    ) -> Result<doppel_model::WebhookDelivery, ClientError> {
        self.send(self.http.post(self.url(&["webhooks", webhook, "test"])))
    }
}

impl Client {
    pub fn list_bookmarks(
        &self,
        dataset: Option<&str>,
    ) -> Result<Vec<doppel_model::Bookmark>, ClientError> {
        let q: Vec<(&str, &str)> = dataset.map(|d| ("dataset", d)).into_iter().collect();
        self.send(self.http.get(self.url(&["bookmarks"])).query(&q))
    }

    pub fn add_bookmark(
        &self,
        req: &doppel_model::AddBookmark,
    ) -> Result<doppel_model::Bookmark, ClientError> {
        self.send(self.http.post(self.url(&["bookmarks"])).json(req))
    }

    pub fn get_bookmark(&self, bookmark: &str) -> Result<doppel_model::Bookmark, ClientError> {
        self.send(self.http.get(self.url(&["bookmarks", bookmark])))
    }

    pub fn delete_bookmark(&self, bookmark: &str) -> Result<doppel_model::Bookmark, ClientError> {
        self.send(self.http.delete(self.url(&["bookmarks", bookmark])))
    }

    pub fn protect_vdb(
        &self,
        vdb: &str,
        req: &doppel_model::ProtectVdb,
    ) -> Result<doppel_model::Vdb, ClientError> {
        self.send(
            self.http
                .post(self.url(&["vdbs", vdb, "protection"]))
                .json(req),
        )
    }

    pub fn unprotect_vdb(&self, vdb: &str) -> Result<doppel_model::Vdb, ClientError> {
        self.send(self.http.delete(self.url(&["vdbs", vdb, "protection"])))
    }

    /// `req` with neither field: the expiry is removed.
    pub fn expire_vdb(
        &self,
        vdb: &str,
        req: &doppel_model::ExpireVdb,
    ) -> Result<doppel_model::Vdb, ClientError> {
        if req.at.is_none() && req.after.is_none() {
            return self.send(self.http.delete(self.url(&["vdbs", vdb, "expiry"])));
        }
        self.send(self.http.put(self.url(&["vdbs", vdb, "expiry"])).json(req))
    }
}
