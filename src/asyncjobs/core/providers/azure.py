"""Azure OpenAI: OpenAI's bodies at deployment URLs, with an `api-key` header.

Azure serves each model through a deployment the customer named, so the path names the
deployment (`{endpoint}/openai/deployments/{deployment}/chat/completions`) and every
request carries `?api-version=`. The configuration maps the model names clients use to
deployment names; a model without a mapping is sent as a deployment of the same name,
the common convention. Responses live outside the deployment path
(`/openai/responses`) and take the deployment as `model`. Bodies and error bodies are
OpenAI's, so openai_wire and openai_errors do the rest. The deployment is a path segment,
so only names shaped like Azure's are sent (model_names).
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from urllib.parse import urlencode

from asyncjobs.core.providers import model_names, openai_wire
from asyncjobs.core.providers.base import ProviderRequest
from asyncjobs.core.providers.transport import (
    CommonWire,
    UnsupportedRequestType,
    WireCall,
)
from asyncjobs.core.request_types import REQUEST_TYPES
from asyncjobs.core.request_types import RequestType as T

DEFAULT_API_VERSION = "2024-10-21"

# What Azure OpenAI deploys; rerank, OCR and image variations have no Azure endpoint.
SUPPORTED: frozenset[T] = frozenset(T) - {T.RERANK, T.OCR, T.IMAGE_VARIATION}


@dataclass(frozen=True)
class AzureWire(CommonWire):
    base_url: str  # the resource endpoint, https://<resource>.openai.azure.com
    api_version: str = DEFAULT_API_VERSION
    deployments: Mapping[str, str] = field(default_factory=dict)  # model -> deployment
    supported: Set[T] = SUPPORTED

    def deployment(self, model: str) -> str:
        return self.deployments.get(model, model)

    def endpoint(self) -> str:
        # Accept the endpoint with or without the `/openai` suffix the portal sometimes shows.
        base = self.base_url.rstrip("/")
        return base.removesuffix("/openai")

    def url(self, request_type: T, deployment: str) -> str:
        query = urlencode({"api-version": self.api_version})
        if request_type is T.RESPONSES:
            return f"{self.endpoint()}/openai/responses?{query}"
        path = REQUEST_TYPES[request_type].openai_path
        segment = model_names.azure_deployment(deployment)
        return f"{self.endpoint()}/openai/deployments/{segment}{path}?{query}"

    def build(self, request: ProviderRequest) -> WireCall:
        if request.request_type not in self.supported:
            raise UnsupportedRequestType(request.request_type)
        deployment = self.deployment(request.model)
        # Checked for Responses too, where it travels in the body: one rule per provider.
        model_names.azure_deployment(deployment)
        wire = openai_wire.prepare(request, model=deployment)
        return WireCall(
            url=self.url(request.request_type, deployment),
            body=wire.body,
            content_type=wire.content_type,
            decode=openai_wire.decoder(request.request_type),
        )

    def auth_headers(self, key: str) -> dict[str, str]:
        return {"api-key": key}
