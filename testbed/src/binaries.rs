//! Where the control-plane binaries come from: an explicit folder, or `testbed/build.sh`,
//! which builds them once into a cache and is run at most once per process and, through
//! a file lock, by one process at a time.

use crate::error::{Result, TestbedError};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Overrides the binary folder; used as is when it holds every binary.
pub const BIN_ENV: &str = "KUBE_FAILOVER_TESTBED_BIN";

const NAMES: [&str; 4] = ["etcd", "kube-apiserver", "kube-controller-manager", "kwok"];

/// Paths of the four control-plane binaries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// etcd.
    pub etcd: PathBuf,
    /// kube-apiserver.
    pub kube_apiserver: PathBuf,
    /// kube-controller-manager.
    pub kube_controller_manager: PathBuf,
    /// kwok.
    pub kwok: PathBuf,
}

impl Binaries {
    /// The binaries in `dir`, if it holds all four as executables.
    pub fn in_dir(dir: &Path) -> Option<Binaries> {
        let all_there = NAMES.iter().all(|n| is_executable(&dir.join(n)));
        all_there.then(|| Binaries {
            etcd: dir.join("etcd"),
            kube_apiserver: dir.join("kube-apiserver"),
            kube_controller_manager: dir.join("kube-controller-manager"),
            kwok: dir.join("kwok"),
        })
    }

    /// Finds the binaries, building them with `testbed/build.sh` if needed.
    ///
    /// `KUBE_FAILOVER_TESTBED_BIN` wins when it names a complete folder. Otherwise the
    /// build script runs (it returns at once when its cache is warm), with its progress
    /// on this process's stderr. The outcome is remembered for the life of the process,
    /// so every test in a test binary shares one build or one failure.
    pub fn locate() -> Result<Binaries> {
        static LOCATED: OnceLock<Result<Binaries, String>> = OnceLock::new();
        LOCATED
            .get_or_init(|| Self::locate_uncached().map_err(|e| e.to_string()))
            .clone()
            .map_err(|message| TestbedError::Build {
                message,
                source: None,
            })
    }

    fn locate_uncached() -> Result<Binaries> {
        if let Some(dir) = std::env::var_os(BIN_ENV)
            && let Some(found) = Binaries::in_dir(Path::new(&dir))
        {
            return Ok(found);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("build.sh");
        // Test binaries of one `cargo test` run in parallel processes; without the lock
        // they would all start the same cold build in the same folders.
        let _lock = BuildLock::acquire()?;
        let mut child = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| TestbedError::Build {
                message: format!("could not run {}", script.display()),
                source: Some(e),
            })?;
        let mut stdout = String::new();
        if let Some(mut out) = child.stdout.take() {
            out.read_to_string(&mut stdout)
                .map_err(|e| TestbedError::Build {
                    message: format!("reading the output of {}", script.display()),
                    source: Some(e),
                })?;
        }
        let status = child.wait().map_err(|e| TestbedError::Build {
            message: format!("waiting for {}", script.display()),
            source: Some(e),
        })?;
        if !status.success() {
            return Err(TestbedError::Build {
                message: format!(
                    "{} exited with {status} (its log is above)",
                    script.display()
                ),
                source: None,
            });
        }
        let dir = stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Binaries::in_dir(Path::new(dir.trim())).ok_or_else(|| TestbedError::Build {
            message: format!(
                "{} reported {dir:?}, which does not hold {}",
                script.display(),
                NAMES.join(", ")
            ),
            source: None,
        })
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An exclusive lock on a file in the build cache, held while the build script runs.
struct BuildLock(File);

impl BuildLock {
    fn acquire() -> Result<BuildLock> {
        let root = cache_root();
        std::fs::create_dir_all(&root).map_err(|e| TestbedError::io("creating", &root, e))?;
        let path = root.join("build.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| TestbedError::io("opening", &path, e))?;
        file.lock()
            .map_err(|e| TestbedError::io("locking", &path, e))?;
        Ok(BuildLock(file))
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// The same cache root `build.sh` uses.
fn cache_root() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().is_empty())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("kube-failover").join("testbed")
}
