//! `kube-failover guard install DEST`: copies the running executable to `DEST` with mode
//! 0755. The image has no shell and no `cp`, so an init container runs the binary itself
//! to put a copy into an `emptyDir` that the agent's container then runs the guard from.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why the copy failed; each names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The running executable could not be found.
    #[error("cannot find the running executable")]
    CurrentExe(#[source] io::Error),
    /// The destination names no file (it is empty, `/` or ends in `..`).
    #[error("{0}: not a file name to install to")]
    NoFileName(PathBuf),
    /// Reading the executable or writing the copy failed.
    #[error("cannot copy {from} to {to}")]
    Copy {
        /// The executable.
        from: PathBuf,
        /// The file written.
        to: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Copies the running executable to `dest` (see [`install_from`]). Returns the bytes
/// copied.
pub fn install(dest: &Path) -> Result<u64, InstallError> {
    let exe = std::env::current_exe().map_err(InstallError::CurrentExe)?;
    install_from(&exe, dest)
}

/// Copies `from` to `dest` with mode 0755: written to a temporary name in `dest`'s
/// folder, flushed, then renamed over `dest`, so a Pod never runs half a binary (an init
/// container restarted mid-copy leaves either the old file or the whole new one).
pub fn install_from(from: &Path, dest: &Path) -> Result<u64, InstallError> {
    let Some(name) = dest.file_name() else {
        return Err(InstallError::NoFileName(dest.to_path_buf()));
    };
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".partial");
    let tmp = dir.join(tmp_name);
    let err = |to: &Path| {
        let from = from.to_path_buf();
        let to = to.to_path_buf();
        move |source| InstallError::Copy { from, to, source }
    };
    let copied = (|| {
        let mut src = File::open(from)?;
        let mut out = File::create(&tmp)?;
        let n = io::copy(&mut src, &mut out)?;
        out.set_permissions(Permissions::from_mode(0o755))?;
        out.sync_all()?;
        Ok(n)
    })()
    .map_err(err(&tmp));
    let n = match copied {
        Ok(n) => n,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fs::rename(&tmp, dest).map_err(err(dest))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn the_copy_is_an_executable_that_runs() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("kube-failover");
        let n = install(&dest).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(n, fs::metadata(&exe).unwrap().len());
        assert_eq!(fs::read(&dest).unwrap(), fs::read(&exe).unwrap());
        let mode = fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755, "mode {mode:o}");
        // The copy is this test binary: it runs, and lists this very test.
        let out = Command::new(&dest)
            .args(["--list", "the_copy_is_an_executable_that_runs"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("the_copy_is_an_executable"));
        // No temporary file is left beside it.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("kube-failover")]);
    }

    #[test]
    fn an_existing_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("new");
        fs::write(&from, b"new contents").unwrap();
        let dest = dir.path().join("kf");
        fs::write(&dest, b"an older and longer binary").unwrap();
        fs::set_permissions(&dest, Permissions::from_mode(0o600)).unwrap();
        assert_eq!(install_from(&from, &dest).unwrap(), 12);
        assert_eq!(fs::read(&dest).unwrap(), b"new contents");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn failures_name_the_paths() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("kf");
        let e = install(&missing).unwrap_err();
        assert!(
            e.to_string().contains("no-such-dir"),
            "the error names the destination: {e}"
        );
        let e = install(Path::new("/")).unwrap_err();
        assert!(matches!(e, InstallError::NoFileName(_)), "{e}");
        let e = install_from(&dir.path().join("absent"), &dir.path().join("kf")).unwrap_err();
        assert!(e.to_string().contains("absent"), "{e}");
        assert!(!dir.path().join(".kf.partial").exists());
    }
}
