"""The model as an MCP tool at `/mcp` (the official `mcp` SDK, streamable HTTP).

An agent lists one tool, named after the model, and calls it with one item: an object keyed
by the input field names (`{"image": ...}` for digits; a single field's own name for a
model with one input). The description is the definition's docstring; the result is the
output as structured content (`{"label": ..., "confidences": ...}`; a single output under
its field's name) plus the version that answered. The call goes the same way as a
`/predict` request (the same validation, batcher and version), and API keys apply as there.

Stateless and JSON-answered: every request stands alone, so any of the service's workers
(or replicas) can answer it without sticky sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proto2prod.errors import Refused
from proto2prod.service.http import Answer, send_answer
from proto2prod.service.predict import Answerer, RequestInfo, header_of

if TYPE_CHECKING:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.types import ASGIApp, Receive, Scope, Send

    from proto2prod.fields import Field
    from proto2prod.model import Model

log = logging.getLogger("proto2prod.service")

PATHS = ("/mcp", "/mcp/")


def keyed(field: Field) -> dict[str, Any]:
    """One item's schema as an object keyed by field names (MCP wants an object)."""
    schema = field.json_schema()
    if schema.get("type") == "object":
        return schema
    return {"type": "object", "properties": {field.name: schema}, "required": [field.name]}


def structured(model: Model, output: Any) -> dict[str, Any]:
    return output if isinstance(output, dict) else {model.outputs.name: output}


class ModelTool:
    """The MCP server with the model's one tool; `answerer()` is the service's `answer`."""

    def __init__(
        self, model: Model, answerer: Callable[[], Answerer | None], timeout_s: float
    ) -> None:
        from mcp import types
        from mcp.server.lowlevel import Server

        from proto2prod import __version__
        from proto2prod.service.openapi import docstring

        self.model = model
        self.answerer = answerer
        self.timeout_s = timeout_s
        self.server: Server[Any, Any] = Server(f"proto2prod-{model.name}", version=__version__)
        output_schema = keyed(model.outputs)
        output_schema = {
            **output_schema,
            "properties": {**output_schema.get("properties", {}), "version": {"type": "string"}},
        }
        input_schema = keyed(model.inputs)
        self.named_inputs = model.inputs.json_schema().get("type") == "object"  # once, here
        """Named inputs are the item as they are; a single field's value is under its name."""
        self.tool = types.Tool(
            name=model.name,
            title=model.title or model.name,
            description=docstring(model),
            inputSchema=input_schema,
            outputSchema=output_schema,
        )

        @self.server.list_tools()  # type: ignore[untyped-decorator,no-untyped-call]
        async def list_tools() -> list[types.Tool]:
            return [self.tool]

        # our fields validate (their messages name the field); the SDK's check would not
        @self.server.call_tool(validate_input=False)  # type: ignore[untyped-decorator]
        async def call_tool(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
            return await self.call(name, arguments)

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """The tool's answer; an exception becomes the SDK's `isError` result, its message
        the text an agent reads."""
        if name != self.model.name:
            raise ValueError(f"unknown tool {name!r}; this service has one: {self.model.name!r}")
        answer = self.answerer()
        if answer is None:
            raise RuntimeError("the service is starting; call again shortly")
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        item = arguments if self.named_inputs else arguments.get(self.model.inputs.name)
        found = await answer([item], deadline, RequestInfo(small=False))
        if found.status != 200:
            raise RuntimeError(f"{found.status} {found.body.get('error')}: {found.body['message']}")
        return {
            **structured(self.model, found.body["outputs"][0]),
            "version": found.body["version"],
        }


class McpSessions:
    """The SDK's streamable-HTTP session manager for the worker's tool, started on the first
    request (it needs a task group of its own, so it runs in a task) and stopped with the
    service (`stop`, from its shutdown hook)."""

    def __init__(self, tool: Callable[[], ModelTool | None]) -> None:
        self.tool = tool
        self.manager: StreamableHTTPSessionManager | None = None
        self.running: asyncio.Task[None] | None = None
        self.stopping = asyncio.Event()
        self.starting = asyncio.Lock()

    async def started(self) -> StreamableHTTPSessionManager | None:
        """The running manager; None where there is no model (BentoML's arbiter)."""
        async with self.starting:
            if self.manager is not None:
                return self.manager
            tool = self.tool()
            if tool is None:
                return None
            from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

            manager = StreamableHTTPSessionManager(tool.server, json_response=True, stateless=True)
            ready = asyncio.Event()

            async def run() -> None:
                async with manager.run():
                    ready.set()
                    await self.stopping.wait()

            self.running = asyncio.create_task(run())
            await ready.wait()
            self.manager = manager
            return manager

    async def stop(self) -> None:
        self.stopping.set()
        if self.running is not None:
            with contextlib.suppress(Exception):
                await self.running


class McpEndpoint:
    """ASGI layer serving `/mcp`: the API key checked as on `/predict`, then the SDK."""

    def __init__(
        self, app: ASGIApp, *, sessions: McpSessions, authorize: Callable[[str | None], object]
    ) -> None:
        self.app = app
        self.sessions = sessions
        self.authorize = authorize

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PATHS:
            await self.app(scope, receive, send)
            return
        try:
            self.authorize(header_of(scope, b"authorization"))
        except Refused as refused:
            await send_answer(send, Answer.of(refused), close=True)
            return
        manager = await self.sessions.started()
        if manager is None:
            await self.app(scope, receive, send)
            return
        await manager.handle_request({**scope, "path": "/mcp"}, receive, send)
