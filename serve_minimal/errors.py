"""Every error is an OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``.

Bad input is a 4xx naming the field in ``param`` (``messages[0].role``, ``functions[1].parameters``).
FastAPI's 422 becomes a 400 as OpenAI answers; unknown routes and methods get the same shape; an
unexpected exception is logged with its traceback on the server and answered with a plain 500 body
that carries no traceback.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from invoker.json_values import MAX_JSON_DEPTH

logger = logging.getLogger("serve_minimal")

_FIELD_NAME = re.compile(r"[a-z_][a-z0-9_]*")
_PYDANTIC_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none"})


class APIError(Exception):
    """An error answered to the client as is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


def bad_request(message: str, *, param: str | None = None, code: str) -> APIError:
    """A 400; every one carries a machine-readable ``code`` (clients branch on it, not on the message)."""
    return APIError(400, message, param=param, code=code)


def error_body(*, message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class SafeJSONResponse(JSONResponse):
    """A JSON response that cannot fail to encode: text holding a lone surrogate (a model can write the
    escape ``\\ud800``; an error can quote a field) is sent with ``\\uXXXX`` escapes, which is still valid JSON."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def json_bytes(content: Any) -> bytes:
    text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(error: APIError) -> JSONResponse:
    body = error_body(message=error.message, type=error.type, param=error.param, code=error.code)
    return SafeJSONResponse(body, status_code=error.status, headers=error.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(Exception, _on_unexpected)


async def _on_api_error(request: Request, error: APIError) -> JSONResponse:
    return error_response(error)


async def _on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return error_response(validation_error(error.errors()))


async def _on_http_exception(request: Request, error: StarletteHTTPException) -> JSONResponse:
    if error.status_code == 400 and error.__cause__ is not None:  # FastAPI could not parse the body
        return error_response(body_parse_error(error.__cause__))
    codes = {404: "not_found", 405: "method_not_allowed"}
    message = f"{request.method} {request.url.path}: {error.detail}"
    headers = dict(error.headers or {})  # e.g. the Allow header of a 405
    return error_response(APIError(error.status_code, message, code=codes.get(error.status_code), headers=headers))


async def _on_unexpected(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(APIError(500, "internal server error (see the server log)", type="server_error", code="internal_error"))


def body_parse_error(cause: BaseException) -> APIError:
    """The body could not be decoded at all: nested too deep for the parser, not UTF-8, a number too long."""
    if isinstance(cause, RecursionError):
        message = f"the request body is nested too deeply to parse (at most {MAX_JSON_DEPTH} levels are accepted)"
    else:
        message = f"the request body is not valid JSON ({type(cause).__name__}: {str(cause)[:200]})"
    return bad_request(message, code="invalid_json")


def validation_error(errors: list[dict]) -> APIError:
    """FastAPI/pydantic errors -> one 400 naming the bad field. Of a union's errors (one per member) the
    deepest is the telling one: content [{"type": "image_url"}] fails at content[0].type, not "not a string";
    of equally deep ones, a broken limit beats a type mismatch: 100 stop strings are "at most 4 items",
    not "not a string"."""
    first = max(errors, key=_telling) if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return bad_request(f"the request body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}", code="invalid_json")
    param = field_path(first.get("loc", ()))
    where = f"{param}: " if param else "request body: "
    return bad_request(where + first.get("msg", "invalid value"), param=param, code="invalid_value")


def _telling(error: dict) -> tuple[int, bool]:
    return len(error.get("loc", ())), not str(error.get("type", "")).endswith("_type")


def field_path(loc: tuple | list) -> str | None:
    """("body", "messages", 0, "role") -> "messages[0].role"; pydantic's union-member tags dropped."""
    path = ""
    for part in loc:
        if part == "body" and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and _FIELD_NAME.fullmatch(part) and part not in _PYDANTIC_TAGS:
            path += f".{part}" if path else part
    return path or None
