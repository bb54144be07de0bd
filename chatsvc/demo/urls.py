from django.urls import path

from chatsvc.demo.views import demo

urlpatterns = [path("", demo, name="demo")]
