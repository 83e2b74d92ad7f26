"""Code packages: validate an uploaded tar.gz and store it by content hash."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import storages

from runs.errors import ValidationFailed
from runs.models import CodePackage


def storage():
    return storages["artifacts"]


def check_members(archive: tarfile.TarFile) -> list[tarfile.TarInfo]:
    """Reject members that could escape the extraction folder, before extracting any."""
    members = archive.getmembers()
    for member in members:
        name = member.name
        if name.startswith(("/", "\\")) or os.path.isabs(name) or ":" in name.split("/")[0]:
            raise ValidationFailed(
                f"The code package contains an absolute path ({name!r}). "
                "Package files relative to the flow's folder.",
                code="unsafe_package",
            )
        if ".." in name.replace("\\", "/").split("/"):
            raise ValidationFailed(
                f"The code package contains a path with '..' ({name!r}).",
                code="unsafe_package",
            )
        if member.issym() or member.islnk():
            raise ValidationFailed(
                f"The code package contains a link ({name!r}); links are not allowed.",
                code="unsafe_package",
            )
        if not (member.isfile() or member.isdir()):
            raise ValidationFailed(
                f"The code package contains a special file ({name!r}).",
                code="unsafe_package",
            )
    return members


def read_package(data: bytes, flow_file: str) -> str:
    """Validate the archive and return the source of the flow file in it."""
    limit = settings.FLOWSITE_MAX_PACKAGE_BYTES
    if len(data) > limit:
        raise ValidationFailed(
            f"The code package is {len(data)} bytes; the limit is {limit} bytes. "
            "Move data files out of the flow's folder, or raise FLOWSITE_MAX_PACKAGE_BYTES.",
            code="package_too_large",
        )
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
        members = check_members(archive)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValidationFailed(
            f"The code package is not a valid tar.gz archive ({exc}).", code="bad_package"
        ) from None
    total = sum(member.size for member in members)
    if total > limit * 5:
        raise ValidationFailed(
            f"The code package unpacks to {total} bytes; the limit is {limit * 5}.",
            code="package_too_large",
        )
    by_name = {member.name.lstrip("./"): member for member in members}
    member = by_name.get(flow_file)
    if member is None or not member.isfile():
        raise ValidationFailed(
            f"The code package has no file {flow_file!r}.", code="bad_package"
        )
    source = archive.extractfile(member).read()
    try:
        return source.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationFailed(f"{flow_file} is not UTF-8 text.", code="bad_package") from None


def package_store(data: bytes) -> CodePackage:
    digest = hashlib.sha256(data).hexdigest()
    existing = CodePackage.objects.filter(sha256=digest).first()
    if existing:
        return existing
    key = f"packages/{digest[:2]}/{digest}.tar.gz"
    store = storage()
    if not store.exists(key):
        saved = store.save(key, ContentFile(data))
        if saved != key:
            key = saved
    package, _ = CodePackage.objects.get_or_create(
        sha256=digest, defaults={"size": len(data), "storage_key": key}
    )
    return package


def safe_extract(data: bytes, target: str) -> None:
    archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz")
    check_members(archive)
    archive.extractall(target, filter="data")
