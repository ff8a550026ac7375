//! Token identities on a real API server: the token works for what the daemon's Role
//! allows and nothing more, revocation is a real 401, rotation rewrites the same files,
//! the exec plugin prints the token or hangs on demand, and an identity whose kubeconfig
//! names a proxy is unbound (403), bound again and rotated while the proxy is cut.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, ListParams};
use kube_failover_testbed::{Cluster, ClusterSpec, FaultProxy, ProxyMode, TokenCredentials};
use std::time::{Duration, Instant};

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

async fn list_deployments(client: Client, ns: &str) -> Result<usize, kube::Error> {
    let api: Api<Deployment> = Api::namespaced(client, ns);
    Ok(api.list(&ListParams::default()).await?.items.len())
}

#[tokio::test]
async fn token_identities_are_accepted_revoked_and_rotated() {
    let cluster = Cluster::start_with(ClusterSpec::new("creds").wait_ready(false))
        .await
        .expect("cluster starts");
    let ns = cluster.namespace().to_string();
    let mut creds = TokenCredentials::create(&cluster, "knobs")
        .await
        .expect("token identity");
    let first_account = creds.service_account().to_string();

    // The Role's grants and nothing beyond them.
    let client = cluster.client_from(creds.kubeconfig()).await.unwrap();
    assert_eq!(list_deployments(client.clone(), &ns).await.unwrap(), 2);
    let err = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(status_code(&err), Some(403), "{err}");
    let text = std::fs::read_to_string(creds.kubeconfig()).unwrap();
    assert!(text.contains(&creds.token().unwrap()));

    // The exec kubeconfig authenticates with the same token (kube runs the plugin here).
    let exec_client = cluster.client_from(creds.exec_kubeconfig()).await.unwrap();
    assert_eq!(list_deployments(exec_client, &ns).await.unwrap(), 2);
    assert!(creds.exec_runs() >= 1);

    let took = creds.revoke().await.expect("revoke");
    eprintln!("measured: token revocation took effect in {took:?}");
    let err = list_deployments(client.clone(), &ns).await.unwrap_err();
    assert_eq!(status_code(&err), Some(401), "{err}");

    let before = std::fs::metadata(creds.kubeconfig()).unwrap();
    creds.rotate().await.expect("rotate");
    assert_ne!(creds.service_account(), first_account);
    let fresh = cluster.client_from(creds.kubeconfig()).await.unwrap();
    assert_eq!(list_deployments(fresh, &ns).await.unwrap(), 2);
    use std::os::unix::fs::MetadataExt;
    let after = std::fs::metadata(creds.kubeconfig()).unwrap();
    assert_ne!(
        before.ino(),
        after.ino(),
        "rotation renames a new file over the old"
    );
    let exec_client = cluster.client_from(creds.exec_kubeconfig()).await.unwrap();
    assert_eq!(list_deployments(exec_client, &ns).await.unwrap(), 2);

    // Rotation retires the previous token too.
    let second_account = creds.service_account().to_string();
    let old = cluster.client_from(creds.kubeconfig()).await.unwrap();
    creds.rotate().await.expect("second rotation");
    assert_ne!(creds.service_account(), second_account);
    let err = list_deployments(old, &ns).await.unwrap_err();
    assert_eq!(status_code(&err), Some(401), "{err}");
}

#[tokio::test]
async fn the_exec_plugin_hangs_on_demand() {
    let cluster = Cluster::start_with(ClusterSpec::new("creds-exec").wait_ready(false))
        .await
        .expect("cluster starts");
    let creds = TokenCredentials::create(&cluster, "exec")
        .await
        .expect("token identity");
    let run = || async {
        let out = tokio::process::Command::new(creds.exec_plugin())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(Duration::from_secs(3), out).await
    };

    let out = run().await.expect("answers at once").unwrap();
    assert!(out.status.success());
    let cred: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cred["kind"], "ExecCredential");
    assert_eq!(cred["status"]["token"], creds.token().unwrap().as_str());

    creds.set_exec_delay(Some(Duration::from_secs(60))).unwrap();
    let start = Instant::now();
    assert!(
        run().await.is_err(),
        "a sleeping plugin does not answer in 3s"
    );
    assert!(start.elapsed() >= Duration::from_secs(3));

    creds.set_exec_delay(None).unwrap();
    assert!(
        run()
            .await
            .expect("answers again")
            .unwrap()
            .status
            .success()
    );
    assert_eq!(creds.exec_runs(), 3);
}

#[tokio::test]
async fn token_identities_via_a_proxy_are_unbound_rebound_and_rotated_around_it() {
    let cluster = Cluster::start_with(ClusterSpec::new("creds-via").wait_ready(false))
        .await
        .expect("cluster starts");
    let ns = cluster.namespace().to_string();
    let proxy = FaultProxy::start(cluster.api_addr()).await.unwrap();
    let mut creds = TokenCredentials::create_via(&cluster, "via", proxy.addr())
        .await
        .expect("token identity via the proxy");
    assert_eq!(
        creds.username(),
        format!("system:serviceaccount:{ns}:{}", creds.service_account())
    );
    assert!(!creds.revoked());
    let first_written = creds.written_at().expect("written");

    // The kubeconfig names the proxy; requests through it authenticate with the token.
    let text = std::fs::read_to_string(creds.kubeconfig()).unwrap();
    assert!(
        text.contains(&format!("https://{}", proxy.addr())),
        "{text}"
    );
    let before = proxy.accepted();
    let client = cluster.client_from(creds.kubeconfig()).await.unwrap();
    assert_eq!(list_deployments(client.clone(), &ns).await.unwrap(), 2);
    assert!(
        proxy.accepted() > before,
        "the request went through the proxy"
    );

    // Unbound: 403 for this token only, through the proxy too; bound again: 200.
    creds.unbind().await.expect("unbind");
    let err = list_deployments(client.clone(), &ns).await.unwrap_err();
    assert_eq!(status_code(&err), Some(403), "{err}");
    assert!(cluster.daemon_can_list_deployments().await.unwrap());
    creds.bind().await.expect("bind");
    assert_eq!(list_deployments(client.clone(), &ns).await.unwrap(), 2);

    // The test bed's own checks go straight to the API server: a rotation completes with
    // the proxy cut.
    proxy.set_mode(ProxyMode::Blackhole);
    creds.revoke().await.expect("revoke");
    assert!(creds.revoked());
    creds.rotate().await.expect("rotate with the proxy cut");
    assert!(!creds.revoked());
    assert!(creds.written_at().expect("written") > first_written);
    proxy.set_mode(ProxyMode::Pass);
    let fresh = cluster.client_from(creds.kubeconfig()).await.unwrap();
    assert_eq!(list_deployments(fresh, &ns).await.unwrap(), 2);
    let err = list_deployments(client, &ns).await.unwrap_err();
    assert_eq!(status_code(&err), Some(401), "{err}");
}
