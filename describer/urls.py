from django.urls import path

from describer import views

urlpatterns = [
    path("", views.history, name="history"),
    path("upload/", views.upload, name="upload"),
    path("text/", views.text_new, name="text_new"),
    path("signup/", views.signup, name="signup"),
    path("c/<uuid:pk>/", views.detail, name="detail"),
    path("c/<uuid:pk>/delete/", views.delete, name="delete"),
    path("c/<uuid:pk>/retry/", views.retry, name="retry"),
    path("c/<uuid:pk>/image/", views.image, name="image"),
    path("c/<uuid:pk>/thumbnail/", views.thumbnail, name="thumbnail"),
    path("examples/<int:pk>/image/", views.example_image, name="example_image"),
    path("c/<uuid:pk>/description.md", views.download_markdown, name="download_markdown"),
]
