from django.urls import path

from describer import views
from describer.api import pages as api_pages

urlpatterns = [
    path("", views.history, name="history"),
    path("upload/", views.upload, name="upload"),
    path("text/", views.text_new, name="text_new"),
    path("signup/", views.signup, name="signup"),
    path("settings/", api_pages.settings_page, name="settings"),
    path("settings/tokens/", api_pages.token_create, name="token_create"),
    path("settings/tokens/<int:pk>/revoke/", api_pages.token_revoke, name="token_revoke"),
    path("c/<uuid:pk>/", views.detail, name="detail"),
    path("c/<uuid:pk>/delete/", views.delete, name="delete"),
    path("c/<uuid:pk>/retry/", views.retry, name="retry"),
    path("c/<uuid:pk>/cancel/", views.cancel, name="cancel"),
    path("c/<uuid:pk>/image/", views.image, name="image"),
    path("c/<uuid:pk>/thumbnail/", views.thumbnail, name="thumbnail"),
    path("examples/<int:pk>/image/", views.example_image, name="example_image"),
    path("c/<uuid:pk>/description.md", views.download_markdown, name="download_markdown"),
    path("c/<uuid:pk>/promote/", views.promote_example, name="promote_example"),
    path("c/<uuid:pk>/diagram.mmd", views.download_mermaid, name="download_mermaid"),
    path("c/<uuid:pk>/download/", views.download, name="download"),
    path("c/<uuid:pk>/mermaid/", views.mermaid_save, name="mermaid_save"),
    path("c/<uuid:pk>/mermaid/restore/", views.mermaid_restore, name="mermaid_restore"),
    path("c/<uuid:pk>/mermaid/parse/", views.mermaid_parse_report, name="mermaid_parse_report"),
    path("c/<uuid:pk>/repair/", views.repair, name="repair"),
    path("c/<uuid:pk>/draw/", views.draw, name="draw"),
    path("c/<uuid:pk>/edit-as-mermaid/", views.edit_as_mermaid, name="edit_as_mermaid"),
]
