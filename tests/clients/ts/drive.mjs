#!/usr/bin/env node
// Real-client driver for relay's end-to-end tests, built on the official
// MCP TypeScript SDK (@modelcontextprotocol/sdk).
//
// Usage:
//   node tests/clients/ts/drive.mjs --transport http|ws --url URL
//        [--calls JSON] [--ops JSON] [--header 'Name: value']... [--timeout SECONDS]
//
// Connects, performs the initialize handshake, lists all tools (following
// nextCursor), performs each call of --calls (a JSON array of
// {"name": ..., "arguments": {...}}) and prints exactly one line of JSON:
//   {"serverInfo": {...}, "protocolVersion": "...", "tools": [...],
//    "results": [<CallToolResult | {"error": {"code": .., "message": ..}}>]}
// With --ops (a JSON array of {"op": ..., ...}, see OPS below and
// tests/clients/README.md) the operations run after the calls, in order, and
// their results go into an extra top-level key "ops" (one entry per op).
// Per-call / per-op errors land in "results" / "ops". Connection / handshake
// failures print a message on stderr and exit 1. Bad usage exits 2.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { WebSocketClientTransport } from '@modelcontextprotocol/sdk/client/websocket.js';
import { ElicitRequestSchema, McpError } from '@modelcontextprotocol/sdk/types.js';

// Operation name -> string fields it requires.
const OPS = {
    listResources: [],
    readResource: ['uri'],
    listResourceTemplates: [],
    listPrompts: [],
    getPrompt: ['name'],
    complete: [],
    callWithProgress: ['name'],
    callWithElicitation: ['name'],
    cancelCall: ['name']
};

function usage(msg) {
    if (msg) process.stderr.write(`drive.mjs: ${msg}\n`);
    process.stderr.write(
        'usage: node drive.mjs --transport http|ws --url URL [--calls JSON] [--ops JSON] ' +
            "[--header 'Name: value']... [--timeout SECONDS]\n"
    );
    process.exit(2);
}

function parseArgs(argv) {
    const opts = { transport: 'http', url: null, calls: [], ops: null, headers: {}, timeoutMs: 30_000 };
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
            case '--ops': {
                const raw = next();
                try {
                    opts.ops = JSON.parse(raw);
                } catch (e) {
                    usage(`--ops is not valid JSON: ${e.message}`);
                }
                if (!Array.isArray(opts.ops)) usage('--ops must be a JSON array');
                for (const op of opts.ops) validateOp(op);
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

function validateOp(op) {
    if (!op || typeof op !== 'object' || Array.isArray(op)) usage('each op must be a JSON object');
    if (typeof op.op !== 'string' || !Object.hasOwn(OPS, op.op)) {
        usage(`unknown op ${JSON.stringify(op.op)} (want one of ${Object.keys(OPS).join(', ')})`);
    }
    for (const field of OPS[op.op]) {
        if (typeof op[field] !== 'string') usage(`op ${op.op} needs a string "${field}"`);
    }
    if (op.op === 'complete') {
        if (!op.ref || typeof op.ref !== 'object') usage('op complete needs an object "ref"');
        if (!op.argument || typeof op.argument !== 'object') usage('op complete needs an object "argument"');
    }
    if (op.op === 'callWithElicitation' && (!op.answer || typeof op.answer.action !== 'string')) {
        usage('op callWithElicitation needs an "answer" object with a string "action"');
    }
    if (op.op === 'cancelCall' && op.afterMs !== undefined && !(typeof op.afterMs === 'number' && op.afterMs >= 0)) {
        usage('op cancelCall: "afterMs" must be a non-negative number');
    }
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

// Elicitation state: the callWithElicitation op in progress (if any) sets
// `sink` (where each request's params.message is recorded) and `answer`.
// Outside such an op, requests are answered with the first such op's answer.
const elicitState = { sink: null, answer: null };

function progressEntry(p) {
    const out = { progress: p.progress };
    if (p.total !== undefined) out.total = p.total;
    if (p.message !== undefined) out.message = p.message;
    return out;
}

async function runOp(client, op, reqOpts) {
    const callParams = () => ({ name: op.name, arguments: op.arguments ?? {} });
    switch (op.op) {
        case 'listResources': {
            const resources = [];
            let cursor;
            do {
                const page = await client.listResources(cursor ? { cursor } : undefined, reqOpts);
                for (const r of page.resources) resources.push(r.uri);
                cursor = page.nextCursor;
            } while (cursor);
            return { resources };
        }
        case 'readResource':
            return await client.readResource({ uri: op.uri }, reqOpts);
        case 'listResourceTemplates': {
            const resourceTemplates = [];
            let cursor;
            do {
                const page = await client.listResourceTemplates(cursor ? { cursor } : undefined, reqOpts);
                for (const t of page.resourceTemplates) resourceTemplates.push(t.uriTemplate);
                cursor = page.nextCursor;
            } while (cursor);
            return { resourceTemplates };
        }
        case 'listPrompts': {
            const prompts = [];
            let cursor;
            do {
                const page = await client.listPrompts(cursor ? { cursor } : undefined, reqOpts);
                for (const p of page.prompts) prompts.push(p.name);
                cursor = page.nextCursor;
            } while (cursor);
            return { prompts };
        }
        case 'getPrompt': {
            const params = { name: op.name };
            if (op.arguments !== undefined) params.arguments = op.arguments;
            return await client.getPrompt(params, reqOpts);
        }
        case 'complete': {
            const params = { ref: op.ref, argument: op.argument };
            if (op.context !== undefined) params.context = op.context;
            return await client.complete(params, reqOpts);
        }
        case 'callWithProgress': {
            const progress = [];
            const result = await client.callTool(callParams(), undefined, {
                ...reqOpts,
                onprogress: p => progress.push(progressEntry(p))
            });
            return { result, progress };
        }
        case 'callWithElicitation': {
            const elicitations = [];
            elicitState.sink = elicitations;
            elicitState.answer = op.answer;
            try {
                const result = await client.callTool(callParams(), undefined, reqOpts);
                return { result, elicitations };
            } finally {
                elicitState.sink = null;
                elicitState.answer = null;
            }
        }
        case 'cancelCall': {
            // The SDK's cancellation: aborting the signal makes Protocol.request
            // send notifications/cancelled and reject with McpError(-32001, reason).
            const controller = new AbortController();
            const timer = setTimeout(() => controller.abort(), op.afterMs ?? 0);
            try {
                const result = await client.callTool(callParams(), undefined, { ...reqOpts, signal: controller.signal });
                return { cancelled: false, result };
            } catch (err) {
                if (!controller.signal.aborted) throw err;
                return { cancelled: true, error: errorJson(err) };
            } finally {
                clearTimeout(timer);
            }
        }
        default:
            throw new Error(`unknown op ${op.op}`); // rejected by parseArgs already
    }
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

    // Declare elicitation only when an op needs it, so runs without such an op
    // send exactly the same initialize request as before. Mirrors the Python
    // SDK, which declares {"form": {}, "url": {}} once a callback is given.
    const elicitationOps = (opts.ops ?? []).filter(op => op.op === 'callWithElicitation');
    const capabilities = elicitationOps.length > 0 ? { elicitation: { form: {}, url: {} } } : {};
    const client = new Client({ name: 'relay-e2e-ts-driver', version: '0.1.0' }, { capabilities });
    client.onerror = () => {}; // surfaced through the awaited calls instead
    if (elicitationOps.length > 0) {
        client.setRequestHandler(ElicitRequestSchema, async request => {
            if (elicitState.sink) elicitState.sink.push(request.params.message);
            return elicitState.answer ?? elicitationOps[0].answer;
        });
    }

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

        if (opts.ops !== null) {
            const ops = [];
            for (const op of opts.ops) {
                try {
                    ops.push(await runOp(client, op, reqOpts));
                } catch (err) {
                    ops.push({ error: errorJson(err) });
                }
            }
            output.ops = ops;
        }
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
