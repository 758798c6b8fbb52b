"""The OpenAPI schema: response bodies, request bodies, errors, and what only the config knows.

Kept apart from the routes so ``ingress.py`` holds the HTTP behaviour only. The schema
is built at import from the routes, then completed per Ingress replica (``document``)
with the style names, the batch limit and, when an API key is set, the bearer scheme
that gives ``/docs`` its Authorize button.
"""

import copy
import functools

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from cartoon.image.codec import MEDIA_TYPES
from cartoon.image.styles import StyleRegistry
from deployments.settings import AppArgs
from serve_app.errors import ERROR_SCHEMA

IMAGE_TYPES = tuple(MEDIA_TYPES.values())
# Routes a client may call without the key (serve_app.access.PUBLIC_PATHS, API part).
OPEN_OPERATIONS = (("/healthz", "get"), ("/readyz", "get"))
BEARER = "bearer"

ERROR_DESCRIPTIONS = {
    400: "not an image, a broken image or a malformed multipart body (codes not_an_image, "
    "corrupt_image, bad_multipart)",
    401: "an API key is configured and the request lacks it (code unauthorized)",
    413: "over a limit: body_too_large, too_many_pixels, too_many_items, batch_too_large",
    415: "an image format or a media type we do not accept (unsupported_format, unsupported_media_type)",
    422: "a bad parameter or an image over a processing limit (invalid_parameter, unknown_style, "
    "too_many_pieces, output_too_large, too_large_for_device, poison_input)",
    500: "our bug (internal)",
    503: "at capacity or not ready; see Retry-After (overloaded, replica_lost, out_of_memory, not_ready)",
    504: "not done within the request timeout (timeout)",
}


def errors(*statuses: int) -> dict:
    """OpenAPI ``responses`` for error statuses, each with the one error body."""
    return {
        status: {"description": ERROR_DESCRIPTIONS[status], "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for status in statuses
    }


FACE_SCHEMA = {
    "type": "object",
    "required": ["box", "score", "points"],
    "properties": {
        "box": {"type": "array", "items": {"type": "number"}},
        "score": {"type": "number"},
        "points": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
    },
}
RESULT_SCHEMA = {
    "type": "object",
    "required": ["media_type", "image", "width", "height", "faces", "timings", "batch_sizes", "notices"],
    "properties": {
        "media_type": {"type": "string", "enum": list(IMAGE_TYPES)},
        "image": {"type": "string", "description": "the output image, base64"},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
        "faces": {"type": "array", "items": FACE_SCHEMA},
        "timings": {"type": "object", "additionalProperties": {"type": "number"}},
        "batch_sizes": {"type": "array", "items": {"type": "integer"}},
        "notices": {"type": "array", "items": {"type": "string"},
                    "description": "what decoding changed: icc_converted_to_srgb, icc_profile_ignored, first_frame_only"},
    },
}
BATCH_ITEM_SCHEMA = {
    "type": "object",
    "required": ["index", "filename", "status"],
    "properties": {
        "index": {"type": "integer"},
        "filename": {"type": "string"},
        "status": {"type": "integer", "description": "200, or the status the image alone would get"},
        **RESULT_SCHEMA["properties"],
        **ERROR_SCHEMA["properties"],
    },
}
IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
        },
    }
}
CARTOONIZE_RESPONSES = {
    200: {
        "description": "the cartoon: the image itself, or JSON with `Accept: application/json`",
        "content": {
            **{media_type: {"schema": {"type": "string", "format": "binary"}} for media_type in IMAGE_TYPES},
            "application/json": {"schema": RESULT_SCHEMA},
        },
    },
    **errors(400, 401, 413, 415, 422, 500, 503, 504),
}
BATCH_RESPONSES = {
    200: {
        "description": "one result per file, in order, each its own success or error",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["results"],
                    "properties": {"results": {"type": "array", "items": BATCH_ITEM_SCHEMA}},
                }
            }
        },
    },
    **errors(400, 401, 413, 415, 422, 500, 503),
}


def batch_body(max_items: int) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["images"],
                        "properties": {
                            "images": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": max_items,
                                "items": {"type": "string", "format": "binary"},
                            }
                        },
                    }
                }
            },
        }
    }


# Filled by each Ingress replica from its config. Serve serves a copy of the FastAPI
# app made at import, so the schema lives in this module, not on the app object.
_documented_schema: dict = {}


def serve_schema(api: FastAPI) -> None:
    """Makes ``api`` answer /openapi.json with the documented schema once there is one.

    A partial of a module function, not a closure: Serve pickles the app, and a closure
    would travel with a copy of ``_documented_schema`` that ``document`` never fills.
    """
    api.openapi = functools.partial(_served_schema, api)


def _served_schema(api: FastAPI) -> dict:
    return _documented_schema or _base_schema(api)


def _base_schema(api: FastAPI) -> dict:
    return get_openapi(title=api.title, version=api.version, description=api.description, routes=api.routes)


def document(api: FastAPI, registry: StyleRegistry, args: AppArgs, api_key_required: bool) -> None:
    """Puts into the schema what only the running config knows: style names, batch size, the key.

    A module function on purpose: Serve ships the Ingress class by value, with copies of
    the module globals its methods name, while this module is imported by reference, so
    ``serve_schema``'s function and this one share ``_documented_schema``.
    """
    schema = copy.deepcopy(_base_schema(api))
    for path in ("/v1/cartoonize", "/v1/cartoonize/batch"):
        operation = schema["paths"][path]["post"]
        for parameter in operation["parameters"]:
            if parameter["name"] == "style":
                parameter["schema"] = {"type": "string", "enum": registry.names(), "title": "Style"}
    schema["paths"]["/v1/cartoonize/batch"]["post"].update(batch_body(args.max_batch_items))
    if api_key_required:
        schema.setdefault("components", {})["securitySchemes"] = {
            BEARER: {"type": "http", "scheme": "bearer", "description": "the service's API key"}
        }
        schema["security"] = [{BEARER: []}]
        for path, method in OPEN_OPERATIONS:
            schema["paths"][path][method]["security"] = []
    _documented_schema.clear()
    _documented_schema.update(schema)
