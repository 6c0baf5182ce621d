// `echo-adapter`, in JavaScript: the twin of the Rust plugin in plugins/echo-adapter.
//
// It offers two tools: `echo` returns its message with the configured `prefix`, `count`
// increments a counter kept in the host's `kv` store (so the count survives a reload).
//
// Built with ComponentizeJS (StarlingMonkey) against `relay:plugin/adapter@0.2.0` by
// scripts/build-guest-plugins.sh. The top level of this module runs while the component is
// built (Wizer pre-initialisation), so it must not call the host's functions.
//
// Conventions of the bindings: an exported `result<T, E>` function returns T for `ok` and
// throws E for `err`; a variant is `{tag, val}`; an imported `result` returns the `ok` value
// and throws on `err` (the `err` value is the thrown error's `payload`).

import { getJson } from 'relay:plugin/config@0.2.0';
import { increment } from 'relay:plugin/kv@0.2.0';
import { log } from 'relay:plugin/log@0.2.0';

// The same JSON text as the Rust twin produces (serde_json writes object keys sorted).
const TOOLS = [
  {
    name: 'echo',
    description: 'Return the message, with the configured prefix',
    inputSchema: '{"properties":{"message":{"type":"string"}},"required":["message"],"type":"object"}',
  },
  {
    name: 'count',
    description: 'Increment and return a counter that survives plugin reloads',
    inputSchema: '{"properties":{},"type":"object"}',
  },
];

/** The `prefix` from the plugin's configuration (empty by default). */
function prefix() {
  try {
    const config = JSON.parse(getJson());
    return typeof config?.prefix === 'string' ? config.prefix : '';
  } catch {
    return '';
  }
}

/** An MCP `CallToolResult` with one text item. */
function text(value) {
  return JSON.stringify({ content: [{ text: value, type: 'text' }] });
}

/** `KvError::Unavailable("...")`, like the Rust twin's `{:?}` of a `kv-error`. */
function describeKvError(error) {
  const e = error?.payload ?? error;
  if (e && typeof e.tag === 'string') {
    const kind = e.tag.charAt(0).toUpperCase() + e.tag.slice(1);
    return `KvError::${kind}(${JSON.stringify(String(e.val))})`;
  }
  return String(e);
}

export const tools = {
  listTools() {
    return TOOLS;
  },

  callTool(name, argumentsJson) {
    let args;
    try {
      args = JSON.parse(argumentsJson);
    } catch (e) {
      throw { tag: 'invalid-arguments', val: String(e.message ?? e) };
    }
    switch (name) {
      case 'echo': {
        const message = args !== null && typeof args === 'object' && !Array.isArray(args) ? args.message : undefined;
        if (typeof message !== 'string') {
          throw { tag: 'invalid-arguments', val: '"message" (string) is required' };
        }
        return text(`${prefix()}${message}`);
      }
      case 'count': {
        let count;
        try {
          count = increment('count', 1n, undefined);
        } catch (e) {
          throw { tag: 'failed', val: describeKvError(e) };
        }
        log('debug', `count is now ${count}`);
        return text(count.toString());
      }
      default:
        throw { tag: 'unknown-tool', val: name };
    }
  },
};
