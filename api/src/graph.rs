//! The StreamGraph (operators and edges as the user built them) and the JobPlan (operators fused
//! into chains), as Flink's `StreamGraph` and `StreamingJobGraphGenerator`.
//!
//! # Chaining rule (Flink's `isChainable`)
//! An edge `up -> down` is chained when all of these hold:
//! - `down` has exactly one input edge;
//! - chaining is enabled in the environment;
//! - the partitioner is [`Partitioner::Forward`];
//! - both nodes have the same parallelism and the same max parallelism;
//! - `up` is not [`ChainingStrategy::Never`] and `down` is neither `Never` nor `Head`.
//!
//! Sources are `Head`. A chain is a tree rooted at its head; its nodes are listed head first,
//! then by id.
//!
//! # Plan numbering
//! Nodes are numbered from 0 in creation order, which is a topological order (a node's inputs
//! exist before it). Vertices are ordered by their head node, so sources come first and every
//! edge goes from a lower to a higher vertex. Plan edges are numbered by walking the vertices in
//! order and each vertex's inputs in input order, so a vertex's input edges are contiguous.

use std::collections::BTreeMap;
use std::fmt;

use crate::hash::{Fnv128, UPPER_BOUND_MAX_PARALLELISM};
use crate::operators::{FanOutFn, NetworkOutputBuilder, NodeLogic};
use crate::JobError;

/// How records of an edge are distributed over the consumer's subtasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partitioner {
    /// Subtask `i` sends to subtask `i` (equal parallelism only); one subpartition.
    Forward,
    /// Round robin over all consumer subtasks, starting at the producer's subtask index.
    Rebalance,
    /// By key group of the record's key (see [`crate::assign_key_to_subtask`]).
    Hash,
    /// Every record to every consumer subtask.
    Broadcast,
    /// A pseudo-random consumer subtask per record (seeded by the producer's subtask index).
    Shuffle,
}

impl Partitioner {
    /// Flink's display name (`FORWARD`, `REBALANCE`, `HASH`, `BROADCAST`, `SHUFFLE`).
    pub fn name(self) -> &'static str {
        match self {
            Partitioner::Forward => "FORWARD",
            Partitioner::Rebalance => "REBALANCE",
            Partitioner::Hash => "HASH",
            Partitioner::Broadcast => "BROADCAST",
            Partitioner::Shuffle => "SHUFFLE",
        }
    }
}

impl fmt::Display for Partitioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a node may be chained to its neighbours (Flink's `ChainingStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainingStrategy {
    /// Chains with its input and outputs where the rule allows.
    Always,
    /// Never chained, neither to its input nor to its outputs (`disable_chaining`).
    Never,
    /// Starts a new chain but lets its outputs chain to it (`start_new_chain`; sources).
    Head,
}

/// What a node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// A source.
    Source,
    /// `map`.
    Map,
    /// `flat_map`.
    FlatMap,
    /// `filter`.
    Filter,
    /// Keyed `reduce`.
    Reduce,
    /// Keyed `sum`.
    Sum,
    /// Keyed `process`.
    Process,
    /// A sink.
    Sink,
    /// `assign_timestamps_and_watermarks`.
    TimestampsAndWatermarks,
    /// A window operator (`window(..)` followed by its function).
    Window,
}

impl NodeKind {
    /// A stable lowercase name, used in fingerprints.
    pub fn name(self) -> &'static str {
        match self {
            NodeKind::Source => "source",
            NodeKind::Map => "map",
            NodeKind::FlatMap => "flat_map",
            NodeKind::Filter => "filter",
            NodeKind::Reduce => "reduce",
            NodeKind::Sum => "sum",
            NodeKind::Process => "process",
            NodeKind::Sink => "sink",
            NodeKind::TimestampsAndWatermarks => "timestamps_watermarks",
            NodeKind::Window => "window",
        }
    }

    /// True for operators that make or use time (timestamps and watermarks then flow).
    pub fn uses_time(self) -> bool {
        matches!(self, NodeKind::TimestampsAndWatermarks | NodeKind::Window)
    }
}

/// Streaming or batch execution (Flink's `execution.runtime-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RuntimeMode {
    /// Keyed aggregations emit an updated value on every record.
    Streaming,
    /// Keyed aggregations emit one final value per key at end of input; every source must be
    /// bounded.
    Batch,
    /// `Batch` when every source is bounded, else `Streaming`.
    #[default]
    Automatic,
}

impl RuntimeMode {
    /// Flink's name (`STREAMING`, `BATCH`, `AUTOMATIC`).
    pub fn name(self) -> &'static str {
        match self {
            RuntimeMode::Streaming => "STREAMING",
            RuntimeMode::Batch => "BATCH",
            RuntimeMode::Automatic => "AUTOMATIC",
        }
    }
}

/// One operator of a [`StreamGraph`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamNode {
    /// The node id, from 0 in creation order.
    pub id: u32,
    /// The display name (`"Map"`, `"Source: Collection Source"`, or as set with `.name(..)`).
    pub name: String,
    /// The user-set uid, if any.
    pub uid: Option<String>,
    /// What the node does.
    pub kind: NodeKind,
    /// Parallelism (resolved: the node's own or the environment's).
    pub parallelism: u32,
    /// Max parallelism (resolved).
    pub max_parallelism: u32,
    /// The chaining strategy.
    pub chaining_strategy: ChainingStrategy,
    /// For sources: whether the source is bounded. `None` for other nodes.
    pub bounded: Option<bool>,
    /// The input element type (`std::any::type_name`), `None` for sources.
    pub input_type: Option<&'static str>,
    /// The output element type (`std::any::type_name`); `()` for sinks.
    pub output_type: &'static str,
}

/// An edge of a [`StreamGraph`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEdge {
    /// The producing node.
    pub source: u32,
    /// The consuming node.
    pub target: u32,
    /// How records are distributed.
    pub partitioner: Partitioner,
    /// The position of this edge among the target's inputs.
    pub input_index: u32,
}

/// A job as the runtime deploys it: chains fused into vertices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPlan {
    /// The job's name.
    pub job_name: String,
    /// A stable hash (32 hex digits) of everything structural in the graph.
    pub fingerprint: String,
    /// Vertices in topological order (sources first).
    pub vertices: Vec<PlanVertex>,
    /// Edges between vertices, grouped by target vertex.
    pub edges: Vec<PlanEdge>,
    /// True when every source is bounded.
    pub bounded: bool,
}

/// One vertex (operator chain) of a [`JobPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanVertex {
    /// The chain's node names joined with `" -> "`, as Flink names chains.
    pub name: String,
    /// The chain's parallelism.
    pub parallelism: u32,
    /// The chain's max parallelism.
    pub max_parallelism: u32,
    /// The chain's node ids, head first.
    pub nodes: Vec<u32>,
    /// Indices into [`JobPlan::edges`] of the input edges, in input order.
    pub inputs: Vec<usize>,
    /// Indices into [`JobPlan::edges`] of the output edges, increasing.
    pub outputs: Vec<usize>,
    /// True when the head is a source.
    pub is_source: bool,
}

/// An edge between two vertices of a [`JobPlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanEdge {
    /// The producing vertex.
    pub source_vertex: usize,
    /// The consuming vertex.
    pub target_vertex: usize,
    /// The producing node (inside the source vertex's chain).
    pub source_node: u32,
    /// The consuming node (the target vertex's head).
    pub target_node: u32,
    /// How records are distributed.
    pub partitioner: Partitioner,
}

/// The type-erased logic of a node: how to build its operator for a subtask.
#[derive(Clone)]
pub(crate) struct NodeImpl {
    pub(crate) logic: NodeLogic,
    pub(crate) fan_out: FanOutFn,
}

/// The operators and edges of a job, with the closures that instantiate them.
///
/// Built by [`crate::StreamExecutionEnvironment::stream_graph`]; immutable afterwards. It is
/// `Send + Sync`, and [`StreamGraph::instantiate`] may be called any number of times (once per
/// subtask).
#[derive(Clone)]
pub struct StreamGraph {
    pub(crate) job_name: String,
    pub(crate) runtime_mode: RuntimeMode,
    pub(crate) job_config: BTreeMap<String, String>,
    pub(crate) batch_emission: bool,
    pub(crate) chaining_enabled: bool,
    pub(crate) nodes: Vec<StreamNode>,
    pub(crate) edges: Vec<StreamEdge>,
    pub(crate) impls: Vec<NodeImpl>,
    pub(crate) edge_outputs: Vec<NetworkOutputBuilder>,
    pub(crate) plan: JobPlan,
    /// Stream edge index → plan edge index; `None` for chained edges.
    pub(crate) edge_to_plan: Vec<Option<usize>>,
    /// Some operator makes or uses time: records carry timestamps between tasks and
    /// watermarks flow.
    pub(crate) uses_time: bool,
    /// `pipeline.auto-watermark-interval` in milliseconds.
    pub(crate) auto_watermark_interval: i64,
    /// Per edge: the side output it carries, if any.
    pub(crate) edge_sides: Vec<Option<crate::env::SideOutput>>,
}

impl fmt::Debug for StreamGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamGraph")
            .field("job_name", &self.job_name)
            .field("runtime_mode", &self.runtime_mode)
            .field("nodes", &self.nodes)
            .field("edges", &self.edges)
            .finish_non_exhaustive()
    }
}

/// Everything the environment collected, before validation.
pub(crate) struct GraphParts {
    pub(crate) job_name: String,
    pub(crate) runtime_mode: RuntimeMode,
    pub(crate) job_config: BTreeMap<String, String>,
    pub(crate) chaining_enabled: bool,
    pub(crate) nodes: Vec<StreamNode>,
    pub(crate) edges: Vec<StreamEdge>,
    pub(crate) impls: Vec<NodeImpl>,
    pub(crate) edge_outputs: Vec<NetworkOutputBuilder>,
    /// Edges whose partitioner was asked for explicitly (`forward()`), for validation.
    pub(crate) explicit_forward: Vec<bool>,
    /// Per edge: the side output it carries, if any.
    pub(crate) edge_sides: Vec<Option<crate::env::SideOutput>>,
}

impl StreamGraph {
    /// Validates `parts` and computes the plan.
    pub(crate) fn new(parts: GraphParts) -> Result<StreamGraph, JobError> {
        let GraphParts {
            job_name,
            runtime_mode,
            job_config,
            chaining_enabled,
            nodes,
            edges,
            impls,
            edge_outputs,
            explicit_forward,
            edge_sides,
        } = parts;
        if nodes.is_empty() {
            return Err(JobError::InvalidGraph(
                "no operators defined in the job; cannot execute".into(),
            ));
        }
        for node in &nodes {
            if node.parallelism == 0 {
                return Err(JobError::InvalidGraph(format!(
                    "operator {:?} has parallelism 0; it must be at least 1",
                    node.name
                )));
            }
            if node.max_parallelism == 0 || node.max_parallelism > UPPER_BOUND_MAX_PARALLELISM {
                return Err(JobError::InvalidGraph(format!(
                    "operator {:?} has max parallelism {}; it must be in 1..={UPPER_BOUND_MAX_PARALLELISM}",
                    node.name, node.max_parallelism
                )));
            }
            if node.parallelism > node.max_parallelism {
                return Err(JobError::InvalidGraph(format!(
                    "operator {:?} has parallelism {} above its max parallelism {}",
                    node.name, node.parallelism, node.max_parallelism
                )));
            }
        }
        for (i, edge) in edges.iter().enumerate() {
            let (up, down) = (&nodes[edge.source as usize], &nodes[edge.target as usize]);
            if edge.partitioner == Partitioner::Forward && up.parallelism != down.parallelism {
                let why = if explicit_forward.get(i).copied().unwrap_or(false) {
                    "forward partitioning does not allow a change of parallelism"
                } else {
                    "forward edge between different parallelisms"
                };
                return Err(JobError::InvalidGraph(format!(
                    "{why}: upstream {:?} has parallelism {}, downstream {:?} has parallelism {}; \
                     use another partitioning (rebalance, shuffle, ...)",
                    up.name, up.parallelism, down.name, down.parallelism
                )));
            }
        }
        let bounded = nodes
            .iter()
            .filter_map(|n| n.bounded)
            .all(|bounded| bounded);
        if runtime_mode == RuntimeMode::Batch && !bounded {
            return Err(JobError::InvalidGraph(
                "an unbounded source is used with runtime mode BATCH".into(),
            ));
        }
        let batch_emission = match runtime_mode {
            RuntimeMode::Batch => true,
            RuntimeMode::Streaming => false,
            RuntimeMode::Automatic => bounded,
        };
        let uses_time = nodes.iter().any(|n| n.kind.uses_time());
        let auto_watermark_interval = match job_config.get(crate::time::AUTO_WATERMARK_INTERVAL_KEY)
        {
            None => crate::time::DEFAULT_AUTO_WATERMARK_INTERVAL_MS,
            Some(value) => crate::time::parse_millis(value).map_err(|e| {
                JobError::InvalidGraph(format!("{}: {e}", crate::time::AUTO_WATERMARK_INTERVAL_KEY))
            })?,
        };
        let mut graph = StreamGraph {
            uses_time,
            auto_watermark_interval,
            edge_sides,
            job_name,
            runtime_mode,
            job_config,
            batch_emission,
            chaining_enabled,
            nodes,
            edges,
            impls,
            edge_outputs,
            plan: JobPlan {
                job_name: String::new(),
                fingerprint: String::new(),
                vertices: Vec::new(),
                edges: Vec::new(),
                bounded,
            },
            edge_to_plan: Vec::new(),
        };
        graph.compute_plan();
        Ok(graph)
    }

    /// The job's name.
    pub fn job_name(&self) -> &str {
        &self.job_name
    }

    /// The runtime mode as set.
    pub fn runtime_mode(&self) -> RuntimeMode {
        self.runtime_mode
    }

    /// The job-level configuration set with
    /// [`crate::StreamExecutionEnvironment::configure`] and
    /// [`crate::StreamExecutionEnvironment::enable_checkpointing`]. Not part of the fingerprint.
    pub fn job_config(&self) -> &BTreeMap<String, String> {
        &self.job_config
    }

    /// True when keyed aggregations emit once per key at end of input (mode `Batch`, or
    /// `Automatic` with only bounded sources).
    pub fn batch_emission(&self) -> bool {
        self.batch_emission
    }

    /// True when every source is bounded.
    pub fn is_bounded(&self) -> bool {
        self.plan.bounded
    }

    /// The nodes, by id.
    pub fn nodes(&self) -> &[StreamNode] {
        &self.nodes
    }

    /// The edges, in creation order.
    pub fn edges(&self) -> &[StreamEdge] {
        &self.edges
    }

    /// True when an operator makes or uses time (a timestamp assigner, a window): records then
    /// carry timestamps between tasks and watermarks flow.
    pub fn uses_time(&self) -> bool {
        self.uses_time
    }

    /// The graph's fingerprint (same as [`JobPlan::fingerprint`]).
    pub fn fingerprint(&self) -> &str {
        &self.plan.fingerprint
    }

    /// The job plan: chains fused into vertices.
    pub fn plan(&self) -> JobPlan {
        self.plan.clone()
    }

    /// A reference to the job plan.
    pub fn plan_ref(&self) -> &JobPlan {
        &self.plan
    }

    /// True when the edge `index` of [`StreamGraph::edges`] is chained.
    pub fn is_chained(&self, index: usize) -> bool {
        matches!(self.edge_to_plan.get(index), Some(None))
    }

    fn in_edges(&self, node: u32) -> Vec<usize> {
        let mut ins: Vec<usize> = (0..self.edges.len())
            .filter(|&e| self.edges[e].target == node)
            .collect();
        ins.sort_by_key(|&e| self.edges[e].input_index);
        ins
    }

    /// Stream edge indices leaving `node`, in creation order.
    pub(crate) fn out_edges(&self, node: u32) -> Vec<usize> {
        (0..self.edges.len())
            .filter(|&e| self.edges[e].source == node)
            .collect()
    }

    fn is_chainable(&self, edge: &StreamEdge, inputs_of_target: usize) -> bool {
        let up = &self.nodes[edge.source as usize];
        let down = &self.nodes[edge.target as usize];
        inputs_of_target == 1
            && self.chaining_enabled
            && edge.partitioner == Partitioner::Forward
            && up.parallelism == down.parallelism
            && up.max_parallelism == down.max_parallelism
            && up.chaining_strategy != ChainingStrategy::Never
            && down.chaining_strategy == ChainingStrategy::Always
    }

    fn compute_plan(&mut self) {
        let mut vertex_of: Vec<usize> = Vec::with_capacity(self.nodes.len());
        let mut vertices: Vec<PlanVertex> = Vec::new();
        for id in 0..self.nodes.len() {
            let ins = self.in_edges(id as u32);
            let chained_to = match ins.as_slice() {
                [e] if self.is_chainable(&self.edges[*e], 1) => {
                    Some(vertex_of[self.edges[*e].source as usize])
                }
                _ => None,
            };
            let node = &self.nodes[id];
            match chained_to {
                Some(v) => {
                    vertex_of.push(v);
                    vertices[v].nodes.push(id as u32);
                    vertices[v].name.push_str(" -> ");
                    vertices[v].name.push_str(&node.name);
                }
                None => {
                    vertex_of.push(vertices.len());
                    vertices.push(PlanVertex {
                        name: node.name.clone(),
                        parallelism: node.parallelism,
                        max_parallelism: node.max_parallelism,
                        nodes: vec![id as u32],
                        inputs: Vec::new(),
                        outputs: Vec::new(),
                        is_source: node.kind == NodeKind::Source,
                    });
                }
            }
        }
        let mut plan_edges: Vec<PlanEdge> = Vec::new();
        let mut edge_to_plan: Vec<Option<usize>> = vec![None; self.edges.len()];
        for v in 0..vertices.len() {
            let head = vertices[v].nodes[0];
            for e in self.in_edges(head) {
                let edge = self.edges[e];
                let index = plan_edges.len();
                let source_vertex = vertex_of[edge.source as usize];
                plan_edges.push(PlanEdge {
                    source_vertex,
                    target_vertex: v,
                    source_node: edge.source,
                    target_node: edge.target,
                    partitioner: edge.partitioner,
                });
                edge_to_plan[e] = Some(index);
                vertices[v].inputs.push(index);
                vertices[source_vertex].outputs.push(index);
            }
        }
        for vertex in &mut vertices {
            vertex.outputs.sort_unstable();
        }
        self.plan.job_name = self.job_name.clone();
        self.plan.vertices = vertices;
        self.plan.edges = plan_edges;
        self.edge_to_plan = edge_to_plan;
        self.plan.fingerprint = self.compute_fingerprint();
    }

    fn compute_fingerprint(&self) -> String {
        let mut h = Fnv128::default();
        h.str("rflink-plan-v1")
            .str(&self.job_name)
            .str(self.runtime_mode.name())
            .u64(u64::from(self.batch_emission))
            .u64(u64::from(self.chaining_enabled))
            .u64(self.nodes.len() as u64);
        for node in &self.nodes {
            h.u64(u64::from(node.id))
                .str(&node.name)
                .str(node.uid.as_deref().unwrap_or(""))
                .str(node.kind.name())
                .u64(u64::from(node.parallelism))
                .u64(u64::from(node.max_parallelism))
                .str(match node.chaining_strategy {
                    ChainingStrategy::Always => "always",
                    ChainingStrategy::Never => "never",
                    ChainingStrategy::Head => "head",
                })
                .u64(match node.bounded {
                    None => 0,
                    Some(false) => 1,
                    Some(true) => 2,
                })
                .str(node.input_type.unwrap_or(""))
                .str(node.output_type);
        }
        h.u64(self.edges.len() as u64);
        for edge in &self.edges {
            h.u64(u64::from(edge.source))
                .u64(u64::from(edge.target))
                .str(edge.partitioner.name())
                .u64(u64::from(edge.input_index));
        }
        for side in &self.edge_sides {
            h.str(side.as_ref().map_or("", |s| s.tag.as_str()));
        }
        h.u64(self.plan.vertices.len() as u64);
        for vertex in &self.plan.vertices {
            h.u64(vertex.nodes.len() as u64);
            for &n in &vertex.nodes {
                h.u64(u64::from(n));
            }
        }
        h.hex()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobArgs, JobRegistry, StreamExecutionEnvironment};

    fn vertex_nodes(plan: &JobPlan) -> Vec<Vec<u32>> {
        plan.vertices.iter().map(|v| v.nodes.clone()).collect()
    }

    #[test]
    fn source_map_filter_sink_form_one_chain() {
        let mut env = StreamExecutionEnvironment::new();
        env.set_parallelism(2);
        env.from_collection(vec![1u32, 2, 3])
            .map(|x| x + 1)
            .filter(|x| x % 2 == 0)
            .collect("graph-chain");
        let graph = env.stream_graph().unwrap();
        let plan = graph.plan();
        assert_eq!(vertex_nodes(&plan), vec![vec![0, 1, 2, 3]]);
        assert_eq!(
            plan.vertices[0].name,
            "Source: Collection Source -> Map -> Filter -> Sink: Collect graph-chain"
        );
        assert!(plan.vertices[0].is_source);
        assert_eq!(plan.vertices[0].parallelism, 2);
        assert_eq!(plan.vertices[0].max_parallelism, 128);
        assert!(plan.edges.is_empty());
        assert!(plan.bounded);
        assert!(graph.batch_emission());
        assert!((0..3).all(|e| graph.is_chained(e)));
        assert_eq!(graph.nodes()[1].input_type, Some("u32"));
        assert_eq!(graph.nodes()[3].output_type, "()");
    }

    #[test]
    fn key_by_and_parallelism_changes_split_chains() {
        let mut env = StreamExecutionEnvironment::new();
        env.set_parallelism(2);
        env.from_collection(vec![(String::from("a"), 1u64)])
            .key_by(|t: &(String, u64)| t.0.clone())
            .sum(|t: &mut (String, u64)| &mut t.1)
            .map(|t| t.1)
            .set_parallelism(3)
            .collect("graph-split")
            .set_parallelism(3);
        let graph = env.stream_graph().unwrap();
        let plan = graph.plan();
        assert_eq!(vertex_nodes(&plan), vec![vec![0], vec![1], vec![2, 3]]);
        assert_eq!(
            graph.edges()[0].partitioner,
            Partitioner::Hash,
            "key_by edges hash"
        );
        assert_eq!(graph.edges()[1].partitioner, Partitioner::Rebalance);
        assert_eq!(graph.edges()[2].partitioner, Partitioner::Forward);
        assert_eq!(plan.edges.len(), 2);
        assert_eq!(
            plan.edges[0],
            PlanEdge {
                source_vertex: 0,
                target_vertex: 1,
                source_node: 0,
                target_node: 1,
                partitioner: Partitioner::Hash
            }
        );
        assert_eq!(plan.edges[1].partitioner, Partitioner::Rebalance);
        assert_eq!(plan.vertices[1].inputs, vec![0]);
        assert_eq!(plan.vertices[1].outputs, vec![1]);
        assert_eq!(plan.vertices[2].parallelism, 3);
        assert_eq!(plan.vertices[1].name, "Keyed Aggregation");
    }

    #[test]
    fn chaining_strategies_and_env_switch() {
        let build = |disable_env: bool, f: fn(crate::DataStream<u32>) -> crate::DataStream<u32>| {
            let mut env = StreamExecutionEnvironment::new();
            if disable_env {
                env.disable_operator_chaining();
            }
            let mapped = f(env.from_collection(vec![1u32]).map(|x| x));
            mapped.filter(|_| true).collect("graph-strategies");
            vertex_nodes(&env.stream_graph().unwrap().plan())
        };
        assert_eq!(build(false, |s| s), vec![vec![0, 1, 2, 3]]);
        assert_eq!(build(true, |s| s), vec![vec![0], vec![1], vec![2], vec![3]]);
        assert_eq!(
            build(false, |s| s.disable_chaining()),
            vec![vec![0], vec![1], vec![2, 3]]
        );
        assert_eq!(
            build(false, |s| s.start_new_chain()),
            vec![vec![0], vec![1, 2, 3]]
        );
        // Different max parallelism also prevents chaining.
        assert_eq!(
            build(false, |s| s.set_max_parallelism(64)),
            vec![vec![0], vec![1], vec![2, 3]]
        );
        assert_eq!(
            build(false, |s| s.rebalance()),
            vec![vec![0, 1], vec![2, 3]]
        );
    }

    #[test]
    fn union_makes_a_multi_input_vertex() {
        let mut env = StreamExecutionEnvironment::new();
        let a = env.from_collection(vec![1u64]);
        let b = env.generate_sequence(1, 10).map(|x| x * 3);
        let c = env.from_collection(vec![5u64]).rebalance();
        a.union(&[b, c]).map(|x| x * 2).collect("graph-union");
        let graph = env.stream_graph().unwrap();
        let plan = graph.plan();
        // Nodes: 0 a, 1 seq, 2 map(seq), 3 c, 4 map(union), 5 sink.
        assert_eq!(
            vertex_nodes(&plan),
            vec![vec![0], vec![1, 2], vec![3], vec![4, 5]]
        );
        assert_eq!(plan.vertices[3].inputs, vec![0, 1, 2]);
        let sources: Vec<u32> = plan.edges.iter().map(|e| e.source_node).collect();
        assert_eq!(sources, vec![0, 2, 3]);
        let partitioners: Vec<Partitioner> = plan.edges.iter().map(|e| e.partitioner).collect();
        assert_eq!(
            partitioners,
            vec![
                Partitioner::Forward,
                Partitioner::Forward,
                Partitioner::Rebalance
            ]
        );
        assert_eq!(plan.vertices[0].outputs, vec![0]);
        assert_eq!(plan.vertices[1].outputs, vec![1]);
        let inputs: Vec<u32> = graph
            .edges()
            .iter()
            .filter(|e| e.target == 4)
            .map(|e| e.input_index)
            .collect();
        assert_eq!(inputs, vec![0, 1, 2]);
    }

    #[test]
    fn edges_are_numbered_by_target_vertex_then_input_order() {
        let mut env = StreamExecutionEnvironment::new();
        env.disable_operator_chaining();
        let src = env.from_collection(vec![1u32]);
        let left = src.map(|x| x);
        let right = src.map(|x| x + 1);
        right.union(&[left]).collect("graph-numbering");
        let plan = env.stream_graph().unwrap().plan();
        // Vertices: 0 src, 1 left, 2 right, 3 sink.
        let pairs: Vec<(usize, usize)> = plan
            .edges
            .iter()
            .map(|e| (e.source_vertex, e.target_vertex))
            .collect();
        assert_eq!(pairs, vec![(0, 1), (0, 2), (2, 3), (1, 3)]);
        assert_eq!(plan.vertices[0].outputs, vec![0, 1]);
        assert_eq!(plan.vertices[3].inputs, vec![2, 3]);
        for (i, edge) in plan.edges.iter().enumerate() {
            assert!(edge.source_vertex < edge.target_vertex);
            assert!(plan.vertices[edge.source_vertex].outputs.contains(&i));
        }
    }

    fn word_count(env: &mut StreamExecutionEnvironment, args: &JobArgs) -> Result<(), JobError> {
        env.set_parallelism(args.parse_or("parallelism", 2)?);
        let name = args.get("name").unwrap_or("Tokenizer").to_owned();
        let words = env
            .from_collection(vec![String::from("a b")])
            .flat_map(|line: String, out| {
                for w in line.split(' ') {
                    out.collect((w.to_owned(), 1u64));
                }
            })
            .name(&name);
        let words = if args.has("rebalance") {
            words.rebalance()
        } else {
            words
        };
        words
            .key_by(|t: &(String, u64)| t.0.clone())
            .sum(|t: &mut (String, u64)| &mut t.1)
            .collect("graph-fingerprint");
        Ok(())
    }

    #[test]
    fn fingerprint_is_stable_and_structural() {
        let mut registry = JobRegistry::new();
        registry.register("wc", "word count", word_count);
        let fp = |args: &[&str]| {
            registry
                .build("wc", &JobArgs::from_strs(args))
                .unwrap()
                .fingerprint()
                .to_owned()
        };
        let base = fp(&[]);
        assert_eq!(base.len(), 32);
        assert_eq!(base, fp(&[]));
        assert_eq!(base, fp(&["--parallelism", "2"]));
        assert_ne!(base, fp(&["--parallelism", "3"]));
        assert_ne!(base, fp(&["--name", "Splitter"]));
        // A rebalance before key_by changes nothing (key_by wins): same structure.
        assert_eq!(base, fp(&["--rebalance"]));
        let mut env = StreamExecutionEnvironment::new();
        word_count(&mut env, &JobArgs::default()).unwrap();
        env.set_runtime_mode(RuntimeMode::Streaming);
        assert_ne!(base, env.stream_graph().unwrap().fingerprint());
        let mut env = StreamExecutionEnvironment::new();
        word_count(&mut env, &JobArgs::default()).unwrap();
        env.disable_operator_chaining();
        let unchained = env.stream_graph().unwrap();
        assert_ne!(base, unchained.fingerprint());
        assert_eq!(unchained.plan().fingerprint, unchained.fingerprint());
        // The job configuration is not structural.
        let mut env = StreamExecutionEnvironment::new();
        word_count(&mut env, &JobArgs::default()).unwrap();
        let plain = env.stream_graph().unwrap();
        assert!(plain.job_config().is_empty());
        env.enable_checkpointing(std::time::Duration::from_millis(1500))
            .configure("restart-strategy.type", "fixed-delay");
        let configured = env.stream_graph().unwrap();
        assert_eq!(plain.fingerprint(), configured.fingerprint());
        let config: Vec<(&str, &str)> = configured
            .job_config()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            config,
            vec![
                ("execution.checkpointing.interval", "1500 ms"),
                ("restart-strategy.type", "fixed-delay")
            ]
        );
    }

    #[test]
    fn fingerprint_changes_with_partitioner() {
        let build = |broadcast: bool| {
            let mut env = StreamExecutionEnvironment::new();
            env.set_parallelism(2);
            let s = env.from_collection(vec![1u8]);
            let s = if broadcast {
                s.broadcast()
            } else {
                s.rebalance()
            };
            s.collect("graph-partitioner");
            env.stream_graph().unwrap().fingerprint().to_owned()
        };
        assert_ne!(build(true), build(false));
    }

    #[test]
    fn invalid_graphs_are_rejected() {
        let mut env = StreamExecutionEnvironment::new();
        assert!(matches!(env.stream_graph(), Err(JobError::InvalidGraph(_))));

        env.from_collection(vec![1u8])
            .forward()
            .map(|x| x)
            .set_parallelism(2)
            .collect("graph-invalid");
        let err = env.stream_graph().unwrap_err();
        assert!(err.to_string().contains("forward partitioning"), "{err}");

        let mut env = StreamExecutionEnvironment::new();
        env.socket_text_stream("localhost", 9)
            .set_parallelism(2)
            .collect("graph-invalid");
        assert!(env
            .stream_graph()
            .unwrap_err()
            .to_string()
            .contains("non-parallel"));

        let mut env = StreamExecutionEnvironment::new();
        env.set_parallelism(4);
        env.set_runtime_mode(RuntimeMode::Batch);
        let socket = env.socket_text_stream("localhost", 9);
        assert_eq!(socket.node_id(), Some(0));
        socket.collect("graph-invalid");
        let graph_err = env.stream_graph().unwrap_err();
        assert!(graph_err.to_string().contains("BATCH"), "{graph_err}");
        env.set_runtime_mode(RuntimeMode::Automatic);
        let graph = env.stream_graph().unwrap();
        assert!(!graph.is_bounded());
        assert!(!graph.batch_emission());
        assert_eq!(graph.nodes()[0].parallelism, 1);
        assert_eq!(graph.nodes()[1].parallelism, 4);

        let mut env = StreamExecutionEnvironment::new();
        let a = env.from_collection(vec![1u8]);
        a.union(std::slice::from_ref(&a))
            .name("x")
            .collect("graph-invalid");
        assert!(env
            .stream_graph()
            .unwrap_err()
            .to_string()
            .contains("union"));

        let mut env = StreamExecutionEnvironment::new();
        env.from_collection(vec![1u8]).set_parallelism(0);
        assert!(env.stream_graph().is_err());
        let mut env = StreamExecutionEnvironment::new();
        env.set_max_parallelism(4);
        env.from_collection(vec![1u8]).set_parallelism(8);
        assert!(env
            .stream_graph()
            .unwrap_err()
            .to_string()
            .contains("max parallelism"));
    }

    #[test]
    fn registry_reports_unknown_and_duplicate_jobs() {
        let mut registry = JobRegistry::new();
        registry
            .try_register("wc", "word count", word_count)
            .unwrap();
        registry.register("b", "first", word_count);
        registry.register("b", "other", word_count);
        assert!(matches!(
            registry.try_register("wc", "again", word_count),
            Err(JobError::DuplicateJob(_))
        ));
        assert_eq!(
            registry.get("b").map(|e| e.description.as_str()),
            Some("other")
        );
        assert_eq!(registry.names(), vec!["b", "wc"]);
        assert_eq!(
            registry.get("wc").map(|e| e.description.as_str()),
            Some("word count")
        );
        let err = registry.build("nope", &JobArgs::default()).unwrap_err();
        assert_eq!(err.to_string(), "unknown job \"nope\"; known jobs: b, wc");
        let graph = registry.build("wc", &JobArgs::default()).unwrap();
        assert_eq!(graph.job_name(), "wc");
        assert_eq!(graph.plan().job_name, "wc");
        let err = registry
            .build("wc", &JobArgs::from_strs(&["--parallelism", "x"]))
            .unwrap_err();
        assert!(matches!(err, JobError::BadArgument { .. }));
    }

    #[test]
    fn default_max_parallelism_follows_flink() {
        let mut env = StreamExecutionEnvironment::new();
        env.set_parallelism(100);
        env.from_collection(vec![1u8]).collect("graph-maxp");
        assert_eq!(env.max_parallelism(), 256);
        assert_eq!(env.stream_graph().unwrap().nodes()[0].max_parallelism, 256);
    }
}
