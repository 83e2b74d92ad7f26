"""Liveness and readiness: /readyz reports each dependency and fails when one is down."""

import pytest
from django.test import override_settings

from tests.s3_server import storages_for

pytestmark = pytest.mark.django_db


def test_healthz_ok(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_all_ok(client):
    response = client.get("/readyz")

    assert response.status_code == 200, response.json()
    assert response.json() == {
        "status": "ok", "database": "ok", "broker": "ok", "storage": "ok"
    }


def test_readyz_broker_down(client):
    # Nothing listens on port 1, so the connection is refused at once.
    with override_settings(CELERY_BROKER_URL="redis://127.0.0.1:1/0",
                           CELERY_BROKER_TRANSPORT_OPTIONS={}):
        response = client.get("/readyz")
    body = response.json()

    assert response.status_code == 503
    assert body["status"] == "unavailable"
    assert body["broker"] != "ok"
    assert body["database"] == "ok"


def test_readyz_storage_not_folder(client, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    env = {"FLOWSITE_STORAGE": "local", "FLOWSITE_STORAGE_DIR": str(blocker)}
    with override_settings(STORAGES=storages_for(env)):
        response = client.get("/readyz")
    body = response.json()

    assert response.status_code == 503
    assert body["storage"].startswith("FileExistsError")
    assert body["broker"] == "ok"


def test_readyz_s3_bucket_ok(client, s3_server):
    with override_settings(STORAGES=storages_for(s3_server.env("readyz"))):
        response = client.get("/readyz")

    assert response.status_code == 200, response.json()
    assert response.json()["storage"] == "ok"


def test_readyz_s3_bucket_missing(client, s3_server):
    env = {**s3_server.env("readyz"), "FLOWSITE_S3_BUCKET": "no-such-bucket"}
    with override_settings(STORAGES=storages_for(env)):
        response = client.get("/readyz")
    body = response.json()

    assert response.status_code == 503
    assert body["storage"].startswith("ClientError")
    assert "404" in body["storage"]
