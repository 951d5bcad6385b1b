"""schemathesis hooks for .ci/schemathesis: sign every carrier API request as a carrier system
would (its API key, and a Standard Webhooks signature over the exact body bytes sent).

The carrier's webhook secret comes from the environment (LH_CARRIER_SECRET, made by
.ci/schemathesis for this run); its API key is the `carrier` scheme's credential in
.ci/schemathesis.toml. Admin operations are untouched. schemathesis's auth probes (ignored_auth)
bypass this hook, so they go unsigned and must be refused.
"""

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import MutableMapping

import schemathesis
from schemathesis.core import NOT_SET

# Required: a missing secret would sign with an empty key, and every carrier request would be
# refused 401, an answer schemathesis accepts.
SECRET = os.environ["LH_CARRIER_SECRET"]
if not SECRET.startswith("whsec_"):
    raise RuntimeError("LH_CARRIER_SECRET is not a whsec_ secret")
SIGNED_OK = os.environ.get("LH_ST_SIGNED_OK")


def _json_body(case) -> bytes | None:
    """The bytes of a JSON body, as this hook will send them; None for no body or another type."""
    if case.body is NOT_SET or (case.media_type and "json" not in case.media_type):
        return None
    if isinstance(case.body, (bytes, bytearray)):
        return bytes(case.body)
    return json.dumps(case.body).encode()


@schemathesis.hook
def before_call(context, case, kwargs):
    if not case.path.startswith("/carrier/"):
        return
    body = _json_body(case)
    msg_id = f"st-{uuid.uuid4()}"
    ts = str(int(time.time()))
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = body if body is not None else b""
    sig = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + signed, hashlib.sha256).digest()).decode()
    # Added to what the case carries (the `carrier` credential among it).
    headers = case.headers if isinstance(case.headers, MutableMapping) else {}
    headers["webhook-id"] = msg_id
    headers["webhook-timestamp"] = ts
    headers["webhook-signature"] = f"v1,{sig}"
    case.headers = headers
    if body is not None:
        # Send exactly the bytes signed. (A body of another media type is signed as empty: the
        # server refuses it, 401, which is what such a request deserves anyway.)
        kwargs["data"] = body


# Answers a carrier operation gives only after the signature checked out: the handlers read
# the body after authenticating (400 for a body that does not parse), and the rest come from
# what the request asked. A 404 is not among them: an unroutable path is one too.
PAST_AUTH = {200, 202, 400, 409, 422}


@schemathesis.hook
def after_call(context, case, response):
    if SIGNED_OK and case.path.startswith("/carrier/") and response.status_code in PAST_AUTH:
        open(SIGNED_OK, "w").close()
