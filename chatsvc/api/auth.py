from django.conf import settings
from ninja.security import HttpBearer

from chatsvc.api.errors import ApiError
from chatsvc.core.throttle import over_limit
from chatsvc.tenants.models import Tenant
from chatsvc.tenants.secrets import key_id_of
from chatsvc.tenants.selectors import tenant_for_api_key


class TenantApiKey(HttpBearer):
    """`Authorization: Bearer <API key>`; request.auth becomes the Tenant.

    Each API key may make CHAT_API_REQUESTS_PER_MINUTE requests a minute;
    past that, 429 with Retry-After.
    """

    openapi_description = "The tenant's API key (csk_...), shown once when it is issued."

    def authenticate(self, request, token: str) -> Tenant | None:
        tenant = tenant_for_api_key(api_key=token)
        if tenant is not None:
            retry_after = over_limit(
                f"api:{key_id_of(token)}",
                limit=settings.CHAT_API_REQUESTS_PER_MINUTE,
                window_seconds=60,
            )
            if retry_after is not None:
                raise ApiError(
                    429,
                    "rate_limited",
                    f"over {settings.CHAT_API_REQUESTS_PER_MINUTE} requests a minute; retry later",
                    retry_after=retry_after,
                )
        return tenant
