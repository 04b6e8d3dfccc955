"""The NinjaAPI object of /api/v1/: token auth on every operation, problem
details for every error, and an OpenAPI schema that says so."""

from __future__ import annotations

from ninja import NinjaAPI
from ninja.openapi.schema import OpenAPISchema

from describer.api import views
from describer.api.auth import TokenAuth
from describer.api.parsing import JsonBodyParser
from describer.api.problems import PROBLEM_MEDIA_TYPE, install_handlers

DESCRIPTION = """Both jobs of diagramsite for other programs: describe a diagram (diagram → text) and
draw a process (text → diagram), then read, list, delete and follow them live.

Authenticate with a personal API token from your settings page (/settings/), sent as
`Authorization: Bearer <token>`. Every error is an RFC 9457 problem (`application/problem+json`)
whose `detail` says what was wrong and what to do."""


class DiagramsiteApi(NinjaAPI):
    def get_openapi_schema(self, **kwargs) -> OpenAPISchema:
        """ninja documents every response as application/json; errors are problem+json here."""
        schema = super().get_openapi_schema(**kwargs)
        for operations in schema["paths"].values():
            for operation in operations.values():
                for status, response in operation["responses"].items():
                    content = response.get("content", {})
                    if int(status) >= 400 and "application/json" in content:
                        content[PROBLEM_MEDIA_TYPE] = content.pop("application/json")
        return schema

    def get_openapi_operation_id(self, operation) -> str:
        return operation.view_func.__name__  # "create_text_to_diagram", not the module path too


api = DiagramsiteApi(
    title="diagramsite API",
    version="1",
    description=DESCRIPTION,
    auth=TokenAuth(),
    parser=JsonBodyParser(),
    urls_namespace="api",
)
install_handlers(api)
api.add_router("", views.router)
