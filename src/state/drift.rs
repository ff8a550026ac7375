//! Drift: is the standby the same agent? Each standby Deployment is compared with its
//! primary twin (the Deployment of the same name in the primary namespace; a workload
//! selected by a label selector pairs by name too), per container: the image (and the
//! digests running Pods report, when both sides have Pods), the environment, `envFrom`,
//! resource requests; per Deployment: its ConfigMap and Secret volumes and a hash of the
//! data of every ConfigMap and Secret it reads (Secrets only where the daemon may read
//! them; otherwise "not compared").
//!
//! The primary's side is read while the primary is healthy (every signal passed in the
//! tick) and kept: once the primary is down, the standby as it is now is compared with
//! the primary as it was last seen healthy, so a fix made on the standby during an
//! outage counts. Two checks carry the result into the engine: `drift:image` (gate
//! `[groups.drift] gate`: with `block`, another agent version refuses a promotion) and
//! `drift:settings` (everything else; always `warn`).

use super::facts::{SideFacts, TwinFacts, configmap_hash, twin};
use super::secrets::SecretHashes;
use crate::config::{Gate, WorkloadConfig, printable};
use crate::kube::kept::{KeptDeployment, KeptPod};
use crate::kube::watch_cache::WatchStore;
use crate::model::{ProbeReason, Side};
use crate::selection::parse_label_selector;
use crate::status::{DriftItem, DriftStatus};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::SelectorExt;
use kube_failover_core::checks::{CheckKind, CheckResult, StateCheck};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The name of the check carrying image drift.
pub const IMAGE_CHECK: &str = "drift:image";
/// The name of the check carrying every other drift.
pub const SETTINGS_CHECK: &str = "drift:settings";

/// Fields whose drift means another agent version: they gate with `[groups.drift]`.
const IMAGE_FIELDS: [&str; 2] = ["image", "image_id"];

/// Longest detail of a drift check.
const MAX_DETAIL_CHARS: usize = 300;

/// The watch caches of one side's namespace.
pub struct SideStores {
    /// Deployments.
    pub deployments: Arc<WatchStore<KeptDeployment>>,
    /// Pods (image digests).
    pub pods: Arc<WatchStore<KeptPod>>,
    /// ConfigMaps (data hashes).
    pub configmaps: Arc<WatchStore<ConfigMap>>,
}

/// The Deployments `workloads` select among `all`, by name.
fn selected(
    all: &BTreeMap<String, Arc<KeptDeployment>>,
    workloads: &[WorkloadConfig],
) -> BTreeSet<String> {
    let empty = BTreeMap::new();
    let mut names = BTreeSet::new();
    for w in workloads {
        match (&w.name, &w.selector) {
            (Some(name), _) => {
                if all.contains_key(name) {
                    names.insert(name.clone());
                }
            }
            (None, Some(text)) => {
                if let Some(sel) = parse_label_selector(text) {
                    names.extend(
                        all.iter()
                            .filter(|(_, d)| {
                                sel.matches(d.metadata.labels.as_ref().unwrap_or(&empty))
                            })
                            .map(|(n, _)| n.clone()),
                    );
                }
            }
            (None, None) => {}
        }
    }
    names
}

/// The versions of one side's caches and Secret hashes. Each store bumps its version
/// with every change of its objects or of its watch's freshness, so a side whose
/// versions did not change since it was read would read the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    deployments: u64,
    pods: u64,
    configmaps: u64,
    secrets: u64,
}

/// A side's caches cannot tell (not listed yet, a lost watch, a refused list).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail} ({reason})")]
struct CachesUnanswered {
    /// The cache's reason.
    reason: ProbeReason,
    /// The cache's detail.
    detail: String,
}

/// What a reading of the primary's side was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PrimaryReading {
    primary: Versions,
    standby_deployments: u64,
}

impl SideStores {
    /// The versions of this side's caches and of `secrets`, taken before a read: a
    /// change after this is seen as a new version at the next look.
    pub fn versions(&self, secrets: &SecretHashes) -> Versions {
        Versions {
            deployments: self.deployments.version(),
            pods: self.pods.version(),
            configmaps: self.configmaps.version(),
            secrets: secrets.version(),
        }
    }

    /// The names of the Deployments `workloads` select on this side; `None` when the
    /// cache cannot say.
    pub fn selected(&self, workloads: &[WorkloadConfig]) -> Option<BTreeSet<String>> {
        self.deployments.read(|all| selected(all, workloads)).ok()
    }

    /// The Secrets read by the selected Deployments and those named in `also`.
    pub fn secret_names(
        &self,
        workloads: &[WorkloadConfig],
        also: &BTreeSet<String>,
    ) -> BTreeSet<String> {
        let empty = BTreeMap::new();
        self.deployments
            .read(|all| {
                let names = selected(all, workloads);
                names
                    .iter()
                    .chain(also)
                    .filter_map(|n| all.get(n))
                    .flat_map(|d| twin(d, &empty).secrets)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The side's facts: the selected Deployments and those named in `also` (the twins
    /// of the other side's), the ConfigMaps they read and the Secret hashes of
    /// `secrets`.
    fn read(
        &self,
        workloads: &[WorkloadConfig],
        also: &BTreeSet<String>,
        secrets: &SecretHashes,
    ) -> Result<SideFacts, CachesUnanswered> {
        let fail = |(reason, detail)| CachesUnanswered { reason, detail };
        let deployments: Vec<Arc<KeptDeployment>> = self
            .deployments
            .read(|all| {
                let names = selected(all, workloads);
                names
                    .iter()
                    .chain(also)
                    .filter_map(|n| all.get(n).cloned())
                    .collect()
            })
            .map_err(fail)?;
        let twins: BTreeMap<String, TwinFacts> = self
            .pods
            .read(|pods| {
                deployments
                    .iter()
                    .map(|d| (d.metadata.name.clone().unwrap_or_default(), twin(d, pods)))
                    .collect()
            })
            .map_err(fail)?;
        let wanted: BTreeSet<&String> = twins.values().flat_map(|t| &t.configmaps).collect();
        let configmaps = self
            .configmaps
            .read(|all| {
                wanted
                    .iter()
                    .map(|n| ((*n).clone(), all.get(*n).map(|cm| configmap_hash(cm))))
                    .collect()
            })
            .map_err(fail)?;
        let (secrets, secrets_unread) = secrets.current();
        Ok(SideFacts {
            deployments: twins,
            configmaps,
            secrets,
            secrets_unread,
        })
    }
}

/// The differences between the two sides (primary first), and what could not be
/// compared.
pub fn compare(p: &SideFacts, s: &SideFacts) -> (Vec<DriftItem>, Vec<String>) {
    let mut items = Vec::new();
    let mut notes = BTreeSet::new();
    let names: BTreeSet<&String> = p.deployments.keys().chain(s.deployments.keys()).collect();
    for name in names {
        let item =
            |field: &str, container: Option<&str>, key: Option<&str>, pv: String, sv: String| {
                DriftItem {
                    deployment: name.clone(),
                    container: container.map(str::to_string),
                    field: field.to_string(),
                    key: key.map(str::to_string),
                    primary: pv,
                    standby: sv,
                }
            };
        let (pt, st) = match (p.deployments.get(name), s.deployments.get(name)) {
            (Some(pt), Some(st)) => (pt, st),
            (pt, st) => {
                let present = |t: Option<&TwinFacts>| {
                    if t.is_some() { "present" } else { "absent" }.to_string()
                };
                items.push(item("deployment", None, None, present(pt), present(st)));
                continue;
            }
        };
        let pc: BTreeSet<&String> = pt.containers.keys().collect();
        let sc: BTreeSet<&String> = st.containers.keys().collect();
        if pc != sc {
            let list =
                |c: &BTreeSet<&String>| c.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            items.push(item("containers", None, None, list(&pc), list(&sc)));
        }
        for (cname, pf) in &pt.containers {
            let Some(sf) = st.containers.get(cname) else {
                continue;
            };
            let c = Some(cname.as_str());
            if pf.image != sf.image {
                items.push(item("image", c, None, pf.image.clone(), sf.image.clone()));
            }
            match (pt.image_ids.get(cname), st.image_ids.get(cname)) {
                (Some(pi), Some(si)) if !pi.is_empty() && !si.is_empty() => {
                    if pi != si {
                        let join =
                            |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
                        items.push(item("image_id", c, None, join(pi), join(si)));
                    }
                }
                (_, None) => {
                    notes.insert(
                        "image_id: not compared where the standby runs no Pods (image \
                         digests come from running Pods)"
                            .to_string(),
                    );
                }
                _ => {
                    notes.insert(
                        "image_id: not compared where the primary's Pods were not seen".to_string(),
                    );
                }
            }
            let vars: BTreeSet<&String> = pf.env.keys().chain(sf.env.keys()).collect();
            for var in vars {
                let (pv, sv) = (pf.env.get(var), sf.env.get(var));
                if pv != sv {
                    let shown = |v: Option<&String>| v.cloned().unwrap_or_else(|| "unset".into());
                    items.push(item("env", c, Some(var), shown(pv), shown(sv)));
                }
            }
            if pf.env_from != sf.env_from {
                items.push(item(
                    "env_from",
                    c,
                    None,
                    pf.env_from.clone(),
                    sf.env_from.clone(),
                ));
            }
            if pf.requests != sf.requests {
                items.push(item(
                    "resources",
                    c,
                    None,
                    pf.requests.clone(),
                    sf.requests.clone(),
                ));
            }
        }
        if pt.volumes != st.volumes {
            let join = |v: &BTreeSet<String>| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            };
            items.push(item(
                "volumes",
                None,
                None,
                join(&pt.volumes),
                join(&st.volumes),
            ));
        }
        let hash = |h: Option<&Option<String>>| {
            h.cloned().flatten().unwrap_or_else(|| "absent".to_string())
        };
        for cm in pt.configmaps.union(&st.configmaps) {
            let (ph, sh) = (hash(p.configmaps.get(cm)), hash(s.configmaps.get(cm)));
            if ph != sh {
                items.push(item("configmap_data", None, Some(cm), ph, sh));
            }
        }
        let secrets: BTreeSet<&String> = pt.secrets.union(&st.secrets).collect();
        if !secrets.is_empty() {
            match (&p.secrets_unread, &s.secrets_unread) {
                (None, None) => {
                    for secret in secrets {
                        let (ph, sh) = (hash(p.secrets.get(secret)), hash(s.secrets.get(secret)));
                        if ph != sh {
                            items.push(item("secret_data", None, Some(secret), ph, sh));
                        }
                    }
                }
                (pu, su) => {
                    for why in [pu, su].into_iter().flatten() {
                        notes.insert(format!("secret_data: not compared: {why}"));
                    }
                }
            }
        }
    }
    (items, notes.into_iter().collect())
}

/// The drift of one group: the primary's side as last seen healthy, and the result of
/// the last comparison.
pub struct Drift {
    image_gate: Gate,
    primary: Option<(SideFacts, f64)>,
    /// What the primary's side was read from: its versions and the standby's
    /// Deployments' (whose twins it reads too). Versions only grow, so this names the
    /// reading.
    primary_read: Option<PrimaryReading>,
    /// What the last comparison was made of: the primary's reading and the standby's
    /// versions. Unchanged inputs compare the same, so they are not compared again.
    compared: Option<(PrimaryReading, Versions)>,
    /// How many comparisons were made (each reads the standby's caches).
    comparisons: u64,
    standby_seen: Option<f64>,
    deployments: Vec<String>,
    items: Vec<DriftItem>,
    not_compared: Vec<String>,
    /// Secret hashes of the primary's namespace.
    pub primary_secrets: SecretHashes,
    /// Secret hashes of the standby's namespace.
    pub standby_secrets: SecretHashes,
}

impl Drift {
    /// Drift with `image_gate` on `drift:image`.
    pub fn new(image_gate: Gate) -> Self {
        Drift {
            image_gate,
            primary: None,
            primary_read: None,
            compared: None,
            comparisons: 0,
            standby_seen: None,
            deployments: Vec::new(),
            items: Vec::new(),
            not_compared: Vec::new(),
            primary_secrets: SecretHashes::new(Side::Primary),
            standby_secrets: SecretHashes::new(Side::Standby),
        }
    }

    /// Compares the two sides at `wall_unix`. The primary's side is read only when
    /// `primary_healthy`; `standby_untrusted` says why the standby's caches cannot be
    /// trusted this tick, if they cannot. Returns `drift:image` and `drift:settings`.
    ///
    /// A side is read again only when one of its caches or Secret hashes changed since
    /// its last reading, and the two are compared again only when either reading
    /// changed: at steady state a tick reads four version counters.
    pub fn evaluate(
        &mut self,
        workloads: &[WorkloadConfig],
        primary: &SideStores,
        standby: &SideStores,
        primary_healthy: bool,
        standby_untrusted: Option<&str>,
        wall_unix: f64,
    ) -> [StateCheck; 2] {
        let standby_versions = standby.versions(&self.standby_secrets);
        if primary_healthy {
            let read_from = PrimaryReading {
                primary: primary.versions(&self.primary_secrets),
                standby_deployments: standby_versions.deployments,
            };
            match &mut self.primary {
                Some((_, seen)) if self.primary_read == Some(read_from) => *seen = wall_unix,
                _ => {
                    let standby_names = standby.selected(workloads).unwrap_or_default();
                    if let Ok(facts) =
                        primary.read(workloads, &standby_names, &self.primary_secrets)
                    {
                        self.primary = Some((facts, wall_unix));
                        self.primary_read = Some(read_from);
                    }
                }
            }
        }
        let unanswered = |why: String| -> Result<(), String> { Err(why) };
        let compare_from = self.primary_read.map(|p| (p, standby_versions));
        let outcome = match (&self.primary, standby_untrusted) {
            (_, Some(why)) => unanswered(format!("the standby's Deployments: {why}")),
            (None, _) => unanswered(
                "not compared yet: the primary has not been seen healthy since the daemon \
                 started"
                    .to_string(),
            ),
            (Some(_), None) if compare_from.is_some() && self.compared == compare_from => {
                self.standby_seen = Some(wall_unix);
                Ok(())
            }
            (Some((p, _)), None) => {
                let also: BTreeSet<String> = p.deployments.keys().cloned().collect();
                self.comparisons += 1;
                match standby.read(workloads, &also, &self.standby_secrets) {
                    Err(why) => {
                        self.compared = None;
                        unanswered(format!("the standby's Deployments: {why}"))
                    }
                    Ok(s) => {
                        let (items, notes) = compare(p, &s);
                        self.deployments = p
                            .deployments
                            .keys()
                            .chain(s.deployments.keys())
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .cloned()
                            .collect();
                        self.items = items;
                        self.not_compared = notes;
                        self.standby_seen = Some(wall_unix);
                        self.compared = compare_from;
                        Ok(())
                    }
                }
            }
        };
        let check = |name: &str, gate: Gate, items: &[&DriftItem]| {
            let (result, detail) = match &outcome {
                Err(why) => (CheckResult::Unanswerable, printable(why, MAX_DETAIL_CHARS)),
                Ok(()) if items.is_empty() => (
                    CheckResult::Ok,
                    "the standby's Deployments match their primary twins".to_string(),
                ),
                Ok(()) => (CheckResult::Drift, describe(items)),
            };
            StateCheck {
                name: name.to_string(),
                kind: CheckKind::Drift,
                gate,
                result,
                detail,
                checked_at_unix: Some(wall_unix),
            }
        };
        let (image, settings): (Vec<&DriftItem>, Vec<&DriftItem>) = self
            .items
            .iter()
            .partition(|i| IMAGE_FIELDS.contains(&i.field.as_str()));
        [
            check(IMAGE_CHECK, self.image_gate, &image),
            check(SETTINGS_CHECK, Gate::Warn, &settings),
        ]
    }

    /// What `/status` shows of the last comparison.
    pub fn status(&self) -> DriftStatus {
        DriftStatus {
            gate: self.image_gate.as_str().to_string(),
            primary_seen_unix: self.primary.as_ref().map(|(_, at)| *at),
            standby_seen_unix: self.standby_seen,
            deployments: self.deployments.clone(),
            items: self.items.clone(),
            not_compared: self.not_compared.clone(),
        }
    }
}

/// The first differing field in words, and how many more there are.
fn describe(items: &[&DriftItem]) -> String {
    let Some(first) = items.first() else {
        return String::new();
    };
    let mut at = first.deployment.clone();
    if let Some(c) = &first.container {
        at = format!("{at}/{c}");
    }
    let key = first
        .key
        .as_ref()
        .map(|k| format!(" {k}"))
        .unwrap_or_default();
    let more = match items.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    printable(
        &format!(
            "{}{key} of {at}: primary {} vs standby {}{more}",
            first.field, first.primary, first.standby
        ),
        MAX_DETAIL_CHARS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    fn deployment(name: &str, label: &str, image: &str, env: &str) -> KeptDeployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"env0": label}},
            "spec": {
                "selector": {"matchLabels": {"env0": label}},
                "template": {
                    "metadata": {"labels": {"env0": label}},
                    "spec": {"containers": [{
                        "name": label,
                        "image": image,
                        "env": [
                            {"name": "ENV0_API_URL", "value": env},
                            {"name": "ENV0_API_SECRET", "value": "s3cr3t-value"}
                        ],
                        "envFrom": [{"configMapRef": {"name": "agent-env"}}, {"secretRef": {"name": "agent-creds"}}]
                    }]}
                }
            }
        }))
        .unwrap()
    }

    fn live<K: kube::Resource + 'static>(what: &str, items: Vec<K>) -> Arc<WatchStore<K>> {
        let s = WatchStore::new(what);
        s.apply(Event::Init);
        for i in items {
            s.apply(Event::InitApply(i));
        }
        s.apply(Event::InitDone);
        s
    }

    fn cm(name: &str, value: &str) -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "data": {"k": value}
        }))
        .unwrap()
    }

    fn side(deployments: Vec<KeptDeployment>, configmaps: Vec<ConfigMap>) -> SideStores {
        SideStores {
            deployments: live("Deployments in ns", deployments),
            pods: live("Pods in ns", Vec::<KeptPod>::new()),
            configmaps: live("ConfigMaps in ns", configmaps),
        }
    }

    fn workloads() -> Vec<WorkloadConfig> {
        vec![WorkloadConfig {
            name: None,
            selector: Some("env0=agent-trigger".into()),
            replicas: 1,
        }]
    }

    const TRIGGER: &str = "env0-agent-trigger-deployment";

    #[test]
    fn identical_sides_pass_and_secret_data_is_not_compared_without_access() {
        let d = || deployment(TRIGGER, "agent-trigger", "env0/agent:3.1", "https://api");
        let primary = side(vec![d()], vec![cm("agent-env", "a")]);
        let standby = side(vec![d()], vec![cm("agent-env", "a")]);
        let mut drift = Drift::new(Gate::Block);
        let [image, settings] = drift.evaluate(&workloads(), &primary, &standby, true, None, 5.0);
        assert!(
            image.passed() && settings.passed(),
            "{image:?} {settings:?}"
        );
        assert_eq!(image.gate, Gate::Block);
        assert_eq!(settings.gate, Gate::Warn);
        let status = drift.status();
        assert_eq!(status.primary_seen_unix, Some(5.0));
        assert!(status.items.is_empty());
        assert!(
            status.not_compared.iter().any(|n| n.starts_with(
                "secret_data: not compared: the primary's Secrets have not been read"
            )),
            "{:?}",
            status.not_compared
        );
    }

    #[test]
    fn image_drift_gates_settings_drift_warns_and_nothing_secret_is_shown() {
        let primary = side(
            vec![deployment(
                TRIGGER,
                "agent-trigger",
                "env0/agent:3.1",
                "https://a",
            )],
            vec![cm("agent-env", "a")],
        );
        let standby = side(
            vec![deployment(
                TRIGGER,
                "agent-trigger",
                "env0/agent:3.0",
                "https://b",
            )],
            vec![cm("agent-env", "b")],
        );
        let mut drift = Drift::new(Gate::Block);
        let [image, settings] = drift.evaluate(&workloads(), &primary, &standby, true, None, 5.0);
        assert_eq!(image.result, CheckResult::Drift);
        assert_eq!(
            image.detail,
            "image of env0-agent-trigger-deployment/agent-trigger: primary env0/agent:3.1 vs standby env0/agent:3.0"
        );
        assert_eq!(
            image.reason_code().map(|r| r.as_str()),
            Some("standby_agent_drift")
        );
        assert!(image.blocks());
        assert_eq!(settings.result, CheckResult::Drift);
        assert!(settings.warns() && !settings.blocks());
        let status = drift.status();
        let fields: Vec<(&str, Option<&str>)> = status
            .items
            .iter()
            .map(|i| (i.field.as_str(), i.key.as_deref()))
            .collect();
        assert_eq!(
            fields,
            [
                ("image", None),
                ("env", Some("ENV0_API_URL")),
                ("configmap_data", Some("agent-env"))
            ]
        );
        let shown = format!("{:?}", drift.status());
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn the_primary_as_last_seen_healthy_is_compared_with_the_standby_as_it_is_now() {
        let primary = side(
            vec![deployment(TRIGGER, "agent-trigger", "env0/agent:3.1", "x")],
            vec![],
        );
        let standby = side(
            vec![deployment(TRIGGER, "agent-trigger", "env0/agent:3.0", "x")],
            vec![],
        );
        let mut drift = Drift::new(Gate::Block);
        // Never seen healthy: nothing to compare with, which is no pass.
        let [image, _] = drift.evaluate(&workloads(), &primary, &standby, false, None, 1.0);
        assert_eq!(image.result, CheckResult::Unanswerable);
        assert!(
            image.detail.starts_with("not compared yet"),
            "{}",
            image.detail
        );
        let [image, _] = drift.evaluate(&workloads(), &primary, &standby, true, None, 2.0);
        assert_eq!(image.result, CheckResult::Drift);
        // The primary goes down (its caches go away); the standby is fixed meanwhile.
        primary.deployments.suspect("the primary is down");
        standby.deployments.apply(Event::Apply(deployment(
            TRIGGER,
            "agent-trigger",
            "env0/agent:3.1",
            "x",
        )));
        let [image, settings] = drift.evaluate(&workloads(), &primary, &standby, false, None, 3.0);
        assert!(image.passed() && settings.passed(), "{image:?}");
        assert_eq!(drift.status().primary_seen_unix, Some(2.0));
        assert_eq!(drift.status().standby_seen_unix, Some(3.0));
        // A standby that cannot be read is no pass either.
        let [image, _] = drift.evaluate(
            &workloads(),
            &primary,
            &standby,
            false,
            Some("standby API unreachable (refused)"),
            4.0,
        );
        assert_eq!(image.result, CheckResult::Unanswerable);
    }

    #[test]
    fn unchanged_caches_are_not_read_again_and_any_change_is_compared() {
        let d = |image: &str| deployment(TRIGGER, "agent-trigger", image, "x");
        let primary = side(vec![d("env0/agent:3.1")], vec![cm("agent-env", "a")]);
        let standby = side(vec![d("env0/agent:3.1")], vec![cm("agent-env", "a")]);
        let mut drift = Drift::new(Gate::Block);
        let mut at = 0.0;
        let mut step = |drift: &mut Drift, healthy: bool| {
            at += 1.0;
            drift.evaluate(&workloads(), &primary, &standby, healthy, None, at)
        };
        let [image, _] = step(&mut drift, true);
        assert!(image.passed());
        assert_eq!(drift.comparisons, 1);
        for _ in 0..5 {
            let [image, settings] = step(&mut drift, true);
            assert!(image.passed() && settings.passed());
        }
        assert_eq!(drift.comparisons, 1, "nothing changed: nothing compared");
        let status = drift.status();
        assert_eq!(status.primary_seen_unix, Some(6.0), "still seen healthy");
        assert_eq!(status.standby_seen_unix, Some(6.0));

        // A standby change is compared at the next look.
        standby.deployments.apply(Event::Apply(d("env0/agent:3.0")));
        let [image, _] = step(&mut drift, true);
        assert_eq!(image.result, CheckResult::Drift);
        assert_eq!(drift.comparisons, 2);
        step(&mut drift, true);
        assert_eq!(drift.comparisons, 2);

        // So is a primary change, and a change of a ConfigMap a Deployment reads.
        primary.deployments.apply(Event::Apply(d("env0/agent:3.0")));
        let [image, settings] = step(&mut drift, true);
        assert!(
            image.passed() && settings.passed(),
            "{image:?} {settings:?}"
        );
        standby.configmaps.apply(Event::Apply(cm("agent-env", "b")));
        let [_, settings] = step(&mut drift, true);
        assert_eq!(settings.result, CheckResult::Drift);
        assert_eq!(drift.comparisons, 4);

        // The primary is unhealthy: a change there is not read (the last healthy reading
        // counts); a relisting standby cache cannot answer, and is compared again once
        // it has listed.
        primary.configmaps.apply(Event::Apply(cm("agent-env", "b")));
        let [_, settings] = step(&mut drift, false);
        assert_eq!(settings.result, CheckResult::Drift);
        assert_eq!(drift.comparisons, 4);
        standby.pods.suspect("the standby is relisting");
        let [image, _] = step(&mut drift, false);
        assert_eq!(image.result, CheckResult::Unanswerable);
        standby.pods.apply(Event::Init);
        standby.pods.apply(Event::InitDone);
        let [image, settings] = step(&mut drift, false);
        assert!(image.passed(), "{image:?}");
        assert_eq!(settings.result, CheckResult::Drift);
        // Healthy again: the primary's new ConfigMap is read and matches the standby's.
        let [_, settings] = step(&mut drift, true);
        assert!(settings.passed(), "{settings:?}");
        assert_eq!(drift.comparisons, 7);
    }

    #[test]
    fn a_twin_missing_on_one_side_or_other_containers_are_settings_drift() {
        let p = SideFacts {
            deployments: [
                ("a".to_string(), TwinFacts::default()),
                ("b".to_string(), TwinFacts::default()),
            ]
            .into(),
            ..SideFacts::default()
        };
        let mut with_container = TwinFacts::default();
        with_container
            .containers
            .insert("sidecar".into(), Default::default());
        let s = SideFacts {
            deployments: [("a".to_string(), with_container)].into(),
            ..SideFacts::default()
        };
        let (items, _) = compare(&p, &s);
        let got: Vec<(&str, &str, &str, &str)> = items
            .iter()
            .map(|i| {
                (
                    i.deployment.as_str(),
                    i.field.as_str(),
                    i.primary.as_str(),
                    i.standby.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", "containers", "", "sidecar"),
                ("b", "deployment", "present", "absent")
            ]
        );
    }
}
