//! The configuration layers end to end: defaults, YAML file, environment, `-D`, the errors they
//! report together, and the checked-in template `conf/rflink.yaml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rflink_runtime::config::{
    keys, template, ConfigError, ConfigLoader, ConfigProblem, ConfigSource, Configuration,
    ProblemKind, ProcessRole, ValueKind,
};

fn template_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/rflink.yaml")
}

/// Writes `text` to a YAML file in a fresh temporary directory.
fn yaml(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rflink.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn problems(result: Result<Configuration, ConfigError>) -> Vec<ConfigProblem> {
    match result {
        Ok(config) => panic!("expected problems, loaded {config:?}"),
        Err(error) => error.problems,
    }
}

fn load_dynamic(properties: &[&str]) -> Result<Configuration, ConfigError> {
    ConfigLoader::new().dynamic(properties).load()
}

#[test]
fn defaults_are_the_documented_values() {
    let expected = [
        ("cluster.id", "default"),
        ("jobmanager.rpc.address", "localhost"),
        ("jobmanager.rpc.port", "6123"),
        ("jobmanager.bind-host", "localhost"),
        ("rest.address", "localhost"),
        ("rest.port", "8081"),
        ("rest.bind-address", "localhost"),
        ("web.refresh-interval", "3 s"),
        ("taskmanager.numberOfTaskSlots", "1"),
        ("taskmanager.bind-host", "localhost"),
        ("taskmanager.rpc.port", "0"),
        ("taskmanager.data.port", "0"),
        ("taskmanager.registration.timeout", "5 min"),
        ("taskmanager.slot.timeout", "10 s"),
        ("taskmanager.memory.segment-size", "32 kb"),
        ("taskmanager.network.numberOfBuffers", "2048"),
        ("taskmanager.network.memory.buffers-per-channel", "2"),
        ("taskmanager.network.memory.floating-buffers-per-gate", "8"),
        ("taskmanager.network.memory.max-buffers-per-channel", "10"),
        ("taskmanager.network.local-batch.records", "1024"),
        ("taskmanager.network.request-backoff.initial", "100 ms"),
        ("taskmanager.network.request-backoff.max", "10 s"),
        ("execution.buffer-timeout.interval", "100 ms"),
        ("heartbeat.interval", "1 s"),
        ("heartbeat.timeout", "5 s"),
        ("heartbeat.rpc-failure-threshold", "2"),
        ("cluster.registration.initial-timeout", "100 ms"),
        ("cluster.registration.max-timeout", "30 s"),
        ("cluster.registration.error-delay", "10 s"),
        ("cluster.registration.refused-registration-delay", "30 s"),
        ("blob.server.port", "0"),
        ("blob.offload.minsize", "1 mb"),
        ("blob.service.cleanup.interval", "3600 s"),
        ("blob.fetch.retries", "5"),
        ("rpc.ask-timeout", "10 s"),
        ("rpc.connect-timeout", "10 s"),
        ("rpc.max-frame-size", "10 mb"),
        ("rpc.force-invocation-serialization", "false"),
        ("rpc.mailbox-capacity", "1024"),
        ("rpc.max-inbound-in-flight", "4096"),
        ("slot.request.timeout", "5 min"),
        ("slot.idle.timeout", "50 s"),
        ("parallelism.default", "1"),
        ("restart-strategy.fixed-delay.attempts", "1"),
        ("restart-strategy.fixed-delay.delay", "1 s"),
        (
            "restart-strategy.failure-rate.max-failures-per-interval",
            "1",
        ),
        (
            "restart-strategy.failure-rate.failure-rate-interval",
            "1 min",
        ),
        ("restart-strategy.failure-rate.delay", "1 s"),
        ("restart-strategy.exponential-delay.initial-backoff", "1 s"),
        ("restart-strategy.exponential-delay.max-backoff", "1 min"),
        (
            "restart-strategy.exponential-delay.backoff-multiplier",
            "1.5",
        ),
        (
            "restart-strategy.exponential-delay.reset-backoff-threshold",
            "1 h",
        ),
        ("restart-strategy.exponential-delay.jitter-factor", "0.1"),
        (
            "restart-strategy.exponential-delay.attempts-before-reset-backoff",
            "2147483647",
        ),
        ("jobmanager.execution.failover-strategy", "region"),
        ("execution.checkpointing.timeout", "10 min"),
        ("execution.checkpointing.max-concurrent-checkpoints", "1"),
        ("execution.checkpointing.min-pause", "0 ms"),
        ("execution.checkpointing.num-retained", "1"),
        ("execution.checkpointing.tolerable-failed-checkpoints", "0"),
        ("minicluster.number-of-taskmanagers", "1"),
        ("security.ssl.internal.enabled", "false"),
        ("security.ssl.rest.enabled", "false"),
        ("rest.auth.protect-reads", "false"),
        ("high-availability.type", "none"),
        ("high-availability.cluster-id", "/default"),
        ("high-availability.etcd.lease-ttl", "5 s"),
        ("metrics.reporter.prom.port", "9249-9260"),
    ];
    let entries = Configuration::default().to_entries();
    let entries: Vec<(&str, &str)> = entries
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(entries, expected);

    // The optional keys are unset by default, so not listed.
    let config = Configuration::default();
    assert_eq!(config.taskmanager.host, None);
    assert_eq!(config.blob.storage_directory, None);
    assert_eq!(config.restart.strategy_type, None);
    assert_eq!(config.checkpointing.interval, None, "checkpointing is off");
    assert_eq!(config.checkpointing.dir, None);
    assert_eq!(config.checkpointing.savepoint_dir, None);
    assert_eq!(config.rest.ui_dir, None, "the built-in dashboard");
    assert_eq!(
        config.security,
        Default::default(),
        "no security unless asked"
    );
    assert_eq!(config.rest.auth_token, None);
    // 7 optional keys before issue 10, its 10 optional security and token keys, and issue 11's
    // two (high-availability.etcd.endpoints and .storageDir).
    assert_eq!(keys().len(), expected.len() + 19);

    // A few typed spot checks against Flink's values.
    assert_eq!(config.jobmanager.rpc_port, 6123);
    assert_eq!(config.rest.port, 8081);
    assert_eq!(config.heartbeat.interval, Duration::from_secs(1));
    assert_eq!(config.heartbeat.timeout, Duration::from_secs(5));
    assert_eq!(config.rpc.max_frame_size, 10 * 1024 * 1024);
    assert_eq!(config.blob.cleanup_interval, Duration::from_secs(3600));
}

#[test]
fn no_layers_load_the_defaults() {
    assert_eq!(
        ConfigLoader::new().load().unwrap(),
        Configuration::default()
    );
    assert_eq!(
        ConfigLoader::new().file(None).load().unwrap(),
        Configuration::default()
    );
}

#[test]
fn each_layer_overrides_the_one_below() {
    let (_dir, path) = yaml(
        "cluster.id: from-file\n\
         rest.port: 1001\n\
         taskmanager.numberOfTaskSlots: 2\n\
         heartbeat.interval: 2 s\n\
         heartbeat.timeout: 20 s\n",
    );
    let file_only = ConfigLoader::new().file(Some(&path)).load().unwrap();
    assert_eq!(file_only.cluster.id, "from-file");
    assert_eq!(file_only.rest.port, 1001);
    assert_eq!(file_only.taskmanager.number_of_task_slots, 2);

    let config = ConfigLoader::new()
        .file(Some(&path))
        .env([
            ("RFLINK__REST__PORT", "1002"),
            ("RFLINK__TASKMANAGER__NUMBEROFTASKSLOTS", "3"),
            ("RFLINK__HEARTBEAT__TIMEOUT", "30 s"),
        ])
        .dynamic(["rest.port=1003", "heartbeat.timeout=40s"])
        .load()
        .unwrap();
    assert_eq!(config.cluster.id, "from-file", "file over default");
    assert_eq!(
        config.heartbeat.interval,
        Duration::from_secs(2),
        "file over default"
    );
    assert_eq!(config.taskmanager.number_of_task_slots, 3, "env over file");
    assert_eq!(config.rest.port, 1003, "-D over env over file");
    assert_eq!(
        config.heartbeat.timeout,
        Duration::from_secs(40),
        "-D over env"
    );
    assert_eq!(
        config.jobmanager.rpc_port, 6123,
        "untouched keys keep defaults"
    );
}

#[test]
fn later_dynamic_properties_win() {
    let config = load_dynamic(&["rest.port=1", "rest.port=2"]).unwrap();
    assert_eq!(config.rest.port, 2);
}

#[test]
fn nested_and_flat_yaml_give_the_same_configuration() {
    let (_d1, flat) = yaml(
        "taskmanager.numberOfTaskSlots: 4\n\
         taskmanager.rpc.port: 6200\n\
         jobmanager.rpc.address: jm.example\n\
         heartbeat.interval: 500 ms\n\
         blob.storage.directory: /var/lib/rflink/blobs\n",
    );
    let (_d2, nested) = yaml(
        "taskmanager:\n  numberOfTaskSlots: 4\n  rpc:\n    port: 6200\n\
         jobmanager:\n  rpc:\n    address: jm.example\n\
         heartbeat:\n  interval: 500 ms\n\
         blob:\n  storage.directory: /var/lib/rflink/blobs\n",
    );
    let a = ConfigLoader::new().file(Some(&flat)).load().unwrap();
    let b = ConfigLoader::new().file(Some(&nested)).load().unwrap();
    assert_eq!(a, b);
    assert_eq!(a.taskmanager.number_of_task_slots, 4);
    assert_eq!(a.taskmanager.rpc_port, 6200);
    assert_eq!(a.jobmanager.rpc_address, "jm.example");
    assert_eq!(a.heartbeat.interval, Duration::from_millis(500));
    assert_eq!(
        a.blob.storage_directory.as_deref(),
        Some(Path::new("/var/lib/rflink/blobs"))
    );
}

#[test]
fn empty_and_comment_only_files_are_fine() {
    for text in ["", "# nothing here\n", "taskmanager: {}\n"] {
        let (_dir, path) = yaml(text);
        assert_eq!(
            ConfigLoader::new().file(Some(&path)).load().unwrap(),
            Configuration::default(),
            "{text:?}"
        );
    }
}

#[test]
fn unknown_key_bad_duration_and_bad_port_come_back_together() {
    let (_dir, path) = yaml("heartbeat.intervall: 2 s\nheartbeat.timeout: ten seconds\n");
    let found = problems(
        ConfigLoader::new()
            .file(Some(&path))
            .dynamic(["rest.port=99999"])
            .load(),
    );
    assert_eq!(found.len(), 3, "{found:#?}");

    assert_eq!(found[0].source, ConfigSource::File(path.clone()));
    assert_eq!(found[0].key.as_deref(), Some("heartbeat.intervall"));
    assert_eq!(
        found[0].kind,
        ProblemKind::UnknownKey {
            suggestion: Some("heartbeat.interval".into())
        }
    );

    assert_eq!(found[1].source, ConfigSource::File(path.clone()));
    assert_eq!(found[1].key.as_deref(), Some("heartbeat.timeout"));
    assert!(matches!(
        &found[1].kind,
        ProblemKind::BadValue { value, expected: ValueKind::Duration, .. } if value == "ten seconds"
    ));

    assert_eq!(found[2].source, ConfigSource::Dynamic);
    assert_eq!(found[2].key.as_deref(), Some("rest.port"));
    assert!(matches!(
        &found[2].kind,
        ProblemKind::BadValue {
            expected: ValueKind::Port,
            ..
        }
    ));

    // Display: a header, then one line per problem.
    let text = ConfigError { problems: found }.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert_eq!(lines[0], "invalid configuration (3 problems):");
    assert!(
        lines[1].contains("did you mean heartbeat.interval?"),
        "{text}"
    );
    assert!(
        lines[3].starts_with("  -D: rest.port: bad value \"99999\""),
        "{text}"
    );
}

#[test]
fn every_kind_of_bad_value_is_rejected() {
    let cases = [
        ("heartbeat.interval=soon", ValueKind::Duration),
        ("heartbeat.interval=1.5 s", ValueKind::Duration),
        ("slot.idle.timeout=5 fortnights", ValueKind::Duration),
        ("blob.service.cleanup.interval=-1", ValueKind::Seconds),
        ("rpc.max-frame-size=10 zb", ValueKind::Size),
        ("blob.offload.minsize=big", ValueKind::Size),
        ("taskmanager.numberOfTaskSlots=four", ValueKind::Int),
        ("taskmanager.numberOfTaskSlots=-1", ValueKind::Int),
        ("heartbeat.rpc-failure-threshold=3000000000", ValueKind::Int),
        ("rpc.force-invocation-serialization=yes", ValueKind::Bool),
        ("jobmanager.rpc.port=65536", ValueKind::Port),
        ("rest.port=http", ValueKind::Port),
        ("cluster.id=", ValueKind::String),
        ("rest.address=  ", ValueKind::String),
    ];
    let properties: Vec<&str> = cases.iter().map(|(p, _)| *p).collect();
    let found = problems(load_dynamic(&properties));
    assert_eq!(found.len(), cases.len(), "{found:#?}");
    for ((property, kind), problem) in cases.iter().zip(&found) {
        let key = property.split_once('=').unwrap().0;
        assert_eq!(problem.key.as_deref(), Some(key), "{property}");
        match &problem.kind {
            ProblemKind::BadValue { expected, .. } => assert_eq!(expected, kind, "{property}"),
            other => panic!("{property}: expected a bad value, got {other:?}"),
        }
    }
}

#[test]
fn a_bad_value_is_reported_even_when_a_higher_layer_overrides_it() {
    let (_dir, path) = yaml("rest.port: eighty\n");
    let found = problems(
        ConfigLoader::new()
            .file(Some(&path))
            .dynamic(["rest.port=8080"])
            .load(),
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].source, ConfigSource::File(path));
}

#[test]
fn a_rejected_value_suppresses_its_cross_field_check() {
    // heartbeat.timeout stays at its default (5 s) after being rejected; complaining that 5 s
    // is not above the interval would only confuse.
    let found = problems(load_dynamic(&[
        "heartbeat.interval=10 s",
        "heartbeat.timeout=abc",
    ]));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(matches!(found[0].kind, ProblemKind::BadValue { .. }));
}

#[test]
fn cross_field_problems_are_reported_with_the_rest_and_name_their_source() {
    let found = problems(
        ConfigLoader::new()
            .env([("RFLINK__TASKMANAGER__NUMBEROFTASKSLOTS", "0")])
            .dynamic([
                "heartbeat.interval=10 s",
                "heartbeat.timeout=10 s",
                "no.such.key=1",
            ])
            .load(),
    );
    let described: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(
        described,
        [
            "-D: no.such.key: unknown key",
            "env RFLINK__TASKMANAGER__NUMBEROFTASKSLOTS: taskmanager.numberOfTaskSlots: must be at least 1",
            "-D: heartbeat.timeout: 10 s must be greater than heartbeat.interval (10 s)",
        ]
    );
}

#[test]
fn malformed_entries_are_reported() {
    let found = problems(
        ConfigLoader::new()
            .env([("RFLINK__REST____PORT", "1"), ("RFLINK__", "1")])
            .dynamic(["rest.port", "=5", "rest.port=1"])
            .load(),
    );
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found
        .iter()
        .all(|p| matches!(p.kind, ProblemKind::Malformed { .. })));
    assert_eq!(found[2].source, ConfigSource::Dynamic);
    assert!(found[2].to_string().contains("\"rest.port\""));
}

#[test]
fn file_problems_do_not_hide_the_others() {
    let missing = PathBuf::from("/nonexistent/rflink.yaml");
    let found = problems(
        ConfigLoader::new()
            .file(Some(&missing))
            .dynamic(["rest.port=x"])
            .load(),
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(matches!(found[0].kind, ProblemKind::UnreadableFile { .. }));
    assert_eq!(found[0].source, ConfigSource::File(missing));

    let (_dir, path) = yaml("rest.port: [1\nheartbeat: {\n");
    let found = problems(
        ConfigLoader::new()
            .file(Some(&path))
            .dynamic(["rest.port=x"])
            .load(),
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(matches!(found[0].kind, ProblemKind::Yaml { .. }));
    assert!(found[0].to_string().contains("line"), "{}", found[0]);

    let (_dir, path) = yaml("rest.port: [1, 2]\n");
    let found = problems(ConfigLoader::new().file(Some(&path)).load());
    assert!(matches!(
        found[..],
        [ConfigProblem {
            kind: ProblemKind::BadValue { .. },
            ..
        }]
    ));
}

#[test]
fn environment_names_map_to_keys() {
    let config = ConfigLoader::new()
        .env([
            ("RFLINK__HEARTBEAT__RPC_FAILURE_THRESHOLD", "5"),
            ("RFLINK__TASKMANAGER__NUMBEROFTASKSLOTS", "4"),
            ("RFLINK__JOBMANAGER__RPC__ADDRESS", "jm.example"),
            ("RFLINK__taskmanager__numberOfTaskSlots_ignored_case", "1"),
            ("RFLINK__CLUSTER__REGISTRATION__MAX_TIMEOUT", "1 min"),
            ("RFLINK__BLOB__STORAGE__DIRECTORY", "/tmp/blobs"),
            // Not ours: ignored, even when they look like keys.
            ("PATH", "/usr/bin"),
            ("RFLINK_REST_PORT", "1"),
            ("rflink__rest__port", "1"),
        ])
        .load();
    // Segments match case-insensitively, but this name spells no key: the one problem.
    let found = problems(config);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(matches!(found[0].kind, ProblemKind::UnknownKey { .. }));

    let config = ConfigLoader::new()
        .env([
            ("RFLINK__HEARTBEAT__RPC_FAILURE_THRESHOLD", "5"),
            ("RFLINK__TASKMANAGER__NUMBEROFTASKSLOTS", "4"),
            ("RFLINK__JOBMANAGER__RPC__ADDRESS", "jm.example"),
            ("RFLINK__Rest__Port", "9000"),
            ("RFLINK__CLUSTER__REGISTRATION__MAX_TIMEOUT", "1 min"),
            ("RFLINK__BLOB__STORAGE__DIRECTORY", "/tmp/blobs"),
            ("PATH", "/usr/bin"),
            ("RFLINK_REST_PORT", "1"),
        ])
        .load()
        .unwrap();
    assert_eq!(config.heartbeat.rpc_failure_threshold, 5);
    assert_eq!(config.taskmanager.number_of_task_slots, 4);
    assert_eq!(config.jobmanager.rpc_address, "jm.example");
    assert_eq!(config.rest.port, 9000);
    assert_eq!(config.registration.max_timeout, Duration::from_secs(60));
    assert_eq!(
        config.blob.storage_directory.as_deref(),
        Some(Path::new("/tmp/blobs"))
    );

    for spec in keys() {
        assert!(spec.env_var().starts_with("RFLINK__"));
    }
    let spec = keys()
        .iter()
        .find(|s| s.key == "heartbeat.rpc-failure-threshold")
        .unwrap();
    assert_eq!(spec.env_var(), "RFLINK__HEARTBEAT__RPC_FAILURE_THRESHOLD");
}

#[test]
fn unknown_environment_keys_suggest_the_variable_name() {
    let found = problems(
        ConfigLoader::new()
            .env([("RFLINK__HEARTBEAT__INTERVALL", "1 s")])
            .load(),
    );
    assert_eq!(
        found[0].to_string(),
        "env RFLINK__HEARTBEAT__INTERVALL: heartbeat.intervall: unknown key \
         (did you mean RFLINK__HEARTBEAT__INTERVAL?)"
    );
}

#[test]
fn two_environment_variables_for_one_key_are_a_problem() {
    let found = problems(
        ConfigLoader::new()
            .env([("RFLINK__REST__PORT", "1"), ("RFLINK__rest__port", "2")])
            .load(),
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].to_string().contains("also set by"), "{}", found[0]);
}

#[test]
fn deprecated_flink_keys_are_still_accepted() {
    let config = load_dynamic(&[
        "pekko.ask.timeout=30 s",
        "akka.framesize=20971520b",
        "pekko.tcp.timeout=20 s",
        "pekko.rpc.force-invocation-serialization=true",
    ])
    .unwrap();
    assert_eq!(config.rpc.ask_timeout, Duration::from_secs(30));
    assert_eq!(config.rpc.max_frame_size, 20 << 20);
    assert_eq!(config.rpc.connect_timeout, Duration::from_secs(20));
    assert!(config.rpc.force_invocation_serialization);

    // Nested, as a Flink 2 config.yaml writes it.
    let (_dir, path) = yaml("pekko:\n  ask:\n    timeout: 7 s\n  framesize: 12 mb\n");
    let config = ConfigLoader::new().file(Some(&path)).load().unwrap();
    assert_eq!(config.rpc.ask_timeout, Duration::from_secs(7));
    assert_eq!(config.rpc.max_frame_size, 12 << 20);

    // From the environment.
    let config = ConfigLoader::new()
        .env([("RFLINK__AKKA__ASK__TIMEOUT", "8 s")])
        .load()
        .unwrap();
    assert_eq!(config.rpc.ask_timeout, Duration::from_secs(8));

    // Within one layer the current key wins, whatever the order.
    for properties in [
        ["rpc.ask-timeout=1 s", "pekko.ask.timeout=2 s"],
        ["pekko.ask.timeout=2 s", "rpc.ask-timeout=1 s"],
    ] {
        let config = load_dynamic(&properties).unwrap();
        assert_eq!(
            config.rpc.ask_timeout,
            Duration::from_secs(1),
            "{properties:?}"
        );
    }

    // Across layers the higher layer wins, alias or not.
    let (_dir, path) = yaml("rpc.ask-timeout: 1 s\n");
    let config = ConfigLoader::new()
        .file(Some(&path))
        .dynamic(["akka.ask.timeout=3 s"])
        .load()
        .unwrap();
    assert_eq!(config.rpc.ask_timeout, Duration::from_secs(3));

    // A bad value under an alias names the alias as written.
    let found = problems(load_dynamic(&["pekko.framesize=huge"]));
    assert_eq!(found[0].key.as_deref(), Some("pekko.framesize"));
}

#[test]
fn template_is_generated_from_the_key_table() {
    let path = template_path();
    let generated = template();
    if std::env::var_os("RFLINK_BLESS_TEMPLATE").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(
        on_disk == generated,
        "{} is out of date with the key table; regenerate it with \
         RFLINK_BLESS_TEMPLATE=1 cargo test -p rflink-runtime --test config",
        path.display()
    );
}

#[test]
fn template_loads_to_the_defaults_and_lists_every_key() {
    let path = template_path();
    let config = ConfigLoader::new()
        .file(Some(&path))
        .load()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config, Configuration::default());

    let text = std::fs::read_to_string(&path).unwrap();
    for spec in keys() {
        let line = format!("\n{}: ", spec.key);
        assert!(
            text.contains(&line),
            "{} is missing from the template",
            spec.key
        );
        let doc = format!("# {}\n", spec.doc);
        assert!(text.contains(&doc), "{} has no explanation", spec.key);
    }
    assert!(
        text.contains("frozen process"),
        "the heartbeat defaults are explained"
    );
}

#[test]
fn entries_round_trip_through_dynamic_properties() {
    let mut config = Configuration::default();
    config.cluster.id = "prod-eu".into();
    config.jobmanager.rpc_address = "jm.example".into();
    config.jobmanager.bind_host = "0.0.0.0".into();
    config.jobmanager.rpc_port = 16123;
    config.rest.port = 0;
    config.taskmanager.number_of_task_slots = 8;
    config.taskmanager.host = Some("tm-3.example".into());
    config.taskmanager.bind_host = "0.0.0.0".into();
    config.taskmanager.slot_timeout = Duration::from_millis(2500);
    config.heartbeat.interval = Duration::from_millis(250);
    config.heartbeat.timeout = Duration::from_secs(90);
    config.heartbeat.rpc_failure_threshold = -1;
    config.registration.initial_timeout = Duration::from_micros(1500);
    config.blob.storage_directory = Some("/data/blobs".into());
    config.blob.offload_min_size = 1000;
    config.blob.cleanup_interval = Duration::from_secs(90);
    config.rpc.max_frame_size = 64 << 20;
    config.rpc.force_invocation_serialization = true;
    config.slot.request_timeout = Duration::from_secs(86_400);
    config.execution.default_parallelism = 12;
    config.minicluster.number_of_taskmanagers = 3;
    config.validate().unwrap();

    let properties: Vec<String> = config
        .to_entries()
        .into_iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    let loaded = ConfigLoader::new().dynamic(&properties).load().unwrap();
    assert_eq!(loaded, config);
}

#[test]
fn get_and_set_by_key() {
    let mut config = Configuration::default();
    config.set("taskmanager.numberOfTaskSlots", "6").unwrap();
    config.set("akka.ask.timeout", "1 min").unwrap();
    assert_eq!(config.taskmanager.number_of_task_slots, 6);
    assert_eq!(config.get("rpc.ask-timeout").as_deref(), Some("1 min"));
    assert_eq!(config.get("pekko.ask.timeout").as_deref(), Some("1 min"));
    assert_eq!(config.get("taskmanager.host"), None);
    assert_eq!(config.get("nope"), None);
    assert!(matches!(
        config.set("rest.prot", "1"),
        Err(ProblemKind::UnknownKey { suggestion: Some(s) }) if s == "rest.port"
    ));
    assert!(matches!(
        config.set("rest.port", "-1"),
        Err(ProblemKind::BadValue {
            expected: ValueKind::Port,
            ..
        })
    ));
}

#[test]
fn rpc_configs_for_each_role() {
    let config = load_dynamic(&[
        "cluster.id=c1",
        "jobmanager.bind-host=0.0.0.0",
        "jobmanager.rpc.address=jm.example",
        "jobmanager.rpc.port=7000",
        "taskmanager.bind-host=10.0.0.5",
        "taskmanager.rpc.port=7100",
        "rpc.ask-timeout=3 s",
        "rpc.connect-timeout=4 s",
        "rpc.max-frame-size=2 mb",
        "rpc.force-invocation-serialization=true",
        "rpc.mailbox-capacity=16",
        "rpc.max-inbound-in-flight=32",
    ])
    .unwrap();

    let jm = config.rpc_config(ProcessRole::JobManager);
    assert_eq!(jm.bind_host, "0.0.0.0");
    assert_eq!(jm.bind_port, 7000);
    assert_eq!(jm.advertised_host.as_deref(), Some("jm.example"));
    assert_eq!(jm.advertised_port, None);

    let tm = config.rpc_config(ProcessRole::TaskManager);
    assert_eq!(tm.bind_host, "10.0.0.5");
    assert_eq!(tm.bind_port, 7100);
    assert_eq!(tm.advertised_host, None, "advertises the bind host");

    for rpc in [&jm, &tm] {
        rpc.validate().unwrap();
        assert_eq!(rpc.cluster_id, "c1");
        assert_eq!(rpc.ask_timeout, Duration::from_secs(3));
        assert_eq!(rpc.connect_timeout, Duration::from_secs(4));
        assert_eq!(rpc.max_frame_size, 2 << 20);
        assert!(rpc.force_serialization);
        assert_eq!(rpc.mailbox_capacity, 16);
        assert_eq!(rpc.max_inbound_in_flight, 32);
    }
}

#[test]
fn wildcard_task_manager_bind_needs_an_advertised_host() {
    let found = problems(load_dynamic(&["taskmanager.bind-host=0.0.0.0"]));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].key.as_deref(), Some("taskmanager.bind-host"));
    let config = load_dynamic(&[
        "taskmanager.bind-host=0.0.0.0",
        "taskmanager.host=tm.example",
    ])
    .unwrap();
    config
        .rpc_config(ProcessRole::TaskManager)
        .validate()
        .unwrap();
}

/// The restart strategy and checkpointing keys are checked when the configuration loads, by the
/// same code that builds the strategy, each problem under its key.
#[test]
fn bad_restart_and_checkpointing_settings_are_refused_at_load() {
    for (properties, key) in [
        (
            &["restart-strategy.type=sometimes"][..],
            "restart-strategy.type",
        ),
        (
            &[
                "restart-strategy.type=exponential-delay",
                "restart-strategy.exponential-delay.backoff-multiplier=0.5",
            ][..],
            "restart-strategy.exponential-delay.backoff-multiplier",
        ),
        (
            &[
                "restart-strategy.type=exponential-delay",
                "restart-strategy.exponential-delay.jitter-factor=2",
            ][..],
            "restart-strategy.exponential-delay.jitter-factor",
        ),
        (
            &["jobmanager.execution.failover-strategy=sideways"][..],
            "jobmanager.execution.failover-strategy",
        ),
        (
            &["execution.checkpointing.interval=1 ms"][..],
            "execution.checkpointing.interval",
        ),
        (
            &["execution.checkpointing.num-retained=0"][..],
            "execution.checkpointing.num-retained",
        ),
    ] {
        let found = problems(load_dynamic(properties));
        assert!(
            found.iter().any(|p| p.key.as_deref() == Some(key)),
            "{properties:?}: {found:?}"
        );
    }
    // Flink's older key name still works, with checkpointing's default restart strategy.
    let config = load_dynamic(&[
        "state.checkpoints.dir=/data/checkpoints",
        "execution.checkpointing.interval=500 ms",
    ])
    .expect("loads");
    assert_eq!(
        config.checkpointing.dir.as_deref(),
        Some(std::path::Path::new("/data/checkpoints"))
    );
}

/// `web.ui.dir` names a directory holding an `index.html`, checked when the configuration loads:
/// a missing path, a file, or a directory without an index is refused under that key, saying
/// what is wrong.
#[test]
fn web_ui_dir_must_be_a_directory_with_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let ui = dir.path().join("web");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    std::fs::create_dir(&ui).unwrap();
    for (path, says) in [
        (dir.path().join("nowhere"), "does not exist"),
        (file.clone(), "is not a directory"),
        (ui.clone(), "holds no index.html"),
    ] {
        let property = format!("web.ui.dir={}", path.display());
        let found = problems(load_dynamic(&[&property]));
        assert!(
            found.iter().any(|p| p.key.as_deref() == Some("web.ui.dir")
                && p.to_string().contains(says)
                && p.to_string().contains(&path.display().to_string())),
            "{property}: {found:?}"
        );
    }
    std::fs::write(ui.join("index.html"), "<html></html>").unwrap();
    let property = format!("web.ui.dir={}", ui.display());
    let config = load_dynamic(&[&property]).expect("a directory with an index.html");
    assert_eq!(config.rest.ui_dir.as_deref(), Some(ui.as_path()));
    assert_eq!(config.get("web.ui.dir"), Some(ui.display().to_string()));
    // Empty unsets it: the built-in dashboard.
    let config = load_dynamic(&["web.ui.dir="]).expect("loads");
    assert_eq!(config.rest.ui_dir, None);
}

/// Secrets are read like any key but never listed: `/jobmanager/config` and `--check-config`
/// print `******`, and `Debug` of the whole configuration does not show them either.
#[test]
fn secrets_are_hidden_in_listings_and_debug() {
    let config = ConfigLoader::new()
        .env([
            (
                "RFLINK__SECURITY__CLUSTER_SECRET",
                "super-secret-cluster-value",
            ),
            ("RFLINK__REST__AUTH__TOKEN", "super-secret-token-value"),
        ])
        .load()
        .expect("valid");
    assert_eq!(
        config
            .security
            .cluster_secret
            .as_ref()
            .map(|s| s.expose().to_string()),
        Some("super-secret-cluster-value".to_string())
    );
    let entries = config.to_entries();
    for key in ["security.cluster-secret", "rest.auth.token"] {
        let value = entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str());
        assert_eq!(value, Some("******"), "{key}");
    }
    let listed = format!("{entries:?}");
    let debugged = format!("{config:?}");
    for shown in [listed, debugged] {
        assert!(!shown.contains("super-secret"), "{shown}");
    }
}

#[test]
fn security_settings_are_checked_together() {
    let err = ConfigLoader::new()
        .dynamic([
            "security.cluster-secret=short",
            "security.ssl.internal.enabled=true",
            "rest.auth.protect-reads=true",
        ])
        .load()
        .expect_err("invalid");
    let text = err.to_string();
    for needle in [
        "security.cluster-secret",
        "security.ssl.internal.cert",
        "security.ssl.internal.key",
        "security.ssl.internal.truststore",
        "rest.auth.protect-reads",
    ] {
        assert!(text.contains(needle), "{needle} missing from: {text}");
    }
    // The short secret itself is never echoed.
    assert!(!text.contains("short\""), "{text}");
}
