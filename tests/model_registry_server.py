"""A Kubeflow Model Registry REST server on loopback for the registry tests, held to the
registry's published OpenAPI document (tests/data/model_registry/openapi-v0.3.8.yaml, from
kubeflow/model-registry tag v0.3.8, the release of the pinned client).

Not a mock of the client: the client speaks HTTP to it on 127.0.0.1, and every request is checked
against the document before anything else: the path and method must be an operation of the
document, every query and path parameter one the operation declares (with its schema), and the
JSON body must match the operation's request schema: `$ref`, `allOf` merged, `oneOf` resolved by
its discriminator, types, enums, patterns, required fields, and no field the schema does not
declare (the real server's decoder uses DisallowUnknownFields). A request that fails is answered
400 with the reason and recorded in `refused`. Every answer this server gives is checked against
the operation's response schema too, so the client only ever reads what the real server could
send. On top, the rules the real server applies that the document states in words: names unique
(a registered model's among registered models, a version's within its model, an artifact's within
its version), parents that exist (404 otherwise), find operations that answer 404 when nothing
matches, and bearer-token authentication when a token is set (401 otherwise).
"""

from __future__ import annotations

import http.server
import itertools
import json
import os
import re
import threading
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC_PATH = os.path.join(HERE, "data", "model_registry", "openapi-v0.3.8.yaml")
BASE = "/api/model_registry/v1alpha3"


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class OpenApiDocument:
    """The operations of an OpenAPI 3.0 document and a strict checker of values against its
    schemas."""

    def __init__(self, path: str = SPEC_PATH):
        with open(path) as f:
            self.doc = yaml.safe_load(f)
        self.routes: List[Tuple[re.Pattern, str, Dict[str, Any]]] = []
        for template, item in self.doc["paths"].items():
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            self.routes.append((re.compile(f"^{pattern}$"), template, item))

    # -- references and schemas ----------------------------------------------------------------

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"external reference {ref}")
            target = self.doc
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
        return node

    def _flatten(self, schema: Dict[str, Any]) -> Dict[str, Any]:
        """An object schema with its allOf parts merged: properties, required, additional."""
        schema = self.resolve(schema)
        flat = {"properties": {}, "required": set(), "additional": None, "object": False}
        for part in schema.get("allOf", []):
            sub = self._flatten(part)
            flat["properties"].update(sub["properties"])
            flat["required"] |= sub["required"]
            if sub["additional"] is not None:
                flat["additional"] = sub["additional"]
            flat["object"] |= sub["object"]
        flat["properties"].update(schema.get("properties", {}))
        flat["required"] |= set(schema.get("required", []))
        if "additionalProperties" in schema:
            flat["additional"] = schema["additionalProperties"]
        flat["object"] |= schema.get("type") == "object" or "properties" in schema
        return flat

    def check(self, schema: Any, value: Any, where: str, *, request: bool) -> None:
        schema = self.resolve(schema)
        if "oneOf" in schema:
            discriminator = schema.get("discriminator")
            if discriminator:
                if not isinstance(value, dict):
                    raise Refused(400, f"{where}: expected an object")
                tag = value.get(discriminator["propertyName"])
                target = discriminator.get("mapping", {}).get(tag)
                if target is None:
                    raise Refused(
                        400,
                        f"{where}.{discriminator['propertyName']}: {tag!r} is not one of "
                        f"{sorted(discriminator.get('mapping', {}))}",
                    )
                self.check({"$ref": target}, value, where, request=request)
                return
            matches = 0
            for option in schema["oneOf"]:
                try:
                    self.check(option, value, where, request=request)
                    matches += 1
                except Refused:
                    pass
            if matches != 1:
                raise Refused(400, f"{where}: matches {matches} of the oneOf schemas, not 1")
            return
        if "allOf" in schema or schema.get("type") == "object" or "properties" in schema:
            self._check_object(schema, value, where, request=request)
            return
        kind = schema.get("type")
        if kind == "string":
            if not isinstance(value, str):
                raise Refused(400, f"{where}: expected a string, got {value!r}")
            if schema.get("format") == "int64" and not re.fullmatch(r"-?[0-9]+", value):
                raise Refused(400, f"{where}: {value!r} is not an int64")
            if "pattern" in schema and not re.search(schema["pattern"], value):
                raise Refused(400, f"{where}: {value!r} does not match {schema['pattern']}")
        elif kind == "integer":
            if not isinstance(value, int) or isinstance(value, bool):
                raise Refused(400, f"{where}: expected an integer, got {value!r}")
        elif kind == "number":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise Refused(400, f"{where}: expected a number, got {value!r}")
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise Refused(400, f"{where}: expected a boolean, got {value!r}")
        elif kind == "array":
            if not isinstance(value, list):
                raise Refused(400, f"{where}: expected an array")
            for i, item in enumerate(value):
                self.check(schema.get("items", {}), item, f"{where}[{i}]", request=request)
        if "enum" in schema and value not in schema["enum"]:
            raise Refused(400, f"{where}: {value!r} is not one of {schema['enum']}")

    def _check_object(self, schema, value, where, *, request):
        if not isinstance(value, dict):
            raise Refused(400, f"{where}: expected an object, got {value!r}")
        flat = self._flatten(schema)
        for key in sorted(flat["required"] - set(value)):
            raise Refused(400, f"{where}: required field {key!r} is missing")
        for key, item in value.items():
            if key in flat["properties"]:
                prop = self.resolve(flat["properties"][key])
                if request and prop.get("readOnly"):
                    raise Refused(400, f"{where}.{key}: is read-only")
                self.check(prop, item, f"{where}.{key}", request=request)
            elif isinstance(flat["additional"], dict):
                self.check(flat["additional"], item, f"{where}.{key}", request=request)
            elif flat["additional"] is True:
                continue
            else:
                raise Refused(400, f'{where}: json: unknown field "{key}"')

    # -- operations ----------------------------------------------------------------------------

    def operation(self, method: str, path: str):
        """(template, operation, path parameters) for a request, or Refused 404/405."""
        for pattern, template, item in self.routes:
            found = pattern.match(path)
            if found:
                operation = item.get(method.lower())
                if operation is None:
                    raise Refused(405, f"{method} {template} is not an operation of the document")
                parameters = {}
                for parameter in item.get("parameters", []) + operation.get("parameters", []):
                    parameter = self.resolve(parameter)
                    parameters[(parameter["in"], parameter["name"])] = parameter
                return template, operation, found.groupdict(), parameters
        raise Refused(404, f"{path}: no such path in the document")

    def check_request(self, method, path, query, body, content_type):
        template, operation, path_values, parameters = self.operation(method, path)
        for name, value in path_values.items():
            parameter = parameters.get(("path", name))
            if parameter is None:
                raise Refused(400, f"path parameter {name} is not declared")
            self.check(parameter["schema"], urllib.parse.unquote(value), name, request=True)
        for name, values in query.items():
            parameter = parameters.get(("query", name))
            if parameter is None:
                raise Refused(400, f"query parameter {name!r} is not one {template} takes")
            if len(values) != 1:
                raise Refused(400, f"query parameter {name!r} given {len(values)} times")
            self.check(parameter["schema"], values[0], name, request=True)
        for (where, name), parameter in parameters.items():
            if where == "query" and parameter.get("required") and name not in query:
                raise Refused(400, f"query parameter {name!r} is required")
        request_body = self.resolve(operation.get("requestBody"))
        if request_body:
            if body is None:
                if request_body.get("required"):
                    raise Refused(400, f"{method} {template}: a JSON body is required")
            else:
                if not (content_type or "").startswith("application/json"):
                    raise Refused(415, f"{method} {template}: body is {content_type!r}")
                schema = request_body["content"]["application/json"]["schema"]
                self.check(schema, body, "body", request=True)
        elif body is not None:
            raise Refused(400, f"{method} {template} takes no body")
        return template, operation, path_values

    def check_response(self, operation, status: int, body) -> None:
        responses = operation.get("responses", {})
        response = self.resolve(responses.get(str(status)) or responses.get("default"))
        if response is None:
            raise AssertionError(f"the server answered {status}, which the document does not list")
        schema = (response.get("content") or {}).get("application/json", {}).get("schema")
        if schema is not None:
            try:
                self.check(schema, body, "response", request=False)
            except Refused as e:
                raise AssertionError(f"the test server's answer breaks the document: {e}") from e


def _now() -> str:
    return str(int(time.time() * 1000))


class ModelRegistryState:
    """What the server holds, and the rules the real one applies beyond the schemas."""

    def __init__(self):
        self.ids = (str(n) for n in itertools.count(1))
        self.models: Dict[str, dict] = {}
        self.versions: Dict[str, dict] = {}
        self.artifacts: Dict[str, dict] = {}
        self.version_artifacts: Dict[str, List[str]] = {}

    def _new(self, body: dict, **extra) -> dict:
        entity = dict(body)
        entity.update(extra)
        entity["id"] = next(self.ids)
        entity["createTimeSinceEpoch"] = entity["lastUpdateTimeSinceEpoch"] = _now()
        return entity

    @staticmethod
    def _page(items: List[dict], query) -> dict:
        size = int(query.get("pageSize", ["100"])[0] or 100)
        return {
            "items": items[:size],
            "size": len(items[:size]),
            "pageSize": size,
            "nextPageToken": "",
        }

    @staticmethod
    def _one(found: List[dict], what: str) -> dict:
        if not found:
            raise Refused(404, f"no {what} found")
        return found[0]

    def handle(self, method: str, template: str, params: dict, query: dict, body) -> tuple:
        route = template[len(BASE) :]
        q = {k: v[0] for k, v in query.items()}
        if (method, route) == ("GET", "/registered_models"):
            return 200, self._page(list(self.models.values()), query)
        if (method, route) == ("POST", "/registered_models"):
            if any(m["name"] == body["name"] for m in self.models.values()):
                raise Refused(409, f"registered model {body['name']!r} already exists")
            model = self._new(body, state=body.get("state", "LIVE"))
            self.models[model["id"]] = model
            return 201, model
        if (method, route) == ("GET", "/registered_model"):
            found = [
                m
                for m in self.models.values()
                if ("name" not in q or m["name"] == q["name"])
                and ("externalId" not in q or m.get("externalId") == q["externalId"])
            ]
            return 200, self._one(found, "registered model")
        if (method, route) == ("GET", "/registered_models/{registeredmodelId}"):
            return 200, self._one(
                [self.models[i] for i in [params["registeredmodelId"]] if i in self.models],
                "registered model",
            )
        if (method, route) == ("GET", "/registered_models/{registeredmodelId}/versions"):
            model_id = params["registeredmodelId"]
            if model_id not in self.models:
                raise Refused(404, f"registered model {model_id} not found")
            found = [v for v in self.versions.values() if v["registeredModelId"] == model_id]
            return 200, self._page(found, query)
        if (method, route) == ("POST", "/model_versions"):
            model_id = body["registeredModelId"]
            if model_id not in self.models:
                raise Refused(404, f"registered model {model_id} not found")
            if any(
                v["registeredModelId"] == model_id and v["name"] == body["name"]
                for v in self.versions.values()
            ):
                raise Refused(409, f"version {body['name']!r} already exists")
            version = self._new(body, state=body.get("state", "LIVE"))
            self.versions[version["id"]] = version
            self.version_artifacts[version["id"]] = []
            return 201, version
        if (method, route) == ("GET", "/model_version"):
            found = [
                v
                for v in self.versions.values()
                if ("name" not in q or v["name"] == q["name"])
                and ("parentResourceId" not in q or v["registeredModelId"] == q["parentResourceId"])
                and ("externalId" not in q or v.get("externalId") == q["externalId"])
            ]
            return 200, self._one(found, "model version")
        if (method, route) == ("GET", "/model_versions/{modelversionId}"):
            return 200, self._one(
                [self.versions[i] for i in [params["modelversionId"]] if i in self.versions],
                "model version",
            )
        if route == "/model_versions/{modelversionId}/artifacts":
            version_id = params["modelversionId"]
            if version_id not in self.versions:
                raise Refused(404, f"model version {version_id} not found")
            members = self.version_artifacts[version_id]
            if method == "GET":
                found = [self.artifacts[i] for i in members]
                if "artifactType" in q:
                    found = [a for a in found if a["artifactType"] == q["artifactType"]]
                if "name" in q:
                    found = [a for a in found if a.get("name") == q["name"]]
                return 200, self._page(found, query)
            if body.get("id"):
                if body["id"] not in self.artifacts:
                    raise Refused(404, f"artifact {body['id']} not found")
                artifact = self.artifacts[body["id"]]
            else:
                if any(
                    self.artifacts[i].get("name") == body.get("name")
                    and self.artifacts[i]["artifactType"] == body["artifactType"]
                    for i in members
                ):
                    raise Refused(409, f"artifact {body.get('name')!r} already exists")
                artifact = self._new(body, state=body.get("state", "UNKNOWN"))
                self.artifacts[artifact["id"]] = artifact
            if artifact["id"] not in members:
                members.append(artifact["id"])
            return 201, artifact
        if (method, route) == ("GET", "/model_artifact"):
            parent = q.get("parentResourceId")
            ids = self.version_artifacts.get(parent, []) if parent else list(self.artifacts)
            found = [
                self.artifacts[i]
                for i in ids
                if self.artifacts[i]["artifactType"] == "model-artifact"
                and ("name" not in q or self.artifacts[i].get("name") == q["name"])
            ]
            return 200, self._one(found, "model artifact")
        raise Refused(501, f"{method} {template}: not implemented by the test server")


class ModelRegistryServer:
    """`with ModelRegistryServer(token="t") as server:` a registry on 127.0.0.1:server.port.

    `requests`: (method, path, query, body, authorization) of every request; `refused`: the
    (method, path, reason) of every request the document or the rules refused; `fail_next`:
    answer the next N requests with this HTTP status (a registry in trouble)."""

    def __init__(self, token: Optional[str] = None):
        self.document = OpenApiDocument()
        self.state = ModelRegistryState()
        self.token = token
        self.requests: List[tuple] = []
        self.refused: List[tuple] = []
        self.fail_next: List[int] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parsed = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(parsed.query, keep_blank_values=True)
                status, payload = server.answer(
                    self.command,
                    parsed.path,
                    query,
                    raw,
                    self.headers.get("Content-Type"),
                    self.headers.get("Authorization"),
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

            def log_message(self, *args):  # quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.address = "http://127.0.0.1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def answer(self, method, path, query, raw, content_type, authorization):
        body = None
        operation = None
        try:
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise Refused(400, "body is not JSON") from None
            self.requests.append((method, path, query, body, authorization))
            if self.token is not None and authorization != f"Bearer {self.token}":
                raise Refused(401, "missing or wrong bearer token")
            template, operation, params = self.document.check_request(
                method, path, query, body, content_type
            )
            if self.fail_next:
                status = self.fail_next.pop(0)
                raise Refused(status, f"the registry is unavailable ({status})")
            status, payload = self.state.handle(method, template, params, query, body)
        except Refused as refusal:
            if refusal.status in (400, 405, 415, 501) or (refusal.status == 404 and not operation):
                self.refused.append((method, path, str(refusal)))
            status, payload = refusal.status, {"code": str(refusal.status), "message": str(refusal)}
        if operation is not None and status != 501:
            try:
                self.document.check_response(operation, status, payload)
            except AssertionError as broken:  # the test server's own fault: make it visible
                self.refused.append((method, path, str(broken)))
                status, payload = 500, {"code": "500", "message": str(broken)}
        return status, payload

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
