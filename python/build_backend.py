# SPDX-License-Identifier: MIT
"""PEP 517 backend for the mailboxfs package: a pure-Python wheel of
mailboxfs/, written with zipfile (no setuptools or wheel needed)."""
import base64
import hashlib
import os
import tarfile
import zipfile

NAME, VERSION = "mailboxfs", "0.1.0"
HERE = os.path.dirname(os.path.abspath(__file__))
DIST_INFO = "%s-%s.dist-info" % (NAME, VERSION)
METADATA = ("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: Python bindings for libmailbox: "
            "mailboxfs mailboxes through shared memory\nLicense: MIT\nRequires-Python: >=3.8\n" % (NAME, VERSION))
WHEEL = "Wheel-Version: 1.0\nGenerator: mailboxfs build_backend\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def _files():
    for root, _, names in os.walk(os.path.join(HERE, NAME)):
        for n in sorted(names):
            if n.endswith(".py"):
                full = os.path.join(root, n)
                yield full, os.path.relpath(full, HERE)


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d = os.path.join(metadata_directory, DIST_INFO)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "METADATA"), "w") as f:
        f.write(METADATA)
    with open(os.path.join(d, "WHEEL"), "w") as f:
        f.write(WHEEL)
    return DIST_INFO


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "%s-%s-py3-none-any.whl" % (NAME, VERSION)
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        def add(arcname, data):
            z.writestr(arcname, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append("%s,sha256=%s,%d" % (arcname, digest, len(data)))
        for full, rel in _files():
            with open(full, "rb") as f:
                add(rel, f.read())
        add(DIST_INFO + "/METADATA", METADATA.encode())
        add(DIST_INFO + "/WHEEL", WHEEL.encode())
        record.append(DIST_INFO + "/RECORD,,")
        z.writestr(DIST_INFO + "/RECORD", "\n".join(record) + "\n")
    return name


def build_sdist(sdist_directory, config_settings=None):
    base = "%s-%s" % (NAME, VERSION)
    name = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for rel in ["pyproject.toml", "build_backend.py", "README.md"]:
            t.add(os.path.join(HERE, rel), base + "/" + rel)
        for full, rel in _files():
            t.add(full, base + "/" + rel)
        pkg_info = os.path.join(sdist_directory, "PKG-INFO")
        with open(pkg_info, "w") as f:
            f.write(METADATA)
        t.add(pkg_info, base + "/PKG-INFO")
        os.unlink(pkg_info)
    return name
