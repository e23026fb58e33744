from django.contrib import admin
from django.urls import include, path

from . import oauth_server, views

admin.site.site_header = "django-multismtp demo"
admin.site.site_title = "django-multismtp demo"
admin.site.site_url = "/"

urlpatterns = [
    path("admin/", admin.site.urls),
    # "My SMTP settings": each staff user manages, tests and verifies their own account.
    path("smtp/", include("django_multismtp.urls")),
    path("", views.send_page, name="send"),
    path("sink/", views.sink_page, name="sink"),
    # The demo's own OAuth 2.0 authorization server (stands in for Microsoft or Google).
    path("oauth/authorize/", oauth_server.authorize, name="oauth_authorize"),
    path("oauth/token/", oauth_server.token, name="oauth_token"),
    path("oauth/revoke/", oauth_server.revoke, name="oauth_revoke"),
    path("oauth/", oauth_server.grants_page, name="oauth_grants"),
]
