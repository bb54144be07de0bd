"""Only the LTI routes: the unit tests do not depend on the rest of the URL conf."""

from django.urls import include, path

urlpatterns = [path("lti/", include("chatsvc.lti.urls"))]
