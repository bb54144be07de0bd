from django.urls import path

from chatsvc.lti import views

app_name = "lti"
urlpatterns = [
    path("", views.setup, name="setup"),
    path("login/", views.login, name="login"),
    path("login/<uuid:registration_uuid>/", views.login, name="login-registration"),
    path("launch/", views.launch, name="launch"),
    path("token/", views.token, name="token"),
    path("jwks.json", views.jwks, name="jwks"),
    path("config.json", views.config, name="config"),
]
