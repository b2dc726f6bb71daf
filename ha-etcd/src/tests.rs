//! Unit tests: the pure rules, and the guard etcd itself enforces (against a real etcd, see
//! [`crate::testing`]).

use std::time::Duration;

use etcd_client::{PutOptions, TxnOp};
use rflink_runtime::highavailability::{HaError, HaServices};

use super::*;

fn config(endpoint: String) -> EtcdHaConfig {
    EtcdHaConfig {
        endpoints: vec![endpoint],
        namespace: "/rflink/unit".into(),
        lease_ttl: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
    }
}

#[test]
fn lease_ttl_rounds_up_to_whole_seconds_at_least_two() {
    let ttl = |ms| {
        EtcdHaConfig {
            lease_ttl: Duration::from_millis(ms),
            ..config(String::new())
        }
        .lease_ttl_secs()
    };
    assert_eq!(ttl(0), 2);
    assert_eq!(ttl(1500), 2);
    assert_eq!(ttl(2000), 2);
    assert_eq!(ttl(2001), 3);
    assert_eq!(ttl(15_000), 15);
}

#[test]
fn the_step_down_margin_is_a_quarter_of_short_ttls_at_most_half_a_second() {
    assert_eq!(
        keeper::step_down_margin(Duration::from_secs(2)),
        Duration::from_millis(500)
    );
    assert_eq!(
        keeper::step_down_margin(Duration::from_secs(1)),
        Duration::from_millis(250)
    );
    assert_eq!(
        keeper::step_down_margin(Duration::from_secs(30)),
        Duration::from_millis(500)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_refuses_writes_whose_lease_does_not_hold_the_leader_key() {
    let Some(etcd) = testing::start_or_skip("guard compare") else {
        return;
    };
    let services = EtcdHaServices::connect(config(etcd.endpoint()))
        .await
        .expect("connects");
    assert_eq!(services.namespace(), "/rflink/unit/", "the `/` is added");
    let leadership = services.campaign("a".into()).await.expect("wins");
    let lease = services.lease_id(&leadership).expect("holds a lease");
    services
        .put(&leadership, "k".into(), b"v1".to_vec())
        .await
        .expect("the leader writes");

    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("a plain client");
    // A live lease that is not the leader key's: refused by the compare.
    let other = raw.lease_grant(10, None).await.expect("grant").id();
    let put = |value: &str| TxnOp::put("/rflink/unit/k", value, None::<PutOptions>);
    let refused = services
        .inner
        .guarded(leadership.session_id, other, vec![put("v2")], "test put")
        .await;
    assert_eq!(
        refused,
        Err(HaError::NotLeader {
            session_id: leadership.session_id
        })
    );
    assert_eq!(services.get("k".into()).await, Ok(Some(b"v1".to_vec())));
    assert!(
        leadership.is_lost(),
        "a refusal by etcd marks the leadership lost"
    );

    // The leader's own lease, revoked behind its back: the transaction is sent (bypassing the
    // local check, which may or may not have noticed yet) and etcd refuses it.
    let second = services.campaign("a".into()).await.expect("wins again");
    let lease2 = services.lease_id(&second).expect("holds a lease");
    assert_ne!(lease, lease2, "a new leadership has a new lease");
    raw.lease_revoke(lease2).await.expect("revoke");
    let refused = services
        .inner
        .guarded(second.session_id, lease2, vec![put("v3")], "test put")
        .await;
    assert_eq!(
        refused,
        Err(HaError::NotLeader {
            session_id: second.session_id
        })
    );
    assert_eq!(services.get("k".into()).await, Ok(Some(b"v1".to_vec())));
    services.close().await;
}
