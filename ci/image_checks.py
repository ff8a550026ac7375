#!/usr/bin/env python3
"""Inspects the image ci/image.sh built, from its OCI archive (no container engine
needed): prints its layers, config and file list, and fails unless it is what the
Deployment and the Dockerfile expect.

    ci/image_checks.py IMAGE_NAME OCI_ARCHIVE

Checks: user 65532:65532, entrypoint /kube-failover, command and port equal to the
Dockerfile's (so to the Deployment's: deploy_checks.py image-contract); two layers, the
binary alone in the last; the ELF interpreter and every library the binary needs present;
a CA bundle with Mozilla's roots; the nonroot user in /etc/passwd; /tmp world-writable
and sticky; no shell and no executable other than the daemon and the dynamic loader.
"""
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from deploy_checks import dockerfile_instructions  # noqa: E402


def fail(msg):
    print(f"  FAIL: {msg}")
    sys.exit(1)


def blob(archive, digest):
    algo, hexd = digest.split(":")
    return archive.extractfile(f"blobs/{algo}/{hexd}").read()


def main(name, path):
    archive = tarfile.open(path)
    index = json.loads(archive.extractfile("index.json").read())
    manifest = json.loads(blob(archive, index["manifests"][0]["digest"]))
    config = json.loads(blob(archive, manifest["config"]["digest"]))
    cfg = config["config"]
    compressed = sum(layer["size"] for layer in manifest["layers"])
    print(f"  {name}: {len(manifest['layers'])} layers, {compressed / 1e6:.1f} MB compressed")

    files = {}
    unpacked = 0
    for i, layer in enumerate(manifest["layers"]):
        data = blob(archive, layer["digest"])
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
            members = t.getmembers()
            size = sum(m.size for m in members)
            unpacked += size
            print(f"  layer {i + 1}: {layer['size'] / 1e6:.1f} MB compressed, "
                  f"{size / 1e6:.1f} MB in {len(members)} entries")
            for m in members:
                p = "/" + m.name.lstrip("./")
                f = t.extractfile(m) if m.isfile() else None
                files[p] = (m, f.read() if f is not None else None, i)
    print(f"  unpacked: {unpacked / 1e6:.1f} MB")
    print(f"  user {cfg.get('User')}, entrypoint {cfg.get('Entrypoint')}, "
          f"cmd {cfg.get('Cmd')}, ports {sorted(cfg.get('ExposedPorts', {}))}")
    for p in sorted(files):
        m, _, i = files[p]
        kind = "d" if m.isdir() else "l" if m.issym() else "-"
        target = f" -> {m.linkname}" if m.issym() else ""
        print(f"    L{i + 1} {kind}{oct(m.mode)[-4:]} {m.uid}:{m.gid} {m.size:>9} {p}{target}")

    problems = []
    ins = dockerfile_instructions()
    final = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    last = {w: r for w, r in ins[final:]}
    if cfg.get("User") != last.get("USER"):
        problems.append(f"user {cfg.get('User')} vs the Dockerfile's {last.get('USER')}")
    if cfg.get("Entrypoint") != json.loads(last["ENTRYPOINT"]):
        problems.append(f"entrypoint {cfg.get('Entrypoint')}")
    if cfg.get("Cmd") != json.loads(last["CMD"]):
        problems.append(f"cmd {cfg.get('Cmd')} vs the Dockerfile's {last['CMD']}")
    if sorted(cfg.get("ExposedPorts", {})) != [f"{last['EXPOSE']}/tcp"]:
        problems.append(f"ports {cfg.get('ExposedPorts')}")
    if len(manifest["layers"]) != 2:
        problems.append(f"{len(manifest['layers'])} layers, not base + binary")
    binary = files.get("/kube-failover")
    if not binary or binary[2] != len(manifest["layers"]) - 1 or not binary[0].mode & 0o111:
        problems.append("/kube-failover is not an executable in the last layer")
    else:
        last_layer = [p for p, (_, _, i) in files.items() if i == len(manifest["layers"]) - 1
                      and not files[p][0].isdir()]
        if last_layer != ["/kube-failover"]:
            problems.append(f"the last layer holds more than the binary: {last_layer}")
        with tempfile.NamedTemporaryFile() as tmp:
            tmp.write(binary[1])
            tmp.flush()
            dyn = subprocess.run(["readelf", "-d", "-l", tmp.name], capture_output=True,
                                 text=True, check=True).stdout
        interp = re.search(r"Requesting program interpreter: (\S+)\]", dyn)
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(\S+)\]", dyn)
        wanted = ([interp.group(1)] if interp else []) + [
            f"/lib/x86_64-linux-gnu/{lib}" for lib in needed]
        for lib in wanted:
            if not resolves(files, lib):
                problems.append(f"the binary needs {lib}, not in the image")
        print(f"  the binary's interpreter and libraries, all present: {', '.join(wanted)}")
    bundle = files.get("/etc/ssl/certs/ca-certificates.crt")
    roots = bundle[1].count(b"BEGIN CERTIFICATE") if bundle and bundle[1] else 0
    if roots < 100:
        problems.append(f"CA bundle with {roots} certificates")
    passwd = (files.get("/etc/passwd") or (None, b"", 0))[1].decode()
    if "nonroot:x:65532:65532:" not in passwd:
        problems.append("no nonroot user 65532 in /etc/passwd")
    tmp = files.get("/tmp")
    if not tmp or tmp[0].mode & 0o1777 != 0o1777:
        problems.append("/tmp is not 1777")
    if "/usr/share/zoneinfo/UTC" not in files and "/usr/share/zoneinfo/Etc/UTC" not in files:
        problems.append("no zone files")
    executables = sorted(p for p, (m, _, _) in files.items()
                         if m.isfile() and m.mode & 0o111 and ".so" not in p)
    if executables != ["/kube-failover"]:
        problems.append(f"executables besides the daemon: {executables}")
    shells = [p for p in files if os.path.basename(p) in ("sh", "bash", "dash", "busybox")]
    if shells:
        problems.append(f"a shell: {shells}")
    print(f"  CA bundle: {roots} certificates; executables: {executables}")
    if problems:
        fail("; ".join(problems))
    print("  image checks passed")


def resolves(files, path, depth=0):
    entry = files.get(path)
    if entry is None or depth > 8:
        return False
    m = entry[0]
    if m.issym():
        target = m.linkname if m.linkname.startswith("/") else os.path.normpath(
            os.path.join(os.path.dirname(path), m.linkname))
        return resolves(files, target, depth + 1)
    return m.isfile()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    main(sys.argv[1], sys.argv[2])
