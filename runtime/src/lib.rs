//! # rflink-runtime
//!
//! Flink's runtime components on the `rflink-rpc` actor layer: Dispatcher, ResourceManager,
//! JobMaster, TaskExecutor and BlobServer, one module per Flink package.

pub mod blob;
pub mod checkpoint;
pub mod client;
pub mod config;
pub mod dispatcher;
pub mod entrypoint;
pub mod events;
pub mod executiongraph;
pub mod heartbeat;
pub mod highavailability;
pub mod jobgraph;
pub mod jobmaster;
pub mod leaderretrieval;
pub mod library;
pub mod metrics;
pub mod minicluster;
pub mod network;
pub mod registration;
pub mod resourcemanager;
pub mod rest;
pub mod taskexecutor;
pub mod tasks;
pub mod types;
