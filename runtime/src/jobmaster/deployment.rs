//! Which results each subtask produces and where each of its input channels reads from: the
//! data-plane part of a TaskDeploymentDescriptor. Flink: `TaskDeploymentDescriptorFactory`
//! with its `ResultPartitionDeploymentDescriptor`s and `InputGateDeploymentDescriptor`s.
//!
//! Scheduling is eager (every slot is assigned before anything is deployed), so every producer's
//! location is known when its consumers are deployed and no channel is left "unknown" (Flink's
//! `UnknownInputChannel`). A consumer may still ask before its producer has registered the
//! partition; the network layer retries that with backoff.
//!
//! Result numbering: a producer's results are its outgoing edges in the order of (consuming
//! vertex, input position), the same order the DataStream API's plan uses for a vertex's outputs.

use crate::jobgraph::{JobGraph, ShipStrategy};
use crate::taskexecutor::{
    InputGateDeploymentDescriptor, ResultPartitionDeploymentDescriptor, ShuffleDescriptor,
};
use crate::types::{ExecutionAttemptId, ResourceId};

/// Where one subtask runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Its attempt.
    pub attempt: ExecutionAttemptId,
    /// Its TaskExecutor.
    pub resource_id: ResourceId,
    /// That TaskExecutor's data server, `host:port`.
    pub data_address: String,
}

/// The produced partitions and input gates of subtask `subtask` of vertex `vertex` (an index
/// into `graph.vertices`). `place(vertex, subtask)` tells where each subtask runs; a subtask it
/// cannot place makes the whole call fail with its name.
pub fn shuffle_descriptors<'a>(
    graph: &JobGraph,
    vertex: usize,
    subtask: u32,
    place: &dyn Fn(usize, u32) -> Option<&'a Placement>,
) -> Result<
    (
        Vec<ResultPartitionDeploymentDescriptor>,
        Vec<InputGateDeploymentDescriptor>,
    ),
    String,
> {
    let me = place(vertex, subtask).ok_or_else(|| unplaced(graph, vertex, subtask))?;
    let this = &graph.vertices[vertex];

    let mut produced = Vec::new();
    let mut result_index = 0u32;
    for (c, consumer) in graph.vertices.iter().enumerate() {
        for edge in consumer.inputs.iter().filter(|e| e.source == this.id) {
            let strategy = edge.ship_strategy.unwrap_or(ShipStrategy::Rebalance);
            let consumers: Vec<u32> = if strategy == ShipStrategy::Forward {
                vec![subtask]
            } else {
                (0..consumer.parallelism).collect()
            };
            let mut local = Vec::with_capacity(consumers.len());
            for k in consumers {
                let there = place(c, k).ok_or_else(|| unplaced(graph, c, k))?;
                local.push(there.resource_id == me.resource_id);
            }
            produced.push(ResultPartitionDeploymentDescriptor {
                result_index,
                consumer: consumer.id,
                ship_strategy: strategy,
                local,
            });
            result_index += 1;
        }
    }

    let mut gates = Vec::new();
    for (position, edge) in this.inputs.iter().enumerate() {
        let Some(p) = graph.vertices.iter().position(|v| v.id == edge.source) else {
            return Err(format!(
                "vertex {:?} reads from an unknown vertex {}",
                this.name, edge.source
            ));
        };
        let producer = &graph.vertices[p];
        let result_index = result_index_of(graph, p, vertex, position);
        let strategy = edge.ship_strategy.unwrap_or(ShipStrategy::Rebalance);
        let sources: Vec<(u32, u32)> = if strategy == ShipStrategy::Forward {
            vec![(subtask, 0)]
        } else {
            (0..producer.parallelism).map(|i| (i, subtask)).collect()
        };
        let mut channels = Vec::with_capacity(sources.len());
        for (i, subpartition) in sources {
            let there = place(p, i).ok_or_else(|| unplaced(graph, p, i))?;
            channels.push(ShuffleDescriptor {
                producer: there.attempt,
                result_index,
                subpartition,
                producer_resource_id: there.resource_id,
                data_address: there.data_address.clone(),
                local: there.resource_id == me.resource_id,
            });
        }
        gates.push(InputGateDeploymentDescriptor {
            producer: producer.id,
            channels,
        });
    }
    Ok((produced, gates))
}

/// The index of the edge (`consumer`'s input `position`) among producer `p`'s results.
fn result_index_of(graph: &JobGraph, p: usize, consumer: usize, position: usize) -> u32 {
    let producer_id = graph.vertices[p].id;
    let mut index = 0u32;
    for (c, v) in graph.vertices.iter().enumerate() {
        for (k, edge) in v.inputs.iter().enumerate() {
            if edge.source != producer_id {
                continue;
            }
            if c == consumer && k == position {
                return index;
            }
            index += 1;
        }
    }
    index
}

fn unplaced(graph: &JobGraph, vertex: usize, subtask: u32) -> String {
    let name = graph
        .vertices
        .get(vertex)
        .map(|v| v.name.as_str())
        .unwrap_or("?");
    format!("subtask {subtask} of vertex {name:?} has no slot")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobgraph::{JobEdge, JobVertex};
    use crate::types::{ExecutionGraphId, ExecutionVertexId};

    fn edge(from: &JobVertex, s: ShipStrategy) -> JobEdge {
        JobEdge {
            source: from.id,
            pattern: s.pattern(),
            ship_strategy: Some(s),
        }
    }

    /// source(2) -forward-> map(2) -hash-> sink(3), and source -broadcast-> sink as a second
    /// input; subtasks 0 on TE a, the rest on TE b.
    #[test]
    fn descriptors_follow_edges_and_locations() {
        let mut source = JobVertex::new("source", "StreamTask", 2);
        let mut map = JobVertex::new("map", "StreamTask", 2);
        let mut sink = JobVertex::new("sink", "StreamTask", 3);
        map.inputs.push(edge(&source, ShipStrategy::Forward));
        sink.inputs.push(edge(&map, ShipStrategy::Hash));
        sink.inputs.push(edge(&source, ShipStrategy::Broadcast));
        source.inputs.clear();
        let graph = JobGraph::new("job", vec![source, map, sink]);
        let (a, b) = (ResourceId::generate(), ResourceId::generate());
        let egid = ExecutionGraphId::generate();
        let placements: Vec<Vec<Placement>> = graph
            .vertices
            .iter()
            .map(|v| {
                (0..v.parallelism)
                    .map(|k| Placement {
                        attempt: ExecutionAttemptId {
                            execution_graph_id: egid,
                            vertex: ExecutionVertexId {
                                job_vertex_id: v.id,
                                subtask_index: k,
                            },
                            attempt_number: 0,
                        },
                        resource_id: if k == 0 { a } else { b },
                        data_address: if k == 0 { "a:1".into() } else { "b:1".into() },
                    })
                    .collect()
            })
            .collect();
        let place = |v: usize, k: u32| placements.get(v).and_then(|p| p.get(k as usize));

        let (produced, gates) = shuffle_descriptors(&graph, 0, 1, &place).expect("placed");
        assert!(gates.is_empty());
        assert_eq!(produced.len(), 2);
        assert_eq!(produced[0].consumer, graph.vertices[1].id);
        assert_eq!(produced[0].ship_strategy, ShipStrategy::Forward);
        assert_eq!(produced[0].local, vec![true]);
        assert_eq!(produced[1].result_index, 1);
        assert_eq!(produced[1].local, vec![false, true, true]);

        let (produced, gates) = shuffle_descriptors(&graph, 2, 0, &place).expect("placed");
        assert!(produced.is_empty());
        assert_eq!(gates.len(), 2);
        // Hash input: one channel per map subtask, each reading subpartition 0.
        assert_eq!(gates[0].channels.len(), 2);
        assert!(gates[0].channels.iter().all(|c| c.subpartition == 0));
        assert!(gates[0].channels.iter().all(|c| c.result_index == 0));
        assert_eq!(
            gates[0]
                .channels
                .iter()
                .map(|c| c.local)
                .collect::<Vec<_>>(),
            vec![true, false]
        );
        assert_eq!(gates[0].channels[1].data_address, "b:1");
        // Broadcast input from the source: its second result.
        assert!(gates[1].channels.iter().all(|c| c.result_index == 1));

        let (_, gates) = shuffle_descriptors(&graph, 1, 1, &place).expect("placed");
        assert_eq!(gates[0].channels.len(), 1);
        assert_eq!(gates[0].channels[0].producer, placements[0][1].attempt);
        assert_eq!(gates[0].channels[0].subpartition, 0);

        let none = |_: usize, _: u32| None;
        let err = shuffle_descriptors(&graph, 2, 0, &none).expect_err("unplaced");
        assert!(err.contains("has no slot"), "{err}");
    }
}
