"""One error -> response table for the REST API: every error leaves in OpenAI's error schema."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from seekless import audit
from seekless.errors import InvalidRequest, SeeklessError, UnknownRoute

logger = logging.getLogger("seekless.api")

_HTTP_TYPES = {401: "authentication_error", 405: "invalid_request_error"}


def error_response(error: SeeklessError) -> JSONResponse:
    audit.note_error(error)
    return JSONResponse(error.to_body(), status_code=error.status, headers=error.headers())


def validation_error(error: ValidationError | RequestValidationError) -> InvalidRequest:
    """The first problem, named the way OpenAI names it: a message and the offending parameter."""
    problems = error.errors()
    if not problems:
        return InvalidRequest("The request is invalid.")
    first = problems[0]
    if first.get("type") == "json_invalid":
        return InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON.", code="invalid_json"
        )
    location = [str(part) for part in first.get("loc", ()) if part not in ("body",)]
    param = ".".join(location) or None
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "extra_forbidden":
        message = f"Unrecognized request argument supplied: {param}"
    elif first.get("type") == "missing":
        message = f"Missing required parameter: '{param}'."
    elif param:
        message = f"Invalid value for '{param}': {message}"
    return InvalidRequest(message, param=param, code="invalid_request")


def install(app: FastAPI) -> None:
    @app.exception_handler(SeeklessError)
    async def _seekless(_: Request, error: SeeklessError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(error))

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, error: ValidationError) -> JSONResponse:
        return error_response(validation_error(error))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, error: HTTPException) -> JSONResponse:
        if error.status_code == 404:
            return error_response(UnknownRoute())
        kind = _HTTP_TYPES.get(error.status_code, "invalid_request_error")
        body = {"error": {"message": str(error.detail), "type": kind, "param": None, "code": None}}
        return JSONResponse(body, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unhandled(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        body = {
            "error": {
                "message": "The server had an error processing your request.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        return JSONResponse(body, status_code=500)
