"""Rules for registering analysis services, and access to their stored secrets.

Validation follows SkyPortal's order and messages: first the connection
fields (``url``, ``optional_analysis_parameters``, ``authentication_type``, ``_authinfo``),
then, after the caller's groups are checked, every other attribute, reported together as
``Invalid/missing parameters: {field: [messages]}``. POST and PATCH use the same rules; a
PATCH is validated as the merged view of the stored service and the patch.

``_authinfo`` is checked against what the dispatcher will actually read for each
authentication type and stored in a canonical form (SkyPortal's top-level keys), encrypted
with AES-GCM bound to the service id. Error messages never contain secret values.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from shared.domain.enums import AnalysisType, AuthenticationType, InputDataType
from shared.domain.errors import InvalidInput
from shared.security.secrets import SecretBox
from shared.security.signing import SECRET_PREFIX, secret_key
from shared.security.urlpolicy import URLPolicy, URLPolicyError

MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
DEFAULT_TIMEOUT_SECONDS = 3600.0
INPUTS_FORMATS = ("csv", "json")
PARAMETER_TYPES = ("number", "string", "file", "boolean", "integer")
PARAMETER_SPEC_KEYS = frozenset({"type", "required", "description", "default"})
MIN_SIGNING_SECRET_CHARS = 24
MAX_SIGNING_SECRET_CHARS = 1024
MIN_WHSEC_BYTES = 16
MAX_URL_CHARS = 2048

# Keys of the request payload the dispatcher sends; an ``api_key_name`` may not replace them.
PAYLOAD_KEYS = frozenset(
    {
        "callback_url",
        "callback_method",
        "invalid_after",
        "analysis_resource_type",
        "resource_id",
        "analysis_parameters",
        "inputs",
    }
)
# Framing headers that aiohttp computes itself; letting a service registration set them
# would corrupt the request.
MANAGED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

AUTH_TYPE_NAMES = tuple(a.value for a in AuthenticationType)
ANALYSIS_TYPE_NAMES = tuple(a.value for a in AnalysisType)
INPUT_TYPE_NAMES = tuple(a.value for a in InputDataType)

CONNECTION_FIELDS = ("url", "optional_analysis_parameters", "authentication_type", "_authinfo")
ATTRIBUTE_FIELDS = (
    "name",
    "display_name",
    "description",
    "version",
    "contact_name",
    "contact_email",
    "enabled",
    "analysis_type",
    "input_data_types",
    "inputs_format",
    "timeout",
    "upload_only",
    "is_summary",
    "display_on_resource_dropdown",
    "signing_secret",
)
BODY_FIELDS = frozenset({*CONNECTION_FIELDS, *ATTRIBUTE_FIELDS, "group_ids"})
SECRET_FIELDS = frozenset({"_authinfo", "signing_secret"})
# Fields stored in the service's column of the same name (the secrets are stored encrypted).
PLAIN_FIELDS = tuple(f for f in (*ATTRIBUTE_FIELDS, *CONNECTION_FIELDS) if f not in SECRET_FIELDS)

_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})


class RegistryError(InvalidInput):
    """A registration is invalid; ``message`` is meant for the client (never holds secrets)."""


# --- optional_analysis_parameters ----------------------------------------------------------

_PARAMETERS_UNPARSABLE = "Could not parse `optional_analysis_parameters` as JSON."


def parse_optional_parameters(value: Any) -> dict[str, Any]:
    """The parameter declarations as a dict, from a JSON string or an object.

    Each value is either a list of allowed values (an enum) or a spec
    ``{"type": number|string|file|boolean|integer, "required"?, "description"?, "default"?}``.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise RegistryError(_PARAMETERS_UNPARSABLE) from None
    if not isinstance(value, dict):
        raise RegistryError(
            "`optional_analysis_parameters` must be a JSON object (or a JSON-encoded string of "
            "one) mapping parameter names to allowed values or to a parameter spec."
        )
    for name, spec in value.items():
        _check_parameter(name, spec)
    return value


def _check_parameter(name: str, spec: Any) -> None:
    where = f"Invalid `optional_analysis_parameters` entry {name!r}:"
    if isinstance(spec, list):
        if not spec:
            raise RegistryError(f"{where} the list of allowed values is empty.")
        if not all(_is_scalar(v) for v in spec):
            raise RegistryError(f"{where} allowed values must be strings, numbers or booleans.")
        return
    if not isinstance(spec, dict):
        raise RegistryError(
            f"{where} must be a list of allowed values or an object with a `type` "
            f"({', '.join(PARAMETER_TYPES)})."
        )
    unknown = sorted(set(spec) - PARAMETER_SPEC_KEYS)
    if unknown:
        raise RegistryError(
            f"{where} unknown keys {unknown}; allowed: {sorted(PARAMETER_SPEC_KEYS)}."
        )
    if spec.get("type") not in PARAMETER_TYPES:
        raise RegistryError(f"{where} `type` must be one of: {', '.join(PARAMETER_TYPES)}.")
    if "required" in spec and _parse_bool(spec["required"]) is None:
        raise RegistryError(f'{where} `required` must be a boolean (or "True"/"False").')
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise RegistryError(f"{where} `description` must be a string.")
    if spec.get("default") is not None and not _matches_type(spec["default"], spec["type"]):
        raise RegistryError(f"{where} `default` is not a valid {spec['type']}.")


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool)


def _matches_type(value: Any, kind: str) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    if kind == "number":
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    return isinstance(value, str)


def _parse_bool(value: Any) -> bool | None:
    """A boolean, accepting the spellings marshmallow accepts; None when it is not one."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    return None


# --- _authinfo -------------------------------------------------------------------------------


def validate_authinfo(auth_type: str, authinfo: Any) -> dict[str, Any]:
    """The credentials in the canonical form the dispatcher reads, or a RegistryError.

    Canonical forms (SkyPortal's top-level keys): ``header_token`` →
    ``{"header_token": {name: value}}``; ``api_key`` → ``{"api_key_name", "api_key"}``;
    ``HTTPBasicAuth``/``HTTPDigestAuth`` → ``{"username", "password"}``; ``OAuth1`` →
    ``{"app_key", "app_secret", "user_oauth_token", "user_oauth_token_secret"}``; ``none`` →
    ``{}``. SkyPortal's shapes are accepted too: extra keys (such as a key named after the
    type) are dropped, and credentials nested under the type's key are lifted.
    """
    if auth_type == AuthenticationType.NONE:
        return {}
    blob = _authinfo_object(authinfo)
    if auth_type == AuthenticationType.HEADER_TOKEN:
        return {"header_token": _headers(blob)}
    if auth_type == AuthenticationType.API_KEY:
        found = _strings(blob, auth_type, ("api_key_name", "api_key"))
        if found["api_key_name"] in PAYLOAD_KEYS:
            raise RegistryError(
                "`_authinfo.api_key_name` must not be one of the request payload's keys: "
                f"{', '.join(sorted(PAYLOAD_KEYS))}."
            )
        return found
    if auth_type in (AuthenticationType.HTTP_BASIC, AuthenticationType.HTTP_DIGEST):
        return _strings(blob, auth_type, ("username", "password"))
    if auth_type == AuthenticationType.OAUTH1:
        keys = ("app_key", "app_secret", "user_oauth_token", "user_oauth_token_secret")
        return _strings(blob, auth_type, keys)
    raise RegistryError(_AUTH_TYPE_INVALID)


def _authinfo_object(authinfo: Any) -> dict[str, Any]:
    if authinfo is None or authinfo == "" or authinfo == {}:
        raise RegistryError(
            "`_authinfo` is required to add an Analysis Service  when authentication_type "
            'is not "none".'
        )
    if isinstance(authinfo, str):
        try:
            authinfo = json.loads(authinfo)
        except ValueError:
            authinfo = None
    if not isinstance(authinfo, dict):
        raise RegistryError("`_authinfo` must be parseable to a valid JSON object.")
    return authinfo


def _strings(blob: dict[str, Any], auth_type: str, keys: tuple[str, ...]) -> dict[str, Any]:
    nested = blob.get(auth_type)
    if isinstance(nested, dict) and not any(k in blob for k in keys):
        blob = nested
    found: dict[str, Any] = {}
    for key in keys:
        if key not in blob:
            raise RegistryError(f'`_authinfo` must contain a key for "{key}".')
        value = blob[key]
        if not isinstance(value, str) or not value:
            raise RegistryError(f'`_authinfo` key "{key}" must be a non-empty string.')
        found[key] = value
    return found


def _headers(blob: dict[str, Any]) -> dict[str, str]:
    if "header_token" not in blob:
        raise RegistryError('`_authinfo` must contain a key for "header_token".')
    headers = blob["header_token"]
    if not isinstance(headers, dict) or not headers:
        raise RegistryError(
            '`_authinfo` key "header_token" must be an object of header names to string '
            'values, e.g. {"header_token": {"Authorization": "Bearer …"}}.'
        )
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise RegistryError(
                f'`_authinfo` header name "{name}" is not a valid HTTP header name.'
            )
        if name.lower() in MANAGED_HEADERS:
            raise RegistryError(
                f'`_authinfo` header "{name}" is set by skyhook and cannot be given.'
            )
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise RegistryError(
                f'`_authinfo` header "{name}" must have a string value without line breaks.'
            )
    return dict(headers)


# --- signing secret -------------------------------------------------------------------------


def validate_signing_secret(value: Any) -> str | None:
    """None (no signing) or a secret of at least 24 characters, or ``whsec_<base64>``."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _FieldError("Not a valid string.")
    if not MIN_SIGNING_SECRET_CHARS <= len(value) <= MAX_SIGNING_SECRET_CHARS:
        raise _FieldError(
            f"Must be between {MIN_SIGNING_SECRET_CHARS} and {MAX_SIGNING_SECRET_CHARS} "
            "characters, or a Standard Webhooks secret (whsec_ followed by base64)."
        )
    if value.startswith(SECRET_PREFIX):
        try:
            key = secret_key(value)
        except ValueError:
            raise _FieldError("A whsec_ secret must be followed by valid base64.") from None
        if len(key) < MIN_WHSEC_BYTES:
            raise _FieldError(f"A whsec_ secret must decode to at least {MIN_WHSEC_BYTES} bytes.")
    return value


# --- whole registration ---------------------------------------------------------------------

_AUTH_TYPE_INVALID = f"`authentication_type` must be one of: {', '.join(AUTH_TYPE_NAMES)}."
URL_INVALID = "a valid `url` is required to add an Analysis Service."


@dataclass(frozen=True)
class Connection:
    """How to reach a service: validated steps 1-6 of SkyPortal's POST."""

    url: str
    optional_analysis_parameters: Any  # as given (string or object), for round-tripping
    parameters: dict[str, Any]
    authentication_type: str
    authinfo: dict[str, Any]


def check_connection(data: Mapping[str, Any]) -> Connection:
    url = data.get("url")
    if not url:
        raise RegistryError("`url` is required to add an Analysis Service.")
    if not isinstance(url, str) or len(url) > MAX_URL_CHARS:
        raise RegistryError(URL_INVALID)
    try:
        URLPolicy().check_syntax(url)
    except URLPolicyError as exc:
        raise RegistryError(url_rejected(str(exc))) from None
    raw_parameters = data.get("optional_analysis_parameters", {})
    parameters = parse_optional_parameters(raw_parameters)
    auth_type = data.get("authentication_type")
    if not auth_type:
        raise RegistryError("`authentication_type` is required to add an Analysis Service.")
    if auth_type not in AUTH_TYPE_NAMES:
        raise RegistryError(_AUTH_TYPE_INVALID)
    authinfo = validate_authinfo(auth_type, data.get("_authinfo"))
    return Connection(url, raw_parameters, parameters, auth_type, authinfo)


def url_rejected(reason: str) -> str:
    return f"{URL_INVALID} URL rejected: {reason}."


Checker = Callable[[Any], Any]
"""Validates one attribute's value and returns what is stored; raises _FieldError."""


class _FieldError(ValueError):
    def __init__(self, message: str | dict[int, list[str]]) -> None:
        super().__init__(str(message))
        self.detail = message


def check_attributes(data: Mapping[str, Any]) -> dict[str, Any]:
    """Every non-connection attribute, with SkyPortal's ``Invalid/missing parameters`` report.

    Missing optional fields take their defaults; ``signing_secret`` is included only when
    present in ``data``.
    """
    errors: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for field in sorted(set(data) - BODY_FIELDS):
        errors[field] = ["Unknown field."]
    for field, (checker, required, default) in _ATTRIBUTE_RULES.items():
        if field not in data:
            if required:
                errors[field] = ["Missing data for required field."]
            elif field != "signing_secret":
                values[field] = list(default) if isinstance(default, list) else default
            continue
        try:
            values[field] = checker(data[field])
        except _FieldError as exc:
            errors[field] = exc.detail if isinstance(exc.detail, dict) else [exc.detail]
    if errors:
        raise RegistryError(f"Invalid/missing parameters: {errors}")
    return values


def _text(max_length: int | None, *, nullable: bool) -> Checker:
    def check(value: Any) -> str | None:
        if value is None:
            if nullable:
                return None
            raise _FieldError("Field may not be null.")
        if not isinstance(value, str):
            raise _FieldError("Not a valid string.")
        if not nullable and not value.strip():
            raise _FieldError("Must not be empty.")
        if max_length is not None and len(value) > max_length:
            raise _FieldError(f"Longer than maximum length {max_length}.")
        return value

    return check


def _email(value: Any) -> str | None:
    checked = _text(255, nullable=True)(value)
    if checked is not None and not _EMAIL.match(checked):
        raise _FieldError("Not a valid email address.")
    return checked


def _boolean(value: Any) -> bool:
    if value is None:
        raise _FieldError("Field may not be null.")
    parsed = _parse_bool(value)
    if parsed is None:
        raise _FieldError("Not a valid boolean.")
    return parsed


def _choice(names: tuple[str, ...]) -> Checker:
    def check(value: Any) -> str:
        if value is None:
            raise _FieldError("Field may not be null.")
        if value not in names:
            raise _FieldError(f"Must be one of: {', '.join(names)}.")
        return str(value)

    return check


def _input_types(value: Any) -> list[str]:
    if value is None:
        raise _FieldError("Field may not be null.")
    if not isinstance(value, list):
        raise _FieldError("Not a valid list.")
    bad = {
        index: [f"Must be one of: {', '.join(INPUT_TYPE_NAMES)}."]
        for index, item in enumerate(value)
        if item not in INPUT_TYPE_NAMES
    }
    if bad:
        raise _FieldError(bad)
    if len(set(value)) != len(value):
        raise _FieldError("Duplicate values are not allowed.")
    return list(value)


def _timeout(value: Any) -> float:
    if value is None:
        raise _FieldError("Field may not be null.")
    if isinstance(value, bool):
        raise _FieldError("Not a valid number.")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _FieldError("Not a valid number.") from None
    if not math.isfinite(number):
        raise _FieldError("Special numeric values (nan or infinity) are not permitted.")
    if not 0 < number <= MAX_TIMEOUT_SECONDS:
        raise _FieldError(
            f"Must be greater than 0 and less than or equal to {MAX_TIMEOUT_SECONDS}."
        )
    return number


_ATTRIBUTE_RULES: dict[str, tuple[Checker, bool, Any]] = {
    # field: (checker, required, default)
    "name": (_text(255, nullable=False), True, None),
    "display_name": (_text(255, nullable=False), True, None),
    "description": (_text(None, nullable=True), False, None),
    "version": (_text(255, nullable=True), False, None),
    "contact_name": (_text(255, nullable=True), False, None),
    "contact_email": (_email, False, None),
    "enabled": (_boolean, False, True),
    "analysis_type": (_choice(ANALYSIS_TYPE_NAMES), True, None),
    "input_data_types": (_input_types, False, []),
    "inputs_format": (_choice(INPUTS_FORMATS), False, "csv"),
    "timeout": (_timeout, False, DEFAULT_TIMEOUT_SECONDS),
    "upload_only": (_boolean, False, False),
    "is_summary": (_boolean, False, False),
    "display_on_resource_dropdown": (_boolean, False, True),
    "signing_secret": (validate_signing_secret, False, None),
}


# --- stored secrets -------------------------------------------------------------------------


class StoredSecrets(Protocol):
    """What decryption needs from an ``AnalysisService`` row."""

    @property
    def id(self) -> int: ...
    @property
    def authinfo_ciphertext(self) -> str | None: ...
    @property
    def signing_secret_ciphertext(self) -> str | None: ...


def _associated_data(service_id: int, purpose: str) -> bytes:
    # Binding the ciphertext to the row stops it being copied onto another service.
    return f"analysis_service:{service_id}:{purpose}".encode()


def encrypt_authinfo(
    secret_box: SecretBox, service_id: int, authinfo: dict[str, Any]
) -> str | None:
    if not authinfo:
        return None
    return secret_box.encrypt_json(authinfo, _associated_data(service_id, "authinfo"))


def decrypt_authinfo(secret_box: SecretBox, service: StoredSecrets) -> dict[str, Any]:
    """The canonical credentials (see :func:`validate_authinfo`); ``{}`` when there are none.

    Raises ValueError when the ciphertext was tampered with or written under an unknown key.
    """
    if not service.authinfo_ciphertext:
        return {}
    value = secret_box.decrypt_json(
        service.authinfo_ciphertext, _associated_data(service.id, "authinfo")
    )
    return value if isinstance(value, dict) else {}


def encrypt_signing_secret(
    secret_box: SecretBox, service_id: int, secret: str | None
) -> str | None:
    if secret is None:
        return None
    return secret_box.encrypt(secret.encode(), _associated_data(service_id, "signing_secret"))


def decrypt_signing_secret(secret_box: SecretBox, service: StoredSecrets) -> str | None:
    if not service.signing_secret_ciphertext:
        return None
    plain = secret_box.decrypt(
        service.signing_secret_ciphertext, _associated_data(service.id, "signing_secret")
    )
    return plain.decode()
