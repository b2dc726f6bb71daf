//! `EtcdHaServices` against a real etcd process (`rflink_ha_etcd::testing`): election and
//! takeover, guarded writes, a crashed leader, a partitioned leader, a corrupt leader value,
//! unreachable endpoints. Every wait is bounded; no test sleeps and hopes.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rflink_ha_etcd::testing::{self, TcpProxy};
use rflink_ha_etcd::{EtcdHaConfig, EtcdHaServices};
use rflink_runtime::highavailability::{ClusterLeader, HaError, HaServices, Leadership};
use rflink_runtime::leaderretrieval::Leaders;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

const TTL: Duration = Duration::from_secs(2);

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn config(endpoint: String) -> EtcdHaConfig {
    EtcdHaConfig {
        endpoints: vec![endpoint],
        namespace: "/rflink/test/".into(),
        lease_ttl: TTL,
        connect_timeout: Duration::from_secs(2),
    }
}

async fn connect(endpoint: String) -> Arc<EtcdHaServices> {
    EtcdHaServices::connect(config(endpoint))
        .await
        .expect("connects to etcd")
}

fn leader_of(leadership: &Leadership, name: &str) -> ClusterLeader {
    ClusterLeader {
        session_id: leadership.session_id,
        leaders: Leaders::default(),
        rpc_address: format!("{name}:6123"),
        blob_address: format!("{name}:6124"),
        rest_url: Some(format!("http://{name}:8081")),
    }
}

/// `what` within `within`, or the test fails naming it.
async fn within<T>(what: &str, within: Duration, future: impl Future<Output = T>) -> T {
    match timeout(within, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not within {within:?}"),
    }
}

async fn sees(
    what: &str,
    receiver: &mut watch::Receiver<Option<ClusterLeader>>,
    expected: Option<&ClusterLeader>,
) {
    within(
        what,
        Duration::from_secs(5),
        receiver.wait_for(|leader| leader.as_ref() == expected),
    )
    .await
    .expect("the leader watch is open");
}

type Campaign = tokio::task::JoinHandle<Result<Leadership, HaError>>;

fn campaign(services: &Arc<EtcdHaServices>, contender: &str) -> Campaign {
    let services = services.clone();
    let contender = contender.to_string();
    tokio::spawn(async move { services.campaign(contender).await })
}

/// Asserts the campaign has not resolved (waiting a little while: a negative cannot be
/// awaited).
async fn still_pending(campaign: &mut Campaign) {
    assert!(
        timeout(Duration::from_millis(700), campaign).await.is_err(),
        "the standby's campaign must still be pending while the leader holds"
    );
}

async fn won(what: &str, bound: Duration, campaign: Campaign) -> Leadership {
    within(what, bound, campaign)
        .await
        .expect("the campaign task did not panic")
        .expect("the campaign succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_wins_and_the_other_takes_over_when_it_resigns() {
    init_logs();
    let Some(etcd) = testing::start_or_skip("election") else {
        return;
    };
    let a = connect(etcd.endpoint()).await;
    let b = connect(etcd.endpoint()).await;
    let mut watch_a = a.watch_leader();
    let mut watch_b = b.watch_leader();
    assert!(watch_a.borrow().is_none(), "no leader yet");

    let mut campaign_a = campaign(&a, "a");
    let mut campaign_b = campaign(&b, "b");
    let (winner, first, loser, mut pending) = within("a first leader", TTL * 3, async {
        tokio::select! {
            r = &mut campaign_a => (a.clone(), r, b.clone(), campaign_b),
            r = &mut campaign_b => (b.clone(), r, a.clone(), campaign_a),
        }
    })
    .await;
    let first = first.expect("no panic").expect("wins");
    still_pending(&mut pending).await;
    assert!(!first.is_lost());

    let published = leader_of(&first, "first");
    winner
        .publish_leader(&first, &published)
        .await
        .expect("the leader publishes");
    sees("a sees the leader", &mut watch_a, Some(&published)).await;
    sees("b sees the leader", &mut watch_b, Some(&published)).await;

    let lease = winner.lease_id(&first).expect("the leader holds a lease");
    winner.resign(&first).await.expect("resigns");
    assert!(first.is_lost(), "resigning fires lost at once");
    // The lease is revoked, not left to expire: etcd no longer knows it (TTL -1) although its
    // TTL has not run out, so the standby can win at once.
    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("a plain client");
    let ttl = raw
        .lease_time_to_live(lease, None)
        .await
        .expect("asks for the lease")
        .ttl();
    assert_eq!(ttl, -1, "the resigned leader's lease is revoked");
    let second = won("the standby takes over", TTL * 3, pending).await;
    assert_ne!(first.session_id, second.session_id);
    assert!(!second.is_lost());
    let republished = leader_of(&second, "second");
    loser
        .publish_leader(&second, &republished)
        .await
        .expect("the new leader publishes");
    sees("a sees the new leader", &mut watch_a, Some(&republished)).await;
    sees("b sees the new leader", &mut watch_b, Some(&republished)).await;

    // The old leadership can publish nothing.
    assert_eq!(
        winner.publish_leader(&first, &published).await,
        Err(HaError::NotLeader {
            session_id: first.session_id
        })
    );
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_guarded_by_the_leadership_and_outlive_it() {
    init_logs();
    let Some(etcd) = testing::start_or_skip("guarded writes") else {
        return;
    };
    let a = connect(etcd.endpoint()).await;
    let b = connect(etcd.endpoint()).await;
    let first = won("a wins", TTL * 3, campaign(&a, "a")).await;

    a.put(&first, "jobgraphs/2".into(), b"graph 2".to_vec())
        .await
        .expect("put");
    a.put(&first, "jobgraphs/1".into(), vec![0, 159, 146, 150])
        .await
        .expect("raw bytes");
    a.put(&first, "checkpoints/1".into(), b"chk-7".to_vec())
        .await
        .expect("put");
    a.put(&first, "jobgraphs/3".into(), b"graph 3".to_vec())
        .await
        .expect("put");
    assert_eq!(
        b.get("jobgraphs/1".into()).await,
        Ok(Some(vec![0, 159, 146, 150]))
    );
    assert_eq!(b.get("jobgraphs/9".into()).await, Ok(None));
    a.delete(&first, "jobgraphs/3".into())
        .await
        .expect("delete");
    a.delete(&first, "jobgraphs/3".into())
        .await
        .expect("deleting a missing key is fine");
    assert_eq!(
        b.list("jobgraphs/".into()).await,
        Ok(vec![
            ("jobgraphs/1".to_string(), vec![0, 159, 146, 150]),
            ("jobgraphs/2".to_string(), b"graph 2".to_vec()),
        ])
    );
    let everything = b.list(String::new()).await.expect("list all");
    let keys: Vec<&str> = everything.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["checkpoints/1", "jobgraphs/1", "jobgraphs/2"],
        "relative keys in key order, without the election key"
    );
    assert!(
        a.put(&first, "leader".into(), b"x".to_vec()).await.is_err(),
        "the election key is not a metadata key"
    );

    let standby = campaign(&b, "b");
    a.resign(&first).await.expect("resigns");
    let refused = a
        .put(&first, "jobgraphs/1".into(), b"deposed".to_vec())
        .await;
    assert_eq!(
        refused,
        Err(HaError::NotLeader {
            session_id: first.session_id
        })
    );
    assert_eq!(
        a.delete(&first, "jobgraphs/1".into()).await,
        Err(HaError::NotLeader {
            session_id: first.session_id
        })
    );
    // The metadata outlives its writer's lease.
    assert_eq!(
        a.get("jobgraphs/1".into()).await,
        Ok(Some(vec![0, 159, 146, 150]))
    );

    let second = won("b takes over", TTL * 3, standby).await;
    b.put(&second, "jobgraphs/1".into(), b"rewritten".to_vec())
        .await
        .expect("the new leader writes");
    assert_eq!(
        a.get("jobgraphs/1".into()).await,
        Ok(Some(b"rewritten".to_vec()))
    );
    a.close().await;
    b.close().await;
    assert_eq!(a.get("jobgraphs/1".into()).await, Err(HaError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_wins_after_the_leader_crashed() {
    init_logs();
    let Some(etcd) = testing::start_or_skip("crash") else {
        return;
    };
    let a = connect(etcd.endpoint()).await;
    let b = connect(etcd.endpoint()).await;
    let first = won("a wins", TTL * 3, campaign(&a, "a")).await;
    let published = leader_of(&first, "first");
    a.publish_leader(&first, &published).await.expect("publish");
    let mut watch_b = b.watch_leader();
    sees("b sees a", &mut watch_b, Some(&published)).await;
    let mut standby = campaign(&b, "b");
    still_pending(&mut standby).await;

    // The process "dies": no revocation, keep-alives stop.
    a.abandon();
    assert!(first.is_lost());
    let second = won(
        "the standby wins once the crashed leader's lease expired",
        TTL * 3,
        standby,
    )
    .await;
    assert_ne!(first.session_id, second.session_id);
    sees("the expiry unpublishes the leader", &mut watch_b, None).await;
    let republished = leader_of(&second, "second");
    b.publish_leader(&second, &republished)
        .await
        .expect("publish");
    sees("b sees itself", &mut watch_b, Some(&republished)).await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_steps_down_before_a_standby_wins() {
    init_logs();
    let Some(etcd) = testing::start_or_skip("partition") else {
        return;
    };
    let proxy = TcpProxy::start(&etcd.endpoint()).expect("proxy");
    let a = connect(format!("http://{}", proxy.address())).await;
    let b = connect(etcd.endpoint()).await;
    let first = won("a wins", TTL * 3, campaign(&a, "a")).await;
    let published = leader_of(&first, "first");
    a.publish_leader(&first, &published).await.expect("publish");
    a.put(&first, "jobgraphs/1".into(), b"before".to_vec())
        .await
        .expect("put");
    let mut standby = campaign(&b, "b");
    still_pending(&mut standby).await;

    proxy.cut();
    let cut_at = Instant::now();
    within(
        "the partitioned leader's lost fires",
        TTL * 2,
        first.wait_lost(),
    )
    .await;
    let lost_at = Instant::now();
    assert!(first.is_lost());
    let second = won("the standby wins", TTL * 3, standby).await;
    let won_at = Instant::now();
    assert!(
        lost_at <= won_at,
        "the old leader stopped ({:?} after the cut) before the standby won ({:?})",
        lost_at - cut_at,
        won_at - cut_at
    );
    b.publish_leader(&second, &leader_of(&second, "second"))
        .await
        .expect("the new leader publishes");

    proxy.restore();
    // Refused: it is lost locally, and etcd's compare would refuse it too (unit-tested).
    assert_eq!(
        a.put(&first, "jobgraphs/1".into(), b"after".to_vec()).await,
        Err(HaError::NotLeader {
            session_id: first.session_id
        })
    );
    assert_eq!(
        b.get("jobgraphs/1".into()).await,
        Ok(Some(b"before".to_vec()))
    );
    // The old leader's retrieval recovers from the partition and follows the new leader.
    let mut watch_a = a.watch_leader();
    within(
        "the healed process sees the new leader",
        Duration::from_secs(20),
        watch_a.wait_for(|l| l.as_ref().map(|l| l.session_id) == Some(second.session_id)),
    )
    .await
    .expect("open");
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_leader_value_reads_as_no_leader() {
    init_logs();
    let Some(etcd) = testing::start_or_skip("corrupt leader") else {
        return;
    };
    let a = connect(etcd.endpoint()).await;
    let c = connect(etcd.endpoint()).await;
    let first = won("a wins", TTL * 3, campaign(&a, "a")).await;
    let published = leader_of(&first, "first");
    a.publish_leader(&first, &published).await.expect("publish");
    let mut watch_c = c.watch_leader();
    sees("c sees a", &mut watch_c, Some(&published)).await;

    let mut raw = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .expect("a plain client");
    raw.put(a.leader_key(), vec![0xff, b'{', 0, 1], None)
        .await
        .expect("raw put");
    sees("garbage reads as no leader", &mut watch_c, None).await;
    // The key is no longer the leader's own: it steps down.
    within("a's lost fires", TTL * 2, first.wait_lost()).await;

    let late = connect(etcd.endpoint()).await;
    assert!(late.watch_leader().borrow().is_none(), "read at connect");
    raw.delete(a.leader_key(), None).await.expect("raw delete");
    let again = won("a new campaign wins", TTL * 3, campaign(&c, "c")).await;
    let republished = leader_of(&again, "again");
    c.publish_leader(&again, &republished)
        .await
        .expect("publish");
    let mut watch_late = late.watch_leader();
    sees(
        "the late watcher follows",
        &mut watch_late,
        Some(&republished),
    )
    .await;
    a.close().await;
    c.close().await;
    late.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoints_fail_connect_in_time() {
    init_logs();
    // Nothing listens: refused.
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let refused = format!("http://{}", free.local_addr().expect("address"));
    drop(free);
    // Accepts (into the backlog) and never answers: a black hole.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent = format!("http://{}", hole.local_addr().expect("address"));

    for endpoint in [refused, silent] {
        let mut config = config(endpoint.clone());
        config.connect_timeout = Duration::from_secs(1);
        let result = within(
            "connect gives up",
            Duration::from_secs(5),
            EtcdHaServices::connect(config),
        )
        .await;
        match result {
            Err(HaError::Unavailable { endpoints, reason }) => {
                assert_eq!(endpoints, endpoint, "names the endpoints ({reason})");
            }
            Err(other) => panic!("expected Unavailable, got {other:?}"),
            Ok(_) => panic!("connected to {endpoint}"),
        }
    }
    drop(hole);
}
