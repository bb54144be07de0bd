from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from chatsvc.api.views import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("lti/", include("chatsvc.lti.urls")),
]

if settings.DEBUG:  # the demo page exists in local mode only
    urlpatterns.append(path("demo/", include("chatsvc.demo.urls")))
