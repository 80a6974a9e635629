"""The Azure OpenAI dialect of the fake provider server.

Azure takes OpenAI's bodies at deployment paths, so the OpenAI fake's checks and answers
are reused once the path is translated; what is Azure's own is checked here: the
`api-key` header (never a Bearer token), the `api-version` query, the deployment in the
path, and Azure's error bodies (`{"error": {"code", "message"}}`, codes as strings).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from . import openai_answers, openai_checks
from .openai_checks import ReceivedForm
from .wire_server import Answer, Incoming, Route, Step

DEPLOYMENT_PATH = re.compile(r"^/openai/deployments/(?P<deployment>[^/]+)(?P<rest>/.+)$")

ERRORS = {
    400: ("BadRequest", "Invalid request."),
    401: ("401", "Access denied due to invalid subscription key or wrong API endpoint."),
    404: ("DeploymentNotFound", "The API deployment for this resource does not exist."),
    429: ("429", "Requests to the ChatCompletions_Create Operation have exceeded rate limit."),
    500: ("InternalServerError", "The server had an error."),
}


@dataclass
class AzureDialect:
    api_version: str = "2024-10-21"
    deployments: set[str] = field(default_factory=set)  # empty: any deployment exists

    def key(self, incoming: Incoming) -> str | None:
        return incoming.headers.get("api-key")

    def route(self, incoming: Incoming) -> Route | None:
        problems = self._common(incoming)
        if incoming.path == "/openai/responses":
            openai_path, deployment = "/v1/responses", None
        else:
            match = DEPLOYMENT_PATH.match(incoming.path)
            if match is None:
                return None
            openai_path, deployment = "/v1" + match["rest"], match["deployment"]
        if openai_path in openai_checks.JSON_PATHS:
            return self._json(incoming, openai_path, deployment, problems)
        if openai_path in openai_checks.FORM_PATHS and incoming.form is not None:
            form = ReceivedForm(incoming.form["fields"], incoming.form["files"])
            problems += openai_checks.check_form(openai_path, form, ("azure/",))
            model = (form.fields.get("model") or [None])[0]
            return Route(
                deployment or model,
                problems,
                lambda: openai_answers.form_answer(openai_path, form),
            )
        return None

    def _common(self, incoming: Incoming) -> list[str]:
        problems = []
        if incoming.query.get("api-version") != self.api_version:
            problems.append(f"api-version must be {self.api_version}, got {incoming.query}")
        if "authorization" in incoming.headers:
            problems.append("Azure takes the key in api-key, not Authorization")
        if not incoming.headers.get("api-key"):
            problems.append("api-key header is missing")
        return problems

    def _json(
        self, incoming: Incoming, path: str, deployment: str | None, problems: list[str]
    ) -> Route:
        body = incoming.json
        problems += openai_checks.check_json(path, body, ("azure/",))
        model = body.get("model") if isinstance(body, dict) else None
        target = deployment or model
        if self.deployments and target not in self.deployments:
            problems.append(f"no deployment named {target!r}")
        builder = openai_answers.JSON_ANSWERS[path]
        return Route(target, problems, lambda: builder(body))

    def error_body(self, status: int, step: Step) -> Answer:
        code, message = ERRORS.get(status, (str(status), "Error."))
        error = {"code": step.code or code, "message": step.message or message}
        if step.param:
            error["param"] = step.param
        if step.type:
            error["type"] = step.type
        return "application/json", json.dumps({"error": error}).encode()
