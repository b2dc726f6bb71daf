//! Finding the current leaders: where the ResourceManager and the Dispatcher are, and their
//! fencing tokens. Flink: `LeaderRetrievalService` of the standalone HA services.
//!
//! The JobManager process serves an unfenced `LeaderRetrieval` endpoint named `leaders`. A
//! TaskExecutor asks it for the ResourceManager's address and token before registering, and asks
//! again whenever it loses the ResourceManager, so a restarted JobManager (new tokens) is found
//! without configuration changes. Only the process that owns the endpoint can change the answer
//! (through `RpcServer::run_async`, which is local only); peers can only read it.

use rflink_rpc::{
    rpc_protocol, AbstractId, Handler, Response, RpcContext, RpcEndpoint, RpcMessage, Unfenced,
};
use serde::{Deserialize, Serialize};

/// The endpoint name of the leader retrieval service.
pub const LEADERS_ENDPOINT: &str = "leaders";

/// Where a leader is and its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    /// The leader endpoint's RPC address.
    pub address: String,
    /// Its fencing token.
    pub token: AbstractId,
}

/// The current leaders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaders {
    /// The ResourceManager.
    pub resource_manager: Option<LeaderInfo>,
    /// The Dispatcher.
    pub dispatcher: Option<LeaderInfo>,
}

/// Asks for the current leaders.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetLeaders;
impl RpcMessage for GetLeaders {
    type Reply = Leaders;
}

/// The endpoint answering [`GetLeaders`].
#[derive(Debug, Default)]
pub struct LeaderRetrieval {
    /// What it answers.
    pub leaders: Leaders,
}

impl RpcEndpoint for LeaderRetrieval {
    type Token = Unfenced;
    const GATEWAY: &'static str = "LeaderRetrievalGateway";
    const NAME_PREFIX: &'static str = "leaders";

    fn fencing_token(&self) -> Unfenced {
        Unfenced
    }
}

impl Handler<GetLeaders> for LeaderRetrieval {
    fn handle(&mut self, _: GetLeaders, _: &mut RpcContext<'_, Self>) -> Response<Self, Leaders> {
        Response::ready(self.leaders.clone())
    }
}

rpc_protocol!(LeaderRetrieval { GetLeaders });
