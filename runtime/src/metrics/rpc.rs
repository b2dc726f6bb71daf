//! The RPC layer's metrics ([`RpcService::metrics`]) as a collector of a process's group:
//! per gateway method `rpc.numCalls`, `rpc.numErrors`, `rpc.numTimeouts`, `rpc.numAsksCompleted`
//! and `rpc.rttMicrosTotal` (variables `gateway`, `method`); per endpoint
//! `rpc.endpoint.mailboxDepth`, `rpc.endpoint.numHandled`, `rpc.endpoint.numRefused` (variables
//! `endpoint`, `gateway`). In Prometheus: `flink_jobmanager_rpc_numCalls{...,method="OfferSlots"}`.

use rflink_rpc::RpcService;

use super::{CollectedSample, MetricGroup};

/// Registers `service`'s RPC metrics in `group` (the process's `jobmanager` or `taskmanager`
/// group). Reading them takes two short locks in the RPC layer; calls never do.
pub fn register_rpc_metrics(group: &MetricGroup, service: RpcService) {
    group.collector(move || {
        let m = service.metrics();
        let mut out: Vec<CollectedSample> = Vec::with_capacity(m.methods.len() * 5);
        for method in m.methods.iter().filter(|x| x.calls > 0) {
            let vars = vec![
                ("gateway".to_string(), method.gateway.clone()),
                ("method".to_string(), method.method.clone()),
            ];
            for (name, value) in [
                ("rpc.numCalls", method.calls),
                ("rpc.numErrors", method.errors),
                ("rpc.numTimeouts", method.timeouts),
                ("rpc.numAsksCompleted", method.asks_completed),
                ("rpc.rttMicrosTotal", method.rtt_micros_sum),
            ] {
                out.push((name.to_string(), vars.clone(), value as f64));
            }
        }
        for endpoint in &m.endpoints {
            let vars = vec![
                ("endpoint".to_string(), endpoint.name.clone()),
                ("gateway".to_string(), endpoint.gateway.clone()),
            ];
            for (name, value) in [
                ("rpc.endpoint.mailboxDepth", endpoint.mailbox_depth),
                ("rpc.endpoint.numHandled", endpoint.handled),
                ("rpc.endpoint.numRefused", endpoint.refused),
            ] {
                out.push((name.to_string(), vars.clone(), value as f64));
            }
        }
        out
    });
}
