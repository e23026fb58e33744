"""URLs of the "My SMTP settings" pages: ``path("smtp/", include("django_multismtp.urls"))``."""

from django.urls import path

from . import views
from .oauth import views as oauth_views

app_name = "django_multismtp"

urlpatterns = [
    path("", views.my_settings, name="my_settings"),
    path("<int:pk>/", views.my_settings, name="edit"),
    path("<int:pk>/test/", views.test_settings, name="test"),
    path("<int:pk>/send-code/", views.send_code, name="send_code"),
    path("<int:pk>/confirm/", views.confirm, name="confirm"),
    path("<int:pk>/oauth/connect/", oauth_views.connect, name="oauth_connect"),
    path("<int:pk>/oauth/disconnect/", oauth_views.disconnect, name="oauth_disconnect"),
    path("oauth/callback/", oauth_views.callback, name="oauth_callback"),
]
