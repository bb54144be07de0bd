"""Fixtures of the LTI tests: a fake platform (tests/lti/platform.py) registered
for a tenant, and the launch flow driven through Django's test client."""

from urllib.parse import parse_qs, urlsplit

import pytest
from lti_tool.models import LtiDeployment, LtiRegistration

from chatsvc.lti.models import Platform
from tests import factories
from tests.lti.platform import FakePlatform


@pytest.fixture
def platform():
    with FakePlatform() as fake:
        yield fake


def register(platform: FakePlatform, issued, **fields) -> Platform:
    """What an operator does in the admin: the registration, its deployment, its tenant."""
    registration = LtiRegistration.objects.create(
        name=f"LMS {platform.url}",
        issuer=platform.issuer,
        client_id=platform.client_id,
        auth_url=platform.auth_url,
        token_url=platform.token_url,
        keyset_url=platform.jwks_url,
    )
    LtiDeployment.objects.create(
        registration=registration, deployment_id=platform.deployment_id, is_active=True
    )
    return Platform.objects.create(registration=registration, tenant=issued.tenant, **fields)


@pytest.fixture
def issued(db):
    return factories.tenant_with_key("lti-school")


@pytest.fixture
def registered(platform, issued) -> Platform:
    return register(platform, issued)


class Launcher:
    """Login initiation → the redirect to the platform → the id_token POSTed back."""

    def __init__(self, client, platform: FakePlatform):
        self.client = client
        self.platform = platform
        self.last = None  # (auth params, id_token) of the last launch

    def login(self, *, user="teacher", hint=None):
        url = self.platform.login_url("http://testserver", user=user, hint=hint)
        response = self.client.get(url)
        assert response.status_code == 302, response.content
        location = urlsplit(response["Location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == self.platform.auth_url
        return {k: v[0] for k, v in parse_qs(location.query).items()}

    def post(self, params: dict, id_token: str):
        self.last = (params, id_token)
        return self.client.post("/lti/launch/", {"id_token": id_token, "state": params["state"]})

    def launch(self, *, user="teacher", **options):
        params = self.login(user=user)
        return self.post(params, self.platform.id_token_for(params, **options))

    def replay(self):
        return self.post(*self.last)


@pytest.fixture
def launcher(client, platform, settings):
    settings.ROOT_URLCONF = "tests.lti.urls"
    return Launcher(client, platform)
