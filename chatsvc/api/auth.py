from ninja.security import HttpBearer

from chatsvc.tenants.models import Tenant
from chatsvc.tenants.selectors import tenant_for_api_key


class TenantApiKey(HttpBearer):
    """`Authorization: Bearer <API key>`; request.auth becomes the Tenant."""

    openapi_description = "The tenant's API key (csk_...), shown once when it is issued."

    def authenticate(self, request, token: str) -> Tenant | None:
        return tenant_for_api_key(api_key=token)
