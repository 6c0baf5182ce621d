#!/usr/bin/env python3
"""Real-client driver for relay's end-to-end tests, built on the official MCP
Python SDK 2.x (`mcp` package), Streamable HTTP transport only.

Usage:
    tests/clients/.venv/bin/python tests/clients/py/drive.py --url URL
        [--calls JSON] [--header 'Name: value']... [--timeout SECONDS]

Connects with `ClientSession` over `streamable_http_client`, performs the
legacy `initialize` handshake, lists all tools (following nextCursor),
performs each call of --calls (a JSON array of {"name": ..., "arguments": {...}})
and prints exactly one line of JSON:
    {"serverInfo": {...}, "protocolVersion": "...", "tools": [...],
     "results": [<CallToolResult | {"error": {"code": .., "message": ..}}>]}
Per-call errors land in "results". Connection / handshake failures print a
message on stderr and exit 1. Bad usage exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client

import httpx2

CLIENT_INFO = types.Implementation(name="relay-e2e-py-driver", version="0.1.0")


class DriverFailure(Exception):
    """Connection, handshake or listing failure: reported on stderr, exit 1."""


def dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def error_json(exc: BaseException) -> dict[str, Any]:
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


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True)
    p.add_argument("--calls", default="[]", help="JSON array of {name, arguments}")
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


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    timeout = httpx2.Timeout(args.timeout, read=args.timeout + 5)
    # Extra headers ride on the httpx2 client (the SDK's documented way); the
    # transport layers Accept / Content-Type / Mcp-* headers on top per request.
    http_client = httpx2.AsyncClient(headers=args.headers, timeout=timeout)
    output: dict[str, Any] | None = None
    failure: str | None = None
    async with http_client:
        async with streamable_http_client(args.url, http_client=http_client) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=args.timeout, client_info=CLIENT_INFO) as session:
                try:
                    init = await session.initialize()
                except Exception as e:  # noqa: BLE001
                    failure = f"connect/initialize failed: {describe(e)}"
                if failure is None:
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
                        failure = f"tools/list failed: {describe(e)}"
                if failure is None:
                    results: list[Any] = []
                    for call in args.calls:
                        try:
                            res = await session.call_tool(call["name"], call.get("arguments") or {})
                            results.append(dump(res))
                        except Exception as e:  # noqa: BLE001
                            results.append({"error": error_json(e)})
                    server_info = session.server_info or init.server_info
                    output = {
                        "serverInfo": dump(server_info) if server_info is not None else None,
                        "protocolVersion": session.protocol_version or init.protocol_version,
                        "tools": tools,
                        "results": results,
                    }
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
