#!/usr/bin/python3
"""Helpers for the sealed (UKI) variants of the test image, used by build.sh.

  sealed.py layer DIR REMOVE|- OUT.tar   write DIR (plus whiteouts for the paths listed
                                         in REMOVE) as a small reproducible layer, the
                                         same bytes oci-layout.py puts into the layout
  sealed.py apply LAYER.tar TREE         apply a layer to a directory tree the way an
                                         OCI merge (composefs-oci) does: whiteouts delete,
                                         a directory entry replaces the directory's
                                         metadata (mode, owner, mtime, xattrs) and keeps
                                         its content, a file replaces the file
  sealed.py cmdline UKI.efi              print the UKI's .cmdline section

`apply` is how build.sh gets the tree of v2 (v1 + the v2 layer) and of a sealed image
(+ the UKI layer) onto disk, so that `bootc container ukify --rootfs` and
`compute-composefs-digest` read exactly what the image will hold.
"""
import os
import shutil
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from importlib import import_module  # noqa: E402

oci_layout = import_module("oci-layout")


def layer(src, remove, out):
    data = oci_layout.small_layer(src, None if remove == "-" else remove)
    with open(out + ".tmp", "wb") as f:
        f.write(data)
    os.rename(out + ".tmp", out)


def set_meta(path, ti):
    """Mode, owner, mtime (and no xattrs) as the tar entry says."""
    for name in os.listxattr(path, follow_symlinks=False):
        os.removexattr(path, name, follow_symlinks=False)
    os.chown(path, ti.uid, ti.gid, follow_symlinks=False)
    if not ti.issym():
        os.chmod(path, ti.mode)
    os.utime(path, (ti.mtime, ti.mtime), follow_symlinks=False)


def apply(tar, tree):
    with tarfile.open(tar) as t:
        members = t.getmembers()
        # Directories whose content changes but that the layer does not list keep their
        # mtime (composefs' merge leaves a parent's stat alone).
        listed = {os.path.normpath(m.name) for m in members if m.isdir()}
        keep = {}
        for m in members:
            d, n = os.path.split(os.path.normpath(m.name))
            d = d or "."
            if d not in listed and d not in keep:
                st = os.lstat(os.path.join(tree, d))
                keep[d] = (st.st_atime_ns, st.st_mtime_ns)
        dirs = []
        for m in members:
            name = os.path.normpath(m.name)
            d, n = os.path.split(name)
            path = os.path.join(tree, name)
            if n.startswith(".wh."):
                if n == ".wh..wh..opq":
                    raise SystemExit(f"sealed.py: opaque whiteouts are not supported ({tar})")
                victim = os.path.join(tree, d, n[len(".wh."):])
                if os.path.isdir(victim) and not os.path.islink(victim):
                    shutil.rmtree(victim)
                elif os.path.lexists(victim):
                    os.unlink(victim)
                continue
            if m.isdir():
                if not os.path.isdir(path) or os.path.islink(path):
                    if os.path.lexists(path):
                        os.unlink(path)
                    os.mkdir(path)
                dirs.append((path, m))
            elif m.isfile():
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                elif os.path.lexists(path):
                    os.unlink(path)
                with t.extractfile(m) as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                set_meta(path, m)
            else:
                raise SystemExit(f"sealed.py: {m.name} in {tar}: only files and directories")
        # Directory metadata last (writing into a directory changes its mtime), deepest first.
        for path, m in sorted(dirs, key=lambda x: -x[0].count("/")):
            set_meta(path, m)
        for d, (at, mt) in keep.items():
            os.utime(os.path.join(tree, d), ns=(at, mt), follow_symlinks=False)


def cmdline(uki):
    import pefile

    pe = pefile.PE(uki, fast_load=True)
    for s in pe.sections:
        if s.Name.rstrip(b"\0") == b".cmdline":
            data = s.get_data()[: s.Misc_VirtualSize]
            print(data.rstrip(b"\0").decode().strip())
            return
    raise SystemExit(f"sealed.py: {uki} has no .cmdline section")


def main():
    match sys.argv[1:]:
        case ["layer", src, remove, out]:
            layer(src, remove, out)
        case ["apply", tar, tree]:
            apply(tar, tree)
        case ["cmdline", uki]:
            cmdline(uki)
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
