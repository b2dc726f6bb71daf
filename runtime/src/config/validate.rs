//! Cross-field and range rules of [`Configuration`], beyond what parsing a single value checks.

use std::path::Path;
use std::time::Duration;

use rflink_rpc::security::ClusterSecret;
use rflink_rpc::{MAX_FRAME_SIZE, MIN_FRAME_SIZE};

use super::value::{format_duration, format_size};
use super::Configuration;

fn is_wildcard(host: &str) -> bool {
    matches!(host, "0.0.0.0" | "::" | "[::]")
}

/// Collects `(key, message)` pairs; the key is the one whose value should change.
#[derive(Default)]
struct Problems(Vec<(&'static str, String)>);

impl Problems {
    fn require(&mut self, ok: bool, key: &'static str, message: impl FnOnce() -> String) {
        if !ok {
            self.0.push((key, message()));
        }
    }

    fn positive(&mut self, key: &'static str, value: Duration) {
        self.require(!value.is_zero(), key, || "must be positive".into());
    }

    /// A host name or address: not empty, no spaces or slashes; an advertised one must not be
    /// a wildcard, since others connect to it.
    fn host(&mut self, key: &'static str, host: &str, advertised: bool) {
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            self.0.push((
                key,
                format!("{host:?} is not a host: empty, or contains a space or '/'"),
            ));
        } else if advertised && is_wildcard(host) {
            self.0.push((
                key,
                format!("{host} is a wildcard; give the address other nodes should connect to"),
            ));
        }
    }

    /// A directory of a web UI to serve: it exists, is a directory, and holds an `index.html`
    /// (the page served at `/`).
    fn web_ui_dir(&mut self, key: &'static str, dir: &Path) {
        let problem = if !dir.exists() {
            Some("does not exist")
        } else if !dir.is_dir() {
            Some("is not a directory")
        } else if !dir.join("index.html").is_file() {
            Some("holds no index.html (the page served at /)")
        } else {
            None
        };
        if let Some(problem) = problem {
            self.0.push((
                key,
                format!(
                    "{} {problem}; give the directory of a web UI, e.g. the web/ folder of \
                     Flink's lib/flink-dist-*.jar",
                    dir.display()
                ),
            ));
        }
    }

    /// Non-zero ports of one process must differ.
    fn distinct_ports(&mut self, ports: &[(&'static str, u16)]) {
        for (i, (key, port)) in ports.iter().enumerate() {
            if *port == 0 {
                continue;
            }
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                self.0.push((
                    key,
                    format!("port {port} is already used by {other} in the same process"),
                ));
            }
        }
    }
}

impl Configuration {
    /// Every broken rule as `(key, message)`, in key-table order.
    pub(crate) fn check(&self) -> Vec<(&'static str, String)> {
        let mut p = Problems::default();

        let id_len = self.cluster.id.len();
        p.require((1..=255).contains(&id_len), "cluster.id", || {
            format!("must be 1 to 255 bytes, is {id_len}")
        });

        let jm = &self.jobmanager;
        p.host("jobmanager.rpc.address", &jm.rpc_address, true);
        p.host("jobmanager.bind-host", &jm.bind_host, false);

        p.host("rest.address", &self.rest.address, true);
        p.host("rest.bind-address", &self.rest.bind_address, false);
        p.positive("web.refresh-interval", self.rest.refresh_interval);
        if let Some(dir) = &self.rest.ui_dir {
            p.web_ui_dir("web.ui.dir", dir);
        }
        let sec = &self.security;
        p.require(
            !(sec.cluster_secret.is_some() && sec.cluster_secret_file.is_some()),
            "security.cluster-secret",
            || {
                "set either security.cluster-secret or security.cluster-secret-file, not both"
                    .into()
            },
        );
        if let Some(secret) = &sec.cluster_secret {
            let len = secret.expose().trim().len();
            p.require(
                len >= ClusterSecret::MIN_LEN,
                "security.cluster-secret",
                || {
                    format!(
                        "has {len} bytes; a cluster secret needs at least {} (rflink security generate makes one)",
                        ClusterSecret::MIN_LEN
                    )
                },
            );
        }
        if sec.internal_ssl {
            for (key, value) in [
                ("security.ssl.internal.cert", &sec.internal_cert),
                ("security.ssl.internal.key", &sec.internal_key),
                ("security.ssl.internal.truststore", &sec.internal_truststore),
            ] {
                p.require(value.is_some(), key, || {
                    "must be set when security.ssl.internal.enabled is true".into()
                });
            }
        }
        if sec.rest_ssl {
            for (key, value) in [
                ("security.ssl.rest.cert", &sec.rest_cert),
                ("security.ssl.rest.key", &sec.rest_key),
            ] {
                p.require(value.is_some(), key, || {
                    "must be set when security.ssl.rest.enabled is true".into()
                });
            }
        }
        p.require(
            !(self.rest.auth_token.is_some() && self.rest.auth_token_file.is_some()),
            "rest.auth.token",
            || "set either rest.auth.token or rest.auth.token-file, not both".into(),
        );
        p.require(
            !self.rest.auth_protect_reads
                || self.rest.auth_token.is_some()
                || self.rest.auth_token_file.is_some(),
            "rest.auth.protect-reads",
            || "needs rest.auth.token or rest.auth.token-file".into(),
        );

        p.distinct_ports(&[
            ("jobmanager.rpc.port", jm.rpc_port),
            ("rest.port", self.rest.port),
            ("blob.server.port", self.blob.server_port),
        ]);

        let tm = &self.taskmanager;
        p.require(
            tm.number_of_task_slots >= 1,
            "taskmanager.numberOfTaskSlots",
            || "must be at least 1".into(),
        );
        if let Some(host) = &tm.host {
            p.host("taskmanager.host", host, true);
        }
        p.host("taskmanager.bind-host", &tm.bind_host, false);
        p.require(
            tm.host.is_some() || !is_wildcard(&tm.bind_host),
            "taskmanager.bind-host",
            || {
                format!(
                    "{} is a wildcard: set taskmanager.host to the address other nodes should use",
                    tm.bind_host
                )
            },
        );
        p.distinct_ports(&[
            ("taskmanager.rpc.port", tm.rpc_port),
            ("taskmanager.data.port", tm.data_port),
        ]);
        p.positive("taskmanager.registration.timeout", tm.registration_timeout);
        p.positive("taskmanager.slot.timeout", tm.slot_timeout);

        let net = &self.network;
        p.require(
            (4096..=(16 << 20)).contains(&net.segment_size),
            "taskmanager.memory.segment-size",
            || {
                format!(
                    "{} is outside 4 kb ..= 16 mb",
                    format_size(net.segment_size)
                )
            },
        );
        p.require(
            net.buffers_per_channel >= 1,
            "taskmanager.network.memory.buffers-per-channel",
            || "must be at least 1".into(),
        );
        p.require(
            net.max_buffers_per_channel >= 1,
            "taskmanager.network.memory.max-buffers-per-channel",
            || "must be at least 1".into(),
        );
        p.require(
            net.local_batch_records >= 1,
            "taskmanager.network.local-batch.records",
            || "must be at least 1".into(),
        );
        p.require(
            net.number_of_buffers >= 4,
            "taskmanager.network.numberOfBuffers",
            || "must be at least 4".into(),
        );
        p.positive(
            "taskmanager.network.request-backoff.initial",
            net.request_backoff_initial,
        );
        p.positive("execution.buffer-timeout.interval", net.buffer_timeout);
        p.require(
            net.request_backoff_max >= net.request_backoff_initial,
            "taskmanager.network.request-backoff.max",
            || {
                format!(
                    "{} must not be below taskmanager.network.request-backoff.initial ({})",
                    format_duration(net.request_backoff_max),
                    format_duration(net.request_backoff_initial)
                )
            },
        );

        let hb = &self.heartbeat;
        p.positive("heartbeat.interval", hb.interval);
        p.require(hb.timeout > hb.interval, "heartbeat.timeout", || {
            format!(
                "{} must be greater than heartbeat.interval ({})",
                format_duration(hb.timeout),
                format_duration(hb.interval)
            )
        });
        p.require(
            hb.rpc_failure_threshold == -1 || hb.rpc_failure_threshold >= 1,
            "heartbeat.rpc-failure-threshold",
            || "must be at least 1, or -1 to disable".into(),
        );

        let reg = &self.registration;
        p.positive("cluster.registration.initial-timeout", reg.initial_timeout);
        p.require(
            reg.max_timeout >= reg.initial_timeout,
            "cluster.registration.max-timeout",
            || {
                format!(
                    "{} must not be below cluster.registration.initial-timeout ({})",
                    format_duration(reg.max_timeout),
                    format_duration(reg.initial_timeout)
                )
            },
        );

        let blob = &self.blob;
        p.require(
            blob.offload_min_size < self.rpc.max_frame_size,
            "blob.offload.minsize",
            || {
                format!(
                    "{} must be below rpc.max-frame-size ({}), or payloads just under it could \
                     not be sent inline",
                    format_size(blob.offload_min_size),
                    format_size(self.rpc.max_frame_size)
                )
            },
        );
        p.positive("blob.service.cleanup.interval", blob.cleanup_interval);

        let rpc = &self.rpc;
        p.positive("rpc.ask-timeout", rpc.ask_timeout);
        p.positive("rpc.connect-timeout", rpc.connect_timeout);
        p.require(
            (MIN_FRAME_SIZE as u64..=MAX_FRAME_SIZE as u64).contains(&rpc.max_frame_size),
            "rpc.max-frame-size",
            || {
                format!(
                    "{} is outside {}..={}",
                    format_size(rpc.max_frame_size),
                    format_size(MIN_FRAME_SIZE as u64),
                    format_size(MAX_FRAME_SIZE as u64)
                )
            },
        );
        p.require(rpc.mailbox_capacity >= 1, "rpc.mailbox-capacity", || {
            "must be at least 1".into()
        });
        p.require(
            rpc.max_inbound_in_flight >= 1,
            "rpc.max-inbound-in-flight",
            || "must be at least 1".into(),
        );

        p.positive("slot.request.timeout", self.slot.request_timeout);
        p.positive("slot.idle.timeout", self.slot.idle_timeout);

        p.require(
            self.execution.default_parallelism >= 1,
            "parallelism.default",
            || "must be at least 1".into(),
        );

        let rs = &self.restart;
        // The restart strategy is checked by the code that builds it, so a configuration that
        // loads is one the JobMaster accepts (Flink's constructor rules: multiplier > 1,
        // jitter 0..=1, initial <= max backoff, ...). Unset keys of unused strategies are not
        // read, as in Flink.
        if let Err(message) = crate::executiongraph::failover::from_lookup(
            &|key| self.get(key),
            self.checkpointing.interval.is_some(),
        ) {
            use crate::executiongraph::failover as f;
            let key = [
                f::KEY_FIXED_DELAY_ATTEMPTS,
                f::KEY_FIXED_DELAY_DELAY,
                f::KEY_FAILURE_RATE_MAX_FAILURES,
                f::KEY_FAILURE_RATE_INTERVAL,
                f::KEY_FAILURE_RATE_DELAY,
                f::KEY_EXP_INITIAL_BACKOFF,
                f::KEY_EXP_MAX_BACKOFF,
                f::KEY_EXP_MULTIPLIER,
                f::KEY_EXP_RESET_THRESHOLD,
                f::KEY_EXP_JITTER,
                f::KEY_EXP_ATTEMPTS,
            ]
            .into_iter()
            .find(|k| message.contains(k))
            .unwrap_or(f::KEY_TYPE);
            p.require(false, key, || message);
        }
        // Even when another strategy is chosen, the exponential-delay numbers must parse.
        for (key, text) in [
            (
                "restart-strategy.exponential-delay.backoff-multiplier",
                &rs.exponential_multiplier,
            ),
            (
                "restart-strategy.exponential-delay.jitter-factor",
                &rs.exponential_jitter,
            ),
        ] {
            p.require(
                text.trim().parse::<f64>().is_ok_and(f64::is_finite),
                key,
                || format!("{text:?} is not a number"),
            );
        }
        p.require(
            matches!(rs.failover_strategy.as_str(), "region" | "full"),
            "jobmanager.execution.failover-strategy",
            || format!("{:?} must be region or full", rs.failover_strategy),
        );

        let cp = &self.checkpointing;
        if let Some(interval) = cp.interval {
            p.require(
                interval >= std::time::Duration::from_millis(10),
                "execution.checkpointing.interval",
                || {
                    format!(
                        "{} is below the minimum of 10 ms",
                        format_duration(interval)
                    )
                },
            );
        }
        p.positive("execution.checkpointing.timeout", cp.timeout);
        p.require(
            cp.max_concurrent >= 1,
            "execution.checkpointing.max-concurrent-checkpoints",
            || "must be at least 1".into(),
        );
        p.require(
            cp.num_retained >= 1,
            "execution.checkpointing.num-retained",
            || "must be at least 1".into(),
        );
        let ha = &self.high_availability;
        p.require(
            matches!(ha.kind.to_ascii_lowercase().as_str(), "none" | "etcd"),
            "high-availability.type",
            || {
                format!(
                    "{:?} is not supported: use none or etcd (ZooKeeper and Kubernetes HA are not built)",
                    ha.kind
                )
            },
        );
        if ha.is_etcd() {
            let endpoints = ha.endpoints();
            p.require(
                !endpoints.is_empty(),
                "high-availability.etcd.endpoints",
                || "is required with high-availability.type: etcd".into(),
            );
            for endpoint in endpoints {
                p.require(
                    endpoint.starts_with("http://") && endpoint.len() > "http://".len(),
                    "high-availability.etcd.endpoints",
                    || {
                        format!(
                            "{endpoint:?} must be an http:// URL (TLS to etcd is not built: keep \
                             etcd on a private network)"
                        )
                    },
                );
            }
        }
        p.require(
            ha.lease_ttl >= std::time::Duration::from_secs(2),
            "high-availability.etcd.lease-ttl",
            || {
                format!(
                    "{} is below etcd's minimum lease of 2 s",
                    format_duration(ha.lease_ttl)
                )
            },
        );
        let prom = &self.metrics.prom_port;
        if prom != "off" {
            if let Err(e) = crate::metrics::server::parse_port_range(prom) {
                p.0.push(("metrics.reporter.prom.port", e.to_string()));
            }
        }
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        keys, ConfigError, ConfigSource, HeartbeatConfig, ProblemKind, ProcessRole, RpcSettings,
        TaskManagerConfig,
    };
    use super::*;

    fn problem_keys(config: &Configuration) -> Vec<&'static str> {
        config.check().into_iter().map(|(key, _)| key).collect()
    }

    #[test]
    fn defaults_are_valid() {
        Configuration::default()
            .validate()
            .expect("defaults validate");
    }

    #[test]
    fn high_availability_settings_are_checked_together() {
        let mut config = Configuration::default();
        config.high_availability.kind = "zookeeper".into();
        config.high_availability.lease_ttl = Duration::from_secs(1);
        let keys = problem_keys(&config);
        assert!(keys.contains(&"high-availability.type"), "{keys:?}");
        assert!(
            keys.contains(&"high-availability.etcd.lease-ttl"),
            "{keys:?}"
        );

        config.high_availability.kind = "etcd".into();
        config.high_availability.lease_ttl = Duration::from_secs(5);
        assert_eq!(
            problem_keys(&config),
            vec!["high-availability.etcd.endpoints"],
            "etcd needs endpoints"
        );
        config.high_availability.etcd_endpoints =
            Some("http://etcd-0:2379, https://etcd-1:2379".into());
        assert_eq!(
            problem_keys(&config),
            vec!["high-availability.etcd.endpoints"],
            "TLS to etcd is not built"
        );
        config.high_availability.etcd_endpoints =
            Some("http://etcd-0:2379,http://etcd-1:2379,".into());
        assert!(problem_keys(&config).is_empty());
        assert_eq!(
            config.high_availability.endpoints(),
            vec!["http://etcd-0:2379", "http://etcd-1:2379"]
        );
        config.high_availability.cluster_id = "/prod/".into();
        assert_eq!(config.high_availability.namespace(), "/rflink/prod/");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let config = Configuration {
            heartbeat: HeartbeatConfig {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(10),
                rpc_failure_threshold: 0,
            },
            taskmanager: TaskManagerConfig {
                number_of_task_slots: 0,
                bind_host: "0.0.0.0".into(),
                ..TaskManagerConfig::default()
            },
            rpc: RpcSettings {
                max_frame_size: 10,
                ..RpcSettings::default()
            },
            ..Configuration::default()
        };
        assert_eq!(
            problem_keys(&config),
            [
                "taskmanager.numberOfTaskSlots",
                "taskmanager.bind-host",
                "heartbeat.timeout",
                "heartbeat.rpc-failure-threshold",
                "blob.offload.minsize",
                "rpc.max-frame-size",
            ]
        );
        let Err(ConfigError { problems }) = config.validate() else {
            panic!("expected problems");
        };
        assert_eq!(problems.len(), 6);
        assert!(problems.iter().all(
            |p| p.source == ConfigSource::Code && matches!(p.kind, ProblemKind::Invalid { .. })
        ));
        assert_eq!(
            problems[2].to_string(),
            "configuration: heartbeat.timeout: 10 s must be greater than heartbeat.interval (10 s)"
        );
    }

    #[test]
    fn hosts_and_ports() {
        let mut config = Configuration::default();
        config.jobmanager.rpc_address = "0.0.0.0".into();
        config.rest.bind_address = "a b".into();
        config.rest.port = 6123;
        config.blob.server_port = 6123;
        config.taskmanager.rpc_port = 7000;
        config.taskmanager.data_port = 7000;
        config.taskmanager.host = Some(String::new());
        assert_eq!(
            problem_keys(&config),
            [
                "jobmanager.rpc.address",
                "rest.bind-address",
                "rest.port",
                "blob.server.port",
                "taskmanager.host",
                "taskmanager.data.port",
            ]
        );
    }

    #[test]
    fn zero_ports_never_clash() {
        let mut config = Configuration::default();
        config.jobmanager.rpc_port = 0;
        config.rest.port = 0;
        config.blob.server_port = 0;
        assert!(config.check().is_empty());
    }

    #[test]
    fn wildcard_bind_with_advertised_host_is_fine() {
        let mut config = Configuration::default();
        config.taskmanager.bind_host = "0.0.0.0".into();
        config.taskmanager.host = Some("tm-1.example".into());
        config.jobmanager.bind_host = "0.0.0.0".into();
        config.jobmanager.rpc_address = "jm.example".into();
        config.validate().unwrap();
        for role in [ProcessRole::JobManager, ProcessRole::TaskManager] {
            config.rpc_config(role).validate().unwrap();
        }
    }

    #[test]
    fn registration_and_zero_durations() {
        let mut config = Configuration::default();
        config.registration.initial_timeout = Duration::from_secs(60);
        config.rpc.ask_timeout = Duration::ZERO;
        config.slot.idle_timeout = Duration::ZERO;
        config.execution.default_parallelism = 0;
        assert_eq!(
            problem_keys(&config),
            [
                "cluster.registration.max-timeout",
                "rpc.ask-timeout",
                "slot.idle.timeout",
                "parallelism.default",
            ]
        );
    }

    #[test]
    fn problem_keys_are_table_keys() {
        let mut config = Configuration::default();
        config.cluster.id = String::new();
        config.heartbeat.interval = Duration::ZERO;
        config.heartbeat.timeout = Duration::ZERO;
        config.rpc.mailbox_capacity = 0;
        config.rpc.max_inbound_in_flight = 0;
        config.rpc.connect_timeout = Duration::ZERO;
        config.blob.cleanup_interval = Duration::ZERO;
        config.taskmanager.slot_timeout = Duration::ZERO;
        config.taskmanager.registration_timeout = Duration::ZERO;
        config.slot.request_timeout = Duration::ZERO;
        config.registration.initial_timeout = Duration::ZERO;
        let found = problem_keys(&config);
        assert_eq!(found.len(), 11, "{found:?}");
        for key in found {
            assert!(keys::find_key(key).is_some(), "{key} is not in the table");
        }
    }

    #[test]
    fn valid_configs_give_valid_rpc_configs() {
        let config = Configuration::default();
        for role in [ProcessRole::JobManager, ProcessRole::TaskManager] {
            config.rpc_config(role).validate().unwrap();
        }
    }
}
