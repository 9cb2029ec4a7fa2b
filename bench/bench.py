#!/usr/bin/python3
"""The benchmark driver behind bench/run.sh (which installs the tools and builds the
inputs first; run that, not this).

Every case is a set of tools doing the same job. One round runs each tool once, on a
fresh filesystem made for it (untimed), and the order of the tools rotates from round to
round, so load from other work on the machine falls on all of them alike. The first
round is a warm-up and is not counted. Times are wall clock around the command;
peak RSS and bytes written come from the kernel's rusage of the command and everything
it ran (wait4: ru_maxrss is the largest single process, ru_oublock the bytes it
dirtied, in 512-byte units). Caches are never dropped: every tool reads its input from
the page cache.
"""
import argparse
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tarfile
import io
import time

ARGS = None
LOG = []


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def sh(cmd, **kw):
    """Runs an untimed setup command; fails loudly."""
    if isinstance(cmd, str):
        cmd = ["bash", "-euo", "pipefail", "-c", cmd]
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout


class Rusage:
    """Measures a command tree: wall clock here, peak RSS and bytes dirtied from GNU
    time (`/usr/bin/time -f '%M %O'`, the rusage of the tree as wait4 reports it). GNU
    time, not this Python process, forks the command: a child's ru_maxrss starts from
    its parent's size at fork, and Python's would hide small tools."""

    @staticmethod
    def run(cmd, env=None):
        if isinstance(cmd, str):
            cmd = ["bash", "-euo", "pipefail", "-c", cmd]
        e = dict(os.environ)
        if env:
            e.update(env)
        tfile = os.path.join(ARGS.scratch, "last.time")
        outf = open(os.path.join(ARGS.scratch, "last.out"), "w+b")
        errf = open(os.path.join(ARGS.scratch, "last.err"), "w+b")
        t0 = time.monotonic()
        p = subprocess.run(["/usr/bin/time", "-f", "%M %O", "-o", tfile, *cmd], stdout=outf, stderr=errf, env=e)
        wall = time.monotonic() - t0
        outf.seek(0)
        errf.seek(0)
        out = outf.read().decode(errors="replace")
        err = errf.read().decode(errors="replace")
        if p.returncode != 0:
            raise RuntimeError(f"{cmd} failed ({p.returncode}):\n{out}\n{err}")
        rss_kib, blocks = open(tfile).read().split()[-2:]
        return {"wall": wall, "rss": int(rss_kib) * 1024, "written": int(blocks) * 512, "out": out}


class Fs:
    """A fresh ext4 (`mkfs.ext4 -O verity`, as bootc install makes) on a sparse loop file
    under the scratch directory, mounted at <dir>/root, with an empty root/boot (the ESP
    directory bootc install to-filesystem expects)."""

    def __init__(self, name, size=8 << 30):
        self.dir = os.path.join(ARGS.scratch, "fs", name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.img = os.path.join(self.dir, "root.img")
        with open(self.img, "wb") as f:
            f.truncate(size)
        sh(["mkfs.ext4", "-q", "-F", "-O", "verity", self.img])
        self.root = os.path.join(self.dir, "root")
        os.makedirs(self.root)
        sh(["mount", "-o", "loop", self.img, self.root])
        os.makedirs(os.path.join(self.root, "boot"))
        self.run = os.path.join(self.dir, "run")
        os.makedirs(self.run)
        self.base = self.used()

    def used(self):
        sh(["sync", "-f", self.root])
        st = os.statvfs(self.root)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def stored(self):
        return self.used() - self.base

    def close(self):
        subprocess.run(["umount", self.root], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def du(path):
    """Disk usage in bytes (hard links counted once)."""
    return int(sh(["du", "-s", "-B1", path]).split()[0])


# ---------------------------------------------------------------- inputs


def read_layout(layout):
    """tag -> (manifest, config) of an OCI layout."""
    idx = json.load(open(os.path.join(layout, "index.json")))
    out = {}
    for m in idx["manifests"]:
        tag = m.get("annotations", {}).get("org.opencontainers.image.ref.name")
        man = json.load(open(blob(layout, m["digest"])))
        cfg = json.load(open(blob(layout, man["config"]["digest"])))
        out[tag] = (man, cfg)
    return out


def blob(layout, digest):
    algo, hexd = digest.split(":")
    return os.path.join(layout, "blobs", algo, hexd)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def put_json(layout, obj):
    data = json.dumps(obj, sort_keys=True).encode()
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs/sha256", d), "wb") as f:
        f.write(data)
    return f"sha256:{d}", len(data)


COMPRESSORS = {
    # name: (command writing stdin compressed to stdout, media type suffix, tar flag)
    "gzip": (["gzip", "-6", "-n", "-c"], "+gzip", "-z"),
    "zstd": (["zstd", "-3", "-q", "-c", "-T1"], "+zstd", "--zstd"),
}


def repack(src, kind):
    """An OCI layout like `src` with every layer compressed by `kind` (gzip -6 / zstd -3,
    the container tools' defaults); configs (diff_ids) unchanged, manifests and index
    rewritten with the compressed digests. Cached by the source's index.json."""
    key = sha256_file(os.path.join(src, "index.json"))[:16]
    dst = os.path.join(ARGS.scratch, "layouts", f"{kind}-{key}")
    if os.path.exists(os.path.join(dst, "index.json")):
        return dst
    log(f"re-packing {src} with {kind}")
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "blobs/sha256"))
    cmd, suffix, _ = COMPRESSORS[kind]
    done = {}
    idx = json.load(open(os.path.join(src, "index.json")))
    manifests = []
    for m in idx["manifests"]:
        man = json.load(open(blob(src, m["digest"])))
        shutil.copy(blob(src, man["config"]["digest"]), blob(tmp, man["config"]["digest"]))
        layers = []
        for layer in man["layers"]:
            d = layer["digest"]
            if d not in done:
                part = os.path.join(tmp, "blobs/sha256/.part")
                with open(blob(src, d), "rb") as fi, open(part, "wb") as fo:
                    subprocess.run(cmd, stdin=fi, stdout=fo, check=True)
                cd = sha256_file(part)
                os.rename(part, os.path.join(tmp, "blobs/sha256", cd))
                done[d] = {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar" + suffix,
                    "digest": f"sha256:{cd}",
                    "size": os.path.getsize(blob(tmp, f"sha256:{cd}")),
                }
            layers.append(done[d])
        man = dict(man, layers=layers)
        md, ms = put_json(tmp, man)
        manifests.append(dict(m, digest=md, size=ms))
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump(dict(idx, manifests=manifests), f)
    shutil.copy(os.path.join(src, "oci-layout"), os.path.join(tmp, "oci-layout"))
    shutil.rmtree(dst, ignore_errors=True)
    os.rename(tmp, dst)
    return dst


def layer_files(layout, tag):
    man, _ = read_layout(layout)[tag]
    return [blob(layout, l["digest"]) for l in man["layers"]]


def whiteouts(tree):
    """Shell text applying plain whiteouts (.wh.NAME: remove NAME and the marker); the
    test image has no opaque ones."""
    return (
        f"find {shlex.quote(tree)} -name '.wh.*' ! -name '.wh..wh..opq' -print0 | "
        "while IFS= read -r -d '' w; do rm -rf \"$(dirname \"$w\")/$(basename \"$w\" | cut -c5-)\" \"$w\"; done"
    )


def tar_x(kind, files, dest):
    """Shell text extracting `files` (layers, in order) into `dest` with GNU tar, owners,
    modes and xattrs kept (what an OS tree needs), then applying the layers' whiteouts."""
    flag = COMPRESSORS[kind][2] if kind in COMPRESSORS else ""
    parts = [f"mkdir -p {shlex.quote(dest)}"]
    for i, f in enumerate(files):
        parts.append(
            f"tar {flag} --numeric-owner --xattrs --xattrs-include='*' -xpf {shlex.quote(f)} -C {shlex.quote(dest)}"
        )
        if i > 0:
            parts.append(whiteouts(dest))
    return " && ".join(parts)


# ---------------------------------------------------------------- running cases


class Case:
    """A set of named tools; each tool is a function fresh -> dict of measurements,
    called once per round."""

    def __init__(self, title, tools, ours, runs):
        self.title = title
        self.tools = tools  # [(name, fn)]
        self.ours = ours
        self.runs = runs
        self.samples = {name: [] for name, _ in tools}

    def run(self):
        n = len(self.tools)
        for r in range(self.runs + 1):
            order = [self.tools[(i + r) % n] for i in range(n)]
            for name, fn in order:
                for attempt in range(3):
                    try:
                        m = fn()
                        break
                    except RuntimeError as e:
                        # openat2(RESOLVE_IN_ROOT) fails with EAGAIN when a rename or
                        # mount anywhere on the machine races the lookup; bootc does not
                        # retry it (yet). Record it and run this tool's round again.
                        if "os error 11" not in str(e) or attempt == 2:
                            raise
                        first = next((l for l in str(e).splitlines() if "os error 11" in l), "")
                        NOTES.append(f"- {self.title}: {name}: a run failed and was repeated: `{first.strip()}`")
                        log(f"{name}: EAGAIN, repeating the run")
                tag = "warm-up" if r == 0 else f"run {r}"
                log(f"{self.title}: {name} {tag}: {m['wall']:.2f} s")
                if r > 0:
                    self.samples[name].append(m)
        RESULTS.append(self)


def round_ratio_quartiles(case, ours, peer):
    """Quartiles (q1, median, q3) of ours / peer wall time, round by round: the samples
    of a case are in round order and every round runs every tool once."""
    r = sorted(o["wall"] / p["wall"] for o, p in zip(case.samples[ours], case.samples[peer]))
    if len(r) < 2:
        return (r[0], r[0], r[0]) if r else (float("nan"),) * 3
    q = statistics.quantiles(r, n=4)
    return (q[0], statistics.median(r), q[2])


RESULTS = []
NOTES = []
PROFILES = []


# The bootc binary the helpers below run: ARGS.bootc, or the --baseline one while a
# baseline tool runs (see with_exe).
EXE = None


def bootc(*args):
    return [EXE or ARGS.bootc, *args]


def with_exe(exe, fn):
    """fn, run with every bootc command of it using the binary `exe`."""
    def t():
        global EXE
        EXE = exe
        try:
            return fn()
        finally:
            EXE = None
    return t


def baseline_tools(name, fn):
    """[(name, fn)], plus the same tool run with the --baseline binary when given."""
    tools = [(name, fn)]
    if ARGS.baseline:
        tools.append((f"{name} [baseline]", with_exe(ARGS.baseline, fn)))
    return tools


def install_args(src, root):
    return bootc("install", "to-filesystem", "--source-imgref", src, "--root-mount-spec", "UUID=test", root)


def sysroot_args(fs, booted, *args):
    return bootc("--sysroot", fs.root, "--run-dir", fs.run, "--booted-deployment", f"sha256:{booted}", *args)


def install(fs, src):
    out = sh(install_args(src, fs.root))
    return out.split("deployment sha256:")[1].split()[0]


def with_sync(fs, m):
    """Adds the time of `sync -f` on the filesystem (the tool's data made durable)."""
    t0 = time.monotonic()
    sh(["sync", "-f", fs.root])
    m["sync"] = time.monotonic() - t0
    m["wall_cmd"] = m["wall"]
    m["wall"] = m["wall"] + m["sync"]
    m["stored"] = fs.stored()
    return m


def steps(cmds, env=None):
    """Runs several timed commands; sums wall and written, max of RSS; keeps each time."""
    tot = {"wall": 0.0, "rss": 0, "written": 0, "parts": []}
    for c in cmds:
        m = Rusage.run(c, env)
        tot["wall"] += m["wall"]
        tot["rss"] = max(tot["rss"], m["rss"])
        tot["written"] += m["written"]
        tot["parts"].append(m["wall"])
        tot["out"] = m["out"]
    return tot


def case_import(oci, kind):
    layout = oci if kind == "none" else repack(oci, kind)
    files = layer_files(layout, "v1")
    src = f"oci:{layout}:v1"

    def t_bootc():
        fs = Fs("import")
        try:
            m = with_sync(fs, steps([install_args(src, fs.root)]))
            for part in ("composefs", "state", "boot"):
                m["du_" + part] = du(os.path.join(fs.root, part))
            return m
        finally:
            fs.close()

    def t_tar():
        fs = Fs("import")
        try:
            return with_sync(fs, steps([tar_x(kind, files, fs.root + "/tree")]))
        finally:
            fs.close()

    def t_ostree():
        fs = Fs("import")
        try:
            r, t = fs.root + "/repo", fs.root + "/tree"
            return with_sync(fs, steps([
                tar_x(kind, files, t),
                f"ostree init --mode=bare --repo={r} && ostree commit --repo={r} --branch=v1 --tree=dir={t}",
            ]))
        finally:
            fs.close()

    def t_erofs():
        fs = Fs("import")
        try:
            t = fs.root + "/tree"
            return with_sync(fs, steps([tar_x(kind, files, t), f"mkfs.erofs --quiet {fs.root}/image.erofs {t}"]))
        finally:
            fs.close()

    c = Case(f"import v1, {kind} layers", [
        ("bootc install to-filesystem", t_bootc),
        ("tar -x", t_tar),
        ("tar -x + ostree commit", t_ostree),
        ("tar -x + mkfs.erofs", t_erofs),
    ], "bootc install to-filesystem", ARGS.runs)
    c.kind = kind
    c.input_bytes = sum(os.path.getsize(f) for f in files)
    c.run()
    b = c.samples[c.ours]
    c.extra = [
        "What bootc stored (du): the composefs repository " + mib(statistics.median(x["du_composefs"] for x in b))
        + ", `state/` (the deployment's /etc copy, the shared /var seeded from the image) "
        + mib(statistics.median(x["du_state"] for x in b))
        + ", the ESP directory `boot/` (kernel, initrd, systemd-boot, entries) "
        + mib(statistics.median(x["du_boot"] for x in b)) + ".",
        "The peers' trees and repositories are all on the one filesystem too: `tar -x + ostree commit` "
        "stores the extracted tree and the OSTree repository, `tar -x + mkfs.erofs` the tree and the image.",
        "Of the peers' times, extraction / second step (medians): "
        + "; ".join(f"{n}: " + " / ".join(fmt_t(statistics.median(x['parts'][k] for x in c.samples[n]))
                                         for k in range(len(c.samples[n][0]['parts'])))
                    for n in c.samples if n != c.ours and len(c.samples[n][0]["parts"]) > 1) + ".",
    ]
    return c


def case_incremental(oci, kind):
    """v1 installed (untimed), then `bootc switch` to v2 (timed) vs extracting v2's new
    layers alone vs OSTree: the new layers applied to the v1 tree and committed as v2 into
    the repository holding v1. Also times finalize and gc once v1 is dropped, and keeps
    the storage figures of the last run for the storage case."""
    layout = repack(oci, kind)
    v1 = layer_files(layout, "v1")
    v2 = layer_files(layout, "v2")
    new = [f for f in v2 if f not in v1]
    storage = {}

    def t_switch():
        fs = Fs("incr")
        try:
            booted = install(fs, f"oci:{layout}:v1")
            repo = os.path.join(fs.root, "composefs")
            before = du(repo)
            used0 = fs.used()
            m = with_sync(fs, steps([sysroot_args(fs, booted, "switch", f"oci:{layout}:v2")]))
            m["stored"] = fs.used() - used0
            m["repo_added"] = du(repo) - before
            staged = open(os.path.join(fs.run, "composefs/staged-deployment")).read().strip()
            staged = staged.split(":")[-1]
            fin = Rusage.run(sysroot_args(fs, booted, "composefs-finalize-staged"))
            m["finalize"] = fin["wall"]
            storage["composefs repository (v1 + v2)"] = du(repo)
            storage["state/ (the deployments' /etc copies, the shared /var)"] = du(os.path.join(fs.root, "state"))
            # Drop v1: remove its boot entry, booted is now v2; gc what only v1 needed.
            entries = os.path.join(fs.root, "boot/loader/entries")
            os.unlink(os.path.join(entries, f"bootc_composefs-{booted}.conf"))
            g = Rusage.run(sysroot_args(fs, staged, "gc"))
            m["gc"] = g["wall"]
            m["gc_rss"] = g["rss"]
            storage["composefs repository after gc (v2 only)"] = du(repo)
            return m
        finally:
            fs.close()

    def t_tar_new():
        fs = Fs("incr")
        try:
            return with_sync(fs, steps([tar_x(kind, new, fs.root + "/tree")]))
        finally:
            fs.close()

    def t_ostree():
        fs = Fs("incr")
        try:
            r, t = fs.root + "/repo", fs.root + "/tree"
            sh(tar_x(kind, v1, t) + f" && ostree init --mode=bare --repo={r} && "
               f"ostree commit --repo={r} --branch=v1 --tree=dir={t}")
            used0 = fs.used()
            before = du(r)
            # The new layers over the v1 tree, then their whiteouts.
            m = with_sync(fs, steps([
                tar_x(kind, new, t) + " && " + whiteouts(t),
                f"ostree commit --repo={r} --branch=v2 --tree=dir={t}",
            ]))
            m["stored"] = fs.used() - used0
            m["repo_added"] = du(r) - before
            storage["OSTree repository (v1 + v2 commits)"] = du(r)
            return m
        finally:
            fs.close()

    c = Case(f"incremental v1 → v2, {kind} layers", [
        ("bootc switch", t_switch),
        ("tar -x of the new layer", t_tar_new),
        ("new layer onto v1 tree + ostree commit", t_ostree),
    ], "bootc switch", ARGS.runs)
    c.kind = kind
    c.input_bytes = sum(os.path.getsize(f) for f in new)
    c.run()
    # The two unpacked trees, each on its own (what keeping both as directories costs).
    d = os.path.join(ARGS.scratch, "trees")
    shutil.rmtree(d, ignore_errors=True)
    sh(tar_x(kind, v1, d + "/v1") + " && " + tar_x(kind, v2, d + "/v2"))
    storage["two unpacked trees (v1 + v2)"] = du(d + "/v1") + du(d + "/v2")
    shutil.rmtree(d, ignore_errors=True)
    storage["OCI layout, these layers (v1 + v2 blobs)"] = sum(os.path.getsize(f) for f in set(v1 + v2))
    c.storage = storage
    return c


def case_incremental_gen(usr_files=20000):
    """The incremental case on a generated image (no mkosi build needed): v1 installed
    (untimed), `bootc switch` to v2 (timed, with sync) vs `tar -x` of v2's new layer
    alone (with sync). The base layer holds 1000 /etc files and `usr_files` 4 KiB files
    in /usr; v2's new layer is a few KiB (os-release and 10 /etc files)."""
    layout = etc_layout(1000, usr_files)
    man = read_layout(layout)
    blobs = lambda tag: [os.path.join(layout, "blobs/sha256", l["digest"].split(":")[1])
                         for l in man[tag][0]["layers"]]
    new = [f for f in blobs("v2") if f not in blobs("v1")]

    def t_switch():
        fs = Fs("incr-gen", 4 << 30)
        try:
            booted = install(fs, f"oci:{layout}:v1")
            return with_sync(fs, steps([sysroot_args(fs, booted, "switch", f"oci:{layout}:v2")]))
        finally:
            fs.close()

    def t_tar_new():
        fs = Fs("incr-gen", 4 << 30)
        try:
            return with_sync(fs, steps([tar_x("none", new, fs.root + "/tree")]))
        finally:
            fs.close()

    c = Case(f"incremental v1 → v2, generated image ({usr_files} files of 4 KiB in /usr, 1000 in /etc)",
             baseline_tools("bootc switch", t_switch) + [("tar -x of the new layer", t_tar_new)],
             "bootc switch", ARGS.runs)
    c.input_bytes = sum(os.path.getsize(f) for f in new)
    c.run()
    return c


# Rounds of the initramfs case: one takes milliseconds, and single runs on a shared
# machine vary 4x (a median of 20 moved by 20 % between two runs of the same binaries).
INITRAMFS_ROUNDS = 200


def case_initramfs(oci):
    """setup-root of an installed v1, ours vs composefs-setup-root, each in its own mount
    namespace (the mounts die with it), insecure (no fs-verity on this kernel), /etc and
    /var bind-mounted by both (same config file), replacing the sysroot mount like in the
    initramfs (no --target)."""
    fs = Fs("initramfs")
    try:
        booted = install(fs, f"oci:{oci}:v1")
        conf = os.path.join(fs.dir, "setup-root.toml")
        with open(conf, "w") as f:
            f.write('[etc]\nmount = "bind"\n[var]\nmount = "bind"\n')
        # Plain hex: the form both accept (the peer has no sha256: prefix).
        cmdline = f"root=UUID=test rw composefs=?{booted}"
        ours = ARGS.setup_bin
        peer = ARGS.peer_setup_root

        def script(binary):
            verb = " setup-root" if binary in (ours, ARGS.baseline_setup) else ""
            inner = (f"{binary}{verb} --sysroot {fs.root} --cmdline '{cmdline}' --config {conf} && "
                     f"test -e {fs.root}/usr/lib/os-release && test -e {fs.root}/sysroot/composefs")
            return ["unshare", "-m", "--propagation", "private", "sh", "-euc", inner]

        def mk(binary):
            return lambda: steps([script(binary)])

        c = Case("initramfs setup-root (mount the deployment)", [
            ("bootc-initramfs-setup setup-root", mk(ours)),
            ("composefs-setup-root 0.9", mk(peer)),
            ("unshare + sh only (floor)", lambda: steps([["unshare", "-m", "--propagation", "private", "sh", "-euc", "true"]])),
        ] + ([("bootc-initramfs-setup setup-root [baseline]", mk(ARGS.baseline_setup))] if ARGS.baseline_setup else []),
            "bootc-initramfs-setup setup-root", max(ARGS.runs, INITRAMFS_ROUNDS if not ARGS.quick else 30))
        c.run()
        c.sizes = {"bootc-initramfs-setup": os.path.getsize(ours),
                   "composefs-setup-root 0.9": os.path.getsize(peer)}
        if ARGS.baseline_setup:
            c.sizes["baseline"] = os.path.getsize(ARGS.baseline_setup)
        c.peer_version = sh([peer, "--version"]).strip()
        ours_ms = statistics.median(s["wall"] for s in c.samples[c.ours])
        peer_ms = statistics.median(s["wall"] for s in c.samples["composefs-setup-root 0.9"])
        if not ARGS.no_perf and ours_ms > peer_ms:
            # The shipped binaries are stripped: profile the same builds with symbols.
            unstripped = {
                "bootc-initramfs-setup": os.path.join(
                    ARGS.scratch, "unstripped-ours/x86_64-unknown-linux-gnu/initramfs/bootc-initramfs-setup"),
                "composefs-setup-root": os.path.join(ARGS.scratch, "unstripped-peer/bin/composefs-setup-root"),
            }
            for name, binary in (("bootc-initramfs-setup", ours), ("composefs-setup-root", peer)):
                if os.path.exists(unstripped[name]):
                    binary = unstripped[name]
                # script() picks the verb by comparing with `ours`.
                argv = script(binary) if name == "composefs-setup-root" else [
                    a.replace(ours, binary) for a in script(ours)]
                inner = " ".join(shlex.quote(a) for a in argv)
                loop = f"for i in $(seq 100); do {inner}; done"
                profile(f"initramfs: {name}, 100 runs (a build with symbols)", lambda: None,
                        lambda _: ["sh", "-c", loop], lambda _: None, comm=name[:15], freq=20000)
                # Its time is mostly spent off the CPU, in mount syscalls: where it waits.
                data = os.path.join(ARGS.scratch, "strace.txt")
                sh(["strace", "-f", "-c", "-w", "-o", data, "sh", "-c", loop.replace("seq 100", "seq 20")])
                top = [l.rstrip() for l in open(data).read().splitlines()
                       if l.strip() and not re.search(r" (wait4|execve|vfork|clone3?)$", l)][:16]
                PROFILES.append((f"initramfs: {name}, syscalls of 20 runs with their unshare and sh "
                                 "(`strace -f -c -w`: wall time in each syscall; wait4, execve, vfork left out)",
                                 "", top))
        return c
    finally:
        fs.close()


# ---------------------------------------------------------------- /etc merge


KVER = "6.1.0-bench"


def tar_bytes(entries):
    """An uncompressed tar of (path, kind, data) entries, fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for path, kind, data in entries:
            ti = tarfile.TarInfo(path)
            ti.mtime = 1_700_000_000
            if kind == "d":
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                t.addfile(ti)
            else:
                ti.mode = 0o644
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def etc_file(i, version=0):
    body = f"# bench file {i}\nkey{i}=value{i}\n"
    if version:
        body += f"changed-upstream-in=v{version}\n"
    # Over 64 bytes so it is an object, not inline data, like most real config files.
    return (body + "#" * 80 + "\n").encode()


def etc_layout(n, usr_files=0):
    """An OCI layout with tags v1, v2 of a minimal bootable image whose /etc holds n
    small files under etc/bench/ (100 a directory); v2 changes os-release and 1% of those
    files (every 100th, from index 50). With usr_files, the base layer also holds that
    many 4 KiB files of pseudo-random bytes under usr/share/bench/ (the bulk of an OS)."""
    name = f"etc-{n}" + (f"-usr-{usr_files}" if usr_files else "")
    path = os.path.join(ARGS.scratch, "layouts", name)
    if os.path.exists(os.path.join(path, "index.json")):
        return path
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "blobs/sha256"))
    rnd = hashlib.sha256(b"kernel").digest() * 2048
    base = [("usr", "d", b""), ("usr/lib", "d", b""), ("usr/lib/modules", "d", b""),
            (f"usr/lib/modules/{KVER}", "d", b""),
            (f"usr/lib/modules/{KVER}/vmlinuz", "f", rnd),
            (f"usr/lib/modules/{KVER}/initramfs.img", "f", rnd[:32768]),
            ("boot", "d", b""), ("sysroot", "d", b""), ("var", "d", b""),
            ("etc", "d", b""), ("etc/hostname", "f", b"bench\n"), ("etc/bench", "d", b"")]
    for d in range((n + 99) // 100):
        base.append((f"etc/bench/d{d:04}", "d", b""))
    for i in range(n):
        base.append((f"etc/bench/d{i // 100:04}/f{i:05}", "f", etc_file(i)))
    if usr_files:
        import random
        rng = random.Random(usr_files)
        base.append(("usr/share", "d", b""))
        base.append(("usr/share/bench", "d", b""))
        for d in range((usr_files + 99) // 100):
            base.append((f"usr/share/bench/d{d:04}", "d", b""))
        for i in range(usr_files):
            base.append((f"usr/share/bench/d{i // 100:04}/f{i:05}", "f", rng.randbytes(4096)))

    def osrel(v):
        return [("usr/lib/os-release", "f", f"ID=bench\nVERSION_ID={v}\n".encode())]

    top2 = osrel(2) + [(f"etc/bench/d{i // 100:04}/f{i:05}", "f", etc_file(i, 2)) for i in range(50, n, 100)]
    blobs = {}
    for name, entries in (("base", base), ("v1", osrel(1)), ("v2", top2)):
        data = tar_bytes(entries)
        d = hashlib.sha256(data).hexdigest()
        open(os.path.join(tmp, "blobs/sha256", d), "wb").write(data)
        blobs[name] = (d, len(data))
    manifests = []
    for tag in ("v1", "v2"):
        layers = [blobs["base"], blobs[tag]]
        cfg = {"architecture": "amd64", "os": "linux",
               "config": {"Labels": {"containers.bootc": "1"}},
               "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d, _ in layers]}}
        cd, cs = put_json(tmp, cfg)
        man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{d}", "size": s}
                          for d, s in layers]}
        md, ms = put_json(tmp, man)
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": ms,
                          "annotations": {"org.opencontainers.image.ref.name": tag}})
    json.dump({"schemaVersion": 2, "manifests": manifests}, open(os.path.join(tmp, "index.json"), "w"))
    json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(tmp, "oci-layout"), "w"))
    shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)
    return path


def case_etc(sizes):
    """Per size: install v1 (untimed), edit 1% of the /etc files locally (every 100th),
    stage v2 with `bootc switch` (timed: it plans the merge), finalize (timed: the
    merge, the entry swap and gc), then drop v1's entry and gc (timed)."""
    layouts = {n: etc_layout(n) for n in sizes}

    def mk(n):
        def t():
            fs = Fs(f"etc{n}", 4 << 30)
            try:
                layout = layouts[n]
                booted = install(fs, f"oci:{layout}:v1")
                etc = os.path.join(fs.root, "state/deploy", booted, "etc/bench")
                for i in range(0, n, 100):
                    with open(os.path.join(etc, f"d{i // 100:04}", f"f{i:05}"), "a") as f:
                        f.write("local=1\n")
                st = Rusage.run(sysroot_args(fs, booted, "switch", f"oci:{layout}:v2"))
                staged = open(os.path.join(fs.run, "composefs/staged-deployment")).read().strip().split(":")[-1]
                m = Rusage.run(sysroot_args(fs, booted, "composefs-finalize-staged"))
                m["stage"] = st["wall"]
                m["stage_rss"] = st["rss"]
                merged = os.path.join(fs.root, "state/deploy", staged, "etc/bench")
                # The merge kept the local edit and took the upstream change.
                assert "local=1" in open(os.path.join(merged, "d0000/f00000")).read()
                if n > 50:
                    assert "changed-upstream-in=v2" in open(os.path.join(merged, "d0000/f00050")).read()
                os.unlink(os.path.join(fs.root, "boot/loader/entries", f"bootc_composefs-{booted}.conf"))
                g = Rusage.run(sysroot_args(fs, staged, "gc"))
                m["gc"] = g["wall"]
                m["gc_rss"] = g["rss"]
                return m
            finally:
                fs.close()
        return t

    c = Case("/etc merge at finalize (1% local edits, 1% upstream changes)",
             [t for n in sizes for t in baseline_tools(f"{n} files", mk(n))], None, ARGS.runs)
    c.run()
    return c


def case_boot():
    """Issue 14, case 5: the same image (tag v1) booted in QEMU (TCG) from a composefs root
    (a host `bootc install`, `composefs=?`) and from a plain ext4 root, alternating, by the
    VM harness (`bootc-vm bench-boot`, tests-vm/src/bench_boot.rs), which writes every
    measured boot's systemd phases to a JSON file. Rendered as its own table (phases by
    root), not the tools table: the "tools" here are two disks, timed inside the guest."""
    out = os.path.join(ARGS.scratch, "boot.json")
    if os.path.exists(out):
        os.unlink(out)
    harness = os.path.join(ARGS.workspace, "target/debug/bootc-vm")
    cmd = [harness, "--no-build", "bench-boot", "--runs", str(ARGS.runs), "--json", out]
    log(f"boot: {' '.join(cmd)} (one warm-up + {ARGS.runs} boot(s) of each root, a minute or two each)")
    # The harness's progress goes to our stderr, where run.sh's other progress goes.
    r = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, cwd=ARGS.workspace)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}); its console logs are under "
                           "target/vm-artifacts")
    data = json.load(open(out))
    c = Case("boot: composefs root vs the same image on a plain ext4 root (QEMU, TCG)", [], None, 0)
    c.samples = {}
    c.boot = data
    cfs, plain = data["composefs"], data["plain"]

    def col(runs, k):
        m, lo, hi = stats([b[k] for b in runs])
        return m, f"{m:.2f} s ({lo:.2f}–{hi:.2f})"

    rows = ["| phase (systemd's) | composefs median (min–max) | plain ext4 median (min–max) | composefs / plain |",
            "|---|---|---|---|"]
    for k, label in (("kernel", "kernel (before the initrd; not in the target)"), ("initrd", "initrd"),
                     ("userspace", "userspace"), ("total", "**initrd + userspace**")):
        cm, ct = col(cfs, k)
        pm, pt = col(plain, k)
        ratio = f"{cm / pm:.2f}×"
        rows.append(f"| {label} | {ct} | {pt} | {'**' + ratio + '**' if k == 'total' else ratio} |")
    c.rows = rows
    paired = statistics.median(a["total"] / b["total"] for a, b in zip(cfs, plain))
    c.paired = paired
    slow = lambda b: ", ".join(f"`{u}`" for u in b["slowest"][:3]) or "—"
    c.extra = [
        f"Median of the {len(cfs)} per-round ratios (initrd + userspace; each round's two boots ran back "
        f"to back, which cancels load that drifts between rounds): {paired:.2f}×.",
        "",
        "Per boot, initrd + userspace (s): composefs "
        + ", ".join(f"{b['initrd']:.2f}+{b['userspace']:.2f}" for b in cfs)
        + "; plain " + ", ".join(f"{b['initrd']:.2f}+{b['userspace']:.2f}" for b in plain) + ".",
        "",
        "How: `target/debug/bootc-vm --no-build bench-boot` (tests-vm/src/bench_boot.rs). Two disks of "
        "tag v1, same QEMU config (TCG, q35, OVMF, 2 vCPUs, 2 GiB, virtio-blk): **composefs** = the host "
        "install (`composefs=?`: fs-verity **not enforced**, the host kernel has none); **plain** = a "
        "second host install whose root partition is re-made as `mkfs.ext4 -d` of the unpacked v1 layer "
        "(fresh, unfragmented), booted by a Type #1 entry with the same kernel, initramfs and options "
        "minus `composefs=`, with `root=UUID=<ext4> rw` (the initramfs's `bootc-root-setup.service` "
        "skips itself without `composefs=`); there a drop-in runs the image's health check with its "
        "failure ignored (it requires a composefs root). One warm-up boot of each (not counted), then "
        "the rounds, alternating and rotating the order. Phases are systemd's own (`systemd-analyze "
        "time`: initrd = switch-root − initrd start, userspace = boot finished − switch-root), read "
        "after `systemctl is-system-running --wait`. Under TCG on a shared machine only the ratios "
        "mean something, and single boots vary up to 2×.",
        "",
        "Caveat: the plain root's userspace is longer for reasons of its own, not a composefs gain. "
        "With a partition as root, systemd's gpt-auto generator mounts the ESP early (and fscks it), so "
        "`systemd-boot-random-seed.service` and `systemd-boot-update.service` run against it, plus "
        "`systemd-remount-fs` of the ext4 root; on the composefs root the ESP is only mounted by the "
        "image's `bootc-test-esp.service`, which fails at once on the plain root (no /sysroot). So the "
        "userspace ratio compares the two boots as the image really boots them, not the overlay mount "
        "alone; the initrd ratio is the closer measure of the composefs mount itself. Slowest "
        "non-device units of the last round (`systemd-analyze blame`): composefs "
        + slow(cfs[-1]) + "; plain " + slow(plain[-1]) + ".",
    ]
    RESULTS.append(c)
    return c


# ---------------------------------------------------------------- profiles


GENERIC = ("_start", "__libc_start", "main", "std::rt::", "std::sys::backtrace", "entry_SYSCALL",
           "do_syscall_64", "bootc::main", "bootc::verbs::run")


def profile(title, setup, cmd_of, teardown, comm=None, freq=499):
    """`perf record --call-graph dwarf` of one run of `cmd_of(ctx)` (the release build
    keeps symbols but no frame pointers); keeps the top self symbols and the top
    inclusive ("children") ones, of the processes named `comm` only when given."""
    ctx = setup()
    try:
        data = os.path.join(ARGS.scratch, "perf.data")
        sh(["perf", "record", "-q", "--call-graph", "dwarf,16384", "-F", str(freq), "-o", data, "--"] + cmd_of(ctx))
        only = ["--comms", comm] if comm else []

        def report(children, limit):
            rep = sh(["perf", "report", "-i", data, "--stdio", "--children" if children else "--no-children",
                      "--sort", "symbol" if children else "comm,dso,symbol", "--percent-limit", limit,
                      "-g", "none"] + only)
            out = []
            for l in rep.splitlines():
                if not l.strip() or l.startswith("#"):
                    continue
                l = re.sub(r"(\s+-)+\s*$", "", l).rstrip()
                sym = l.split("] ", 1)[-1]
                if children and sym.startswith(GENERIC):
                    continue
                out.append(l)
            return out

        lines = ["self (--no-children --sort comm,dso,symbol, >= 2 %):"] + report(False, "2")[:15]
        lines += ["", "inclusive (--children --sort symbol, >= 4 %, entry frames left out):"] + report(True, "4")[:30]
        PROFILES.append((title, " ".join(cmd_of(ctx)), lines))
    except Exception as e:  # a profile is a nice-to-have: say why it is missing
        PROFILES.append((title, "", [f"perf failed: {e}"]))
    finally:
        teardown(ctx)


# ---------------------------------------------------------------- report


def fmt_t(s):
    if s < 1:
        return f"{s * 1000:.1f} ms"
    return f"{s:.2f} s" if s < 10 else f"{s:.1f} s"


def mib(b):
    if abs(b) < 1024:
        # The incremental cases' new layer compresses to a few hundred bytes.
        return f"{b} bytes"
    if abs(b) < 1 << 20:
        return f"{b / 1024:.0f} KiB"
    return f"{b / (1 << 20):.1f} MiB"


def stats(vals):
    return statistics.median(vals), min(vals), max(vals)


def table(c, peers=True):
    out = []
    has_sync = any("sync" in s for v in c.samples.values() for s in v)
    ours = c.samples.get(c.ours) if c.ours else None
    hdr = "| tool | wall median | min–max |"
    if has_sync:
        hdr += " of it `sync -f` |"
    if ours is not None:
        hdr += " ours / this (wall) |"
    hdr += " peak RSS (median) | written (median) |"
    if has_sync:
        hdr += " stored on the fs |"
    out.append(hdr)
    out.append("|" + "---|" * (hdr.count("|") - 1))
    om = statistics.median(s["wall"] for s in ours) if ours else None
    for name, samples in c.samples.items():
        med, lo, hi = stats([s["wall"] for s in samples])
        row = f"| {name} | {fmt_t(med)} | {fmt_t(lo)}–{fmt_t(hi)} |"
        if has_sync:
            row += f" {fmt_t(statistics.median(s.get('sync', 0) for s in samples))} |"
        if ours is not None:
            row += " — |" if name == c.ours else f" **{om / med:.2f}×** |"
        row += f" {mib(statistics.median(s['rss'] for s in samples))} | {mib(statistics.median(s['written'] for s in samples))} |"
        if has_sync:
            row += f" {mib(statistics.median(s.get('stored', 0) for s in samples))} |"
        out.append(row)
    return out


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    fs = sh(["df", "-T", ARGS.scratch]).splitlines()[-1].split()
    return [
        f"- CPU: {cpu}, `nproc` = {os.cpu_count()}; memory {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') >> 20} MiB",
        f"- kernel: {platform.release()}; OS: {sh(['sh', '-c', '. /etc/os-release; echo $PRETTY_NAME']).strip()}",
        f"- scratch: {ARGS.scratch} on {fs[1]} ({fs[0]}); every run gets a fresh `mkfs.ext4 -O verity` "
        "filesystem on a sparse loop file there",
        "- tools (Debian packages): " + ", ".join(
            sh(["dpkg-query", "-W", "-f", "${Package} ${Version}", pkg]) for pkg in
            ("tar", "gzip", "zstd", "ostree", "erofs-utils", "util-linux")),
    ]


def write_report(path, meta):
    L = []
    L.append("# Benchmarks: bootc against its peers")
    L.append("")
    L.append(f"Written by `{meta['argv']}` on {meta['date']} at commit `{meta['commit']}`"
             f" ({'quick: 1 warm-up + 3 runs' if ARGS.quick else f'1 warm-up + {ARGS.runs} runs'} per tool unless a "
             f"case says otherwise, tools alternating: the order rotates every round). Took {meta['took'] / 60:.0f} min.")
    L.append("")
    L.append("Ratios are **ours / peer** on the median wall time: below 1 we are faster. "
             "Wall time is the command plus `sync -f` of its filesystem where that column is shown "
             "(bootc makes its writes durable itself, tar and mkfs.erofs do not: the sync puts them on "
             "equal terms). Peak RSS is the largest single process of the command's tree "
             "(`wait4` rusage), written is what the tree dirtied (`ru_oublock`), stored is the growth "
             "of the filesystem's used blocks. Caches are not dropped for any tool: inputs are read from "
             "the page cache by all of them alike.")
    L.append("")
    L.append("Hand-written before/after notes of earlier work (and the figures they compared) are in "
             "[HISTORY.md](HISTORY.md): this file is rewritten whole by every full run.")
    L.append("")
    L.append("## Machine")
    L.append("")
    L.extend(machine())
    L.append(f"- load (`uptime`) before: `{meta['up0']}`")
    L.append(f"- load (`uptime`) after: `{meta['up1']}`")
    L.append("- shared with other work: medians and ranges over alternating runs, so load falls on all tools alike")
    L.append("")
    L.append("## Inputs")
    L.append("")
    L.extend(meta["inputs"])
    L.append("")
    for c in RESULTS:
        L.append(f"## {c.title}")
        L.append("")
        if getattr(c, "input_bytes", None):
            L.append(f"Input: {mib(c.input_bytes)} of layer blobs.")
            L.append("")
        if getattr(c, "doc", None):
            L.append(c.doc)
            L.append("")
        L.extend(c.rows if hasattr(c, "rows") else table(c))
        L.append("")
        for extra in getattr(c, "extra", []):
            L.append(extra)
        if getattr(c, "extra", None):
            L.append("")
    L.append("## Targets")
    L.append("")
    L.extend(meta["targets"])
    L.append("")
    if PROFILES:
        L.append("## Profiles of where we lose")
        L.append("")
        for title, cmd, lines in PROFILES:
            L.append(f"### {title}")
            L.append("")
            if cmd:
                L.append(f"`perf record --call-graph dwarf -- {cmd}`:")
                L.append("")
            L.append("```")
            L.extend(lines)
            L.append("```")
            L.append("")
            for n in meta["profile_notes"].get(title, []):
                L.append(n)
            L.append("")
    if NOTES:
        L.append("## Notes")
        L.append("")
        L.extend(NOTES)
        L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L).rstrip() + "\n")


def med(c, name, key="wall"):
    return statistics.median(s[key] for s in c.samples[name])


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--workspace", required=True)
    p.add_argument("--scratch", required=True)
    p.add_argument("--peer-setup-root", required=True)
    p.add_argument("--argv", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-perf", action="store_true")
    p.add_argument("--reuse-image", action="store_true", help="(bench/run.sh) the test image was taken as it is")
    p.add_argument("--cases", default="import,incremental,storage,initramfs,etc,boot")
    p.add_argument("--etc-sizes", default="1000,10000,50000")
    p.add_argument("--runs", type=int, help="measured runs per tool (default 5, --quick 3)")
    p.add_argument("--baseline", help="another bootc binary (e.g. a build of an earlier commit) run as "
                   "an extra tool in the etc and incremental-gen cases, alternating with ours")
    p.add_argument("--baseline-setup", help="another bootc-initramfs-setup binary (e.g. a build of an earlier "
                   "commit) run as an extra tool in the initramfs case, alternating with ours")
    ARGS = p.parse_args()
    ARGS.runs = ARGS.runs or (3 if ARGS.quick else 5)
    ws = ARGS.workspace
    ARGS.bootc = os.path.join(ws, "target/release/bootc")
    ARGS.setup_bin = os.path.join(ws, "target/x86_64-unknown-linux-gnu/initramfs/bootc-initramfs-setup")
    oci = os.path.join(ws, "target/vm-images/oci")
    cases = set(ARGS.cases.split(","))
    os.makedirs(ARGS.scratch, exist_ok=True)
    t0 = time.time()
    meta = {
        "argv": ARGS.argv.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": sh(["git", "-C", ws, "rev-parse", "--short", "HEAD"]).strip()
        + (" (dirty)" if sh(["git", "-C", ws, "status", "--porcelain", "--untracked-files=no"]).strip() else ""),
        "up0": sh(["uptime"]).strip(),
        "profile_notes": {},
    }
    meta["inputs"] = []
    if cases & {"import", "incremental", "storage", "initramfs", "boot"}:
        img = read_layout(oci)
        raw = {tag: sum(l["size"] for l in man["layers"]) for tag, (man, _) in img.items()}
        meta["inputs"].append(
            f"- the mkosi test OS image `target/vm-images/oci` (built by `mkosi/build.sh`"
            + ("; taken as it was, `--reuse-image`" if ARGS.reuse_image else "") + "): "
            + ", ".join(f"{t}: {len(img[t][0]['layers'])} layer(s), {mib(raw[t])} uncompressed" for t in sorted(img)))
    if ARGS.baseline:
        meta["inputs"].append(f"- baseline: `{ARGS.baseline}`, run as the tools marked [baseline], "
                              "alternating with ours in the same rounds")
    meta["inputs"] += [
        "- gzip (`gzip -6 -n`) and zstd (`zstd -3`) copies of it, re-packed into OCI layouts with the "
        "compressed digests and media types (configs and diff_ids unchanged), under the scratch directory",
        f"- bootc: `target/release/bootc` ({mib(os.path.getsize(ARGS.bootc))}); "
        f"bootc-initramfs-setup: `{os.path.relpath(ARGS.setup_bin, ws)}` (static, profile `initramfs`)",
        "- peer composefs-setup-root: `cargo install composefs-setup-root --version '^0.9' --no-default-features` "
        "with the same static, size-optimised flags as ours, into the scratch directory",
        "- /etc merge: minimal bootable images written by the bench (stand-in kernel, /etc with N files "
        "of ~120 bytes, 100 per directory); v2 changes os-release and 1% of the files",
    ]
    if "boot" in cases:
        meta["inputs"].append(
            "- boot: the same mkosi image's tag v1, installed by `target/release/bootc` to two disk images "
            "(its kernel, initramfs and userspace are the image's), booted by `target/debug/bootc-vm` "
            f"(QEMU {sh(['qemu-system-x86_64', '--version']).splitlines()[0].split('version ')[-1]}, TCG)")
    targets = []
    imports = {}
    if "import" in cases:
        for kind in ("gzip", "zstd"):
            imports[kind] = case_import(oci, kind)
    incr = {}
    if "incremental" in cases or "storage" in cases:
        for kind in ("gzip",) if ARGS.quick else ("gzip", "zstd"):
            incr[kind] = case_incremental(oci, kind)
            c = incr[kind]
            c.extra = [
                f"bootc switch: repository grew by {mib(statistics.median(s['repo_added'] for s in c.samples['bootc switch']))} "
                f"(du of `composefs/`); the whole filesystem by "
                f"{mib(statistics.median(s['stored'] for s in c.samples['bootc switch']))}. "
                f"OSTree repository grew by "
                f"{mib(statistics.median(s['repo_added'] for s in c.samples['new layer onto v1 tree + ostree commit']))}.",
                f"Then (not in the table): `composefs-finalize-staged` {fmt_t(med(c, 'bootc switch', 'finalize'))}, "
                f"and `bootc gc` after dropping v1's entry {fmt_t(med(c, 'bootc switch', 'gc'))} "
                f"(peak RSS {mib(med(c, 'bootc switch', 'gc_rss'))}) (medians).",
            ]
    if "storage" in cases and incr:
        st = incr["gzip"].storage
        sc = Case("storage of v1 + v2", [], None, 0)
        sc.samples = {}
        sc.lines = st
        RESULTS.append(sc)
    ir = None
    if "initramfs" in cases:
        ir = case_initramfs(oci)
        fl = med(ir, "unshare + sh only (floor)")
        q = ir.round_q = round_ratio_quartiles(ir, ir.ours, "composefs-setup-root 0.9")
        ir.extra = [f"{ir.runs} rounds (a round takes milliseconds). "
                    f"Ours / peer per round (each round runs both, back to back, which cancels load "
                    f"that drifts between rounds): median {q[1]:.2f}×, quartiles {q[0]:.2f}–{q[2]:.2f}×. "
                    f"Above the floor (`unshare` + `sh` alone), medians: ours {fmt_t(med(ir, ir.ours) - fl)}, "
                    f"peer {fmt_t(med(ir, 'composefs-setup-root 0.9') - fl)}. Both with `composefs=?HEX` "
                    "(insecure: no fs-verity here), the same config (/etc and /var bind-mounted), "
                    "`--sysroot` = the installed root, no `--target`: each replaces the sysroot mount in "
                    "its own mount namespace, as in the initramfs.", "",
                    f"Static binary sizes: " + ", ".join(f"{k} {v:,} bytes" for k, v in ir.sizes.items())
                    + f" (ours / peer {ir.sizes['bootc-initramfs-setup'] / ir.sizes['composefs-setup-root 0.9']:.3f}); "
                    f"peer `--version`: {ir.peer_version}."]
        if ARGS.baseline_setup:
            b = med(ir, "bootc-initramfs-setup setup-root [baseline]")
            ir.extra += ["", f"Ours / baseline (`{ARGS.baseline_setup}`), medians: {med(ir, ir.ours) / b:.2f}× "
                         f"({fmt_t(med(ir, ir.ours) - fl)} vs {fmt_t(b - fl)} above the floor)."]
    if "incremental-gen" in cases:
        ig = case_incremental_gen()
        if ARGS.baseline:
            ig.extra = [f"Ours / baseline (switch, medians): "
                        f"{med(ig, 'bootc switch') / med(ig, 'bootc switch [baseline]'):.2f}×."]
    ec = None
    if "etc" in cases:
        sizes = [int(x) for x in ARGS.etc_sizes.split(",")]
        ec = case_etc(sizes)
        ec.extra = ["| files | finalize median (min–max) | per 1k files | peak RSS | stage (`switch`) | gc after dropping v1 |",
                    "|---|---|---|---|---|---|"]
        for n in sizes:
            for name in [f"{n} files"] + ([f"{n} files [baseline]"] if ARGS.baseline else []):
                w = [s["wall"] for s in ec.samples[name]]
                m, lo, hi = stats(w)
                ec.extra.append(f"| {name.replace(' files', '')} | {fmt_t(m)} ({fmt_t(lo)}–{fmt_t(hi)}) | "
                                f"{m / n * 1000:.3f} s | {mib(med(ec, name, 'rss'))} | "
                                f"{fmt_t(med(ec, name, 'stage'))} | {fmt_t(med(ec, name, 'gc'))} |")
        if ARGS.baseline:
            ec.extra.append("")
            ec.extra.append("Ours / baseline (medians): " + ", ".join(
                f"{n} files: finalize {med(ec, f'{n} files') / med(ec, f'{n} files [baseline]'):.2f}×, "
                f"stage {med(ec, f'{n} files', 'stage') / med(ec, f'{n} files [baseline]', 'stage'):.2f}×"
                for n in sizes) + ".")
        ec.doc = ("The table's wall is `bootc composefs-finalize-staged` (merge, entry swap, gc); "
                  "the tools are the sizes, alternating.")

    bc = None
    boot_failed = None
    if "boot" in cases:
        # Booting VMs can fail for reasons of the VM rig: keep the other cases' figures.
        try:
            bc = case_boot()
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            boot_failed = str(e).splitlines()[0]
            log(f"boot: {boot_failed}")
            NOTES.append(f"- boot: failed, no figures: `{boot_failed}`")

    # Targets, and profiles where we miss them.
    def verdict(ok):
        return "met" if ok else "**missed**"

    if "gzip" in imports:
        c = imports["gzip"]
        ours = med(c, c.ours)
        tar = med(c, "tar -x")
        ost = med(c, "tar -x + ostree commit")
        rss = med(c, c.ours, "rss")
        targets.append(f"- import ≤ 0.85× `tar -xzf` (gzip, incl. sync): {ours / tar:.2f}× — {verdict(ours / tar <= 0.85)}")
        targets.append(f"- import ≤ 0.5× OSTree (gzip, extraction + commit, incl. sync): {ours / ost:.2f}× — {verdict(ours / ost <= 0.5)}")
        targets.append(f"- import peak RSS ≤ 64 MiB: {mib(rss)} — {verdict(rss <= 64 << 20)}")
        if not ARGS.no_perf and (ours / tar > 0.85 or ours / ost > 0.5 or rss > 64 << 20):
            layout = repack(oci, "gzip")
            profile("import v1, gzip: bootc install to-filesystem",
                    lambda: Fs("perf"), lambda fs: install_args(f"oci:{layout}:v1", fs.root), lambda fs: fs.close())
    if "gzip" in incr:
        c = incr["gzip"]
        ours = med(c, c.ours)
        alone = med(c, "tar -x of the new layer")
        targets.append(f"- incremental switch ≤ 1.2× importing the changed layer alone (gzip, `tar -x` of it, incl. sync): "
                       f"{ours / alone:.2f}× — {verdict(ours / alone <= 1.2)}")
        if not ARGS.no_perf and ours / alone > 1.2:
            layout = repack(oci, "gzip")

            def setup():
                fs = Fs("perf")
                fs.booted = install(fs, f"oci:{layout}:v1")
                return fs
            profile("incremental, gzip: bootc switch v1 → v2", setup,
                    lambda fs: sysroot_args(fs, fs.booted, "switch", f"oci:{layout}:v2"), lambda fs: fs.close())
    if ir:
        ours = med(ir, ir.ours)
        peer = med(ir, "composefs-setup-root 0.9")
        q = ir.round_q
        targets.append(f"- initramfs step ≤ 1.0× composefs-setup-root: {ours / peer:.3f}× — {verdict(ours / peer <= 1.0)} "
                       f"(per-round ratios: median {q[1]:.2f}×, quartiles {q[0]:.2f}–{q[2]:.2f}×)")
    if ec:
        sizes = [int(x) for x in ARGS.etc_sizes.split(",")]
        if 10000 in sizes:
            t10 = med(ec, "10000 files")
            targets.append(f"- /etc merge of 10k files < 1 s (finalize): {fmt_t(t10)} — {verdict(t10 < 1)}")
        if 10000 in sizes and 50000 in sizes:
            r = med(ec, "50000 files") / med(ec, "10000 files")
            targets.append(f"- linear to 50k: 50k / 10k = {r:.2f} (5.0 is linear) — {verdict(r <= 5.5)}")
            if not ARGS.no_perf and (t10 >= 1 or r > 5.5):
                lay = etc_layout(10000)

                def setup():
                    fs = Fs("perf", 4 << 30)
                    fs.booted = install(fs, f"oci:{lay}:v1")
                    sh(sysroot_args(fs, fs.booted, "switch", f"oci:{lay}:v2"))
                    return fs
                profile("/etc merge, 10k files: composefs-finalize-staged", setup,
                        lambda fs: sysroot_args(fs, fs.booted, "composefs-finalize-staged"), lambda fs: fs.close())
    if bc:
        b = bc.boot
        r = statistics.median(x["total"] for x in b["composefs"]) / statistics.median(x["total"] for x in b["plain"])
        targets.append(f"- boot overhead ≤ 1.05× a plain ext4 root (initrd + userspace, QEMU/TCG, `composefs=?`): "
                       f"{r:.2f}× (per-round ratios' median {bc.paired:.2f}×) — {verdict(r <= 1.05)}")
    if boot_failed:
        targets.append("- boot overhead ≤ 1.05× a plain ext4 root (initrd + userspace): **not measured** (see Notes)")
    meta["targets"] = targets
    meta["up1"] = sh(["uptime"]).strip()
    meta["took"] = time.time() - t0
    # The storage case renders from its lines.
    for c in RESULTS:
        if hasattr(c, "lines"):
            c.samples = {}
    out = os.path.join(ws, "bench", "RESULTS.quick.md" if ARGS.quick else "RESULTS.md")
    write_report_with_storage(out, meta)
    log(f"wrote {out}")


def write_report_with_storage(out, meta):
    # Storage has no timings: render it as its own table in place of the run table.
    global table
    plain = table

    def t2(c, peers=True):
        if hasattr(c, "lines"):
            base = c.lines.get("composefs repository (v1 + v2)")
            rows = ["| what | disk usage (du) | composefs repository (v1 + v2) / this |", "|---|---|---|"]
            for k, v in c.lines.items():
                peer = not k.startswith(("composefs", "state"))
                rows.append(f"| {k} | {mib(v)} | {f'**{base / v:.2f}×**' if peer and base and v else '—'} |")
            return rows
        return plain(c, peers)
    table = t2
    write_report(out, meta)


if __name__ == "__main__":
    main()
