//! The Redis runtime on a Redis Cluster (3 masters, 1 replica each, on loopback ports).

use std::time::Duration;

use am2z::{Executes, RedisConfig, RedisRuntime, RunId, Runtime};
use am2z_tests::fault::{ClusterSpec, RedisCluster};
use am2z_tests::processors::AddOne;
use am2z_tests::suite::session;

async fn cluster() -> RedisCluster {
    tokio::task::spawn_blocking(|| ClusterSpec::default().start())
        .await
        .expect("the cluster starts")
}

fn config(cluster: &RedisCluster) -> RedisConfig {
    RedisConfig::cluster(cluster.seeds())
        .prefix(format!("am2z-test-{}", RunId::generate()))
        .worker_concurrency(16)
        .idle_poll(Duration::from_millis(50))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_through_a_cluster() {
    let cluster = cluster().await;
    let worker = RedisRuntime::new(config(&cluster));
    worker.serve(AddOne);
    worker.start().await.unwrap();
    let client = RedisRuntime::new(config(&cluster).worker(false));
    client.start().await.unwrap();
    let s = session("smoke");
    let here = worker.execute_in_session(&s, &AddOne, 1).await.unwrap();
    assert_eq!(here.output, 2);
    let there = client.execute_in_session(&s, &AddOne, 2).await.unwrap();
    assert_eq!(there.output, 3);
    client.stop_session(&s).await.unwrap();
    client.stop().await.unwrap();
    worker.stop().await.unwrap();
}
