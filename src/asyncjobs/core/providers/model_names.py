"""Which model names may become part of a provider's URL, as pure functions.

Gemini addresses a model by its resource name in the path (`models/{id}:generateContent`)
and Azure a deployment (`/openai/deployments/{name}/...`). A client's model name that
reached those paths unchecked could climb out of them (`tunedModels/../../v1/files`,
`..`, an encoded `%2e%2e` a server decodes, `?` or `#` that end the path) and send the
operator's key with the body to another endpoint of the same API. Quoting alone is not
enough, since servers and proxies differ in what they decode before routing; so a name
must look like what the provider itself accepts, and anything else fails the job with a
400 that names the rule (and is not retried: the same name would fail again).
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from asyncjobs.core.providers.transport import InvalidModelName

# Letters, digits, '.', '_' and '-', starting with a letter or digit, so no segment is
# `.` or `..` and nothing needs escaping. Google's model ids (`gemini-2.0-flash`,
# `text-embedding-004`) and tuned model ids (`[a-z]([a-z0-9-]{0,38}[a-z0-9])?`) fit;
# Azure deployment names are 2-64 of the same characters.
GEMINI_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
GEMINI_COLLECTIONS = ("models", "tunedModels")
AZURE_DEPLOYMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

GEMINI_RULE = (
    "expected <id>, models/<id> or tunedModels/<id>, where <id> is 1-128 letters, digits, "
    "'.', '_' or '-' starting with a letter or digit"
)
AZURE_RULE = "expected 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit"
SHOWN_CHARS = 80


def shown(name: str) -> str:
    """The name as a JSON string, escaped and shortened: it came from a client."""
    cut = name if len(name) <= SHOWN_CHARS else name[:SHOWN_CHARS] + "…"
    return json.dumps(cut, ensure_ascii=True)


def gemini_resource(model: str) -> str:
    """The resource name (`models/{id}` or `tunedModels/{id}`) of a Gemini model name,
    escaped for a URL path; InvalidModelName for anything else."""
    collection, slash, model_id = model.partition("/")
    if not slash:
        collection, model_id = "models", model
    if collection not in GEMINI_COLLECTIONS or not GEMINI_ID.fullmatch(model_id):
        raise InvalidModelName("model", shown(model), GEMINI_RULE)
    return f"{collection}/{quote(model_id, safe='')}"


def azure_deployment(deployment: str) -> str:
    """A deployment name as one URL path segment; InvalidModelName for anything else."""
    if not AZURE_DEPLOYMENT.fullmatch(deployment):
        raise InvalidModelName("deployment", shown(deployment), AZURE_RULE)
    return quote(deployment, safe="")
