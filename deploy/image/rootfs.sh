#!/usr/bin/env bash
# Assembles the image's root filesystem from Debian packages, the way distroless images
# are made: the packages' files unpacked (never installed: no maintainer scripts run),
# then only what a glibc binary needs at run time is kept. No shell, no package manager,
# no other executable than the daemon.
#
#   deploy/image/rootfs.sh ROOTFS_DIR [BINARY]
#
# With BINARY, it is installed as /kube-failover; without, the image adds it as a layer
# of its own (ci/image.sh, the Dockerfile). Needs apt-get (with package lists: apt-get
# update) and dpkg-deb: a Debian 12 host, or the Dockerfile's rootfs stage. The binary
# must be built against the same Debian's glibc.
set -euo pipefail

rootfs="${1:?usage: rootfs.sh ROOTFS_DIR [BINARY]}"
binary="${2:-}"
# libc6 + libgcc-s1: what the binary links (ld-linux, libc, libm, libgcc_s: `ldd`);
# ca-certificates: roots for HTTPS webhooks (rustls reads /etc/ssl/certs, like OpenSSL);
# tzdata: zone files; netbase: /etc/services, /etc/protocols; base-files: /etc/os-release.
packages=(libc6 libgcc-s1 ca-certificates tzdata netbase base-files)

if [ -n "$binary" ] && [ ! -x "$binary" ]; then
  echo "rootfs.sh: $binary is not an executable" >&2
  exit 1
fi
rm -rf "$rootfs"
mkdir -p "$rootfs"
debs="$(mktemp -d)"
trap 'rm -rf "$debs"' EXIT
(cd "$debs" && apt-get download -qq -o APT::Sandbox::User=root "${packages[@]}")
for deb in "$debs"/*.deb; do
  dpkg-deb --extract "$deb" "$rootfs"
done
# Debian 12 is not merged-/usr inside its packages: /lib64/ld-linux-x86-64.so.2 is the
# interpreter the binary names, the libraries sit in /lib/x86_64-linux-gnu.

# What a daemon never runs: every executable the packages bring (ldconfig, iconv, …),
# documentation, locales, gconv modules, maintainer data.
rm -rf "$rootfs"/{bin,sbin,usr/bin,usr/sbin,usr/libexec,usr/games,usr/include,usr/src,usr/local,var,run,boot,media,mnt,opt,srv}
rm -rf "$rootfs"/usr/share/dict "$rootfs"/etc/ca-certificates
rm -rf "$rootfs"/usr/share/{doc,man,info,lintian,locale,bug,common-licenses,base-files,ca-certificates/mozilla/*.crt.dpkg*}
rm -rf "$rootfs"/usr/lib/x86_64-linux-gnu/gconv "$rootfs"/lib/x86_64-linux-gnu/gconv
rm -rf "$rootfs"/etc/{update-motd.d,profile.d,skel,dpkg,default,init.d,ld.so.conf.d,ld.so.conf,bash.bashrc,profile,dot.bashrc,issue,issue.net,motd,host.conf,legal,ca-certificates.conf,ssl/openssl.cnf}
rm -rf "$rootfs"/usr/share/tzdata "$rootfs"/usr/share/zoneinfo/{posix,right}

# The CA bundle update-ca-certificates would write (the package's postinst never runs).
mkdir -p "$rootfs/etc/ssl/certs"
cat "$rootfs"/usr/share/ca-certificates/mozilla/*.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs/usr/share/ca-certificates"
ln -sf /usr/share/zoneinfo/Etc/UTC "$rootfs/etc/localtime"

# Users: root, nobody and distroless' nonroot (65532), numeric in the image config so
# runAsNonRoot can verify it without reading /etc/passwd.
cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
GROUP
cat >"$rootfs/etc/nsswitch.conf" <<'NSS'
passwd: files
group: files
hosts: files dns
NSS
install -d -m 0700 "$rootfs/root"
install -d -m 0700 -o 65532 -g 65532 "$rootfs/home/nonroot"
install -d -m 1777 "$rootfs/tmp"
# Where the chart and the kustomize base mount the config and the kubeconfigs.
install -d -m 0755 "$rootfs/etc/kube-failover"

[ -z "$binary" ] || install -m 0755 "$binary" "$rootfs/kube-failover"
# Every file dated at the epoch of SOURCE_DATE_EPOCH (when set): the same inputs give the
# same layer.
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
  find "$rootfs" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
fi
