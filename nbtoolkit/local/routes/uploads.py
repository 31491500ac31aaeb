"""The SDK's ``file://`` upload flow (docs/protocols.md#file-uploads), served locally.

1. ``GET /api/v1/uploads?action=getPolicy&model=…`` (bearer token required) returns an upload policy
   whose ``upload_host`` is this server's ``/oss`` and whose ``signature`` is an HMAC-SHA256 of the
   policy keyed with the server token.
2. ``POST /oss`` (multipart, as to Aliyun OSS). The SDK sends **no** Authorization header here, so the
   form's ``Signature`` over its ``policy`` is what authorises the upload; the ``key`` must lie in the
   policy's upload directory. The file is stored in ``app.state.uploads[key]`` and the SDK then
   sends ``oss://<key>`` in the generation request.

The store lives in memory while the server runs; the oldest files are dropped beyond
:data:`STORE_LIMIT` bytes so a long notebook session cannot grow it without bound. Faults are not
applied here: they target the answering routes, and the SDK hides upload failures behind an
``UploadFileException`` without a status.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from nbtoolkit.local.auth import check_http
from nbtoolkit.protocols.conversation import MAX_AUDIO_BYTES

__all__ = ["STORE_LIMIT", "router"]

router = APIRouter()

#: Keep at most this many bytes of uploads; the oldest go first.
STORE_LIMIT = 256 * 1024 * 1024
POLICY_SECONDS = 300


def _sign(token: str, policy: str) -> str:
    mac = hmac.new(token.encode(), policy.encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def _denied(message: str) -> HTTPException:
    return HTTPException(403, detail={"code": "AccessDenied", "message": message})


@router.get("/api/v1/uploads", dependencies=[Depends(check_http)])
async def get_policy(request: Request, action: str = "", model: str = "") -> JSONResponse:
    """An upload certificate pointing back at this server."""
    if action != "getPolicy":
        raise HTTPException(
            400,
            detail={
                "code": "InvalidParameter",
                "message": f"Unknown action {action!r} — use action=getPolicy",
            },
        )
    upload_dir = f"dashscope-instant/local/{time.strftime('%Y-%m-%d')}/{secrets.token_hex(8)}"
    policy_doc = {
        "expiration": int(time.time()) + POLICY_SECONDS,
        "upload_dir": upload_dir,
        "model": model,
        "max_bytes": MAX_AUDIO_BYTES,
    }
    policy = base64.b64encode(json.dumps(policy_doc).encode()).decode()
    data = {
        "policy": policy,
        "signature": _sign(request.app.state.token, policy),
        "upload_dir": upload_dir,
        "upload_host": f"{str(request.base_url).rstrip('/')}/oss",
        "expire_in_seconds": POLICY_SECONDS,
        "max_file_size_mb": MAX_AUDIO_BYTES // 2**20,
        "capacity_limit_mb": STORE_LIMIT // 2**20,
        "oss_access_key_id": "nbtoolkit-local",
        "x_oss_object_acl": "private",
        "x_oss_forbid_overwrite": "true",
    }
    return JSONResponse({"request_id": secrets.token_hex(16), "data": data})


def _store(uploads: dict[str, bytes], key: str, data: bytes) -> None:
    uploads[key] = data
    total = sum(len(v) for v in uploads.values())
    for old in list(uploads):
        if total <= STORE_LIMIT or old == key:
            break
        total -= len(uploads.pop(old))


@router.post("/oss")
async def upload(request: Request) -> Response:
    """Store one file posted with a policy this server signed."""
    async with request.form(max_files=1, max_fields=20) as form:
        policy = form.get("policy")
        signature = form.get("Signature")
        key = form.get("key")
        file: Any = form.get("file")
        if not (isinstance(policy, str) and isinstance(signature, str) and isinstance(key, str)):
            raise _denied("The upload form lacks policy, Signature or key — get a policy first")
        if not hmac.compare_digest(_sign(request.app.state.token, policy), signature):
            raise _denied("The upload signature does not match — get a fresh policy from /uploads")
        doc = json.loads(base64.b64decode(policy))
        if doc["expiration"] < time.time():
            raise _denied("The upload policy has expired — get a fresh one from /uploads")
        if not key.startswith(doc["upload_dir"] + "/") or ".." in key:
            raise _denied("The key is outside the policy's upload directory")
        if file is None or not hasattr(file, "read"):
            raise HTTPException(
                400, detail={"code": "InvalidParameter", "message": "No file part named 'file'"}
            )
        data = await file.read(doc["max_bytes"] + 1)
    if len(data) > doc["max_bytes"]:
        raise HTTPException(
            400,
            detail={
                "code": "InvalidParameter",
                "message": f"The file is over {doc['max_bytes'] // 2**20} MB — send a shorter or "
                "compressed file",
            },
        )
    _store(request.app.state.uploads, key, data)
    return Response(status_code=200)
