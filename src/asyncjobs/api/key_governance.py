"""What a virtual key may do: its providers and models, its backlog and its token budget.

Read from the key's Secret (virtual_keys.py) next to its digest and id:

    data.allowedProviders   provider names, comma-separated (`*` or absent: any)
    data.allowedModels      model patterns, comma-separated (`*` or absent: any); a
                            pattern with a `/` is matched against `provider/model`, one
                            without against the model alone; `*` and `?` are wildcards,
                            case is ignored
    data.maxPendingJobs     this key's own cap on jobs not yet terminal (0: none);
                            absent: the API's --max-pending-jobs-per-key
    data.tokenBudget        tokens (prompt + completion, as the providers report them)
                            the key may spend per period; absent or 0: no budget
    data.tokenBudgetPeriod  hour, day (default), week or month: the budget resets at
                            the period's start in UTC

`governance_decision` is the whole decision, a pure function of the key's rules, the
request's provider/model names and the tokens already spent this period; the submit
path (submit_and_poll.py) only feeds it. The answers are Bifrost's governance answers
(plugins/governance in maximhq/bifrost; api/README.md "Virtual-key governance" names
the files): 403 `provider_blocked` / `model_blocked`, 429 `token_limited`.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from asyncjobs.api.errors import ApiError
from asyncjobs.core.budget_periods import Period, next_start

log = logging.getLogger(__name__)

# Bifrost's decision types (plugins/governance/resolver.go), sent as the error's `type`.
PROVIDER_BLOCKED = "provider_blocked"
MODEL_BLOCKED = "model_blocked"
TOKEN_LIMITED = "token_limited"  # noqa: S105 - a decision type, not a secret
REQUEST_LIMITED = "request_limited"


@dataclass(frozen=True)
class TokenBudget:
    tokens: int
    period: Period = Period.DAY


@dataclass(frozen=True)
class Governance:
    """A key's rules; the defaults restrict nothing (a key without them works as before)."""

    # None: any provider / model.
    allowed_providers: tuple[str, ...] | None = None
    allowed_models: tuple[str, ...] | None = None
    # None: the API's default per-key cap; 0: none for this key.
    max_pending_jobs: int | None = None
    token_budget: TokenBudget | None = None


def governance_decision(
    rules: Governance, models: tuple[str, ...], tokens_used: int, now: datetime
) -> ApiError | None:
    """The refusal of a submit whose `models` (the model, then its fallbacks, each
    `provider/model`) meet `rules` while the key has spent `tokens_used` tokens this
    period; None when it may go ahead. Bifrost's order: provider, model, then limits."""
    for name in models:
        provider, _, model = name.partition("/")
        if not _provider_allowed(rules.allowed_providers, provider):
            return ApiError(
                403,
                f"Provider '{provider}' is not allowed for this virtual key",
                outer_type=PROVIDER_BLOCKED,
            )
        if not _model_allowed(rules.allowed_models, provider, model):
            return ApiError(
                403,
                f"Model '{model}' is not allowed for this virtual key",
                outer_type=MODEL_BLOCKED,
            )
    budget = rules.token_budget
    if budget is not None and tokens_used >= budget.tokens:
        wait = max(1, int((next_start(budget.period, now) - now).total_seconds() + 0.999))
        return ApiError(
            429,
            "Rate limit check failed: rate limit violated for VK: token limit exceeded "
            f"({tokens_used}/{budget.tokens}, resets every {budget.period.reset_text})",
            {"Retry-After": str(wait)},
            outer_type=TOKEN_LIMITED,
        )
    return None


def _provider_allowed(allowed: tuple[str, ...] | None, provider: str) -> bool:
    if allowed is None or "*" in allowed:
        return True
    return provider.lower() in allowed


def _model_allowed(allowed: tuple[str, ...] | None, provider: str, model: str) -> bool:
    if allowed is None:
        return True
    full = f"{provider}/{model}".lower()
    for pattern in allowed:
        subject = full if "/" in pattern else model.lower()
        if fnmatch.fnmatchcase(subject, pattern):
            return True
    return False


# --- reading the rules from a key's Secret --------------------------------------------


def governance_from_secret(name: str, data: Mapping[str, str]) -> Governance:
    """The rules a key's Secret sets. A value that cannot be read is logged (naming the
    Secret and the field, never a value) and fails closed: an unreadable allow-list
    allows nothing, an unreadable token budget is a budget of 0 (every submit refused),
    so a typo never opens a key; an unreadable maxPendingJobs leaves the API's default."""
    providers = _names(name, data, "allowedProviders")
    models = _names(name, data, "allowedModels")
    pending = _whole_number(name, data, "maxPendingJobs")
    tokens = _whole_number(name, data, "tokenBudget")
    if tokens is None and data.get("tokenBudget") is not None:
        tokens = -1  # unreadable: fail closed below
    period_text = _text(name, data, "tokenBudgetPeriod")
    budget = None
    if tokens == -1:
        budget = TokenBudget(0)
    elif tokens:
        try:
            period = Period((period_text or Period.DAY.value).strip().lower())
        except ValueError:
            log.warning(
                "virtual-key secret %s: tokenBudgetPeriod is not hour, day, week or month;"
                " a day is used",
                name,
            )
            period = Period.DAY
        budget = TokenBudget(tokens, period)
    return Governance(providers, models, pending, budget)


def _text(name: str, data: Mapping[str, str], field: str) -> str | None:
    raw = data.get(field)
    if raw is None:
        return None
    try:
        return base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        log.warning("virtual-key secret %s: %s is not valid base64/utf-8", name, field)
        return ""


def _names(name: str, data: Mapping[str, str], field: str) -> tuple[str, ...] | None:
    text = _text(name, data, field)
    if text is None:
        return None
    names = tuple(part.strip().lower() for part in text.replace("\n", ",").split(","))
    return tuple(part for part in names if part)


def _whole_number(name: str, data: Mapping[str, str], field: str) -> int | None:
    text = _text(name, data, field)
    if text is None:
        return None
    if not text.strip().isdigit():
        log.warning("virtual-key secret %s: %s is not a whole number; ignored", name, field)
        return None
    return int(text.strip())
