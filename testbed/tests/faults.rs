//! Process and network faults on the real binaries: the API server and etcd stopped,
//! killed and restarted in place, and the fault proxy in front of a real API server.

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::Api;
use kube_failover_testbed::{Cluster, FaultProxy, ProxyMode};
use std::time::{Duration, Instant};

async fn readyz(client: &Client) -> Result<String, kube::Error> {
    client
        .request_text(http::Request::get("/readyz").body(Vec::new()).unwrap())
        .await
}

async fn get_trigger(cluster: &Cluster, client: Client) -> Result<Deployment, kube::Error> {
    Api::<Deployment>::namespaced(client, cluster.namespace())
        .get(&cluster.trigger_deployment())
        .await
}

#[tokio::test]
async fn apiserver_stop_kill_and_restart_in_place() {
    let cluster = Cluster::start("api-restart").await.expect("cluster starts");
    let client = cluster.client();
    let before = get_trigger(&cluster, client.clone()).await.unwrap();

    let start = Instant::now();
    cluster.stop_apiserver().await.expect("graceful stop");
    eprintln!("apiserver SIGTERM to exit: {:?}", start.elapsed());
    assert!(!cluster.apiserver_running());
    assert_eq!(cluster.pids().len(), 3);
    assert!(
        std::net::TcpStream::connect(cluster.api_addr()).is_err(),
        "port closed"
    );
    let err = tokio::time::timeout(Duration::from_secs(10), readyz(&client))
        .await
        .expect("refused at once, not hanging")
        .unwrap_err();
    eprintln!("request while stopped: {err}");
    assert!(cluster.stop_apiserver().await.is_err(), "cannot stop twice");
    // Long enough for client-go informers to back off far (see start_apiserver).
    tokio::time::sleep(Duration::from_secs(15)).await;

    let start = Instant::now();
    cluster.start_apiserver().await.expect("restart");
    eprintln!("apiserver restart to /readyz: {:?}", start.elapsed());
    assert!(
        cluster.start_apiserver().await.is_err(),
        "cannot start twice"
    );
    // Same port, same certificates, same data: the old client just works.
    let after = get_trigger(&cluster, client.clone()).await.unwrap();
    assert_eq!(before.metadata.uid, after.metadata.uid);
    // The cluster converges at once after the outage, as before it.
    let trigger = cluster.trigger_deployment();
    cluster.scale(&trigger, 0).await.unwrap();
    let took = cluster
        .wait_deployment_ready(&trigger, Duration::from_secs(5))
        .await
        .expect("scale-down converges right after the restart");
    assert!(cluster.pod_readiness(&trigger).await.unwrap().is_empty());
    eprintln!("scale-down right after a 15 s outage converged in {took:?}");

    cluster.kill_apiserver().await.expect("kill");
    assert!(readyz(&client).await.is_err());
    cluster.start_apiserver().await.expect("restart after kill");
    assert_eq!(readyz(&client).await.unwrap(), "ok");

    // The controllers work after a kill too: scaling up reaches Ready.
    cluster.scale(&trigger, 2).await.unwrap();
    cluster
        .wait_deployment_ready(&trigger, Duration::from_secs(60))
        .await
        .expect("controllers work after the restart");
}

#[tokio::test]
async fn etcd_stop_makes_the_apiserver_unready_until_restarted() {
    let cluster = Cluster::start("etcd-restart")
        .await
        .expect("cluster starts");
    let client = cluster.client();
    let before = get_trigger(&cluster, client.clone()).await.unwrap();

    cluster.stop_etcd().await.expect("stop etcd");
    // The API server runs on but cannot serve: /readyz fails, reads fail.
    let start = Instant::now();
    loop {
        let r = tokio::time::timeout(Duration::from_secs(5), readyz(&client)).await;
        if !matches!(r, Ok(Ok(_))) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "readyz stays ok without etcd"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("etcd stopped -> /readyz failing: {:?}", start.elapsed());
    assert!(cluster.apiserver_running());

    cluster
        .start_etcd()
        .await
        .expect("etcd back, apiserver ready");
    let after = get_trigger(&cluster, client.clone()).await.unwrap();
    assert_eq!(before.metadata.uid, after.metadata.uid, "data survived");

    cluster.kill_etcd().await.expect("kill etcd");
    cluster.start_etcd().await.expect("etcd back after kill");
    get_trigger(&cluster, client)
        .await
        .expect("reads work again");
}

#[tokio::test]
async fn fault_proxy_in_front_of_a_real_apiserver() {
    let cluster = Cluster::start("proxied").await.expect("cluster starts");
    let proxy = FaultProxy::start(cluster.api_addr()).await.unwrap();
    let kubeconfig = cluster.daemon_kubeconfig_via(proxy.addr()).unwrap();
    let via = cluster.client_from(&kubeconfig).await.unwrap();
    let direct = cluster.daemon_client().await.unwrap();
    const PATIENCE: Duration = Duration::from_secs(3);

    // Pass: TLS and client-certificate authentication go through untouched.
    let d = get_trigger(&cluster, via.clone()).await.expect("pass");
    assert_eq!(d.metadata.name.unwrap(), cluster.trigger_deployment());
    assert!(proxy.accepted() >= 1);

    // Blackhole: the request neither succeeds nor fails; the direct path is fine.
    proxy.set_mode(ProxyMode::Blackhole);
    let r = tokio::time::timeout(PATIENCE, get_trigger(&cluster, via.clone())).await;
    assert!(r.is_err(), "blackholed request must hang: {r:?}");
    get_trigger(&cluster, direct.clone())
        .await
        .expect("direct path unaffected");

    // Reset: fails fast.
    proxy.set_mode(ProxyMode::Reset);
    let start = Instant::now();
    let r = tokio::time::timeout(PATIENCE, get_trigger(&cluster, via.clone()))
        .await
        .expect("reset fails fast");
    assert!(r.is_err(), "reset request must fail: {r:?}");
    eprintln!(
        "request through reset proxy failed after {:?}: {}",
        start.elapsed(),
        r.unwrap_err()
    );

    // Latency: a request on an established connection takes at least one round trip of
    // added delay; below a client's timeout it still succeeds.
    proxy.set_mode(ProxyMode::Pass);
    get_trigger(&cluster, via.clone())
        .await
        .expect("pass again");
    proxy.set_mode(ProxyMode::Latency {
        to_upstream: Duration::from_millis(300),
        to_client: Duration::from_millis(300),
    });
    let start = Instant::now();
    get_trigger(&cluster, via.clone())
        .await
        .expect("slow but fine");
    let took = start.elapsed();
    eprintln!("request with 300ms+300ms added: {took:?}");
    assert!(took >= Duration::from_millis(600), "{took:?}");
    let r = tokio::time::timeout(
        Duration::from_millis(400),
        get_trigger(&cluster, via.clone()),
    )
    .await;
    assert!(
        r.is_err(),
        "latency above the caller's timeout must time out"
    );

    // Back to pass: fast again.
    proxy.set_mode(ProxyMode::Pass);
    let start = Instant::now();
    get_trigger(&cluster, via).await.expect("healed");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );

    // The proxy forwards to an API server that is down as a refused connection.
    cluster.stop_apiserver().await.unwrap();
    let fresh = cluster.client_from(&kubeconfig).await.unwrap();
    let r = tokio::time::timeout(PATIENCE, get_trigger(&cluster, fresh))
        .await
        .expect("fails fast when the upstream is down");
    assert!(r.is_err());
}
