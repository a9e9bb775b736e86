//! The role every `/api/v1` route needs, checked by the token middleware
//! before the handler runs. Object rights (owner, provisioner) are checked
//! by the handlers through `Engine::authorize`, since they depend on which
//! object a request names.
//!
//! A route missing from [`RULES`] is refused for everyone (fail closed), and
//! a unit test checks that every documented route has a rule.

use axum::http::Method;
use doppel_model::Role;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// No token at all (health, login, the OpenAPI document).
    Open,
    /// Any logged-in user, auditors included.
    Read,
    /// Operators and administrators; the handler checks object rights.
    Operate,
    /// Administrators only.
    Admin,
}

impl Rule {
    /// The least role that passes, for routes that need a token.
    pub(crate) fn role(self) -> Option<Role> {
        match self {
            Rule::Open => None,
            Rule::Read => Some(Role::Auditor),
            Rule::Operate => Some(Role::Operator),
            Rule::Admin => Some(Role::Admin),
        }
    }
}

use Rule::*;

/// (method, path template as routed, rule).
pub(crate) const RULES: &[(&str, &str, Rule)] = &[
    ("GET", "/api/v1/health", Open),
    ("GET", "/api/v1/openapi.json", Open),
    ("POST", "/api/v1/login", Open),
    ("POST", "/api/v1/logout", Read),
    ("GET", "/api/v1/whoami", Read),
    ("GET", "/api/v1/users", Admin),
    ("POST", "/api/v1/users", Admin),
    ("DELETE", "/api/v1/users/{name}", Admin),
    ("PUT", "/api/v1/users/{name}/role", Admin),
    ("GET", "/api/v1/grants", Read),
    ("POST", "/api/v1/grants", Operate),
    ("DELETE", "/api/v1/grants", Operate),
    // Plugin code runs on the engine: only administrators bring it in,
    // remove it or call its operations by hand.
    ("GET", "/api/v1/plugins", Read),
    ("POST", "/api/v1/plugins", Admin),
    ("GET", "/api/v1/plugins/{plugin}", Read),
    ("DELETE", "/api/v1/plugins/{plugin}", Admin),
    ("GET", "/api/v1/plugins/{plugin}/definition", Read),
    ("GET", "/api/v1/plugins/{plugin}/logs", Read),
    ("GET", "/api/v1/plugins/{plugin}/worker", Read),
    (
        "POST",
        "/api/v1/plugins/{plugin}/operations/{operation}",
        Admin,
    ),
    (
        "POST",
        "/api/v1/plugins/{plugin}/validate/{definition}",
        Read,
    ),
    ("GET", "/api/v1/pool", Read),
    // Where Prometheus looks; read-only like the rest of what it shows.
    ("GET", crate::METRICS_PATH, Read),
    ("GET", "/api/v1/environments", Read),
    ("POST", "/api/v1/environments", Operate),
    ("GET", "/api/v1/environments/{env}", Read),
    ("DELETE", "/api/v1/environments/{env}", Operate),
    ("POST", "/api/v1/environments/{env}/refresh", Operate),
    ("GET", "/api/v1/environments/{env}/users", Read),
    ("POST", "/api/v1/environments/{env}/users", Operate),
    ("DELETE", "/api/v1/environments/{env}/users/{user}", Operate),
    ("GET", "/api/v1/repositories", Read),
    ("GET", "/api/v1/sourceconfigs", Read),
    ("POST", "/api/v1/sourceconfigs", Operate),
    ("GET", "/api/v1/sourceconfigs/{sc}", Read),
    ("PUT", "/api/v1/sourceconfigs/{sc}", Operate),
    ("DELETE", "/api/v1/sourceconfigs/{sc}", Operate),
    ("GET", "/api/v1/jobs", Read),
    ("GET", "/api/v1/jobs/{job}", Read),
    ("GET", "/api/v1/jobs/{job}/events", Read),
    ("GET", "/api/v1/jobs/{job}/stream", Read),
    ("POST", "/api/v1/jobs/{job}/cancel", Operate),
    ("GET", "/api/v1/dsources", Read),
    ("POST", "/api/v1/dsources", Operate),
    ("GET", "/api/v1/dsources/{ds}", Read),
    ("DELETE", "/api/v1/dsources/{ds}", Operate),
    ("POST", "/api/v1/dsources/{ds}/sync", Operate),
    ("POST", "/api/v1/dsources/{ds}/{action}", Operate),
    ("GET", "/api/v1/snapshots", Read),
    ("DELETE", "/api/v1/snapshots/{snapshot}", Operate),
    ("GET", "/api/v1/vdbs", Read),
    ("POST", "/api/v1/vdbs", Operate),
    ("GET", "/api/v1/vdbs/{vdb}", Read),
    ("DELETE", "/api/v1/vdbs/{vdb}", Operate),
    ("POST", "/api/v1/vdbs/{vdb}/snapshot", Operate),
    ("POST", "/api/v1/vdbs/{vdb}/refresh", Operate),
    ("POST", "/api/v1/vdbs/{vdb}/rewind", Operate),
    ("POST", "/api/v1/vdbs/{vdb}/power/{action}", Operate),
    ("POST", "/api/v1/empty-vdbs", Operate),
    ("POST", "/api/v1/exports", Operate),
    ("GET", "/api/v1/mounts", Read),
    // Hook scripts run as shell on hosts and may hold secrets: reading
    // them needs the owner right too (checked by the handler).
    ("GET", "/api/v1/hooks/{object}", Operate),
    ("PUT", "/api/v1/hooks/{object}", Operate),
    ("GET", "/api/v1/policies", Read),
    ("POST", "/api/v1/policies", Operate),
    ("GET", "/api/v1/policies/{policy}", Read),
    ("PUT", "/api/v1/policies/{policy}", Operate),
    ("DELETE", "/api/v1/policies/{policy}", Operate),
    ("POST", "/api/v1/policies/{policy}/apply", Operate),
    (
        "DELETE",
        "/api/v1/policies/{policy}/objects/{object}",
        Operate,
    ),
    ("GET", "/api/v1/schedule-runs", Read),
    ("GET", "/api/v1/bookmarks", Read),
    ("POST", "/api/v1/bookmarks", Operate),
    ("GET", "/api/v1/bookmarks/{bookmark}", Read),
    ("DELETE", "/api/v1/bookmarks/{bookmark}", Operate),
    // Protection binds administrators too, but only on delete: they may
    // lift it like any owner.
    ("POST", "/api/v1/vdbs/{vdb}/protection", Operate),
    ("DELETE", "/api/v1/vdbs/{vdb}/protection", Operate),
    ("PUT", "/api/v1/vdbs/{vdb}/expiry", Operate),
    ("DELETE", "/api/v1/vdbs/{vdb}/expiry", Operate),
    // Moves the scheduler's time: refused anyway unless the engine was
    // started with --test-clock.
    ("POST", "/api/v1/test-clock", Admin),
    // Where the engine's events go (URLs may carry tokens in their query,
    // and a new one receives everything): administrators only.
    ("GET", "/api/v1/webhooks", Admin),
    ("POST", "/api/v1/webhooks", Admin),
    ("GET", "/api/v1/webhooks/{webhook}", Admin),
    ("DELETE", "/api/v1/webhooks/{webhook}", Admin),
    ("POST", "/api/v1/webhooks/{webhook}/test", Admin),
];

/// The rule of a routed request, if the route has one.
pub(crate) fn rule(method: &Method, path: &str) -> Option<Rule> {
    RULES
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == path)
        .map(|(_, _, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_route_has_exactly_one_rule() {
        let doc = crate::openapi();
        let mut documented = Vec::new();
        for (path, item) in &doc.paths.paths {
            let ops = [
                ("GET", item.get.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("DELETE", item.delete.is_some()),
                ("PATCH", item.patch.is_some()),
            ];
            for (m, present) in ops {
                if present {
                    documented.push((m.to_owned(), path.clone()));
                }
            }
        }
        let missing: Vec<_> = documented
            .iter()
            .filter(|(m, p)| rule(&Method::from_bytes(m.as_bytes()).unwrap(), p).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "routes without an access rule: {missing:?}"
        );
        let stale: Vec<_> = RULES
            .iter()
            .filter(|(m, p, _)| !documented.iter().any(|(dm, dp)| dm == m && dp == p))
            .collect();
        assert!(
            stale.is_empty(),
            "rules for routes that do not exist: {stale:?}"
        );
        for (i, (m, p, _)) in RULES.iter().enumerate() {
            assert!(
                !RULES[i + 1..].iter().any(|(m2, p2, _)| m2 == m && p2 == p),
                "two rules for {m} {p}"
            );
        }
    }
}
