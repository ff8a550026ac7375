//! Stamps the binary with its git revision and build date for `kube-failover --version`.
//!
//! The revision: `KUBE_FAILOVER_REVISION` when set (the Dockerfile passes it in: its
//! build context has no `.git`), else `git rev-parse HEAD` (the commit checked out;
//! uncommitted changes are not marked), else `unknown` (a source tarball, no
//! git). The date: `SOURCE_DATE_EPOCH` when set (reproducible builds), else today, UTC.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=KUBE_FAILOVER_REVISION");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let revision = std::env::var("KUBE_FAILOVER_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=KUBE_FAILOVER_REVISION={}", revision.trim());

    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=KUBE_FAILOVER_BUILD_DATE={}", date(epoch));
}

/// The commit checked out, or None outside a git work tree (or without git). Rebuilds
/// follow a new commit: cargo watches the HEAD file and the branch it points at.
fn git_revision() -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let revision = git(&["rev-parse", "HEAD"]).filter(|r| !r.is_empty())?;
    // Only paths that exist: cargo reruns a build script whose watched path is missing
    // at every command, and so recompiles the crate each time (a repository may have no
    // packed-refs until git packs its refs; a packed branch has no file of its own).
    let watch = |path: &Path| {
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    };
    for name in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", name]) {
            watch(Path::new(&p));
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--git-path", &branch])
    {
        let path = Path::new(&p);
        match path.parent() {
            // A packed branch has no file: its next commit writes one in this folder.
            Some(folder) if !path.exists() => watch(folder),
            _ => watch(path),
        }
    }
    Some(revision)
}

/// `YYYY-MM-DD` of a Unix time, UTC (the civil-from-days algorithm: no date crate in a
/// build script).
fn date(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
