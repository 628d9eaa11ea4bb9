"""Validate the local node's HTTP answers against the official OpenAPI specs of the daemon.

The specs in ``tests/specs/yagna/`` (copied unchanged from ya-client, see ``SOURCE.md`` there) declare, for
every operation, the statuses it may answer and the JSON schema of each answer's body. :class:`SpecValidator`
finds the operation of a request (method and path, the spec's ``servers`` prefix included), picks the
declared answer for the status (exact code, then ``default``) and validates the body with ``jsonschema``.

OpenAPI 3.0 is not JSON Schema, so the documents are adapted once when loaded:

- ``nullable: true`` becomes ``anyOf: [{type: null}, <the schema>]``;
- ``discriminator`` is honoured: an event whose ``eventType`` names a schema of the same document (``mapping``
  first) is validated against that schema too, so a ``ProposalEvent`` must carry its ``proposal``;
- ``$ref`` across files (``common.yaml#/…``) resolves through a ``referencing`` registry of all the files.

Where the real daemon (yagna 0.17) answers differently from its own spec, the daemon wins: a client is written
against the daemon, and the local node answers as the daemon does. Those places are :data:`DEVIATIONS`, each with
its reason; every other difference is a failure that names the operation and what broke.

:func:`spec_trace_config` returns an aiohttp ``TraceConfig`` that checks each answer a session receives from
given node URLs; the integration fixtures install it on every session that talks to a local node.
"""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import attrs
import yaml
from jsonschema import Draft4Validator, validators  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT4

__all__ = [
    "DEVIATIONS",
    "ERROR_BODY_ALWAYS",
    "NULL_FOR_NO_BODY",
    "SCHEMA_FIXES",
    "SPECS",
    "Deviation",
    "Operation",
    "SchemaFix",
    "SpecValidator",
    "spec_trace_config",
    "spec_validator",
]

SPECS = Path(__file__).resolve().parent / "specs" / "yagna"
# The REST APIs the local node serves and the official specs describe (``GET /me`` is in none of them).
SPEC_FILES = ("market-api.yaml", "activity-api.yaml", "payment-api.yaml", "gsb-api.yaml", "net-api.yaml")
_BASE_URI = "https://specs.invalid/yagna/"
_JSON = "application/json"


_ERROR_MESSAGE = "common.yaml#/components/schemas/ErrorMessage"


@attrs.frozen
class Deviation:
    """A status the daemon answers where its spec declares another one (or none), and how to check the body.

    The body is validated against the spec's answer for ``spec_status`` when given, else against the common
    ``ErrorMessage`` when ``error_body``, else it must be empty or JSON ``null``.
    """

    reason: str
    spec_status: int | None = None
    error_body: bool = False


_COUNTER_200 = "yagna 0.17 answers a counter-proposal with 200 and the new proposal id (spec: 201)"

# (method, path template with the servers prefix, status the daemon answers) → what the spec says instead.
DEVIATIONS: dict[tuple[str, str, int], Deviation] = {
    ("POST", "/market-api/v1/demands/{subscriptionId}/proposals/{proposalId}", 200): Deviation(_COUNTER_200, 201),
    ("POST", "/market-api/v1/offers/{subscriptionId}/proposals/{proposalId}", 200): Deviation(_COUNTER_200, 201),
    ("POST", "/market-api/v1/agreements", 200): Deviation(
        "yagna 0.17 answers createAgreement with 200 and the agreement id (spec: 201)", 201
    ),
    ("POST", "/market-api/v1/agreements/{agreementId}/terminate", 200): Deviation(
        "yagna 0.17 answers terminate with 200 and an empty body (spec: 204)"
    ),
    ("POST", "/market-api/v1/agreements/{agreementId}/cancel", 200): Deviation(
        "yagna 0.17 answers cancel with 200 (spec: 204)"
    ),
    ("POST", "/activity-api/v1/activity", 200): Deviation(
        "yagna 0.17 answers createActivity with 200 (spec: 201); yapapi reads either", 201
    ),
    ("GET", "/activity-api/v1/activity/{activityId}/exec/{batchId}", 408): Deviation(
        "the daemon answers 408 when a long-poll with commandIndex times out before that command finished; "
        "the spec lists no 408 here",
        error_body=True,
    ),
    ("POST", "/activity-api/v1/activity/{activityId}/exec", 410): Deviation(
        "the daemon answers 410 to a script sent to an activity that has ended; the spec lists no 410 here",
        error_body=True,
    ),
    ("GET", "/payment-api/v1/allocations/{allocationId}", 410): Deviation(
        "the daemon answers 410 for an allocation that was released; the spec lists only 404",
        error_body=True,
    ),
    ("DELETE", "/payment-api/v1/allocations/{allocationId}", 410): Deviation(
        "the daemon answers 410 when releasing an allocation that was released; the spec lists only 404",
        error_body=True,
    ),
    **{
        ("GET", f"/payment-api/v1/{events}", 400): Deviation(
            "the daemon refuses a query it cannot read (an afterTimestamp that is no moment) with 400 (actix's "
            "query extractor); the spec lists no 400 here. Where the daemon drops the connection without an "
            "answer (a negative or endless timeout), the local node answers this 400 too",
            error_body=True,
        )
        for events in ("debitNoteEvents", "invoiceEvents")
    },
    ("GET", "/net-api/v1/net/{networkId}/tcp/{ip}/{port}", 400): Deviation(
        "yagna connects before it upgrades: a bad or forbidden address, or a refused connection (Socket closed), "
        "is a 400 with {message}; the spec lists only 101, 401 and 404",
        error_body=True,
    ),
    ("POST", "/net-api/v1/net/{networkId}/addresses", 404): Deviation(
        "yagna answers 404 Network not found for a network of another identity when the caller owns none; the "
        "spec lists no 404 here",
        error_body=True,
    ),
    ("POST", "/net-api/v1/net/{networkId}/nodes", 404): Deviation(
        "yagna answers 404 Network not found for a network of another identity when the caller owns none; the "
        "spec lists no 404 here",
        error_body=True,
    ),
    ("POST", "/payment-api/v1/debitNotes/{debitNoteId}/reject", 501): Deviation(
        "rejecting is not implemented in the daemon: it answers 501", error_body=True
    ),
    ("POST", "/payment-api/v1/invoices/{invoiceId}/reject", 501): Deviation(
        "rejecting is not implemented in the daemon: it answers 501", error_body=True
    ),
}

# Where the spec declares an error status without a body, the daemon still sends its ``{"message"}`` body.
ERROR_BODY_ALWAYS = "every error answer of the daemon carries {message}, also where the spec declares no body"


@attrs.frozen
class SchemaFix:
    """A schema of the spec read differently: ``update`` is merged into the schema at ``pointer`` of ``file``."""

    file: str
    pointer: str
    update: Mapping[str, Any]
    reason: str


# Places where the spec's schema is ambiguous or wrong about what the daemon (and every client) exchanges.
SCHEMA_FIXES: tuple[SchemaFix, ...] = (
    SchemaFix(
        "payment-api.yaml",
        "/components/schemas/PaymentPlatform",
        {"type": "object"},
        "the spec describes PaymentPlatform as an object but gives it no type, so a platform name (a string) "
        "matches both branches of Allocation.paymentPlatform's oneOf and no answer could ever validate",
    ),
    SchemaFix(
        "payment-api.yaml",
        "/components/schemas/DebitNote/properties/usageCounterVector",
        {"type": "array", "items": {"type": "number"}},
        "the spec says object, but the daemon's providers send the usage counters as a JSON array of numbers "
        "(one per golem.com.usage.vector entry), which is what yapapi and golem-js read",
    ),
    SchemaFix(
        "activity-api.yaml",
        "/components/schemas/ExeScriptCommandResult/properties",
        {
            "message": {"type": ["string", "null"]},
            **{
                name: {"anyOf": [{"type": ["string", "null"]}, {"type": "array", "items": {"type": "integer"}}]}
                for name in ("stdout", "stderr")
            },
        },
        "the daemon's ExeScriptCommandResult (ya-client) writes stdout, stderr and message as null when there is "
        "none, and an output captured with format bin as an array of byte values; the spec has plain strings",
    ),
)

# The net API of yagna 0.17.6 (observed, /work/proto/vpn/daemon_answers.md): 403 (a network the caller does not
# own while it owns others) and 504 (nothing answered a TCP connect) come with an empty body, and a body the
# extractor cannot read (no JSON content type, not JSON, a missing field) or a port that is not a u16 is
# answered 400/404 in text/plain; every other error carries {"message"}.
NET_API_BODIES = (
    "yagna's net API answers 403, 504 and 404 for routes it does not serve (getConnections) with an empty body, "
    "and body or path errors (400, 404) in text/plain"
)

# Where the spec declares no body, the daemon (actix, Json(())) writes ``null``; that is accepted everywhere.
NULL_FOR_NO_BODY = "the daemon answers JSON null where the spec declares no body (actix serialises () as null)"


@attrs.frozen
class Operation:
    """One operation of a spec: ``method`` on ``template`` (with the servers prefix) in ``file``."""

    file: str
    method: str
    template: str
    operation_id: str
    pattern: re.Pattern[str] = attrs.field(eq=False, repr=False)
    path_key: str = attrs.field(eq=False, repr=False)  # the template as the spec's ``paths`` spells it
    responses: Mapping[str, Any] = attrs.field(eq=False, repr=False)

    @property
    def params(self) -> int:
        """How many ``{…}`` segments the template has (fewer means more specific)."""
        return self.template.count("{")

    def __str__(self) -> str:
        return f"{self.operation_id} ({self.method} {self.template}, {self.file})"


def _pointer(*parts: str) -> str:
    """A JSON pointer (URI-fragment form) to ``parts``."""
    return "/" + "/".join(quote(part.replace("~", "~0").replace("/", "~1"), safe="~") for part in parts)


def _openapi_to_json_schema(node: Any) -> Any:
    """A copy of an OpenAPI 3.0 document where ``nullable`` is spelt as JSON Schema understands it."""
    if isinstance(node, list):
        return [_openapi_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    # YAML reads status codes as integers; JSON pointers and the checks below use strings.
    converted = {str(key): _openapi_to_json_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False) is True:
        return {"anyOf": [{"type": "null"}, converted]}
    return converted


_discriminating: contextvars.ContextVar[frozenset[tuple[int, str]]] = contextvars.ContextVar(
    "discriminating", default=frozenset()
)


def _discriminator(
    validator: Any, discriminator: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """Validate ``instance`` against the schema its discriminating property names, when the document has it.

    The named schema usually includes the one carrying the discriminator (``allOf``), so the pair being
    validated is remembered to stop the recursion there.
    """
    name = discriminator.get("propertyName")
    if not isinstance(instance, dict) or not isinstance(name, str) or not isinstance(instance.get(name), str):
        return
    value = instance[name]
    ref = discriminator.get("mapping", {}).get(value, f"#/components/schemas/{value}")
    key = (id(instance), ref)
    active = _discriminating.get()
    if key in active:
        return
    try:
        validator._resolver.lookup(ref)
    except Unresolvable:
        return  # an event type the spec does not detail: the base schema is all there is to check
    token = _discriminating.set(active | {key})
    try:
        yield from validator.descend(instance, {"$ref": ref})
    finally:
        _discriminating.reset(token)


_Validator = validators.extend(Draft4Validator, {"discriminator": _discriminator})


class SpecValidator:
    """The operations of the official specs and a check of one answer against them."""

    def __init__(self, specs: Path = SPECS) -> None:
        documents: dict[str, Any] = {
            path.name: _openapi_to_json_schema(yaml.safe_load(path.read_text()))
            for path in sorted(specs.glob("*.yaml"))
        }
        for fix in SCHEMA_FIXES:
            target = documents[fix.file]
            for part in fix.pointer.strip("/").split("/"):
                target = target[part]
            target.update(fix.update)
        self._documents = documents
        resources = [
            (_BASE_URI + name, Resource.from_contents(doc, default_specification=DRAFT4))
            for name, doc in documents.items()
        ]
        self._registry: Registry[Any] = Registry().with_resources(resources)
        operations: list[Operation] = []
        for file in SPEC_FILES:
            doc = documents[file]
            prefix = doc["servers"][0]["url"].rstrip("/")
            for template, item in doc["paths"].items():
                full = prefix + template
                regex = re.escape(full)
                regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", regex)
                for method, operation in item.items():
                    if method not in {"get", "post", "put", "delete", "patch"}:
                        continue
                    operations.append(
                        Operation(
                            file=file,
                            method=method.upper(),
                            template=full,
                            operation_id=operation.get("operationId", f"{method} {template}"),
                            pattern=re.compile(regex + "/?"),
                            path_key=template,
                            responses=operation.get("responses", {}),
                        )
                    )
        self.operations: tuple[Operation, ...] = tuple(sorted(operations, key=lambda op: op.params))

    def operation(self, method: str, path: str) -> Operation | None:
        """The spec's operation for ``method`` on ``path`` (the most specific template that matches), if any."""
        for operation in self.operations:
            if operation.method == method.upper() and operation.pattern.fullmatch(path):
                return operation
        return None

    def check(self, method: str, path: str, status: int, content_type: str, body: bytes) -> list[str]:
        """What is wrong with this answer according to the specs (empty when it conforms or is not specified).

        ``path`` is the URL path without the query. Answers to paths no spec describes are not checked.
        """
        operation = self.operation(method, path)
        if operation is None:
            return []
        where = f"{method} {path} → {status}: {operation}"
        if operation.file == "net-api.yaml" and status >= 400:  # NET_API_BODIES
            if status in (403, 404, 504) and not body.strip():  # 404: a route the daemon does not serve
                return []
            if status in (400, 404) and content_type.startswith("text/plain"):
                return []
            if status == 504:
                return [f"{where}: a 504 of the net API has an empty body, got {body[:200]!r}"]
        deviation = DEVIATIONS.get((operation.method, operation.template, status))
        status_key = str(status)
        if deviation is not None:
            if deviation.error_body:
                return self._validate(where, body, content_type, _ERROR_MESSAGE)
            if deviation.spec_status is None:
                return self._check_no_body(where, body, content_type)
            status_key = str(deviation.spec_status)
        response_key = status_key if status_key in operation.responses else None
        if response_key is None and "default" in operation.responses:
            response_key = "default"
        if response_key is None:
            declared = ", ".join(sorted(operation.responses))
            return [f"{where}: status {status} is not declared by the spec (declared: {declared})"]
        start = _pointer("paths", operation.path_key, operation.method.lower(), "responses", response_key)
        file, pointer, response = self._follow(operation.file, start)
        schema = response.get("content", {}).get(_JSON, {}).get("schema")
        if schema is None:
            if status >= 400:  # ERROR_BODY_ALWAYS
                return self._validate(where, body, content_type, _ERROR_MESSAGE)
            return self._check_no_body(where, body, content_type)
        schema_ref = f"{file}#{pointer}{_pointer('content', _JSON, 'schema')}"
        return self._validate(where, body, content_type, schema_ref)

    def _validate(self, where: str, body: bytes, content_type: str, schema_ref: str) -> list[str]:
        """What breaks the schema at ``schema_ref`` (``file#pointer``) in the JSON ``body``."""
        if _JSON not in content_type:
            return [f"{where}: the spec declares a JSON body but the answer's Content-Type is {content_type!r}"]
        try:
            instance = json.loads(body)
        except ValueError as exc:
            return [f"{where}: the body is not JSON ({exc}): {body[:200]!r}"]
        validator = _Validator({"$ref": _BASE_URI + schema_ref}, registry=self._registry)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
        # dict.fromkeys: two discriminators on one path (Event and AgreementOperationEvent) report an error twice.
        return list(
            dict.fromkeys(f"{where}: {'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}" for e in errors)
        )

    def _follow(self, file: str, pointer: str) -> tuple[str, str, dict[str, Any]]:
        """The node at ``file#pointer`` with its ``$ref``s followed (``common.yaml#/responses/…``): where and what."""
        while True:
            node: Any = self._documents[file]
            for part in pointer.strip("/").split("/"):
                node = node[unquote(part).replace("~1", "/").replace("~0", "~")]
            if "$ref" not in node:
                return file, pointer, node
            target, _, pointer = node["$ref"].partition("#")
            file = target or file

    @staticmethod
    def _check_no_body(where: str, body: bytes, content_type: str) -> list[str]:
        text = body.strip()
        if not text or (_JSON in content_type and text == b"null"):  # NULL_FOR_NO_BODY
            return []
        return [f"{where}: the spec declares no body but the answer has one: {text[:200]!r}"]


@cache
def spec_validator() -> SpecValidator:
    """The validator of the specs in ``tests/specs/yagna`` (loaded once per test run)."""
    return SpecValidator()


def spec_trace_config(origins: Callable[[], set[str]], problems: list[str]) -> aiohttp.TraceConfig:
    """A ``TraceConfig`` appending to ``problems`` what breaks the specs in answers from ``origins()``.

    ``origins`` gives the node URLs (``http://127.0.0.1:PORT``) to check; answers from anywhere else are left
    alone. Streams (server-sent events) and WebSocket upgrades are not JSON answers and are skipped; a body is
    read (aiohttp keeps it, so the caller still gets it) only once its headers say it is complete JSON.
    """

    async def on_request_end(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        url = params.url
        if f"{url.scheme}://{url.host}:{url.port}" not in origins():
            return
        if params.method == "HEAD" or spec_validator().operation(params.method, url.path) is None:
            return  # not an API answer (registry downloads are streamed: reading them here would drain them)
        response = params.response
        content_type = response.headers.get("Content-Type", "")
        if response.status == 101 or "text/event-stream" in content_type:
            return
        body = await response.read()
        problems.extend(spec_validator().check(params.method, url.path, response.status, content_type, body))

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    return trace
