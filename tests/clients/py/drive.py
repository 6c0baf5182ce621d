#!/usr/bin/env python3
"""Real-client driver for relay's end-to-end tests, built on the official MCP
Python SDK 2.x (`mcp` package), Streamable HTTP transport only.

Usage:
    tests/clients/.venv/bin/python tests/clients/py/drive.py --url URL
        [--mode legacy|2026-07-28|auto] [--calls JSON] [--ops JSON]
        [--header 'Name: value']... [--timeout SECONDS]

--mode picks how the SDK connects (default legacy):
  legacy      `ClientSession` over `streamable_http_client`, with the
              `initialize` handshake (Mcp-Session-Id, DELETE on close).
  2026-07-28  `mcp.Client(..., mode="2026-07-28")`: the stateless protocol,
              pinned. Nothing goes on the wire at connect; every request is
              its own POST carrying the version in a header and in _meta.
              serverInfo is null (the client never asks for it).
  auto        `mcp.Client(..., mode="auto")`: probes `server/discover` and
              adopts 2026-07-28 if the server offers it, otherwise falls back
              to the `initialize` handshake.
In every mode the driver then lists all tools (following nextCursor),
performs each call of --calls (a JSON array of {"name": ..., "arguments": {...}})
and prints exactly one line of JSON:
    {"serverInfo": {...} | null, "protocolVersion": "<negotiated>", "tools": [...],
     "results": [<CallToolResult | {"error": {"code": .., "message": ..}}>]}
With --ops (a JSON array of {"op": ..., ...}, see OPS below and
tests/clients/README.md) the operations run after the calls, in order, and
their results go into an extra top-level key "ops" (one entry per op).
Per-call / per-op errors land in "results" / "ops". Connection / handshake
failures print a message on stderr and exit 1. Bad usage exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp import Client, ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

import httpx2
from pydantic import TypeAdapter

CLIENT_INFO = types.Implementation(name="relay-e2e-py-driver", version="0.1.0")

# --mode values: the handshake, the pinned stateless protocol, or discover-then-fall-back.
MODES = ("legacy", "2026-07-28", "auto")

# Operation name -> string fields it requires.
OPS: dict[str, tuple[str, ...]] = {
    "listResources": (),
    "readResource": ("uri",),
    "listResourceTemplates": (),
    "listPrompts": (),
    "getPrompt": ("name",),
    "complete": (),
    "callWithProgress": ("name",),
    "callWithElicitation": ("name",),
    "cancelCall": ("name",),
}

_REFERENCE: TypeAdapter[types.PromptReference | types.ResourceTemplateReference] = TypeAdapter(
    types.PromptReference | types.ResourceTemplateReference
)


class DriverFailure(Exception):
    """Connection, handshake or listing failure: reported on stderr, exit 1."""


def dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def error_json(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, anyio.get_cancelled_exc_class()):
        # The backend's cancellation exception (asyncio.CancelledError); its
        # text names the cancel scope's address, so report only the type.
        return {"code": None, "message": type(exc).__name__}
    if isinstance(exc, MCPError):
        out: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.data is not None:
            out["data"] = exc.data
        return out
    return {"code": None, "message": f"{type(exc).__name__}: {exc}"}


def describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    if isinstance(exc, MCPError):
        return f"MCP error {exc.code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def op_problem(op: Any) -> str | None:
    """Why `op` is not a valid --ops entry, or None."""
    if not isinstance(op, dict):
        return "each op must be a JSON object"
    name = op.get("op")
    if not isinstance(name, str) or name not in OPS:
        return f"unknown op {json.dumps(name)} (want one of {', '.join(OPS)})"
    for field in OPS[name]:
        if not isinstance(op.get(field), str):
            return f'op {name} needs a string "{field}"'
    if name == "complete":
        if not isinstance(op.get("ref"), dict):
            return 'op complete needs an object "ref"'
        if not isinstance(op.get("argument"), dict):
            return 'op complete needs an object "argument"'
    if name == "callWithElicitation" and not (
        isinstance(op.get("answer"), dict) and isinstance(op["answer"].get("action"), str)
    ):
        return 'op callWithElicitation needs an "answer" object with a string "action"'
    if name == "cancelCall" and "afterMs" in op:
        after = op["afterMs"]
        if isinstance(after, bool) or not isinstance(after, int | float) or after < 0:
            return 'op cancelCall: "afterMs" must be a non-negative number'
    return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--mode", choices=MODES, default="legacy", help="how to connect (default legacy)")
    p.add_argument("--calls", default="[]", help="JSON array of {name, arguments}")
    p.add_argument("--ops", default=None, help="JSON array of {op, ...} (see tests/clients/README.md)")
    p.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    args = p.parse_args(argv)
    try:
        calls = json.loads(args.calls)
    except json.JSONDecodeError as e:
        p.error(f"--calls is not valid JSON: {e}")
    if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        p.error('--calls must be a JSON array of {"name": str, "arguments": {...}}')
    args.calls = calls
    if args.ops is not None:
        try:
            ops = json.loads(args.ops)
        except json.JSONDecodeError as e:
            p.error(f"--ops is not valid JSON: {e}")
        if not isinstance(ops, list):
            p.error("--ops must be a JSON array")
        for op in ops:
            problem = op_problem(op)
            if problem is not None:
                p.error(problem)
        args.ops = ops
    headers: dict[str, str] = {}
    for raw in args.header:
        name, sep, value = raw.partition(":")
        if not sep or not name.strip():
            p.error(f"bad --header {raw!r} (want 'Name: value')")
        headers[name.strip()] = value.strip()
    args.headers = headers
    if args.timeout <= 0:
        p.error("--timeout must be positive")
    return args


def json_number(value: float) -> float | int:
    """The SDK hands progress values over as floats; print 1 rather than 1.0,
    as the server sent it and as the TS driver prints it."""
    return int(value) if value.is_integer() else value


class ElicitationState:
    """The callWithElicitation op in progress (if any) sets `sink` (where each
    request's params.message is recorded) and `answer`. Outside such an op,
    requests are answered with the first such op's answer."""

    def __init__(self, default_answer: dict[str, Any]) -> None:
        self.default_answer = default_answer
        self.sink: list[Any] | None = None
        self.answer: dict[str, Any] | None = None

    async def callback(self, context: Any, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        if self.sink is not None:
            self.sink.append(params.message)
        return types.ElicitResult.model_validate(self.answer if self.answer is not None else self.default_answer)


async def list_all(fetch: Any, items: str, key: str) -> list[str]:
    """Follow nextCursor through a paginated list method, collecting item.<key>."""
    out: list[str] = []
    cursor: str | None = None
    while True:
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await fetch(params=params)
        out.extend(getattr(item, key) for item in getattr(page, items))
        cursor = page.next_cursor
        if not cursor:
            return out


class ModernApi:
    """An `mcp.Client` (modes 2026-07-28 and auto) behind the `ClientSession`
    call shapes this driver uses, so both paths share the code below.

    The `Client` methods (not `client.session`) are used on purpose: they run
    the SDK's "input_required" loop (the elicitation callback answers, then the
    request is resent with inputResponses) and its HEADER_MISMATCH re-list."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def list_tools(self, *, params: types.PaginatedRequestParams | None = None) -> types.ListToolsResult:
        return await self.client.list_tools(cursor=params.cursor if params else None)

    async def list_resources(self, *, params: types.PaginatedRequestParams | None = None) -> types.ListResourcesResult:
        return await self.client.list_resources(cursor=params.cursor if params else None)

    async def list_resource_templates(
        self, *, params: types.PaginatedRequestParams | None = None
    ) -> types.ListResourceTemplatesResult:
        return await self.client.list_resource_templates(cursor=params.cursor if params else None)

    async def list_prompts(self, *, params: types.PaginatedRequestParams | None = None) -> types.ListPromptsResult:
        return await self.client.list_prompts(cursor=params.cursor if params else None)

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        return await self.client.read_resource(uri)

    async def get_prompt(self, name: str, arguments: dict[str, str] | None = None) -> types.GetPromptResult:
        return await self.client.get_prompt(name, arguments)

    async def complete(
        self,
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: dict[str, str],
        context_arguments: dict[str, str] | None = None,
    ) -> types.CompleteResult:
        return await self.client.complete(ref, argument, context_arguments)

    async def call_tool(
        self, name: str, arguments: dict[str, Any], progress_callback: Any = None
    ) -> types.CallToolResult:
        return await self.client.call_tool(name, arguments, progress_callback=progress_callback)


async def run_op(
    session: ClientSession | ModernApi, op: dict[str, Any], elicit: ElicitationState | None
) -> dict[str, Any]:
    kind = op["op"]
    if kind == "listResources":
        return {"resources": await list_all(session.list_resources, "resources", "uri")}
    if kind == "readResource":
        return dump(await session.read_resource(op["uri"]))
    if kind == "listResourceTemplates":
        return {
            "resourceTemplates": await list_all(session.list_resource_templates, "resource_templates", "uri_template")
        }
    if kind == "listPrompts":
        return {"prompts": await list_all(session.list_prompts, "prompts", "name")}
    if kind == "getPrompt":
        return dump(await session.get_prompt(op["name"], op.get("arguments")))
    if kind == "complete":
        context = op.get("context")
        context_arguments = context.get("arguments") if isinstance(context, dict) else None
        ref = _REFERENCE.validate_python(op["ref"], by_name=False)
        return dump(await session.complete(ref, op["argument"], context_arguments))
    if kind == "callWithProgress":
        progress: list[dict[str, Any]] = []

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            entry: dict[str, Any] = {"progress": json_number(value)}
            if total is not None:
                entry["total"] = json_number(total)
            if message is not None:
                entry["message"] = message
            progress.append(entry)

        res = await session.call_tool(op["name"], op.get("arguments") or {}, progress_callback=on_progress)
        # Progress callbacks run as tasks spawned by the dispatcher; let any
        # still queued run before reading the list.
        await anyio.lowlevel.checkpoint()
        return {"result": dump(res), "progress": progress}
    if kind == "callWithElicitation":
        assert elicit is not None
        elicitations: list[Any] = []
        elicit.sink, elicit.answer = elicitations, op["answer"]
        try:
            res = await session.call_tool(op["name"], op.get("arguments") or {})
        finally:
            elicit.sink, elicit.answer = None, None
        return {"result": dump(res), "elicitations": elicitations}
    if kind == "cancelCall":
        # 2.x cancellation is structural: cancelling the scope around the
        # awaiting call makes the dispatcher send notifications/cancelled
        # (reason "caller cancelled") and re-raise the backend's cancellation.
        # At 2026-07-28 no notification is sent: the SDK closes the call's
        # response stream (drops its HTTP connection), which is how 2026 cancels.
        caught: BaseException | None = None
        res = None
        with anyio.move_on_after(float(op.get("afterMs", 0)) / 1000) as scope:
            try:
                res = await session.call_tool(op["name"], op.get("arguments") or {})
            except anyio.get_cancelled_exc_class() as e:
                caught = e
                raise
        if scope.cancelled_caught:
            assert caught is not None
            return {"cancelled": True, "error": error_json(caught)}
        return {"cancelled": False, "result": dump(res)}
    raise ValueError(f"unknown op {kind}")  # rejected by parse_args already


async def exercise(
    session: ClientSession | ModernApi,
    args: argparse.Namespace,
    elicit: ElicitationState | None,
    identity: Any,
) -> tuple[dict[str, Any] | None, str | None]:
    """List tools, run the calls and ops; return (output, None) or (None, failure).
    `identity()` gives (serverInfo, protocolVersion) once the calls are done."""
    tools: list[str] = []
    try:
        cursor: str | None = None
        while True:
            params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools.extend(t.name for t in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
    except Exception as e:  # noqa: BLE001
        return None, f"tools/list failed: {describe(e)}"
    results: list[Any] = []
    for call in args.calls:
        try:
            res = await session.call_tool(call["name"], call.get("arguments") or {})
            results.append(dump(res))
        except Exception as e:  # noqa: BLE001
            results.append({"error": error_json(e)})
    server_info, protocol_version = identity()
    output: dict[str, Any] = {
        "serverInfo": dump(server_info) if server_info is not None else None,
        "protocolVersion": protocol_version,
        "tools": tools,
        "results": results,
    }
    if args.ops is not None:
        ops: list[Any] = []
        for op in args.ops:
            try:
                ops.append(await run_op(session, op, elicit))
            except Exception as e:  # noqa: BLE001
                ops.append({"error": error_json(e)})
        output["ops"] = ops
    return output, None


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    timeout = httpx2.Timeout(args.timeout, read=args.timeout + 5)
    # Extra headers ride on the httpx2 client (the SDK's documented way); the
    # transport layers Accept / Content-Type / Mcp-* headers on top per request.
    http_client = httpx2.AsyncClient(headers=args.headers, timeout=timeout)
    # Declare elicitation (the SDK does so once a callback is given) only
    # when an op needs it, so other runs send the same initialize as before.
    # At 2026-07-28 the capability rides in every request's _meta instead.
    elicit_answers = [op["answer"] for op in args.ops or [] if op["op"] == "callWithElicitation"]
    elicit = ElicitationState(elicit_answers[0]) if elicit_answers else None
    output: dict[str, Any] | None = None
    failure: str | None = None
    async with http_client:
        if args.mode == "legacy":
            async with streamable_http_client(args.url, http_client=http_client) as (read, write):
                async with ClientSession(
                    read,
                    write,
                    read_timeout_seconds=args.timeout,
                    client_info=CLIENT_INFO,
                    elicitation_callback=elicit.callback if elicit is not None else None,
                ) as session:
                    try:
                        init = await session.initialize()
                    except Exception as e:  # noqa: BLE001
                        failure = f"connect/initialize failed: {describe(e)}"
                    if failure is None:
                        output, failure = await exercise(
                            session,
                            args,
                            elicit,
                            lambda: (
                                session.server_info or init.server_info,
                                session.protocol_version or init.protocol_version,
                            ),
                        )
        else:
            # mcp.Client takes the transport rather than the bare URL so that
            # --header and --timeout apply (the URL form builds its own httpx2
            # client). Response caching is off: every op reaches the server.
            client = Client(
                streamable_http_client(args.url, http_client=http_client),
                mode=args.mode,
                read_timeout_seconds=args.timeout,
                client_info=CLIENT_INFO,
                elicitation_callback=elicit.callback if elicit is not None else None,
                cache=None,
            )
            entered = False
            try:
                async with client:
                    entered = True
                    output, failure = await exercise(
                        ModernApi(client), args, elicit, lambda: (client.server_info, client.protocol_version)
                    )
            except Exception as e:  # noqa: BLE001
                if entered:
                    raise
                # auto: server/discover (or the fallback initialize) failed.
                failure = f"connect (mode {args.mode}) failed: {describe(e)}"
    if failure is not None:
        raise DriverFailure(failure)
    assert output is not None
    return output


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        output = anyio.run(drive, args)
    except DriverFailure as e:
        print(f"drive.py: {e}", file=sys.stderr)
        return 1
    except BaseException as e:  # noqa: BLE001 - includes ExceptionGroup from the transport task group
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        print(f"drive.py: connection failed: {describe(e)}", file=sys.stderr)
        return 1
    sys.stdout.write(json.dumps(output, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
