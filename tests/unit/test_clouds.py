"""stackhop.clouds: configuration as openstacksdk's loader reads it, and its one-line errors."""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

import pytest
import yaml
from keystoneauth1 import discover
from keystoneauth1 import exceptions as ksa

from stackhop import clouds, retry
from stackhop.errors import (
    AuthError,
    CloudUnknownError,
    CloudUnreachableError,
    ConfigError,
)

PASSWORD = "not-a-real-password-41"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cloud_entry(url: str, user: str = "admin", project: str = "admin") -> dict:
    return {
        "auth": {
            "auth_url": url,
            "username": user,
            "password": PASSWORD,
            "project_name": project,
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        "region_name": "RegionOne",
    }


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No OS_* variable of the caller's shell leaks into the test."""
    for key in list(os.environ):
        if key.startswith("OS_"):
            monkeypatch.delenv(key)
    return monkeypatch


@pytest.fixture
def clouds_yaml(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Path:
    """Two clouds, alpha and beta, whose Keystone URL answers nothing."""
    url = f"http://127.0.0.1:{closed_port()}/v3"
    path = tmp_path / "clouds.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "clouds": {
                    "alpha": cloud_entry(url),
                    "beta": cloud_entry(url, user="bob", project="proj-b"),
                }
            }
        )
    )
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    return path


def openrc(monkeypatch: pytest.MonkeyPatch, url: str = "http://127.0.0.1:1/v3") -> None:
    """What sourcing an openrc file sets."""
    for key, value in {
        "OS_AUTH_URL": url,
        "OS_USERNAME": "carol",
        "OS_PASSWORD": PASSWORD,
        "OS_PROJECT_NAME": "proj-c",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_REGION_NAME": "RegionTwo",
    }.items():
        monkeypatch.setenv(key, value)


def test_list_clouds_reads_clouds_yaml_without_secrets(clouds_yaml: Path) -> None:
    found = clouds.list_clouds()
    assert [c.name for c in found] == ["alpha", "beta"]
    beta = found[1]
    assert beta.user == "bob" and beta.project == "proj-b" and beta.region == "RegionOne"
    assert beta.auth_url and beta.auth_url.startswith("http://127.0.0.1:")
    assert beta.source == str(clouds_yaml)
    assert PASSWORD not in repr(found)


def test_openrc_variables_make_the_envvars_cloud(clean_env: pytest.MonkeyPatch) -> None:
    openrc(clean_env)
    (cloud,) = clouds.list_clouds()
    assert cloud.name == "envvars"
    assert (cloud.auth_url, cloud.user, cloud.project, cloud.region) == (
        "http://127.0.0.1:1/v3",
        "carol",
        "proj-c",
        "RegionTwo",
    )
    assert cloud.source == "environment"
    assert clouds.cloud_config(None).name == "envvars"
    assert PASSWORD not in repr(cloud)


def test_os_cloud_selects_the_default(clouds_yaml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OS_CLOUD", "beta")
    assert clouds.cloud_config(None).name == "beta"


def test_two_clouds_and_no_selection_is_a_config_error(clouds_yaml: Path) -> None:
    with pytest.raises(ConfigError, match="no cloud selected: name one of: alpha, beta"):
        clouds.connect(None)


def test_nothing_configured(clean_env: pytest.MonkeyPatch) -> None:
    assert clouds.list_clouds() == []
    with pytest.raises(ConfigError, match="no cloud selected: name one of: none"):
        clouds.connect(None)


def test_unknown_cloud_names_the_known_ones(clouds_yaml: Path) -> None:
    with pytest.raises(CloudUnknownError) as info:
        clouds.connect("gamma")
    assert info.value.exit_code == 3
    assert "'gamma' is not configured; known clouds: alpha, beta" in info.value.message


def test_unknown_os_cloud(clouds_yaml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OS_CLOUD", "nope")
    with pytest.raises(CloudUnknownError, match="'nope' is not configured"):
        clouds.connect(None)


def test_unreachable_cloud_is_one_line(clouds_yaml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The token request is retried as a read (up to 6 attempts, jittered waits of seconds):
    # the same retries here, with waits of milliseconds.
    quick = retry.RetryPolicy(max_attempts=6, base_delay=0.001, max_delay=0.01)
    monkeypatch.setattr(clouds, "retry_reads", functools.partial(retry.retry_reads, policy=quick))
    with pytest.raises(CloudUnreachableError) as info:
        clouds.connect("alpha")
    message = info.value.message
    assert info.value.exit_code == 5
    assert "\n" not in message
    assert message.startswith("cannot reach cloud 'alpha' at http://127.0.0.1:")
    assert "Connection refused" in message


def test_unreadable_clouds_yaml(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text("clouds:\n  a: [unclosed\n")
    clean_env.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    with pytest.raises(ConfigError, match="cannot read the cloud configuration"):
        clouds.list_clouds()


def test_api_errors_maps_refused_credentials_to_auth_error() -> None:
    with pytest.raises(AuthError) as info:
        with clouds.api_errors("src", "http://127.0.0.1:1/v3"):
            raise ksa.Unauthorized("The request you have made requires authentication.")
    assert info.value.exit_code == 4
    assert info.value.message.startswith("cannot authenticate to cloud 'src': The request")


def test_api_errors_leaves_other_api_errors_alone() -> None:
    with pytest.raises(ksa.NotFound):
        with clouds.api_errors("src"):
            raise ksa.NotFound()


@pytest.mark.parametrize(
    ("have", "need", "expected"),
    [
        ("2.10", "2.10", True),
        ("2.96", "2.10", True),
        ("2.9", "2.10", False),  # not a decimal: 9 < 10
        ("3.70", "3.8", True),
        ("3.7", "3.8", False),
        (None, "2.10", False),
        ("", "2.10", False),
    ],
)
def test_version_at_least(have: str | None, need: str, expected: bool) -> None:
    assert clouds.version_at_least(have, need) is expected


def test_parse_version() -> None:
    assert clouds.parse_version("v3.14") == (3, 14)
    assert clouds.parse_version("2.1") == (2, 1)
    assert clouds.parse_version("latest") is None


def test_summarize_versions_prefers_current() -> None:
    data = [
        discover.VersionData(
            version="2.1",
            url="http://x/v2.1",
            status="CURRENT",
            raw_status="CURRENT",
            min_microversion="2.1",
            max_microversion="2.96",
        ),
        discover.VersionData(
            version="2.0", url="http://x/v2", status="SUPPORTED", raw_status="SUPPORTED"
        ),
    ]
    api = clouds.summarize_versions("compute", data)
    assert (api.version, api.status, api.min_microversion, api.max_microversion) == (
        "2.1",
        "CURRENT",
        "2.1",
        "2.96",
    )
    assert api.versions == ["2.0", "2.1"]


def test_summarize_versions_without_current_takes_the_highest() -> None:
    data = [
        discover.VersionData(
            version=f"2.{n}", url="http://x/v2", status="SUPPORTED", raw_status="SUPPORTED"
        )
        for n in (17, 3, 9)
    ]
    api = clouds.summarize_versions("image", data)
    assert api.version == "2.17"
    assert api.versions == ["2.3", "2.9", "2.17"]
    assert clouds.summarize_versions("image", []).version is None


def test_summarize_versions_knows_a_guess_from_an_answer() -> None:
    # What keystoneauth returns when the service does not answer: a version
    # guessed from the catalog URL, with the default status and no raw status.
    guessed = [discover.VersionData(version="2.1", url="http://127.0.0.1:1/v2.1/")]
    api = clouds.summarize_versions("compute", guessed)
    assert api.discovered is False
    assert api.status == "NO ANSWER"
    assert api.max_microversion is None
    assert clouds.summarize_versions("compute", guessed[:0]).discovered is False


def test_official_service_type() -> None:
    assert clouds.official_service_type("volumev3") == "block-storage"
    assert clouds.official_service_type("compute") == "compute"
    assert clouds.official_service_type("not-a-service") == "not-a-service"
