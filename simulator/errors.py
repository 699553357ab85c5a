"""QingCloud's error shape: ``{"ret_code": N, "message": "..."}`` with its documented codes."""

from __future__ import annotations

# docs.qingcloud.com/api/common/error_code: 1xxx the request, 2xxx the resources, 5xxx the server.
INVALID_REQUEST = 1100
AUTH_FAILED = 1200
REQUEST_EXPIRED = 1300
PERMISSION_DENIED = 1400
THROTTLED = 1500
NOT_FOUND = 2100
BAD_STATUS = 2500
QUOTA_EXCEEDED = 2600
INTERNAL_ERROR = 5000
SERVER_BUSY = 5100


class ApiError(Exception):
    """A refused call; becomes the response body as it is."""

    def __init__(self, ret_code: int, message: str) -> None:
        super().__init__(message)
        self.ret_code = ret_code
        self.message = message

    def body(self) -> dict[str, object]:
        return {"ret_code": self.ret_code, "message": self.message}


def invalid(message: str) -> ApiError:
    return ApiError(INVALID_REQUEST, f"InvalidParameterError, {message}")
