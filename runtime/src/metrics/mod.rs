//! Metrics: Flink's `MetricRegistry`, `MetricGroup`s and its Prometheus reporter.
//!
//! A process has one [`MetricRegistry`]. Components take [`MetricGroup`]s from it with a
//! *scope* (Flink's scope formats: `jobmanager`, `jobmanager_job`, `taskmanager`,
//! `taskmanager_job_task`) and *variables* (Flink's `<host>`, `<tm_id>`, `<job_id>`,
//! `<task_name>`, ...), and register metrics in them:
//!
//! * a [`Counter`] or a [`Gauge`]: an atomic the owner updates;
//! * a gauge function ([`MetricGroup::gauge_fn`]): read when someone asks, for values that
//!   already live elsewhere (a partition's counters, the buffer pool);
//! * a per-second rate of another metric ([`MetricGroup::rate`], Flink's `MeterView`).
//!
//! The registry holds its groups weakly: a group (and its metrics) disappears when its owner
//! drops it, so a finished task's metrics go away with the task. Nothing here blocks: reading a
//! metric is an atomic load or a short closure, so a scrape never holds up a task or an actor.
//!
//! [`MetricRegistry::render_prometheus`] writes the text exposition format with the names and
//! labels of Flink's `PrometheusReporter`: `flink_<scope>_<name>` (every character outside
//! `[a-zA-Z0-9_:]` becomes `_`), one label per variable (`job_id`, `task_name`, ...), every
//! metric typed `gauge`, as Flink's reporter does for counters too.

pub mod rpc;
pub mod server;
pub mod task;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// A monotonically growing count. Cheap to clone; clones share the value.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value set by its owner. Cheap to clone; clones share the value.
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    /// The value now (0 until set).
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// A gauge computed when read.
pub type GaugeFn = Arc<dyn Fn() -> f64 + Send + Sync>;

/// A per-second rate of a growing value, measured between reads at least `MIN_SPAN` apart.
/// Flink's `MeterView` (which averages over 60 s); here the span is the time since the last
/// update, so a Prometheus scrape and a heartbeat both see recent rates.
struct RateView {
    source: GaugeFn,
    state: Mutex<RateState>,
}

struct RateState {
    at: Instant,
    value: f64,
    rate: f64,
}

/// The shortest span a rate is measured over; reads within it return the previous rate.
const MIN_SPAN_SECS: f64 = 1.0;

impl RateView {
    fn new(source: GaugeFn) -> RateView {
        let value = source();
        RateView {
            source,
            state: Mutex::new(RateState {
                at: Instant::now(),
                value,
                rate: 0.0,
            }),
        }
    }

    fn read(&self) -> f64 {
        let mut st = lock(&self.state);
        let elapsed = st.at.elapsed().as_secs_f64();
        if elapsed >= MIN_SPAN_SECS {
            let value = (self.source)();
            st.rate = ((value - st.value) / elapsed).max(0.0);
            st.value = value;
            st.at = Instant::now();
        }
        st.rate
    }
}

enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Fn(GaugeFn),
    Rate(RateView),
}

impl Metric {
    fn value(&self) -> f64 {
        match self {
            // A count beyond 2^53 loses precision in f64, as in Prometheus itself.
            Metric::Counter(c) => c.get() as f64,
            Metric::Gauge(g) => g.get(),
            Metric::Fn(f) => f(),
            Metric::Rate(r) => r.read(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One sample a collector produces: a name, variables beyond its group's, a value.
pub type CollectedSample = (String, Vec<(String, String)>, f64);

/// Produces a varying set of samples when read (one per RPC method, say).
pub type Collector = Arc<dyn Fn() -> Vec<CollectedSample> + Send + Sync>;

struct GroupInner {
    scope: String,
    variables: Vec<(String, String)>,
    metrics: Mutex<Vec<(String, Metric)>>,
    collectors: Mutex<Vec<Collector>>,
    registry: Weak<RegistryInner>,
}

/// A named set of metrics with a scope and variables. Dropping the last clone removes its
/// metrics from the registry. Flink: `MetricGroup` (`TaskMetricGroup`, `JobManagerMetricGroup`).
#[derive(Clone)]
pub struct MetricGroup {
    inner: Arc<GroupInner>,
}

impl std::fmt::Debug for MetricGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricGroup")
            .field("scope", &self.inner.scope)
            .field("variables", &self.inner.variables)
            .finish_non_exhaustive()
    }
}

impl MetricGroup {
    fn register(&self, name: &str, metric: Metric) {
        let mut metrics = lock(&self.inner.metrics);
        // Registering a name again replaces the metric (Flink warns and keeps the first; a
        // replaced value is what its owner means).
        metrics.retain(|(n, _)| n != name);
        metrics.push((name.to_string(), metric));
    }

    /// A new counter named `name`.
    pub fn counter(&self, name: &str) -> Counter {
        let counter = Counter::default();
        self.register(name, Metric::Counter(counter.clone()));
        counter
    }

    /// A new gauge named `name`.
    pub fn gauge(&self, name: &str) -> Gauge {
        let gauge = Gauge::default();
        self.register(name, Metric::Gauge(gauge.clone()));
        gauge
    }

    /// A gauge computed by `f` whenever it is read. `f` must be quick and never block.
    pub fn gauge_fn(&self, name: &str, f: impl Fn() -> f64 + Send + Sync + 'static) {
        self.register(name, Metric::Fn(Arc::new(f)));
    }

    /// The per-second rate of the growing value `source` (Flink's `MeterView`, e.g.
    /// `numRecordsInPerSecond` of `numRecordsIn`).
    pub fn rate(&self, name: &str, source: impl Fn() -> f64 + Send + Sync + 'static) {
        self.register(name, Metric::Rate(RateView::new(Arc::new(source))));
    }

    /// Registers a collector: metrics that vary in number (one per RPC method, per channel),
    /// each sample with its own extra variables. Exported by the registry (Prometheus), not
    /// part of [`dump`](Self::dump). `f` must be quick and never block.
    pub fn collector(&self, f: impl Fn() -> Vec<CollectedSample> + Send + Sync + 'static) {
        lock(&self.inner.collectors).push(Arc::new(f));
    }

    /// A child group: `component` is appended to the scope (`taskmanager` → `taskmanager_job`)
    /// and `variables` to the parent's. It lives as long as its own clones.
    pub fn child(&self, component: &str, variables: &[(&str, String)]) -> MetricGroup {
        let mut all = self.inner.variables.clone();
        for (k, v) in variables {
            all.retain(|(key, _)| key != k);
            all.push((k.to_string(), v.clone()));
        }
        let scope = if component.is_empty() {
            self.inner.scope.clone()
        } else {
            format!("{}_{component}", self.inner.scope)
        };
        match self.inner.registry.upgrade() {
            Some(registry) => RegistryInner::group(&registry, scope, all),
            None => MetricGroup {
                inner: Arc::new(GroupInner {
                    scope,
                    variables: all,
                    metrics: Mutex::new(Vec::new()),
                    collectors: Mutex::new(Vec::new()),
                    registry: Weak::new(),
                }),
            },
        }
    }

    /// The scope (`taskmanager_job_task`).
    pub fn scope(&self) -> &str {
        &self.inner.scope
    }

    /// The variables, in registration order.
    pub fn variables(&self) -> &[(String, String)] {
        &self.inner.variables
    }

    /// Every metric of this group with its value now, by name.
    pub fn dump(&self) -> Vec<(String, f64)> {
        lock(&self.inner.metrics)
            .iter()
            .map(|(name, metric)| (name.clone(), metric.value()))
            .collect()
    }

    /// One metric's value now.
    pub fn value(&self, name: &str) -> Option<f64> {
        lock(&self.inner.metrics)
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, metric)| metric.value())
    }
}

struct RegistryInner {
    groups: Mutex<Vec<Weak<GroupInner>>>,
}

impl RegistryInner {
    fn group(self: &Arc<Self>, scope: String, variables: Vec<(String, String)>) -> MetricGroup {
        let inner = Arc::new(GroupInner {
            scope,
            variables,
            metrics: Mutex::new(Vec::new()),
            collectors: Mutex::new(Vec::new()),
            registry: Arc::downgrade(self),
        });
        let mut groups = lock(&self.groups);
        groups.retain(|g| g.strong_count() > 0);
        groups.push(Arc::downgrade(&inner));
        MetricGroup { inner }
    }
}

/// One sample of [`MetricRegistry::samples`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSample {
    /// The group's scope (`taskmanager_job_task`).
    pub scope: String,
    /// The group's variables.
    pub variables: Vec<(String, String)>,
    /// The metric's name in its group (`numRecordsIn`, `buffers.inPoolUsage`).
    pub name: String,
    /// Its value now.
    pub value: f64,
}

/// The metrics of one process. Cheap to clone; clones share the groups.
#[derive(Clone)]
pub struct MetricRegistry {
    inner: Arc<RegistryInner>,
}

impl Default for MetricRegistry {
    fn default() -> Self {
        MetricRegistry::new()
    }
}

impl std::fmt::Debug for MetricRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricRegistry").finish_non_exhaustive()
    }
}

impl MetricRegistry {
    /// An empty registry.
    pub fn new() -> MetricRegistry {
        MetricRegistry {
            inner: Arc::new(RegistryInner {
                groups: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A root group (`jobmanager` or `taskmanager`) with its variables (`host`, `tm_id`).
    pub fn group(&self, scope: &str, variables: &[(&str, String)]) -> MetricGroup {
        RegistryInner::group(
            &self.inner,
            scope.to_string(),
            variables
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    }

    fn live_groups(&self) -> Vec<Arc<GroupInner>> {
        let mut groups = lock(&self.inner.groups);
        groups.retain(|g| g.strong_count() > 0);
        groups.iter().filter_map(Weak::upgrade).collect()
    }

    /// Every metric of every live group with its value now.
    pub fn samples(&self) -> Vec<MetricSample> {
        let mut out = Vec::new();
        for group in self.live_groups() {
            for (name, metric) in lock(&group.metrics).iter() {
                out.push(MetricSample {
                    scope: group.scope.clone(),
                    variables: group.variables.clone(),
                    name: name.clone(),
                    value: metric.value(),
                });
            }
            let collectors: Vec<Collector> = lock(&group.collectors).clone();
            for collect in collectors {
                for (name, extra, value) in collect() {
                    let mut variables = group.variables.clone();
                    variables.extend(extra);
                    out.push(MetricSample {
                        scope: group.scope.clone(),
                        variables,
                        name,
                        value,
                    });
                }
            }
        }
        out
    }

    /// The Prometheus text exposition (version 0.0.4) of every metric, in the style of Flink's
    /// `PrometheusReporter`.
    pub fn render_prometheus(&self) -> String {
        render_prometheus(&self.samples())
    }
}

/// The Prometheus name of `name` in `scope`: `flink_<scope>_<name>`, every character outside
/// `[a-zA-Z0-9_:]` replaced by `_` (Flink's `PrometheusReporter` replaces the same way).
pub fn prometheus_name(scope: &str, name: &str) -> String {
    let raw = format!("flink_{scope}_{name}");
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn escape_label_value(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn format_value(value: f64, out: &mut String) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else if value.fract() == 0.0 && value.abs() <= 9.3e18 {
        // Whole numbers as integers (a watermark of i64::MIN prints as Flink's Long.MIN_VALUE;
        // the cast saturates).
        let _ = write!(out, "{}", value as i64);
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Renders samples as Prometheus text: one `# HELP` and `# TYPE … gauge` per name, then its
/// samples (samples of one name are grouped, as the format requires).
pub fn render_prometheus(samples: &[MetricSample]) -> String {
    let mut by_name: BTreeMap<String, (String, Vec<&MetricSample>)> = BTreeMap::new();
    for sample in samples {
        let name = prometheus_name(&sample.scope, &sample.name);
        by_name
            .entry(name)
            .or_insert_with(|| {
                (
                    format!("{} (scope: {})", sample.name, sample.scope),
                    Vec::new(),
                )
            })
            .1
            .push(sample);
    }
    let mut out = String::new();
    for (name, (help, samples)) in by_name {
        let _ = writeln!(out, "# HELP {name} {}", help.replace('\n', " "));
        let _ = writeln!(out, "# TYPE {name} gauge");
        for sample in samples {
            out.push_str(&name);
            if !sample.variables.is_empty() {
                out.push('{');
                for (i, (k, v)) in sample.variables.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&label_name(k));
                    out.push_str("=\"");
                    escape_label_value(v, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            out.push(' ');
            format_value(sample.value, &mut out);
            out.push('\n');
        }
    }
    out
}

/// Picks metrics out of a dump for Flink's metrics endpoints: without `get`, the names
/// (`[{"id":..}]`); with `get=a,b`, those present with their values as strings.
pub fn select(dump: &[(String, f64)], get: Option<&str>) -> Vec<MetricEntry> {
    match get {
        None => {
            let mut names: Vec<&String> = dump.iter().map(|(n, _)| n).collect();
            names.sort();
            names.dedup();
            names
                .into_iter()
                .map(|n| MetricEntry {
                    id: n.clone(),
                    value: None,
                })
                .collect()
        }
        Some(get) => get
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .filter_map(|wanted| {
                dump.iter().find(|(n, _)| n == wanted).map(|(n, v)| {
                    let mut s = String::new();
                    format_value(*v, &mut s);
                    MetricEntry {
                        id: n.clone(),
                        value: Some(s),
                    }
                })
            })
            .collect(),
    }
}

/// One entry of Flink's metric list: `{"id":"numRecordsIn"}` or `{"id":..,"value":"12"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricEntry {
    /// The metric's name.
    pub id: String,
    /// Its value, as Flink sends it (a string), when asked for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub value: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_follow_flinks_reporter() {
        let registry = MetricRegistry::new();
        let tm = registry.group(
            "taskmanager",
            &[("host", "h1".into()), ("tm_id", "t".into())],
        );
        let task = tm.child(
            "job_task",
            &[("job_id", "j".into()), ("task_name", "Map \"x\"\n".into())],
        );
        task.counter("numRecordsIn").add(42);
        task.gauge("buffers.inPoolUsage").set(0.5);
        let text = registry.render_prometheus();
        assert!(text.contains("# TYPE flink_taskmanager_job_task_numRecordsIn gauge"));
        assert!(text.contains(
            "flink_taskmanager_job_task_numRecordsIn{host=\"h1\",tm_id=\"t\",job_id=\"j\",task_name=\"Map \\\"x\\\"\\n\"} 42"
        ));
        assert!(text.contains("flink_taskmanager_job_task_buffers_inPoolUsage{"));
        assert!(text.contains("} 0.5\n"));
    }

    #[test]
    fn a_dropped_group_disappears() {
        let registry = MetricRegistry::new();
        let group = registry.group("jobmanager", &[]);
        group.counter("a").inc();
        assert_eq!(registry.samples().len(), 1);
        drop(group);
        assert!(registry.samples().is_empty());
    }

    #[test]
    fn samples_of_one_name_are_grouped_under_one_type_line() {
        let registry = MetricRegistry::new();
        let root = registry.group("taskmanager", &[]);
        let a = root.child("job_task", &[("subtask_index", "0".into())]);
        let b = root.child("job_task", &[("subtask_index", "1".into())]);
        a.counter("numRecordsIn").add(1);
        root.gauge("other").set(1.0);
        b.counter("numRecordsIn").add(2);
        let text = registry.render_prometheus();
        assert_eq!(
            text.matches("# TYPE flink_taskmanager_job_task_numRecordsIn gauge")
                .count(),
            1
        );
        let lines: Vec<&str> = text.lines().collect();
        let first = lines
            .iter()
            .position(|l| l.starts_with("flink_taskmanager_job_task_numRecordsIn{"))
            .expect("sample");
        assert!(lines[first + 1].starts_with("flink_taskmanager_job_task_numRecordsIn{"));
    }

    #[test]
    fn a_rate_measures_growth_per_second() {
        let registry = MetricRegistry::new();
        let group = registry.group("taskmanager", &[]);
        let counter = group.counter("n");
        let source = counter.clone();
        group.rate("nPerSecond", move || source.get() as f64);
        assert_eq!(group.value("nPerSecond"), Some(0.0));
        counter.add(1000);
        // Within the minimum span the previous rate stands; the value is never negative.
        assert!(group.value("nPerSecond").is_some_and(|r| r >= 0.0));
    }

    #[test]
    fn collectors_add_samples_with_their_own_variables() {
        let registry = MetricRegistry::new();
        let group = registry.group("jobmanager", &[("host", "h".into())]);
        group.collector(|| {
            vec![
                (
                    "rpc.numCalls".into(),
                    vec![("method".into(), "A".into())],
                    1.0,
                ),
                (
                    "rpc.numCalls".into(),
                    vec![("method".into(), "B".into())],
                    2.0,
                ),
            ]
        });
        let text = registry.render_prometheus();
        assert!(text.contains("flink_jobmanager_rpc_numCalls{host=\"h\",method=\"A\"} 1\n"));
        assert!(text.contains("flink_jobmanager_rpc_numCalls{host=\"h\",method=\"B\"} 2\n"));
        assert!(group.dump().is_empty(), "collectors are not part of a dump");
    }

    #[test]
    fn select_lists_names_or_values() {
        let dump = vec![("b".to_string(), 2.0), ("a".to_string(), 1.5)];
        let names = select(&dump, None);
        assert_eq!(
            names.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let values = select(&dump, Some("b,missing,a"));
        assert_eq!(values.len(), 2);
        assert_eq!(values[0].value.as_deref(), Some("2"));
        assert_eq!(values[1].value.as_deref(), Some("1.5"));
        assert_eq!(
            serde_json::to_string(&names[0]).expect("json"),
            r#"{"id":"a"}"#
        );
    }

    #[test]
    fn values_render_as_prometheus_numbers() {
        let mut s = String::new();
        for v in [1.0, -2.0, 0.25, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            format_value(v, &mut s);
            s.push(' ');
        }
        assert_eq!(s, "1 -2 0.25 NaN +Inf -Inf ");
    }
}
