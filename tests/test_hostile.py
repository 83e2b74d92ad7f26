"""Malformed and hostile input: fuzzed API requests, unsafe code packages, bad names,
password guessing, a malicious pickle, and the production security checks."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import PASSWORD, ROOT, write_flow

pytestmark = [pytest.mark.django_db(transaction=True)]

GOOD_FLOW = b'''
from flowsite import FlowSpec, step


class PackagedFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        pass
'''


def tar_gz(members: list[tarfile.TarInfo], payloads: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member in members:
            data = (payloads or {}).get(member.name)
            archive.addfile(member, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def file_member(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


def package_with(extra: tarfile.TarInfo | None, extra_data: bytes = b"") -> bytes:
    members = [file_member("flow.py", GOOD_FLOW)]
    payloads = {"flow.py": GOOD_FLOW}
    if extra is not None:
        members.append(extra)
        if extra.isfile():
            payloads[extra.name] = extra_data
    return tar_gz(members, payloads)


def submit(client, token: str, package: bytes, **meta):
    metadata = {"flow": "PackagedFlow", "flow_file": "flow.py", "parameters": {},
                "parameter_specs": [], "tags": []}
    metadata.update(meta)
    return client.post(
        "/api/v1/runs",
        {"metadata": json.dumps(metadata),
         "package": io.BytesIO(package)},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


@pytest.fixture
def api(client, tokens):
    class Api:
        def submit(self, package: bytes, **meta):
            return submit(client, tokens["anne"], package, **meta)

    return Api()


def nothing_recorded() -> bool:
    from runs.models import CodePackage, Run

    return not Run.objects.exists() and not CodePackage.objects.exists()


# ---------------------------------------------------------------- code packages


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info


def device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.CHRTYPE
    return info


UNSAFE_MEMBERS = [
    ("absolute path", file_member("/tmp/flowsite-escape.py", b"x = 1\n"), "absolute path"),
    ("parent folder", file_member("../escape.py", b"x = 1\n"), "'..'"),
    ("nested parent", file_member("lib/../../escape.py", b"x = 1\n"), "'..'"),
    ("symbolic link", symlink("passwd", "/etc/passwd"), "link"),
    ("hard link", hardlink("flow_copy.py", "flow.py"), "link"),
    ("device file", device("tty"), "special file"),
]


@pytest.mark.parametrize(("case", "member", "message"), UNSAFE_MEMBERS,
                         ids=[case[0] for case in UNSAFE_MEMBERS])
def test_unsafe_package_rejected(api, case, member, message):
    response = api.submit(package_with(member, b"x = 1\n"))
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "unsafe_package"
    assert message in response.json()["error"]
    assert nothing_recorded()


def test_unsafe_package_not_extracted(tmp_path):
    from runs.errors import ValidationFailed
    from runs.packages import safe_extract

    target = tmp_path / "extract"
    target.mkdir()
    for _, member, _ in UNSAFE_MEMBERS:
        with pytest.raises(ValidationFailed):
            safe_extract(package_with(member, b"x = 1\n"), str(target))
    assert list(target.iterdir()) == []
    assert not (tmp_path / "escape.py").exists()


def test_oversized_package_rejected(api, settings):
    settings.FLOWSITE_MAX_PACKAGE_BYTES = 4096
    noise = secrets.token_bytes(8192)  # random bytes do not compress
    response = api.submit(package_with(file_member("data.bin", noise), noise))
    assert response.status_code == 400
    assert response.json()["code"] == "package_too_large"
    assert "the limit is 4096 bytes" in response.json()["error"]
    assert nothing_recorded()


def test_package_bomb_rejected(api, settings):
    settings.FLOWSITE_MAX_PACKAGE_BYTES = 64 * 1024
    zeros = bytes(2 * 1024 * 1024)  # compresses to a few kilobytes
    response = api.submit(package_with(file_member("zeros.bin", zeros), zeros))
    assert response.status_code == 400
    assert response.json()["code"] == "package_too_large"
    assert "unpacks to" in response.json()["error"]
    assert nothing_recorded()


def test_not_a_tarball_rejected(api):
    response = api.submit(b"this is not gzip")
    assert response.status_code == 400
    assert response.json()["code"] == "bad_package"
    assert nothing_recorded()


# ---------------------------------------------------------------- names and parameters


BAD_NAMES = [
    ("space", "Packaged Flow"),
    ("dash", "packaged-flow"),
    ("leading digit", "1Flow"),
    ("path", "../PackagedFlow"),
    ("markup", "<script>alert(1)</script>"),
    ("empty", ""),
    ("huge", "F" * 5000),
    ("not a string", 12),
]


@pytest.mark.parametrize(("case", "name"), BAD_NAMES, ids=[c[0] for c in BAD_NAMES])
def test_bad_flow_name_rejected(api, case, name):
    response = api.submit(package_with(None), flow=name)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_name"
    assert nothing_recorded()


@pytest.mark.parametrize(("case", "name"), BAD_NAMES[:-1], ids=[c[0] for c in BAD_NAMES[:-1]])
def test_bad_parameter_name_rejected(api, case, name):
    response = api.submit(package_with(None), parameters={name: 1},
                          parameter_specs=[{"name": name, "type": "int"}])
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_name"
    assert nothing_recorded()


def test_huge_parameters_rejected(api):
    big = "x" * (70 * 1024)
    response = api.submit(package_with(None), parameters={"blob": big},
                          parameter_specs=[{"name": "blob", "type": "str"}])
    assert response.status_code == 400
    assert response.json()["code"] == "parameters_too_large"
    assert nothing_recorded()


def test_huge_step_name_rejected(api):
    name = "s" * 300
    source = GOOD_FLOW.replace(b"self.next(self.end)", f"self.next(self.{name})".encode())
    source += f"\n    @step\n    def {name}(self):\n        self.next(self.end)\n".encode()
    package = tar_gz([file_member("flow.py", source)], {"flow.py": source})
    response = api.submit(package)
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_name"
    assert "Step name" in response.json()["error"]
    assert nothing_recorded()


def test_bad_artifact_name_rejected(db):
    """An artifact name set with setattr() that is not an identifier is rejected."""
    from runs.errors import ValidationFailed
    from runs.execution import artifact_names_check

    with pytest.raises(ValidationFailed, match="not a valid name"):
        artifact_names_check({"ok_name": {}, "bad name": {}})
    with pytest.raises(ValidationFailed, match="not a valid name"):
        artifact_names_check({"a" * 201: {}})
    artifact_names_check({"fine": {}, "_private_is_skipped_earlier": {}})


# ---------------------------------------------------------------- login throttling


def test_login_throttled_and_logged_without_password(client, users, caplog, settings):
    from django.core.cache import cache

    cache.clear()
    guess = "wrong-guess-" + secrets.token_hex(4)
    codes = []
    with caplog.at_level(logging.WARNING):
        for _ in range(25):
            response = client.post("/api/v1/login",
                                   {"username": "anne", "password": guess, "name": "x"},
                                   content_type="application/json")
            codes.append(response.status_code)
    cache.clear()

    assert codes[0] == 401
    assert 429 in codes
    assert codes.count(401) <= 20
    assert "failed API login for username 'anne'" in caplog.text
    assert guess not in caplog.text
    assert PASSWORD not in caplog.text


def test_token_creation_throttled(client, users, tokens):
    from django.core.cache import cache

    cache.clear()
    codes = []
    for index in range(25):
        response = client.post("/api/v1/tokens", {"name": f"laptop {index}"},
                               content_type="application/json",
                               HTTP_AUTHORIZATION=f"Bearer {tokens['anne']}")
        codes.append(response.status_code)
    listed = client.get("/api/v1/tokens", HTTP_AUTHORIZATION=f"Bearer {tokens['anne']}")
    cache.clear()

    assert codes[0] == 201
    assert codes.count(201) == 20
    assert codes[-1] == 429
    assert listed.status_code == 200


def test_page_login_throttled(client, users, caplog):
    from django.core.cache import cache

    cache.clear()
    guess = "wrong-guess-" + secrets.token_hex(4)
    codes = []
    with caplog.at_level(logging.WARNING):
        for _ in range(25):
            response = client.post("/login/", {"username": "will", "password": guess})
            codes.append(response.status_code)
    cache.clear()

    assert codes[0] == 200  # the form again, with an error
    assert 429 in codes
    assert "failed page login for username 'will'" in caplog.text
    assert guess not in caplog.text


# ---------------------------------------------------------------- malicious pickle


EVIL_FLOW = '''
import os
from flowsite import FlowSpec, step

TARGET = {target!r}


class Evil:
    """Unpickling this calls open(TARGET, "w"): it would create the file."""

    def __reduce__(self):
        return (open, (TARGET, "w"))

    def __repr__(self):
        return "<script>alert('evil')</script>"


class EvilFlow(FlowSpec):
    @step
    def start(self):
        self.next(self.end)

    @step
    def end(self):
        self.evil = Evil()


if __name__ == "__main__":
    EvilFlow()
'''


@pytest.mark.e2e
def test_malicious_pickle_never_loaded(cli, client, users, tokens, flows_dir, tmp_path):
    from runs.models import Artifact, Run

    target = tmp_path / "pwned"
    source = EVIL_FLOW.format(target=str(target))
    path = write_flow(flows_dir, "evil_flow.py", source)
    cli.run(path, "run", user="anne", check=True)
    run = Run.objects.get(flow__name="EvilFlow")
    end = run.tasks.get(step_name="end")
    assert Artifact.objects.filter(task=end, name="evil").exists()
    assert not target.exists()

    task = f"EvilFlow/{run.number}/end/{end.id}"
    api_paths = [
        f"/api/v1/runs/EvilFlow/{run.number}",
        f"/api/v1/runs/EvilFlow/{run.number}/steps/end/tasks",
        f"/api/v1/tasks/{task}",
        f"/api/v1/tasks/{task}/artifacts",
        f"/api/v1/tasks/{task}/artifacts/evil",
        f"/api/v1/tasks/{task}/artifacts/evil/bytes",
    ]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {tokens['anne']}"}
    for url in api_paths:
        response = client.get(url, **headers)
        assert response.status_code == 200, (url, response.content[:300])
    client.force_login(users["anne"])
    pages = ["/", f"/runs/EvilFlow/{run.number}", f"/runs/EvilFlow/{run.number}/end/{end.id}",
             f"/runs/EvilFlow/{run.number}/end/{end.id}/artifacts/evil"]
    for url in pages:
        response = client.get(url, follow=True)
        assert response.status_code == 200, url
        body = (b"".join(response.streaming_content) if response.streaming
                else response.content)
        if response["Content-Type"].startswith("text/html"):
            assert b"<script>alert('evil')</script>" not in body, url
    assert not target.exists()


# ---------------------------------------------------------------- deployment checks


def test_check_deploy_passes_with_production_settings(tmp_path):
    env = dict(os.environ)
    env.update({
        "FLOWSITE_HTTPS": "true",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(60),
        "FLOWSITE_VAR_DIR": str(tmp_path),
        "ALLOWED_HOSTS": "flowsite.example.com",
    })
    env.pop("DATABASE_URL", None)
    # The browser tests set this for their own thread; a deployment never has it.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_pages_send_security_headers(client, settings):
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_SSL_REDIRECT = False
    response = client.get("/login/", secure=True)
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


# ---------------------------------------------------------------- API fuzzing


@pytest.mark.e2e
def test_schemathesis_finds_no_errors(live_server, tokens, tmp_path):
    """Fuzz every operation against the served schema: no 500, no undocumented
    status and no response that breaks the schema."""
    schemathesis = ROOT / ".venv" / "bin" / "schemathesis"
    if not schemathesis.exists():
        pytest.skip("schemathesis is not installed; run `make install-dev`")
    result = subprocess.run(
        [str(schemathesis), "run", f"{live_server.url}/api/v1/schema",
         "-H", f"Authorization: Bearer {tokens['anne']}",
         "-c", "not_a_server_error,response_schema_conformance,status_code_conformance",
         "-n", "10", "--phases", "examples,fuzzing", "--no-shrink", "--seed", "7",
         "--request-timeout", "20", "--no-color",
         # Login would be throttled by design, and token deletion would revoke the
         # token the fuzzer itself uses.
         "--exclude-path-regex", "login|tokens"],
        cwd=str(tmp_path), capture_output=True, text=True, timeout=240,
    )
    summary = result.stdout[-4000:]
    assert result.returncode == 0, summary
    assert " passed" in summary


def test_admin_login_uses_throttled_form(client):
    response = client.get("/admin/login/?next=/admin/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/admin/"
