"""A test server that stalls for one second every Nth request (blocking the whole loop)."""

from __future__ import annotations

import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

EVERY = 50
count = 0


async def stalling(request: Request) -> JSONResponse:
    global count
    count += 1
    if count % EVERY == 0:
        time.sleep(1.0)  # blocks the event loop: every request in flight waits
    return JSONResponse({"outputs": [0]})


async def health(_: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route("/predict", stalling, methods=["POST"]), Route("/health", health)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
