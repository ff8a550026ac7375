//! The container image, run as the Helm chart and the kustomize base run it, against the
//! test bed: host network (the test bed is on loopback), read-only root filesystem, UID
//! and GID 65532, every capability dropped, no new privileges, the config mounted at
//! /etc/kube-failover/config.toml and the kubeconfigs at /etc/kube-failover/kubeconfigs
//! (mode 0440, group 65532, as the Secret volume with fsGroup mounts them). It reaches
//! /readyz, promotes the standby when the primary's API server stops, and exits 0 on
//! SIGTERM.
//!
//! Needs podman and the image: ci/image.sh builds it and runs this test with
//! `KUBE_FAILOVER_IMAGE` set (`--ignored`: plain `cargo test` has no image); ci/test.sh
//! runs it once, on the image of the debug binary (`ci/image.sh --debug`).

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

const IMAGE_ENV: &str = "KUBE_FAILOVER_IMAGE";
/// Where the chart mounts the kubeconfig Secret.
const KUBECONFIGS: &str = "/etc/kube-failover/kubeconfigs";
const UID: u32 = 65532;

/// The test bed's kubeconfig with its certificate files inlined (`…-data`), as a
/// kubeconfig in a Secret must be: the container sees none of the host's files.
fn inline(kubeconfig: &Path, into: &Path) {
    let out = Command::new("python3")
        .args([
            "-c",
            r#"
import base64, sys, yaml
kc = yaml.safe_load(open(sys.argv[1]))
def inline(d, key):
    if key in d:
        d[key + "-data"] = base64.b64encode(open(d.pop(key), "rb").read()).decode()
for c in kc["clusters"]:
    inline(c["cluster"], "certificate-authority")
for u in kc["users"]:
    inline(u["user"], "client-certificate")
    inline(u["user"], "client-key")
yaml.safe_dump(kc, open(sys.argv[2], "w"))
"#,
        ])
        .arg(kubeconfig)
        .arg(into)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The Secret volume: 0440, group 65532 (fsGroup), owner root.
    std::fs::set_permissions(into, std::fs::Permissions::from_mode(0o440)).expect("chmod");
    std::os::unix::fs::chown(into, Some(0), Some(UID)).expect("chown");
}

/// `podman inspect --format FORMAT NAME`.
fn inspect(name: &str, format: &str) -> String {
    let out = Command::new("podman")
        .args(["inspect", "--format", format, name])
        .output()
        .expect("podman inspect");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A field of /proc/PID/status.
fn proc_status(pid: &str, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} not in /proc/{pid}/status"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs podman and the image: ci/image.sh runs it"]
async fn image_runs_read_only_as_65532_promotes_and_stops_on_sigterm() {
    let image = std::env::var(IMAGE_ENV)
        .unwrap_or_else(|_| panic!("{IMAGE_ENV} is not set: run ci/image.sh"));
    let pair = pair().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfigs = dir.path().join("kubeconfigs");
    std::fs::create_dir(&kubeconfigs).expect("mkdir");
    std::fs::set_permissions(&kubeconfigs, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    inline(
        pair.primary.daemon_kubeconfig(),
        &kubeconfigs.join("primary"),
    );
    inline(
        pair.standby.daemon_kubeconfig(),
        &kubeconfigs.join("standby"),
    );

    // The daemon the support code starts is this script: `run --config <file>` becomes
    // the container, the file mounted where the chart mounts the ConfigMap.
    let name = format!("kube-failover-e2e-image-{}", std::process::id());
    let wrapper = dir.path().join("kube-failover-in-a-container");
    std::fs::write(
        &wrapper,
        format!(
            r#"#!/bin/sh
# Called as: <this> run --config FILE
exec podman --runtime runc run --rm --name {name} \
  --network host --read-only --user {UID}:{UID} --cap-drop ALL \
  --security-opt no-new-privileges \
  --ulimit nofile=8192:8192 --ulimit nproc=4096:4096 \
  --env RUST_LOG \
  -v "$3":/etc/kube-failover/config.toml:ro \
  -v {kubeconfigs}:{KUBECONFIGS}:ro \
  {image} run --config /etc/kube-failover/config.toml
"#,
            kubeconfigs = kubeconfigs.display(),
        ),
    )
    .expect("write the wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    use_daemon_bin(wrapper);

    let opts = DaemonOpts {
        primary_kubeconfig: Some(format!("{KUBECONFIGS}/primary").into()),
        standby_kubeconfig: Some(format!("{KUBECONFIGS}/standby").into()),
        ..DaemonOpts::default()
    };
    // Ready: /readyz answered 200 through the host network.
    let mut d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(30))
        .await;

    // Running as the chart runs it.
    assert_eq!(inspect(&name, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    let pid = inspect(&name, "{{.State.Pid}}");
    let uids: Vec<String> = proc_status(&pid, "Uid")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        uids,
        vec![UID.to_string(); 4],
        "real, effective, saved, fs uid"
    );
    let gids: Vec<String> = proc_status(&pid, "Gid")
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(gids, vec![UID.to_string(); 4]);
    assert_eq!(proc_status(&pid, "CapEff"), "0000000000000000");
    assert_eq!(proc_status(&pid, "CapBnd"), "0000000000000000");
    assert_eq!(proc_status(&pid, "NoNewPrivs"), "1");
    let version = d.metrics().await;
    assert!(
        version.contains(&format!(
            "kube_failover_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );

    // An outage: the container promotes the standby.
    let took = stop_primary_api_and_time_promotion(&pair, Duration::from_millis(50)).await;
    measured("image: primary stopped -> standby scaled", took.scaled);
    d.wait_state("promoted", Duration::from_secs(15)).await;
    let cm = record(&pair).await.expect("record written");
    assert_eq!(field_of(&cm, "phase").as_deref(), Some("promoted"));

    // SIGTERM to podman reaches the daemon (sig-proxy), which drains and exits 0.
    let status = d.terminate().await;
    assert!(status.success(), "exit status {status:?}\n{}", d.log_text());
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    assert!(log.contains("stopped"), "{log}");
    let gone = Command::new("podman")
        .args(["container", "exists", &name])
        .status()
        .expect("podman container exists");
    assert_eq!(gone.code(), Some(1), "the container was removed");
}
