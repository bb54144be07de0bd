"""An operator registers a platform for a tenant in one admin form."""

import pytest
from lti_tool.models import LtiDeployment, LtiRegistration

from chatsvc.lti.models import Platform
from tests import factories

pytestmark = pytest.mark.django_db


def test_a_platform_is_registered_for_a_tenant_in_one_form(admin_client):
    tenant = factories.tenant_with_key("admin-school").tenant
    url = "/admin/lti_tool/ltiregistration/add/"
    page = admin_client.get(url)
    assert page.status_code == 200
    assert "chatsvc tenant" in page.content.decode().lower()
    response = admin_client.post(
        url,
        {
            "name": "Moodle",
            "uuid": "0b6f3f7e-4a57-4a7c-9a3e-6d1f0c2b9e11",
            "issuer": "https://moodle.example.edu",
            "client_id": "abc123",
            "audience": "",
            "auth_url": "https://moodle.example.edu/mod/lti/auth.php",
            "token_url": "https://moodle.example.edu/mod/lti/token.php",
            "keyset_url": "https://moodle.example.edu/mod/lti/certs.php",
            "is_active": "on",
            "public_key": "",
            "private_key": "",
            "chatsvc-TOTAL_FORMS": "1",
            "chatsvc-INITIAL_FORMS": "0",
            "chatsvc-MIN_NUM_FORMS": "1",
            "chatsvc-MAX_NUM_FORMS": "1",
            "chatsvc-0-tenant": tenant.pk,
            "chatsvc-0-room_per_resource_link": "",
            "chatsvc-0-frame_origins": "",
            "deployments-TOTAL_FORMS": "1",
            "deployments-INITIAL_FORMS": "0",
            "deployments-MIN_NUM_FORMS": "0",
            "deployments-MAX_NUM_FORMS": "1000",
            "deployments-0-deployment_id": "1",
            "deployments-0-is_active": "on",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    registration = LtiRegistration.objects.get(client_id="abc123")
    assert Platform.objects.get(registration=registration).tenant == tenant
    assert LtiDeployment.objects.get(registration=registration).is_active
    assert admin_client.get("/admin/lti_tool/ltiregistration/").status_code == 200
    assert admin_client.get("/admin/lti/courseroom/").status_code == 200
