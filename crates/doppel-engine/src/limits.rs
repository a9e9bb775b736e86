//! Size and shape limits on what users send, checked before anything
//! changes, each refusal naming the field. Plugins' schemas rarely bound
//! strings, and what is stored is shown, sealed and sent to plugins again
//! on every call, so the engine bounds it itself.

use serde_json::Value;

use crate::EngineError;

/// Longest string accepted anywhere in user parameters or source configs.
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// Largest parameters object (as JSON) accepted in one request.
pub const MAX_PARAMETERS_BYTES: usize = 1024 * 1024;
/// Largest hook script.
pub const MAX_HOOK_BYTES: usize = 256 * 1024;
/// Longest host name (RFC 1035).
const MAX_HOST_BYTES: usize = 253;

fn invalid(field: String, reason: String) -> EngineError {
    EngineError::InvalidInput { field, reason }
}

/// Refuses `value` (the request's `field`) when a string in it, or a key,
/// is over `MAX_STRING_BYTES`, or the whole is over `MAX_PARAMETERS_BYTES`;
/// the error names the path of the first offending string.
pub(crate) fn check_parameters(field: &str, value: &Value) -> Result<(), EngineError> {
    fn walk(path: &str, v: &Value) -> Result<(), EngineError> {
        let too_long = |p: &str, n: usize| {
            invalid(
                p.to_owned(),
                format!("is {n} bytes long; strings may be at most {MAX_STRING_BYTES} bytes"),
            )
        };
        match v {
            Value::String(s) if s.len() > MAX_STRING_BYTES => Err(too_long(path, s.len())),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .try_for_each(|(i, x)| walk(&format!("{path}[{i}]"), x)),
            Value::Object(m) => m.iter().try_for_each(|(k, x)| {
                if k.len() > MAX_STRING_BYTES {
                    return Err(too_long(&format!("{path} (a key)"), k.len()));
                }
                walk(&format!("{path}.{k}"), x)
            }),
            _ => Ok(()),
        }
    }
    walk(field, value)?;
    let size = value.to_string().len();
    if size > MAX_PARAMETERS_BYTES {
        return Err(invalid(
            field.to_owned(),
            format!("is {size} bytes as JSON; at most {MAX_PARAMETERS_BYTES} bytes are accepted"),
        ));
    }
    Ok(())
}

/// Refuses a hook script over `MAX_HOOK_BYTES`.
pub(crate) fn check_hook_script(point: &str, script: &str) -> Result<(), EngineError> {
    if script.len() > MAX_HOOK_BYTES {
        return Err(invalid(
            format!("hooks.{point}"),
            format!(
                "the script is {} bytes; hook scripts may be at most {MAX_HOOK_BYTES} bytes",
                script.len()
            ),
        ));
    }
    Ok(())
}

/// Accepts an IPv4 or IPv6 address or a host name (labels of letters,
/// digits and `-`, not starting or ending with `-`, at most 63 bytes each,
/// 253 in all). Anything else (a URL, `user@host`, spaces, shell
/// characters) is refused before any connection is tried.
pub(crate) fn check_host(field: &str, host: &str) -> Result<(), EngineError> {
    let refuse = |reason: &str| {
        Err(invalid(
            field.to_owned(),
            format!("{host:?} {reason}; give a host name or an IP address"),
        ))
    };
    if host.is_empty() {
        return Err(invalid(
            field.to_owned(),
            "is empty; give a host name or an IP address".into(),
        ));
    }
    if host.len() > MAX_HOST_BYTES {
        return Err(invalid(
            field.to_owned(),
            format!(
                "is {} bytes long; host names are at most {MAX_HOST_BYTES} bytes",
                host.len()
            ),
        ));
    }
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if host.contains("://") {
        return refuse("is a URL");
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return refuse("has an empty label or one over 63 characters");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return refuse("may contain only letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return refuse("has a label that starts or ends with '-'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field_of(e: EngineError) -> String {
        match e {
            EngineError::InvalidInput { field, .. } => field,
            other => panic!("not invalid input: {other:?}"),
        }
    }

    #[test]
    fn hosts_are_names_or_addresses() {
        for ok in [
            "db1",
            "db-1.example.com",
            "10.0.0.7",
            "::1",
            "fe80::1",
            "A.B",
        ] {
            check_host("host", ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long = format!("{}.com", "a.".repeat(130));
        for bad in [
            "",
            "db 1",
            "db;rm -rf /",
            "$(reboot)",
            "ssh://db1",
            "http://db1:22/",
            "alice@db1",
            "db1:22",
            "-oProxyCommand=x",
            "db..com",
            long.as_str(),
        ] {
            assert_eq!(
                field_of(check_host("host", bad).unwrap_err()),
                "host",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn oversized_strings_and_bodies_are_refused_naming_the_field() {
        check_parameters("parameters", &json!({"path": "/srv", "n": [1, "x"]})).unwrap();
        let big = "x".repeat(MAX_STRING_BYTES + 1);
        let e = check_parameters("parameters", &json!({"a": {"path": big}})).unwrap_err();
        assert_eq!(field_of(e), "parameters.a.path");
        let e = check_parameters("parameters", &json!({"list": ["ok", big]})).unwrap_err();
        assert_eq!(field_of(e), "parameters.list[1]");
        // Many strings under the cap, over the body cap together.
        let chunk = "y".repeat(MAX_STRING_BYTES);
        let many: Vec<&str> = (0..20).map(|_| chunk.as_str()).collect();
        let e = check_parameters("parameters", &json!({ "many": many })).unwrap_err();
        assert!(e.to_string().starts_with("parameters: is "), "{e}");
        let script = "#".repeat(MAX_HOOK_BYTES + 1);
        assert_eq!(
            field_of(check_hook_script("pre-sync", &script).unwrap_err()),
            "hooks.pre-sync"
        );
        check_hook_script("pre-sync", "echo hi").unwrap();
    }
}
