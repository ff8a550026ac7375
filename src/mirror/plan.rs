//! What one pass of the mirror must do, decided in memory from the primary's and the
//! standby's selected Secrets: copy, adopt, leave alone, delete (with `prune`), or
//! report a conflict. Pure: no client, no clock; [`super::sync`] carries the steps out.
//!
//! What is copied of a Secret is its [`Content`]: `type`, `data` byte for byte, every
//! label, and every annotation except kubectl's last-applied configuration and the
//! daemon's own (`kube-failover/…`). Each copy carries the annotation
//! [`CHECKSUM_ANNOTATION`], the SHA-256 of the content copied, so a later pass can tell
//! a standby Secret nobody touched (its content still matches the annotation) from one
//! that changed in the standby (a Terraform run there, a person): that one is a
//! conflict and is never overwritten.

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Annotation on every copy: `sha256:<hex>` of the [`Content`] copied.
pub const CHECKSUM_ANNOTATION: &str = "kube-failover/mirror-checksum";
/// Annotation on every copy: the primary Secret's resourceVersion copied (for people).
pub const SOURCE_VERSION_ANNOTATION: &str = "kube-failover/mirror-source-version";
/// kubectl's copy of an applied manifest: never part of the content.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The daemon's own annotations: never part of the content.
const OWN_PREFIX: &str = "kube-failover/";
/// Secrets of this type hold a token of their own cluster: never copied.
const SERVICE_ACCOUNT_TOKEN: &str = "kubernetes.io/service-account-token";

/// What the mirror copies of one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// `type` (`None`: not set, which the API server stores as `Opaque`).
    pub type_: Option<String>,
    /// `data`, byte for byte.
    pub data: BTreeMap<String, ByteString>,
    /// Every label.
    pub labels: BTreeMap<String, String>,
    /// Every annotation but kubectl's last-applied and the daemon's own.
    pub annotations: BTreeMap<String, String>,
}

impl Content {
    /// The content of `secret`.
    pub fn of(secret: &Secret) -> Content {
        let annotations = secret
            .metadata
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != LAST_APPLIED && !k.starts_with(OWN_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Content {
            // The API server defaults an empty type to Opaque; compare them as equal.
            type_: secret
                .type_
                .clone()
                .filter(|t| !t.is_empty() && t != "Opaque"),
            data: secret.data.clone().unwrap_or_default(),
            labels: secret.metadata.labels.clone().unwrap_or_default(),
            annotations,
        }
    }

    /// Bytes of `data` (the state itself), for the byte count.
    pub fn bytes(&self) -> u64 {
        self.data.values().map(|v| v.0.len() as u64).sum()
    }

    /// `sha256:<hex>` of the content, over an unambiguous encoding (every field
    /// length-prefixed, maps in key order).
    pub fn checksum(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut field = |tag: u8, bytes: &[u8]| {
            ctx.update(&[tag]);
            ctx.update(&(bytes.len() as u64).to_le_bytes());
            ctx.update(bytes);
        };
        field(b't', self.type_.as_deref().unwrap_or("Opaque").as_bytes());
        for (k, v) in &self.data {
            field(b'k', k.as_bytes());
            field(b'd', &v.0);
        }
        for (k, v) in &self.labels {
            field(b'l', k.as_bytes());
            field(b'v', v.as_bytes());
        }
        for (k, v) in &self.annotations {
            field(b'a', k.as_bytes());
            field(b'v', v.as_bytes());
        }
        let digest = ctx.finish();
        let mut hex = String::with_capacity(7 + 64);
        hex.push_str("sha256:");
        for b in digest.as_ref() {
            hex.push_str(&format!("{b:02x}"));
        }
        hex
    }
}

/// Why a standby Secret is left alone and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConflictKind {
    /// It carries the mirror's checksum, but its content no longer matches it: it was
    /// changed in the standby since the last copy.
    ChangedSinceCopy,
    /// It exists without the mirror's checksum and differs from the primary's: the
    /// mirror never copied it (created in the standby, or copied by other means).
    NotCopiedByMirror,
    /// A part (`…-part-N`) that the primary no longer has, while the primary still has
    /// the state it belonged to: read together with the primary's parts it would
    /// corrupt the state. Deleted only with `prune = true`.
    StalePart,
}

impl ConflictKind {
    /// The bounded name, for `/status`, logs and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::ChangedSinceCopy => "changed_since_copy",
            ConflictKind::NotCopiedByMirror => "not_copied_by_mirror",
            ConflictKind::StalePart => "stale_part",
        }
    }

    /// What it means, for people.
    pub fn explain(self) -> &'static str {
        match self {
            ConflictKind::ChangedSinceCopy => {
                "changed in the standby since the mirror copied it; left alone"
            }
            ConflictKind::NotCopiedByMirror => {
                "exists in the standby without the mirror's checksum and differs from the \
                 primary's; left alone"
            }
            ConflictKind::StalePart => {
                "a part the primary no longer has, next to a state the primary still has: \
                 read with the primary's parts it would corrupt the state; delete it, or set \
                 prune = true"
            }
        }
    }
}

/// One step of a pass, for one Secret (by name, the same on both sides).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The standby's copy is current.
    InSync {
        /// The Secret.
        name: String,
        /// Bytes of its data.
        bytes: u64,
    },
    /// Create the copy: the standby has none.
    Create {
        /// The Secret to create (no resourceVersion).
        secret: Box<Secret>,
        /// Bytes of its data.
        bytes: u64,
    },
    /// Replace the standby's copy, which nobody changed since the last copy (or whose
    /// content already equals the primary's and only lacks the checksum), on condition
    /// of its resourceVersion.
    Replace {
        /// The Secret as it must be, with the standby's resourceVersion.
        secret: Box<Secret>,
        /// Bytes of its data.
        bytes: u64,
        /// True when only the mirror's annotations change (the content is equal).
        annotations_only: bool,
    },
    /// `prune`: delete the standby's copy of a Secret the primary no longer has, on
    /// condition of its resourceVersion.
    Delete {
        /// The Secret.
        name: String,
        /// The standby's resourceVersion.
        resource_version: Option<String>,
    },
    /// Left alone and reported.
    Conflict {
        /// The Secret.
        name: String,
        /// Why.
        kind: ConflictKind,
    },
    /// A standby Secret the primary does not have, kept (no `prune`, or not the
    /// mirror's copy): not an error.
    Kept {
        /// The Secret.
        name: String,
    },
    /// A primary Secret of a type that is never copied (a service account token is
    /// only valid in its own cluster).
    Skipped {
        /// The Secret.
        name: String,
    },
}

impl Step {
    /// The Secret's name.
    pub fn name(&self) -> &str {
        match self {
            Step::InSync { name, .. }
            | Step::Delete { name, .. }
            | Step::Conflict { name, .. }
            | Step::Kept { name }
            | Step::Skipped { name } => name,
            Step::Create { secret, .. } | Step::Replace { secret, .. } => {
                secret.metadata.name.as_deref().unwrap_or_default()
            }
        }
    }
}

/// The state a `…-part-N` Secret belongs to (its name without the suffix), if it is
/// one: the Terraform backend names the parts of a state split over several Secrets
/// `tfstate-<workspace>-<suffix>-part-<N>` (N from 1; part 0 is the base name).
pub fn part_of(name: &str) -> Option<&str> {
    let (base, n) = name.rsplit_once("-part-")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && !base.is_empty()).then_some(base)
}

/// The steps that make the standby's selected Secrets (`standby`, by name) copies of
/// the primary's (`primary`), in `namespace` of the standby.
pub fn plan(
    primary: &BTreeMap<String, Arc<Secret>>,
    standby: &BTreeMap<String, Arc<Secret>>,
    namespace: &str,
    prune: bool,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (name, source) in primary {
        if source.type_.as_deref() == Some(SERVICE_ACCOUNT_TOKEN) {
            steps.push(Step::Skipped { name: name.clone() });
            continue;
        }
        let want = Content::of(source);
        let bytes = want.bytes();
        let source_version = source.metadata.resource_version.clone();
        let Some(copy) = standby.get(name) else {
            let secret = build(name, namespace, &want, source_version, None);
            steps.push(Step::Create {
                secret: Box::new(secret),
                bytes,
            });
            continue;
        };
        let have = Content::of(copy);
        let recorded = copy
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CHECKSUM_ANNOTATION));
        let checksum = want.checksum();
        if have == want {
            if recorded == Some(&checksum) {
                steps.push(Step::InSync {
                    name: name.clone(),
                    bytes,
                });
            } else {
                // Equal content: taking it over loses nothing, and from now on it
                // follows the primary.
                steps.push(Step::Replace {
                    secret: Box::new(build(name, namespace, &want, source_version, Some(copy))),
                    bytes,
                    annotations_only: true,
                });
            }
            continue;
        }
        match recorded {
            Some(sum) if *sum == have.checksum() => steps.push(Step::Replace {
                secret: Box::new(build(name, namespace, &want, source_version, Some(copy))),
                bytes,
                annotations_only: false,
            }),
            Some(_) => steps.push(Step::Conflict {
                name: name.clone(),
                kind: ConflictKind::ChangedSinceCopy,
            }),
            None => steps.push(Step::Conflict {
                name: name.clone(),
                kind: ConflictKind::NotCopiedByMirror,
            }),
        }
    }
    for (name, copy) in standby {
        if primary.contains_key(name) {
            continue;
        }
        let have = Content::of(copy);
        let ours_unchanged = copy
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CHECKSUM_ANNOTATION))
            .is_some_and(|sum| *sum == have.checksum());
        let stale_part = part_of(name).is_some_and(|base| primary.contains_key(base));
        let step = match (prune, ours_unchanged, stale_part) {
            (true, true, _) => Step::Delete {
                name: name.clone(),
                resource_version: copy.metadata.resource_version.clone(),
            },
            (_, _, true) => Step::Conflict {
                name: name.clone(),
                kind: if prune {
                    ConflictKind::ChangedSinceCopy
                } else {
                    ConflictKind::StalePart
                },
            },
            _ => Step::Kept { name: name.clone() },
        };
        steps.push(step);
    }
    steps
}

/// The copy of `content` named `name` in `namespace`: built on the standby's object
/// when there is one (its resourceVersion is the write's precondition; its other
/// metadata stays), else new.
fn build(
    name: &str,
    namespace: &str,
    content: &Content,
    source_version: Option<String>,
    existing: Option<&Secret>,
) -> Secret {
    let mut annotations = content.annotations.clone();
    if let Some(last) = existing
        .and_then(|e| e.metadata.annotations.as_ref())
        .and_then(|a| a.get(LAST_APPLIED))
    {
        annotations.insert(LAST_APPLIED.to_string(), last.clone());
    }
    annotations.insert(CHECKSUM_ANNOTATION.to_string(), content.checksum());
    if let Some(v) = source_version {
        annotations.insert(SOURCE_VERSION_ANNOTATION.to_string(), v);
    }
    let metadata = match existing {
        Some(e) => ObjectMeta {
            labels: Some(content.labels.clone()),
            annotations: Some(annotations),
            managed_fields: None,
            ..e.metadata.clone()
        },
        None => ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(content.labels.clone()),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
    };
    Secret {
        metadata,
        type_: Some(
            content
                .type_
                .clone()
                .unwrap_or_else(|| "Opaque".to_string()),
        ),
        data: Some(content.data.clone()),
        immutable: existing.and_then(|e| e.immutable),
        string_data: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(name: &str, data: &[u8], rv: &str) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("primary-ns".to_string()),
                resource_version: Some(rv.to_string()),
                labels: Some(BTreeMap::from([
                    ("tfstate".to_string(), "true".to_string()),
                    ("tfstateWorkspace".to_string(), "default".to_string()),
                    ("tfstateSecretSuffix".to_string(), "state".to_string()),
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "terraform".to_string(),
                    ),
                ])),
                annotations: Some(BTreeMap::from([
                    ("encoding".to_string(), "gzip".to_string()),
                    (LAST_APPLIED.to_string(), "{}".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".to_string()),
            data: Some(BTreeMap::from([(
                "tfstate".to_string(),
                ByteString(data.to_vec()),
            )])),
            ..Secret::default()
        }
    }

    fn map(secrets: Vec<Secret>) -> BTreeMap<String, Arc<Secret>> {
        secrets
            .into_iter()
            .map(|s| (s.metadata.name.clone().unwrap(), Arc::new(s)))
            .collect()
    }

    /// What the standby holds after `steps` are carried out on it (as the API would).
    fn apply(
        standby: &BTreeMap<String, Arc<Secret>>,
        steps: &[Step],
    ) -> BTreeMap<String, Arc<Secret>> {
        let mut out = standby.clone();
        for step in steps {
            match step {
                Step::Create { secret, .. } | Step::Replace { secret, .. } => {
                    let mut s = (**secret).clone();
                    s.metadata.resource_version = Some("s1".into());
                    out.insert(step.name().to_string(), Arc::new(s));
                }
                Step::Delete { name, .. } => {
                    out.remove(name);
                }
                _ => {}
            }
        }
        out
    }

    fn kinds(steps: &[Step]) -> Vec<(String, &'static str)> {
        steps
            .iter()
            .map(|s| {
                let kind = match s {
                    Step::InSync { .. } => "in_sync",
                    Step::Create { .. } => "create",
                    Step::Replace {
                        annotations_only: true,
                        ..
                    } => "adopt",
                    Step::Replace { .. } => "replace",
                    Step::Delete { .. } => "delete",
                    Step::Conflict { kind, .. } => kind.as_str(),
                    Step::Kept { .. } => "kept",
                    Step::Skipped { .. } => "skipped",
                };
                (s.name().to_string(), kind)
            })
            .collect()
    }

    #[test]
    fn a_copy_is_the_primary_byte_for_byte_with_its_checksum() {
        let primary = map(vec![secret(
            "tfstate-default-state",
            b"\x1f\x8b\x08gz",
            "7",
        )]);
        let steps = plan(&primary, &BTreeMap::new(), "standby-ns", false);
        let Step::Create {
            secret: copy,
            bytes,
        } = &steps[0]
        else {
            panic!("{steps:?}")
        };
        assert_eq!(*bytes, 5);
        let source = &primary["tfstate-default-state"];
        assert_eq!(copy.data, source.data, "data byte for byte");
        assert_eq!(copy.type_.as_deref(), Some("Opaque"));
        assert_eq!(copy.metadata.labels, source.metadata.labels, "every label");
        assert_eq!(copy.metadata.namespace.as_deref(), Some("standby-ns"));
        assert_eq!(copy.metadata.resource_version, None, "a create");
        let a = copy.metadata.annotations.as_ref().unwrap();
        assert_eq!(a["encoding"], "gzip", "the backend's annotation");
        assert!(!a.contains_key(LAST_APPLIED), "kubectl's is not copied");
        assert_eq!(a[CHECKSUM_ANNOTATION], Content::of(source).checksum());
        assert_eq!(a[SOURCE_VERSION_ANNOTATION], "7");
        assert_eq!(Content::of(copy), Content::of(source));

        // Once copied, the next pass has nothing to do.
        let standby = apply(&BTreeMap::new(), &steps);
        let again = plan(&primary, &standby, "standby-ns", false);
        assert_eq!(kinds(&again), [("tfstate-default-state".into(), "in_sync")]);
    }

    #[test]
    fn an_update_on_the_primary_replaces_an_untouched_copy() {
        let mut primary = map(vec![secret("tfstate-default-state", b"v1", "7")]);
        let standby = apply(
            &BTreeMap::new(),
            &plan(&primary, &BTreeMap::new(), "s", false),
        );
        primary = map(vec![secret("tfstate-default-state", b"v2", "8")]);
        let steps = plan(&primary, &standby, "s", false);
        assert_eq!(kinds(&steps), [("tfstate-default-state".into(), "replace")]);
        let Step::Replace { secret: copy, .. } = &steps[0] else {
            unreachable!()
        };
        assert_eq!(
            copy.metadata.resource_version.as_deref(),
            Some("s1"),
            "written on condition of the standby's resourceVersion"
        );
        assert_eq!(copy.data.as_ref().unwrap()["tfstate"].0, b"v2");
    }

    #[test]
    fn a_copy_changed_in_the_standby_is_a_conflict_and_never_overwritten() {
        let primary = map(vec![secret("tfstate-default-state", b"v1", "7")]);
        let mut standby = apply(
            &BTreeMap::new(),
            &plan(&primary, &BTreeMap::new(), "s", false),
        );
        let mut edited = (*standby["tfstate-default-state"]).clone();
        edited.data.as_mut().unwrap().insert(
            "tfstate".into(),
            ByteString(b"written by a run in the standby".to_vec()),
        );
        standby.insert("tfstate-default-state".into(), Arc::new(edited));
        let newer = map(vec![secret("tfstate-default-state", b"v2", "8")]);
        assert_eq!(
            kinds(&plan(&newer, &standby, "s", true)),
            [("tfstate-default-state".into(), "changed_since_copy")]
        );
        // A label changed counts as a change too.
        let mut relabelled = (*apply(
            &BTreeMap::new(),
            &plan(&primary, &BTreeMap::new(), "s", false),
        )["tfstate-default-state"])
            .clone();
        relabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "a".into());
        let standby = map(vec![relabelled]);
        assert_eq!(
            kinds(&plan(&newer, &standby, "s", false)),
            [("tfstate-default-state".into(), "changed_since_copy")]
        );
    }

    #[test]
    fn a_standby_secret_without_the_checksum_is_adopted_only_when_equal() {
        let primary = map(vec![secret("tfstate-default-state", b"v1", "7")]);
        let mut other = secret("tfstate-default-state", b"v1", "3");
        // kubectl's annotation differs: not part of the content.
        other
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(LAST_APPLIED.into(), "{\"x\":1}".into());
        let standby = map(vec![other]);
        let steps = plan(&primary, &standby, "s", false);
        assert_eq!(kinds(&steps), [("tfstate-default-state".into(), "adopt")]);
        let Step::Replace { secret: copy, .. } = &steps[0] else {
            unreachable!()
        };
        assert_eq!(
            copy.metadata.annotations.as_ref().unwrap()[LAST_APPLIED],
            "{\"x\":1}",
            "the standby's own kubectl annotation stays"
        );

        let standby = map(vec![secret("tfstate-default-state", b"other", "3")]);
        assert_eq!(
            kinds(&plan(&primary, &standby, "s", true)),
            [("tfstate-default-state".into(), "not_copied_by_mirror")]
        );
    }

    #[test]
    fn nothing_is_deleted_without_prune_and_prune_deletes_only_untouched_copies() {
        let both = map(vec![
            secret("tfstate-a-state", b"a", "1"),
            secret("tfstate-b-state", b"b", "2"),
        ]);
        let mut standby = apply(&BTreeMap::new(), &plan(&both, &BTreeMap::new(), "s", false));
        standby.insert(
            "tfstate-mine-state".into(),
            Arc::new(secret("tfstate-mine-state", b"standby's own", "9")),
        );
        let only_a = map(vec![secret("tfstate-a-state", b"a", "1")]);
        assert_eq!(
            kinds(&plan(&only_a, &standby, "s", false)),
            [
                ("tfstate-a-state".into(), "in_sync"),
                ("tfstate-b-state".into(), "kept"),
                ("tfstate-mine-state".into(), "kept"),
            ]
        );
        let steps = plan(&only_a, &standby, "s", true);
        assert_eq!(
            kinds(&steps),
            [
                ("tfstate-a-state".into(), "in_sync"),
                ("tfstate-b-state".into(), "delete"),
                ("tfstate-mine-state".into(), "kept"),
            ]
        );
        let Step::Delete {
            resource_version, ..
        } = &steps[1]
        else {
            unreachable!()
        };
        assert_eq!(resource_version.as_deref(), Some("s1"), "a precondition");
    }

    #[test]
    fn a_part_the_primary_dropped_is_reported_until_pruned() {
        let split = map(vec![
            secret("tfstate-default-state", b"part 0", "1"),
            secret("tfstate-default-state-part-1", b"part 1", "2"),
        ]);
        let standby = apply(
            &BTreeMap::new(),
            &plan(&split, &BTreeMap::new(), "s", false),
        );
        // The state shrank to one Secret.
        let shrunk = map(vec![secret("tfstate-default-state", b"smaller", "3")]);
        assert_eq!(
            kinds(&plan(&shrunk, &standby, "s", false)),
            [
                ("tfstate-default-state".into(), "replace"),
                ("tfstate-default-state-part-1".into(), "stale_part"),
            ]
        );
        assert_eq!(
            kinds(&plan(&shrunk, &standby, "s", true)),
            [
                ("tfstate-default-state".into(), "replace"),
                ("tfstate-default-state-part-1".into(), "delete"),
            ]
        );
    }

    #[test]
    fn parts_are_recognised_by_the_backends_names() {
        assert_eq!(
            part_of("tfstate-default-state-part-1"),
            Some("tfstate-default-state")
        );
        assert_eq!(
            part_of("tfstate-default-state-part-12"),
            Some("tfstate-default-state")
        );
        assert_eq!(part_of("tfstate-default-state"), None);
        assert_eq!(part_of("tfstate-default-state-part-"), None);
        assert_eq!(part_of("tfstate-default-state-part-x"), None);
    }

    #[test]
    fn service_account_tokens_are_never_copied() {
        let mut token = secret("tfstate-token", b"t", "1");
        token.type_ = Some(SERVICE_ACCOUNT_TOKEN.into());
        let steps = plan(&map(vec![token]), &BTreeMap::new(), "s", false);
        assert_eq!(kinds(&steps), [("tfstate-token".into(), "skipped")]);
    }

    #[test]
    fn the_checksum_covers_every_copied_field_and_only_those() {
        let base = secret("n", b"data", "1");
        let sum = Content::of(&base).checksum();
        assert!(sum.starts_with("sha256:") && sum.len() == 7 + 64, "{sum}");
        let mut typed = base.clone();
        typed.type_ = None;
        assert_eq!(
            Content::of(&typed).checksum(),
            sum,
            "no type is the API's Opaque"
        );
        let mut own = base.clone();
        own.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(CHECKSUM_ANNOTATION.into(), "sha256:00".into());
        own.metadata.resource_version = Some("99".into());
        assert_eq!(Content::of(&own).checksum(), sum);
        let changes: [fn(&mut Secret); 4] = [
            |s| {
                s.data
                    .as_mut()
                    .unwrap()
                    .insert("tfstate".into(), ByteString(b"datb".to_vec()));
            },
            |s| s.type_ = Some("example.com/other".into()),
            |s| {
                s.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .insert("x".into(), String::new());
            },
            |s| {
                s.metadata
                    .annotations
                    .as_mut()
                    .unwrap()
                    .insert("encoding".into(), "none".into());
            },
        ];
        for change in changes {
            let mut s = base.clone();
            change(&mut s);
            assert_ne!(Content::of(&s).checksum(), sum);
        }
        // Length prefixes: moving bytes between a key and its value changes the sum.
        let mut a = base.clone();
        a.data = Some(BTreeMap::from([("ab".into(), ByteString(b"c".to_vec()))]));
        let mut b = base.clone();
        b.data = Some(BTreeMap::from([("a".into(), ByteString(b"bc".to_vec()))]));
        assert_ne!(Content::of(&a).checksum(), Content::of(&b).checksum());
    }
}
