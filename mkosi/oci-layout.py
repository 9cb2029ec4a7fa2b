#!/usr/bin/python3
"""Turn mkosi's rootfs tar into an OCI image layout with three tags (five when sealed).

  oci-layout.py ROOTFS.tar V2DIR V2REMOVE V2BADDIR LAYOUT [TAG=BASE+LAYER.tar...]

v1 = [rootfs]; v2 = [rootfs, a small layer with the files of V2DIR plus whiteouts for the
paths listed in V2REMOVE]; v2-bad = [rootfs, a small layer with the files of V2BADDIR]
(an image whose boots fail the test image's health check). Layers are uncompressed (bootc reads `oci:` in-process) and
the v2 layer is reproducible (fixed mtimes, uid/gid 0). The rootfs tar is moved, not
copied, into blobs/. Re-running replaces the layout.

Each TAG=BASE+LAYER.tar adds a tag: the layers of BASE (v1 or v2) plus LAYER.tar (the
sealed variants: a layer adding a UKI under boot/EFI/Linux/, made by sealed.py layer).
"""
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile

MTIME = 1_700_000_000


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def put_blob(layout, data):
    d = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs/sha256", d), "wb") as f:
        f.write(data)
    return d, len(data)


def small_layer(v2dir, remove_list):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        entries = []
        for root, dirs, files in os.walk(v2dir):
            dirs.sort()
            rel = os.path.relpath(root, v2dir)
            if rel != ".":
                entries.append((rel, None))
            for f in sorted(files):
                entries.append((os.path.normpath(os.path.join(rel, f)), os.path.join(root, f)))
        for path in open(remove_list).read().splitlines() if remove_list else []:
            path = path.strip().strip("/")
            if path and not path.startswith("#"):
                d, n = os.path.split(path)
                entries.append((os.path.join(d, ".wh." + n), ""))
        for name, src in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = MTIME
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            if src is None:
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                t.addfile(ti)
            else:
                data = open(src, "rb").read() if src else b""
                ti.mode = 0o644
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def main():
    rootfs, v2dir, v2remove, v2baddir, layout = sys.argv[1:6]
    extra = sys.argv[6:]
    tmp = layout + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.join(tmp, "blobs/sha256"))
    base = sha256_file(rootfs)
    base_size = os.path.getsize(rootfs)
    os.rename(rootfs, os.path.join(tmp, "blobs/sha256", base))
    top, top_size = put_blob(tmp, small_layer(v2dir, v2remove))
    bad, bad_size = put_blob(tmp, small_layer(v2baddir, None))
    tags = [
        ("v1", [(base, base_size)]),
        ("v2", [(base, base_size), (top, top_size)]),
        ("v2-bad", [(base, base_size), (bad, bad_size)]),
    ]
    for spec in extra:
        tag, rest = spec.split("=", 1)
        base_tag, path = rest.split("+", 1)
        layers = dict(tags)[base_tag]
        with open(path, "rb") as f:
            tags.append((tag, layers + [put_blob(tmp, f.read())]))

    manifests = []
    for tag, layers in tags:
        config = {
            "architecture": "amd64",
            "os": "linux",
            "created": "2023-11-14T22:13:20Z",
            "config": {
                "Labels": {"containers.bootc": "1", "org.opencontainers.image.version": tag},
                "Cmd": ["/sbin/init"],
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d, _ in layers]},
            "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "mkosi/build.sh"} for _ in layers],
        }
        cd, cs = put_blob(tmp, json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": f"sha256:{cd}", "size": cs},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": f"sha256:{d}", "size": s}
                for d, s in layers
            ],
        }
        md, ms = put_blob(tmp, json.dumps(manifest, sort_keys=True).encode())
        manifests.append({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": f"sha256:{md}",
            "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": tag},
        })
        print(f"{tag}: manifest sha256:{md}")
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}, f)
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    shutil.rmtree(layout, ignore_errors=True)
    os.rename(tmp, layout)


if __name__ == "__main__":
    main()
