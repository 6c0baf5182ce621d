#!/usr/bin/env node
// Real-client driver for relay's end-to-end tests, built on the official
// MCP TypeScript SDK (@modelcontextprotocol/sdk).
//
// Usage:
//   node tests/clients/ts/drive.mjs --transport http|ws --url URL
//        [--calls JSON] [--header 'Name: value']... [--timeout SECONDS]
//
// Connects, performs the initialize handshake, lists all tools (following
// nextCursor), performs each call of --calls (a JSON array of
// {"name": ..., "arguments": {...}}) and prints exactly one line of JSON:
//   {"serverInfo": {...}, "protocolVersion": "...", "tools": [...],
//    "results": [<CallToolResult | {"error": {"code": .., "message": ..}}>]}
// Per-call errors land in "results". Connection / handshake failures print a
// message on stderr and exit 1. Bad usage exits 2.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { WebSocketClientTransport } from '@modelcontextprotocol/sdk/client/websocket.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';

function usage(msg) {
    if (msg) process.stderr.write(`drive.mjs: ${msg}\n`);
    process.stderr.write(
        'usage: node drive.mjs --transport http|ws --url URL [--calls JSON] ' +
            "[--header 'Name: value']... [--timeout SECONDS]\n"
    );
    process.exit(2);
}

function parseArgs(argv) {
    const opts = { transport: 'http', url: null, calls: [], headers: {}, timeoutMs: 30_000 };
    for (let i = 0; i < argv.length; i++) {
        const arg = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) usage(`${arg} needs a value`);
            return argv[++i];
        };
        switch (arg) {
            case '--transport':
                opts.transport = next();
                if (opts.transport !== 'http' && opts.transport !== 'ws') usage(`unknown transport ${opts.transport}`);
                break;
            case '--url':
                opts.url = next();
                break;
            case '--calls': {
                const raw = next();
                try {
                    opts.calls = JSON.parse(raw);
                } catch (e) {
                    usage(`--calls is not valid JSON: ${e.message}`);
                }
                if (!Array.isArray(opts.calls)) usage('--calls must be a JSON array');
                for (const c of opts.calls) {
                    if (!c || typeof c.name !== 'string') usage('each call needs a string "name"');
                }
                break;
            }
            case '--header': {
                const raw = next();
                const idx = raw.indexOf(':');
                if (idx <= 0) usage(`bad --header ${JSON.stringify(raw)} (want 'Name: value')`);
                opts.headers[raw.slice(0, idx).trim()] = raw.slice(idx + 1).trim();
                break;
            }
            case '--timeout': {
                const secs = Number(next());
                if (!(secs > 0)) usage('--timeout must be a positive number of seconds');
                opts.timeoutMs = Math.round(secs * 1000);
                break;
            }
            case '-h':
            case '--help':
                usage();
                break;
            default:
                usage(`unknown argument ${arg}`);
        }
    }
    if (!opts.url) usage('--url is required');
    return opts;
}

async function installWebSocket(headers) {
    const hasHeaders = Object.keys(headers).length > 0;
    if (globalThis.WebSocket && !hasHeaders) return;
    // Node 20 has no global WebSocket; the SDK's transport does
    // `new WebSocket(url, 'mcp')`, so give it the `ws` implementation. A
    // browser-style WebSocket cannot send custom headers, so when --header is
    // given we always use `ws` and inject them through its options argument.
    const { default: WS } = await import('ws');
    globalThis.WebSocket = hasHeaders
        ? class HeaderWebSocket extends WS {
              constructor(url, protocols, options) {
                  super(url, protocols, { ...options, headers: { ...(options?.headers ?? {}), ...headers } });
              }
          }
        : WS;
}

function errorJson(err) {
    if (err instanceof McpError || (err && typeof err.code === 'number')) {
        // McpError prefixes its message with "MCP error <code>: "; report the
        // server's own message so both drivers print the same thing.
        const message = String(err.message).replace(/^MCP error -?\d+: /, '');
        const out = { code: err.code, message };
        if (err.data !== undefined) out.data = err.data;
        return out;
    }
    return { code: null, message: err instanceof Error ? err.message : String(err) };
}

function describe(err) {
    if (!(err instanceof Error)) return String(err);
    let msg = err.message || err.name;
    if (err.cause) msg += ` (cause: ${err.cause.message ?? err.cause})`;
    return msg;
}

async function main() {
    const opts = parseArgs(process.argv.slice(2));
    const reqOpts = { timeout: opts.timeoutMs };

    let transport;
    if (opts.transport === 'http') {
        transport = new StreamableHTTPClientTransport(new URL(opts.url), {
            requestInit: { headers: opts.headers }
        });
    } else {
        await installWebSocket(opts.headers);
        transport = new WebSocketClientTransport(new URL(opts.url));
    }

    // Protocol.connect() chains a pre-existing onmessage handler, so this sees
    // the raw initialize response (Client does not expose the negotiated version).
    let initResult;
    transport.onmessage = message => {
        if (!initResult && message && message.result && typeof message.result.protocolVersion === 'string') {
            initResult = message.result;
        }
    };

    const client = new Client({ name: 'relay-e2e-ts-driver', version: '0.1.0' }, { capabilities: {} });
    client.onerror = () => {}; // surfaced through the awaited calls instead

    let output;
    try {
        try {
            await client.connect(transport, reqOpts);
        } catch (err) {
            process.stderr.write(`drive.mjs: connect/initialize failed: ${describe(err)}\n`);
            return 1;
        }

        const tools = [];
        try {
            let cursor;
            do {
                const page = await client.listTools(cursor ? { cursor } : undefined, reqOpts);
                for (const t of page.tools) tools.push(t.name);
                cursor = page.nextCursor;
            } while (cursor);
        } catch (err) {
            process.stderr.write(`drive.mjs: tools/list failed: ${describe(err)}\n`);
            return 1;
        }

        const results = [];
        for (const call of opts.calls) {
            try {
                results.push(await client.callTool({ name: call.name, arguments: call.arguments ?? {} }, undefined, reqOpts));
            } catch (err) {
                results.push({ error: errorJson(err) });
            }
        }

        output = {
            serverInfo: client.getServerVersion() ?? initResult?.serverInfo ?? null,
            protocolVersion: initResult?.protocolVersion ?? transport.protocolVersion ?? null,
            tools,
            results
        };
    } finally {
        if (opts.transport === 'http' && typeof transport.terminateSession === 'function' && transport.sessionId) {
            try {
                await transport.terminateSession();
            } catch (err) {
                process.stderr.write(`drive.mjs: terminateSession failed (ignored): ${describe(err)}\n`);
            }
        }
        try {
            await client.close();
        } catch {
            // ignore
        }
    }

    process.stdout.write(JSON.stringify(output) + '\n');
    return 0;
}

// Exit explicitly once the output is written: a request abandoned on timeout
// (the SDK sends notifications/cancelled, but the server may keep its SSE
// response open) would otherwise keep the event loop alive after close().
function finish(code) {
    process.stdout.write('', () => process.exit(code));
}

main().then(finish, err => {
    process.stderr.write(`drive.mjs: fatal: ${err?.stack ?? err}\n`);
    finish(1);
});
