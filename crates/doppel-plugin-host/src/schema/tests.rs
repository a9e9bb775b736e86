use super::*;

const TEMPLATE_ARTIFACT: &str = include_str!("../../tests/fixtures/schema/template_artifact.json");
const RICH_PARAMETERS: &str = include_str!("../../tests/fixtures/schema/rich_parameters.json");

fn template() -> Value {
    serde_json::from_str(TEMPLATE_ARTIFACT).unwrap()
}

fn rich() -> ParameterSchema {
    ParameterSchema::new(&serde_json::from_str(RICH_PARAMETERS).unwrap()).unwrap()
}

/// (path, pretty name, reason) triples, in reported order.
fn triples(result: Result<(), ParameterErrors>) -> Vec<(String, String, String)> {
    result
        .expect_err("expected violations")
        .violations
        .into_iter()
        .map(|v| (v.path, v.pretty_name, v.reason))
        .collect()
}

fn t(path: &str, name: &str, reason: &str) -> (String, String, String) {
    (path.to_owned(), name.to_owned(), reason.to_owned())
}

fn rule_pairs(result: Result<(), SchemaRuleErrors>) -> Vec<(String, String)> {
    result
        .expect_err("expected violations")
        .violations
        .into_iter()
        .map(|v| (v.field, v.reason))
        .collect()
}

fn valid_rich_value() -> Value {
    json!({
        "mountPath": "/mnt/provision/db1",
        "port": 5432,
        "mode": "ok",
        "recordSizeInKB": 8,
        "dbUser": {"username": "postgres", "password": "s3cr3t-pw"},
        "environment": "UNIX_HOST_ENVIRONMENT-5",
        "envUser": "HOST_USER-12",
        "tags": ["a", "bb"],
        "apiKeys": ["k-1234", "k-5678"],
        "credentials": {"type": "NamedPasswordCredential", "username": "u", "password": "vault-pw"},
        "keyCredentials": {"type": "NamedKeyPairCredential", "privateKey": "-----BEGIN KEY-----"}
    })
}

// ----- install-time checks -------------------------------------------------

#[test]
fn template_artifact_passes_install_checks() {
    assert_eq!(check_plugin_schemas(&template()), Ok(()));
}

#[test]
fn rich_schema_passes_install_checks_as_linked_parameters() {
    let mut artifact = template();
    artifact["linkedSourceDefinition"]["parameters"] =
        serde_json::from_str(RICH_PARAMETERS).unwrap();
    assert_eq!(check_plugin_schemas(&artifact), Ok(()));
}

#[test]
fn install_checks_report_every_violation() {
    let mut a = template();
    a["linkedSourceDefinition"]["parameters"]["properties"]["recordSizeInKB"] =
        json!({"type": "string"});
    a["virtualSourceDefinition"]["parameters"]["properties"]["recordSizeInKB"] =
        json!({"minimum": 1});
    // integer inside a list is still not `"type": "integer"`
    a["virtualToPhysicalDefinition"]["parameters"]["properties"]["recordSizeInKB"] =
        json!({"type": "string"});
    a["virtualToPhysicalDefinition"]["parameters"]["properties"]["host"] =
        json!({"type": "string", "format": "reference"});
    a["snapshotSchema"]["properties"]["size"] = json!({"type": "intger"});
    a["snapshotParametersDefinition"]
        .as_object_mut()
        .unwrap()
        .remove("schema");
    a["discoveryDefinition"]["repositorySchema"]["properties"]["user"] =
        json!({"type": "string", "format": "reference", "referenceType": "WINDOWS_HOST"});
    a["discoveryDefinition"]["repositoryNameField"] = json!("title");
    a["discoveryDefinition"]["repositoryIdentityFields"] = json!(["name", "version"]);
    a["discoveryDefinition"]
        .as_object_mut()
        .unwrap()
        .remove("sourceConfigIdentityFields");
    a["discoveryDefinition"]["sourceConfigNameField"] = json!(5);

    let got = rule_pairs(check_plugin_schemas(&a));
    let expected_fields = [
        "linkedSourceDefinition.parameters.properties.recordSizeInKB.type",
        "virtualSourceDefinition.parameters.properties.recordSizeInKB.type",
        "virtualToPhysicalDefinition.parameters.properties.host",
        "snapshotSchema.properties.size.type",
        "snapshotParametersDefinition.schema",
        "discoveryDefinition.repositorySchema.properties.user.referenceType",
        "discoveryDefinition.repositoryIdentityFields.1",
        "discoveryDefinition.repositoryNameField",
        "discoveryDefinition.sourceConfigIdentityFields",
        "discoveryDefinition.sourceConfigNameField",
    ];
    let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(fields, expected_fields, "{got:#?}");
    let reasons: Vec<&str> = got.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(reasons[0], "must be \"integer\"");
    assert_eq!(reasons[1], "must be \"integer\"");
    assert_eq!(reasons[2], "has format \"reference\" but no referenceType");
    assert!(
        reasons[3].starts_with("is not a valid draft-07 schema: "),
        "{}",
        reasons[3]
    );
    assert_eq!(reasons[4], "is missing");
    assert_eq!(reasons[5], "must be UNIX_HOST_ENVIRONMENT or HOST_USER");
    assert_eq!(
        reasons[6],
        "names \"version\", which is not in discoveryDefinition.repositorySchema.properties"
    );
    assert_eq!(
        reasons[7],
        "names \"title\", which is not in discoveryDefinition.repositorySchema.properties"
    );
    assert_eq!(reasons[8], "is missing");
    assert_eq!(reasons[9], "must be a property name (string)");

    // Display lists them all.
    let text = check_plugin_schemas(&a).unwrap_err().to_string();
    assert!(
        text.starts_with("plugin schemas are invalid (10 problem(s)): "),
        "{text}"
    );
    assert!(text.contains("discoveryDefinition.sourceConfigIdentityFields: is missing"));
}

#[test]
fn install_checks_report_uncompilable_schemas() {
    let mut a = template();
    a["linkedSourceDefinition"]["parameters"]["properties"]["remote"] =
        json!({"$ref": "https://example.com/schemas/remote.json"});
    a["virtualSourceDefinition"]["parameters"]["properties"]["creds"] =
        json!({"$ref": "https://delphix.com/platform/api#/definitions/noSuchSupplier"});
    let got = rule_pairs(check_plugin_schemas(&a));
    assert_eq!(got.len(), 2, "{got:#?}");
    assert_eq!(got[0].0, "linkedSourceDefinition.parameters");
    assert!(got[0].1.starts_with("cannot be compiled: "), "{}", got[0].1);
    assert_eq!(got[1].0, "virtualSourceDefinition.parameters");
    assert!(got[1].1.starts_with("cannot be compiled: "), "{}", got[1].1);
}

#[test]
fn missing_discovery_definition_reports_each_key() {
    let mut a = template();
    a.as_object_mut().unwrap().remove("discoveryDefinition");
    let fields: Vec<String> = rule_pairs(check_plugin_schemas(&a))
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(
        fields,
        [
            "discoveryDefinition.repositorySchema",
            "discoveryDefinition.sourceConfigSchema",
            "discoveryDefinition.repositoryIdentityFields",
            "discoveryDefinition.repositoryNameField",
            "discoveryDefinition.sourceConfigIdentityFields",
            "discoveryDefinition.sourceConfigNameField",
        ]
    );
}

#[test]
fn unknown_keywords_are_allowed() {
    let mut a = template();
    a["snapshotSchema"]["properties"]["x"] = json!({"type": "string", "prettyName": "X", "ordering": 3, "dxFormProperties": {"rows": 4}});
    assert_eq!(check_plugin_schemas(&a), Ok(()));
}

// ----- parameter validation ------------------------------------------------

#[test]
fn parameter_schema_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<ParameterSchema>();
}

#[test]
fn template_schemas_validate_user_input() {
    let a = template();
    let source_config =
        ParameterSchema::new(&a["discoveryDefinition"]["sourceConfigSchema"]).unwrap();
    assert_eq!(source_config.validate(&json!({"name": "db"})), Ok(()));
    assert_eq!(
        triples(source_config.validate(&json!({"extra": true}))),
        [
            t("/extra", "extra", "is not an allowed property"),
            t("/name", "name", "is required")
        ]
    );
    assert_eq!(
        triples(source_config.validate(&json!({"name": 3}))),
        [t("/name", "name", "must be a string")]
    );
    assert_eq!(
        triples(source_config.validate(&json!([]))),
        [t("", "parameters", "must be an object")]
    );
    let linked = ParameterSchema::new(&a["linkedSourceDefinition"]["parameters"]).unwrap();
    assert_eq!(linked.validate(&json!({})), Ok(()));
}

#[test]
fn rich_schema_accepts_valid_parameters() {
    assert_eq!(rich().validate(&valid_rich_value()), Ok(()));
}

#[test]
fn rich_schema_reports_every_violation() {
    let value = json!({
        "mountPath": "relative/dir",
        "port": "5432",
        "mode": "maybe",
        "recordSizeInKB": 20000,
        "dbUser": {"password": "short"},
        "environment": "HOST_USER-1",
        "envUser": "HOST_USER-x",
        "tags": ["ok", "toolong", 7, "d"],
        "apiKeys": ["abc"],
        "bogus": 1
    });
    assert_eq!(
        triples(rich().validate(&value)),
        [
            t(
                "/apiKeys/0",
                "apiKeys[0]",
                "must be at least 4 characters long"
            ),
            t("/bogus", "bogus", "is not an allowed property"),
            t(
                "/dbUser/password",
                "Password",
                "must be at least 8 characters long"
            ),
            t("/dbUser/username", "User Name", "is required"),
            t(
                "/envUser",
                "Environment User",
                "must be a host user reference (HOST_USER-<number>)"
            ),
            t(
                "/environment",
                "Environment",
                "must be a Unix host environment reference (UNIX_HOST_ENVIRONMENT-<number>)"
            ),
            t("/mode", "Mode", "must be one of: ok, user_error"),
            t("/mountPath", "Mount Path", "must be an absolute Unix path"),
            t("/port", "Port", "must be an integer"),
            t("/recordSizeInKB", "recordSizeInKB", "must be at most 16384"),
            t("/tags", "Tags", "must have at most 3 items"),
            t("/tags/1", "tags[1]", "must be at most 5 characters long"),
            t("/tags/2", "tags[2]", "must be a string"),
        ]
    );
}

#[test]
fn missing_required_properties_use_pretty_names() {
    assert_eq!(
        triples(rich().validate(&json!({}))),
        [
            t("/dbUser", "Database User", "is required"),
            t("/environment", "Environment", "is required"),
            t("/mountPath", "Mount Path", "is required"),
            t("/port", "Port", "is required"),
        ]
    );
}

#[test]
fn validation_messages_override_the_reason() {
    let mut value = valid_rich_value();
    value["port"] = json!(80);
    assert_eq!(
        triples(rich().validate(&value)),
        [t("/port", "Port", "Ports below 1024 are reserved")]
    );
    // Only the keyword named in validationMessages is overridden.
    value["port"] = json!(70000);
    assert_eq!(
        triples(rich().validate(&value)),
        [t("/port", "Port", "must be at most 65535")]
    );

    let schema = ParameterSchema::new(&json!({
        "type": "object",
        "required": ["name"],
        "properties": {"name": {
            "type": "string",
            "prettyName": "Name",
            "dxFormProperties": {"validationMessages": {"required": "Give the database a name"}}
        }}
    }))
    .unwrap();
    assert_eq!(
        triples(schema.validate(&json!({}))),
        [t("/name", "Name", "Give the database a name")]
    );
}

#[test]
fn password_values_never_appear_in_messages() {
    let secret = "hunter 2";
    let mut value = valid_rich_value();
    value["dbUser"]["password"] = json!(secret);
    value["apiKeys"] = json!(["k-ok-1", "zz"]);
    value["credentials"] = json!({"type": "NamedPasswordCredential", "password": 12345678});
    let err = rich().validate(&value).unwrap_err();
    assert_eq!(
        err.violations
            .iter()
            .map(|v| (v.path.as_str(), v.reason.as_str()))
            .collect::<Vec<_>>(),
        [
            ("/apiKeys/1", "must be at least 4 characters long"),
            ("/credentials/password", "must be a string"),
            ("/dbUser/password", "must match the pattern ^[^ ]+$"),
        ]
    );
    let text = format!("{err} {err:?}");
    for leaked in [secret, "hunter", "zz\"", "12345678"] {
        assert!(!text.contains(leaked), "{leaked:?} leaked in {text}");
    }
}

#[test]
fn unixpath_format() {
    let schema = ParameterSchema::new(&json!({
        "type": "object",
        "properties": {"p": {"type": "string", "format": "unixpath"}}
    }))
    .unwrap();
    for good in ["/", "/var/lib/pgsql", "/with space/and..dots/"] {
        assert_eq!(schema.validate(&json!({ "p": good })), Ok(()), "{good}");
    }
    for bad in ["", "relative/path", "./x", "/nul\u{0}byte"] {
        assert_eq!(
            triples(schema.validate(&json!({ "p": bad }))),
            [t("/p", "p", "must be an absolute Unix path")],
            "{bad:?}"
        );
    }
    assert!(is_unix_path("/a") && !is_unix_path("a"));
}

#[test]
fn reference_format_and_engine_hook() {
    assert!(ReferenceType::UnixHostEnvironment.matches("UNIX_HOST_ENVIRONMENT-17"));
    assert!(!ReferenceType::UnixHostEnvironment.matches("UNIX_HOST_ENVIRONMENT-"));
    assert!(!ReferenceType::UnixHostEnvironment.matches("UNIX_HOST_ENVIRONMENT-1 "));
    assert!(!ReferenceType::HostUser.matches("host_user-1"));
    assert!(ReferenceType::HostUser.matches("HOST_USER-0"));

    let refs = rich().references(&valid_rich_value());
    assert_eq!(
        refs,
        [
            ReferenceField {
                path: "/envUser".into(),
                reference_type: "HOST_USER".into(),
                reference: "HOST_USER-12".into(),
                matches: Some("environment".into()),
            },
            ReferenceField {
                path: "/environment".into(),
                reference_type: "UNIX_HOST_ENVIRONMENT".into(),
                reference: "UNIX_HOST_ENVIRONMENT-5".into(),
                matches: None,
            },
        ]
    );
}

#[test]
fn credential_suppliers_validate_locally() {
    let schema = rich();
    let with = |creds: Value, key_creds: Value| {
        let mut v = valid_rich_value();
        v["credentials"] = creds;
        v["keyCredentials"] = key_creds;
        schema.validate(&v)
    };
    let key_ok = json!({"type": "NamedKeyPairCredential", "username": "u", "privateKey": "k", "publicKey": "p"});
    for ok in [
        json!({"type": "NamedPasswordCredential", "password": "p"}),
        json!({"type": "NamedKeyPairCredential", "privateKey": "k"}),
        json!({"type": "CyberArkVaultCredential", "vault": "V-1", "queryString": "q", "expectedSecretType": "any"}),
        json!({"type": "HashiCorpVaultCredential", "vault": "V-2", "engine": "kv", "path": "db",
               "usernameKey": "user", "secretKey": "pass", "expectedSecretType": "password"}),
    ] {
        assert_eq!(with(ok.clone(), key_ok.clone()), Ok(()), "{ok}");
    }

    assert_eq!(
        triples(with(
            json!({"type": "NamedPasswordCredential", "username": "u"}),
            key_ok.clone()
        )),
        [t("/credentials/password", "password", "is required")]
    );
    assert_eq!(
        triples(with(json!({"username": "u"}), key_ok.clone())),
        [t("/credentials/type", "type", "is required")]
    );
    assert_eq!(
        triples(with(
            json!({"type": "CyberArkVaultCredential", "vault": "V-1", "queryString": "q", "expectedSecretType": "token"}),
            key_ok.clone()
        )),
        [t(
            "/credentials/expectedSecretType",
            "expectedSecretType",
            "must be one of: any, password, keyPair"
        )]
    );
    // A key supplier does not take a password credential.
    assert_eq!(
        triples(with(
            json!({"type": "NamedPasswordCredential", "password": "p"}),
            json!({"type": "NamedPasswordCredential", "password": "p"})
        )),
        [t(
            "/keyCredentials/type",
            "type",
            "must be one of: NamedKeyPairCredential, CyberArkVaultCredential, HashiCorpVaultCredential"
        )]
    );
}

#[test]
fn external_refs_are_never_fetched() {
    let err =
        ParameterSchema::new(&json!({"$ref": "https://example.com/schema.json"})).unwrap_err();
    assert!(err.message.contains("example.com"), "{err}");
    assert!(ParameterSchema::new(
        &json!({"$ref": "https://delphix.com/platform/api#/definitions/nope"})
    )
    .is_err());
    assert!(ParameterSchema::new(&json!({"$ref": "file:///etc/passwd"})).is_err());
}

#[test]
fn local_definitions_and_nested_pretty_names() {
    let schema = ParameterSchema::new(&json!({
        "type": "object",
        "definitions": {"node": {"type": "object", "required": ["host"], "properties": {
            "host": {"type": "string", "prettyName": "Host Name"},
            "secret": {"type": "string", "format": "password"}
        }}},
        "properties": {
            "nodes": {"type": "array", "prettyName": "Nodes", "minItems": 1, "items": {"$ref": "#/definitions/node"}},
            "either": {"prettyName": "Either", "anyOf": [{"type": "integer"}, {"type": "boolean"}]}
        }
    }))
    .unwrap();
    let value = json!({"nodes": [{"host": 1, "secret": "a"}, {"secret": "b"}], "either": "x"});
    assert_eq!(
        triples(schema.validate(&value)),
        [
            t(
                "/either",
                "Either",
                "must match at least one of the allowed forms"
            ),
            t("/nodes/0/host", "Host Name", "must be a string"),
            t("/nodes/1/host", "Host Name", "is required"),
        ]
    );
    assert_eq!(
        schema.secret_paths(&value),
        ["/nodes/0/secret", "/nodes/1/secret"]
    );
    assert_eq!(
        triples(schema.validate(&json!({"nodes": []}))),
        [t("/nodes", "Nodes", "must have at least 1 item")]
    );
}

#[test]
fn display_lists_every_violation() {
    let err = rich().validate(&json!({"port": 1})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid parameters (4 problem(s)): Database User (/dbUser): is required; \
         Environment (/environment): is required; Mount Path (/mountPath): is required; \
         Port (/port): Ports below 1024 are reserved"
    );
}

// ----- secrets -------------------------------------------------------------

#[test]
fn redacts_passwords_everywhere() {
    let schema: Value = serde_json::from_str(RICH_PARAMETERS).unwrap();
    let value = valid_rich_value();
    assert_eq!(
        secret_paths(&schema, &value),
        [
            "/apiKeys/0",
            "/apiKeys/1",
            "/credentials/password",
            "/dbUser/password",
            "/keyCredentials/privateKey"
        ]
    );
    let redacted = redact_secrets(&schema, &value);
    let mut expected = value.clone();
    expected["apiKeys"] = json!([REDACTED, REDACTED]);
    expected["credentials"]["password"] = json!(REDACTED);
    expected["dbUser"]["password"] = json!(REDACTED);
    expected["keyCredentials"]["privateKey"] = json!(REDACTED);
    assert_eq!(redacted, expected);
    // Non-secret members of credentials survive.
    assert_eq!(redacted["credentials"]["username"], "u");
    assert_eq!(redacted["keyCredentials"]["type"], "NamedKeyPairCredential");
}

#[test]
fn redaction_handles_vault_credentials_odd_values_and_cycles() {
    let schema = json!({
        "type": "object",
        "definitions": {"loop": {"$ref": "#/definitions/loop"}},
        "properties": {
            "c": {"$ref": "https://delphix.com/platform/api#/definitions/passwordCredentialsSupplier"},
            "pw": {"type": ["string", "null"], "format": "password"},
            "l": {"$ref": "#/definitions/loop"},
            "map": {"type": "object", "additionalProperties": {"type": "string", "format": "password"}}
        }
    });
    let value = json!({
        "c": {"type": "HashiCorpVaultCredential", "vault": "V-1", "secretKey": "pass"},
        "pw": null,
        "l": {"x": 1},
        "map": {"a": "1", "b": "2"}
    });
    let redacted = redact_secrets(&schema, &value);
    // Vault credentials hold no secret themselves; null stays null.
    assert_eq!(redacted["c"], value["c"]);
    assert_eq!(redacted["pw"], Value::Null);
    assert_eq!(redacted["map"], json!({"a": REDACTED, "b": REDACTED}));
    assert_eq!(redacted["l"], value["l"]);
}
