# Sourced by the CI scripts that install Debian packages. The packaging checks and the
# fault campaign run side by side, and apt-get fails at once ("Could not get lock
# /var/lib/apt/lists/lock") when another apt-get holds its lock: every call here waits
# for the others of these scripts (one lock file) and for dpkg's own lock.
apt_get() {
  flock "${TMPDIR:-/tmp}/kube-failover-apt.lock" \
    env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}
