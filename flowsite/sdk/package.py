"""Build a deterministic tar.gz of the flow's folder, so the same code has the same hash."""

from __future__ import annotations

import gzip
import io
import os
import tarfile

INCLUDE_SUFFIXES = (".py", ".json", ".yaml", ".yml", ".txt", ".cfg", ".toml", ".sql", ".csv")
SKIP_DIRS = {"__pycache__", ".venv", "venv", "var", "node_modules", ".git", "build", "dist"}
MAX_PACKAGE_BYTES = int(os.environ.get("FLOWSITE_MAX_PACKAGE_BYTES", 20 * 1024 * 1024))


class PackageTooLarge(ValueError):
    pass


def build(root: str) -> bytes:
    buffer = io.BytesIO()
    total = 0
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as archive:
            for folder, dirs, files in os.walk(root):
                dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
                for name in sorted(files):
                    if not name.endswith(INCLUDE_SUFFIXES):
                        continue
                    path = os.path.join(folder, name)
                    if os.path.islink(path):
                        continue
                    relative = os.path.relpath(path, root)
                    total += os.path.getsize(path)
                    if total > MAX_PACKAGE_BYTES:
                        raise PackageTooLarge(
                            f"The files under {root} add up to more than {MAX_PACKAGE_BYTES} "
                            "bytes. Move data files out of the flow's folder."
                        )
                    info = archive.gettarinfo(path, arcname=relative)
                    info.mtime = 0
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    info.mode = 0o644
                    with open(path, "rb") as handle:
                        archive.addfile(info, handle)
    return buffer.getvalue()
