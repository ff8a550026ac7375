//! End-to-end: the Terraform state mirror (`[groups.state.mirror]`) on the test bed, with
//! the daemon's identity holding exactly the Roles of
//! deploy/kubernetes/target-rbac/mirror-role.yaml. The state Secrets are shaped as
//! Terraform's `kubernetes` backend writes them: gzip of the state, split into Secrets
//! of at most 1 MiB (`tfstate-<workspace>-<suffix>`, then `…-part-1`, …), labelled
//! `tfstate=true`, `tfstateSecretSuffix`, `tfstateWorkspace` and
//! `app.kubernetes.io/managed-by=terraform`, annotated `encoding: gzip`; the lock is a
//! Lease `lock-tfstate-<workspace>-<suffix>`.

use crate::support;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube_failover_testbed::{Cluster, ClusterPair};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use support::{Daemon, DaemonOpts, grant_mirror_roles, measured, wait_for};

/// The backend's chunk size: 1 MiB of gzip per Secret.
const CHUNK: usize = 1_048_576;
/// The mirror's full resync interval in these scenarios.
const SYNC: Duration = Duration::from_secs(2);
/// Our own annotations on a copy.
const OWN_PREFIX: &str = "kube-failover/";

fn labels(workspace: &str, suffix: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("tfstate".to_string(), "true".to_string()),
        ("tfstateSecretSuffix".to_string(), suffix.to_string()),
        ("tfstateWorkspace".to_string(), workspace.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "terraform".to_string(),
        ),
    ])
}

/// A Terraform state of about `size` bytes, mostly incompressible (so a large one needs
/// several Secrets), different for each `serial`.
fn state_json(serial: u64, size: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ serial;
    let blob: String = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect();
    format!(
        r#"{{"version":4,"terraform_version":"1.9.0","serial":{serial},"lineage":"3f1c2a7e-mirror","outputs":{{}},"resources":[{{"mode":"managed","type":"null_resource","name":"blob","provider":"provider[\"registry.terraform.io/hashicorp/null\"]","instances":[{{"attributes":{{"id":"1","triggers":{{"blob":"{blob}"}}}}}}]}}]}}"#
    )
    .into_bytes()
}

/// The Secrets the backend writes for `state`: gzip, split into 1 MiB parts.
fn backend_secrets(workspace: &str, suffix: &str, state: &[u8]) -> Vec<Secret> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(state).unwrap();
    let payload = gz.finish().unwrap();
    payload
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, chunk)| {
            let base = format!("tfstate-{workspace}-{suffix}");
            let name = if i == 0 {
                base
            } else {
                format!("{base}-part-{i}")
            };
            Secret {
                metadata: ObjectMeta {
                    name: Some(name),
                    labels: Some(labels(workspace, suffix)),
                    annotations: Some(BTreeMap::from([(
                        "encoding".to_string(),
                        "gzip".to_string(),
                    )])),
                    ..ObjectMeta::default()
                },
                data: Some(BTreeMap::from([(
                    "tfstate".to_string(),
                    ByteString(chunk.to_vec()),
                )])),
                ..Secret::default()
            }
        })
        .collect()
}

/// Writes the state as the backend does: creates or updates each part (and deletes the
/// parts a smaller state no longer needs).
async fn put_state(cluster: &Cluster, workspace: &str, suffix: &str, state: &[u8]) {
    let api: Api<Secret> = Api::namespaced(cluster.client(), cluster.namespace());
    let wanted = backend_secrets(workspace, suffix, state);
    for s in &wanted {
        let name = s.metadata.name.clone().unwrap();
        match api.get_opt(&name).await.expect("get state secret") {
            Some(mut current) => {
                current.data = s.data.clone();
                api.replace(&name, &PostParams::default(), &current)
                    .await
                    .expect("update state secret");
            }
            None => {
                api.create(&PostParams::default(), s)
                    .await
                    .expect("create state secret");
            }
        }
    }
    let base = format!("tfstate-{workspace}-{suffix}");
    for i in wanted.len().. {
        let part = format!("{base}-part-{i}");
        if api.get_opt(&part).await.expect("get part").is_none() {
            break;
        }
        api.delete(&part, &DeleteParams::default())
            .await
            .expect("delete part");
    }
}

/// Reads the state as the backend does: the Secrets of its labels, ordered by the index
/// at the end of their names, concatenated and gunzipped.
async fn read_state(cluster: &Cluster, workspace: &str, suffix: &str) -> Option<Vec<u8>> {
    let api: Api<Secret> = Api::namespaced(cluster.client(), cluster.namespace());
    let selector = labels(workspace, suffix)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let list = api
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list state secrets")
        .items;
    if list.is_empty() {
        return None;
    }
    let mut parts: Vec<(usize, Vec<u8>)> = list
        .iter()
        .map(|s| {
            let name = s.metadata.name.clone().unwrap();
            let index = name
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            (index, s.data.as_ref().unwrap()["tfstate"].0.clone())
        })
        .collect();
    parts.sort();
    let payload: Vec<u8> = parts.into_iter().flat_map(|(_, d)| d).collect();
    let mut out = Vec::new();
    GzDecoder::new(&payload[..])
        .read_to_end(&mut out)
        .expect("the standby's state gunzips");
    Some(out)
}

/// The backend's lock, held by a run.
async fn lock(cluster: &Cluster, workspace: &str, suffix: &str) {
    let api: Api<Lease> = Api::namespaced(cluster.client(), cluster.namespace());
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(format!("lock-tfstate-{workspace}-{suffix}")),
            labels: Some(labels(workspace, suffix)),
            annotations: Some(BTreeMap::from([(
                "app.terraform.io/lock-info".to_string(),
                r#"{"ID":"5f0c","Operation":"OperationTypeApply","Who":"runner@agent"}"#
                    .to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("5f0c".to_string()),
            ..LeaseSpec::default()
        }),
    };
    api.create(&PostParams::default(), &lease)
        .await
        .expect("create lock lease");
}

fn secrets(cluster: &Cluster) -> Api<Secret> {
    Api::namespaced(cluster.client(), cluster.namespace())
}

async fn get(cluster: &Cluster, name: &str) -> Option<Secret> {
    secrets(cluster).get_opt(name).await.expect("get secret")
}

/// Asserts that the standby's copy of `name` is the primary's byte for byte: type, data,
/// labels, and every annotation but the mirror's own.
async fn assert_same(pair: &ClusterPair, name: &str) {
    let p = get(&pair.primary, name).await.expect("primary secret");
    let s = get(&pair.standby, name).await.expect("standby copy");
    assert_eq!(s.type_, p.type_, "{name}: type");
    assert_eq!(s.data, p.data, "{name}: data");
    assert_eq!(s.metadata.labels, p.metadata.labels, "{name}: labels");
    let theirs: BTreeMap<_, _> = s
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with(OWN_PREFIX))
        .collect();
    assert_eq!(Some(theirs), p.metadata.annotations, "{name}: annotations");
    assert!(
        s.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kube-failover/mirror-checksum")),
        "{name}: the copy carries its checksum"
    );
}

async fn wait_copied(pair: &ClusterPair, names: &[&str], timeout: Duration) -> Duration {
    let took = wait_for(timeout, Duration::from_millis(50), || async {
        for n in names {
            let (Some(p), Some(s)) = (get(&pair.primary, n).await, get(&pair.standby, n).await)
            else {
                return false;
            };
            if p.data != s.data {
                return false;
            }
        }
        true
    })
    .await;
    took.unwrap_or_else(|| panic!("{names:?} not copied within {timeout:?}"))
}

fn mirror_toml(prune: bool) -> String {
    format!(
        "\n[groups.state.mirror]\nenabled = true\nselector = \"tfstate=true\"\nsync_interval = \"{}s\"\nprune = {prune}\nmax_lag = \"20s\"\n",
        SYNC.as_secs()
    )
}

#[tokio::test]
async fn mirror_copies_state_byte_for_byte_reports_conflicts_and_never_copies_the_lock() {
    let pair = support::pair().await;
    grant_mirror_roles(&pair, false).await;
    // A state of ~2.4 MB of text: about 1.8 MiB of gzip, so two Secrets.
    let big = state_json(1, 2_400_000);
    put_state(&pair.primary, "default", "state", &big).await;
    put_state(&pair.primary, "dev", "state", &state_json(1, 2_000)).await;
    put_state(&pair.primary, "old", "state", &state_json(1, 1_000)).await;
    lock(&pair.primary, "default", "state").await;
    let names = [
        "tfstate-default-state",
        "tfstate-default-state-part-1",
        "tfstate-dev-state",
        "tfstate-old-state",
    ];
    assert!(
        get(&pair.primary, names[1]).await.is_some(),
        "the big state is split"
    );

    let opts = DaemonOpts {
        group_toml: mirror_toml(false),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start(&pair, &opts).await;
    // A new instance takes the group's leadership only after its first observer ttl;
    // from then on it writes.
    daemon
        .wait_group("this instance leads", Duration::from_secs(30), |g| {
            g.coordination.as_ref().is_some_and(|c| c.role == "leader")
        })
        .await;
    let took = wait_copied(&pair, &names, SYNC * 10).await;
    measured("state Secrets copied after the daemon took the lead", took);
    assert!(
        took <= SYNC * 2,
        "copied within two sync intervals: {took:?}"
    );
    for n in names {
        assert_same(&pair, n).await;
    }
    assert_eq!(
        read_state(&pair.standby, "default", "state")
            .await
            .as_deref(),
        Some(&big[..]),
        "the standby's parts read back as the primary's state"
    );

    // The lock Lease is never copied.
    let leases: Api<Lease> = Api::namespaced(pair.standby.client(), pair.standby.namespace());
    assert!(
        leases
            .get_opt("lock-tfstate-default-state")
            .await
            .unwrap()
            .is_none(),
        "the lock Lease stays in the primary"
    );

    // Metrics and /status.
    let bytes: usize = {
        let mut n = 0;
        for name in names {
            n += get(&pair.primary, name).await.unwrap().data.unwrap()["tfstate"]
                .0
                .len();
        }
        n
    };
    daemon
        .wait_group("mirror reports 4 Secrets", SYNC * 5, |g| {
            g.mirror.as_ref().is_some_and(|m| m.secrets == 4)
        })
        .await;
    let m = daemon.group().await.unwrap().mirror.unwrap();
    assert!(m.active && m.writer, "{m:?}");
    assert_eq!(m.bytes, bytes as u64);
    assert_eq!(m.conflict_count, 0);
    assert!(m.lag_seconds.is_some_and(|l| l < 20.0), "{m:?}");
    let metric = |name: &str| format!("kube_failover_mirror_{name}{{group=\"env0\"}}");
    assert_eq!(daemon.metric(&metric("secrets")).await, Some(4.0));
    assert_eq!(daemon.metric(&metric("bytes")).await, Some(bytes as f64));
    assert_eq!(daemon.metric(&metric("conflicts")).await, Some(0.0));
    assert_eq!(daemon.metric(&metric("active")).await, Some(1.0));
    assert_eq!(daemon.metric(&metric("max_lag_seconds")).await, Some(20.0));
    assert!(
        daemon
            .metric(&metric("last_sync_timestamp_seconds"))
            .await
            .is_some_and(|t| t > 1e9)
    );

    // An update on the primary propagates (through the watch).
    let changed = Instant::now();
    let dev2 = state_json(2, 2_000);
    put_state(&pair.primary, "dev", "state", &dev2).await;
    let took = wait_copied(&pair, &["tfstate-dev-state"], SYNC * 10).await;
    measured("an update on the primary reached the standby", took);
    assert!(changed.elapsed() <= SYNC * 2, "{took:?}");
    assert_eq!(
        read_state(&pair.standby, "dev", "state").await.as_deref(),
        Some(&dev2[..])
    );

    // A conflicting edit on the standby: left alone, reported.
    let mut edited = get(&pair.standby, "tfstate-dev-state").await.unwrap();
    let theirs = backend_secrets("dev", "state", &state_json(99, 2_000))[0]
        .data
        .clone();
    edited.data = theirs.clone();
    secrets(&pair.standby)
        .replace("tfstate-dev-state", &PostParams::default(), &edited)
        .await
        .expect("edit the standby's copy");
    put_state(&pair.primary, "dev", "state", &state_json(3, 2_000)).await;
    daemon
        .wait_group("conflict reported", SYNC * 5, |g| {
            g.mirror.as_ref().is_some_and(|m| {
                m.conflicts
                    .iter()
                    .any(|c| c.name == "tfstate-dev-state" && c.kind == "changed_since_copy")
            })
        })
        .await;
    assert_eq!(daemon.metric(&metric("conflicts")).await, Some(1.0));
    tokio::time::sleep(SYNC * 2).await;
    assert_eq!(
        get(&pair.standby, "tfstate-dev-state").await.unwrap().data,
        theirs,
        "the standby's own change is never overwritten"
    );
    assert!(
        support::events_with_reason(&pair.standby, "KubeFailoverMirrorConflict").await >= 1,
        "an Event names the conflict"
    );
    // The other Secrets keep being mirrored.
    assert_same(&pair, "tfstate-default-state").await;

    // Nothing is deleted without prune.
    secrets(&pair.primary)
        .delete("tfstate-old-state", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(SYNC * 2).await;
    assert!(
        get(&pair.standby, "tfstate-old-state").await.is_some(),
        "kept without prune"
    );
    daemon
        .wait_group("kept Secret listed", SYNC * 3, |g| {
            g.mirror
                .as_ref()
                .is_some_and(|m| m.kept.iter().any(|k| k == "tfstate-old-state"))
        })
        .await;

    // The log never carries state data.
    let log = std::fs::read_to_string(&daemon.log).unwrap();
    let sample = String::from_utf8_lossy(&big[300..340]).to_string();
    assert!(!log.contains(&sample), "state data in the log");
}

#[tokio::test]
async fn prune_deletes_a_promotion_stops_the_mirror_and_a_failback_resumes_it() {
    let pair = support::pair().await;
    grant_mirror_roles(&pair, true).await;
    put_state(&pair.primary, "default", "state", &state_json(1, 5_000)).await;
    put_state(&pair.primary, "gone", "state", &state_json(1, 1_000)).await;
    // A state of the standby's own (no checksum): never pruned.
    let own = backend_secrets("own", "state", &state_json(7, 1_000));
    secrets(&pair.standby)
        .create(&PostParams::default(), &own[0])
        .await
        .unwrap();

    let opts = DaemonOpts {
        group_toml: mirror_toml(true),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start(&pair, &opts).await;
    wait_copied(
        &pair,
        &["tfstate-default-state", "tfstate-gone-state"],
        SYNC * 10,
    )
    .await;

    secrets(&pair.primary)
        .delete("tfstate-gone-state", &DeleteParams::default())
        .await
        .unwrap();
    let pruned = wait_for(SYNC * 5, Duration::from_millis(50), || async {
        get(&pair.standby, "tfstate-gone-state").await.is_none()
    })
    .await;
    assert!(
        pruned.is_some(),
        "prune deletes the copy\n{}",
        daemon.log_text()
    );
    assert!(
        get(&pair.standby, "tfstate-own-state").await.is_some(),
        "a Secret the mirror never copied is never deleted"
    );

    // The primary goes down: the daemon promotes, and the record says how old the
    // standby's copy was.
    pair.primary.stop_apiserver().await.expect("stop primary");
    let promoted = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            support::record_field(&pair, "phase")
                .await
                .is_some_and(|p| p == "promoting" || p == "promoted")
        },
    )
    .await;
    assert!(promoted.is_some(), "promoted\n{}", daemon.log_text());
    let age: u64 = support::record_field(&pair, "mirror_age_seconds")
        .await
        .expect("the record holds the mirror's age")
        .parse()
        .expect("seconds");
    assert!(age <= 30, "age {age}");
    eprintln!("measured: mirror age at promotion: {age}s");
    daemon
        .wait_group("/status shows the age", Duration::from_secs(10), |g| {
            g.record.as_ref().and_then(|r| r.mirror_age_seconds) == Some(age)
        })
        .await;

    // The primary comes back (and is fenced); its state changes: nothing is copied.
    pair.primary.start_apiserver().await.expect("start primary");
    let before = get(&pair.standby, "tfstate-default-state").await.unwrap();
    put_state(&pair.primary, "default", "state", &state_json(2, 5_000)).await;
    put_state(&pair.primary, "new", "state", &state_json(1, 1_000)).await;
    daemon
        .wait_group("mirror stopped at the promotion", SYNC * 5, |g| {
            g.mirror
                .as_ref()
                .is_some_and(|m| !m.active && m.stopped_reason.as_deref() == Some("promoted"))
        })
        .await;
    tokio::time::sleep(SYNC * 3).await;
    let after = get(&pair.standby, "tfstate-default-state").await.unwrap();
    assert_eq!(
        after.data, before.data,
        "nothing copied after the promotion"
    );
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "not even rewritten"
    );
    assert!(get(&pair.standby, "tfstate-new-state").await.is_none());
    assert_eq!(
        daemon
            .metric("kube_failover_mirror_active{group=\"env0\"}")
            .await,
        Some(0.0)
    );

    // While the standby is active, a run there writes its state (as the backend does:
    // the Secret updated in place, its annotations kept).
    let mut written = get(&pair.standby, "tfstate-default-state").await.unwrap();
    let run_state = backend_secrets("default", "state", &state_json(50, 5_000))[0]
        .data
        .clone();
    written.data = run_state.clone();
    secrets(&pair.standby)
        .replace("tfstate-default-state", &PostParams::default(), &written)
        .await
        .expect("a run in the standby writes its state");

    // The operator fails back: the record says primary again and the mirror resumes by
    // itself, copying what is new on the primary but never the state the standby's run
    // wrote meanwhile.
    let failback = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-failover"))
        .args(["failback", "--wait", "--group", support::GROUP, "--config"])
        .arg(&daemon.config)
        .output()
        .await
        .expect("run kube-failover failback");
    assert!(
        out.status.success(),
        "failback: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    wait_copied(&pair, &["tfstate-new-state"], Duration::from_secs(30)).await;
    measured(
        "failback command started -> the primary's new state copied",
        failback.elapsed(),
    );
    daemon
        .wait_group("the standby's newer state is a conflict", SYNC * 5, |g| {
            g.mirror.as_ref().is_some_and(|m| {
                m.active
                    && m.conflicts.iter().any(|c| {
                        c.name == "tfstate-default-state" && c.kind == "changed_since_copy"
                    })
            })
        })
        .await;
    assert_eq!(
        get(&pair.standby, "tfstate-default-state")
            .await
            .unwrap()
            .data,
        run_state,
        "the state written in the standby is never overwritten"
    );
    assert!(support::events_with_reason(&pair.standby, "KubeFailoverMirrorResumed").await >= 1);
}
