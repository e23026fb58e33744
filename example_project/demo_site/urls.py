from django.contrib import admin
from django.urls import include, path

from . import views

admin.site.site_header = "django-multismtp demo"
admin.site.site_title = "django-multismtp demo"
admin.site.site_url = "/"

urlpatterns = [
    path("admin/", admin.site.urls),
    # "My SMTP settings": each staff user manages, tests and verifies their own account.
    path("smtp/", include("django_multismtp.urls")),
    path("", views.send_page, name="send"),
    path("sink/", views.sink_page, name="sink"),
]
