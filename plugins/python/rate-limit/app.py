"""`rate-limit`, in Python: the twin of the Rust plugin in plugins/rate-limit.

A token bucket per principal, and optionally per principal and tool. The bucket is kept as GCRA
state (one "theoretical arrival time" in microseconds per key) in the host's `kv` store and
updated with compare-and-swap, so it is exact under concurrency, survives a reload of this
plugin, and is shared between relay instances that share a store.

Built with componentize-py against `relay:plugin/policy@0.2.0` (scripts/build-guest-plugins.sh).
Nothing here may call an import at module level: the module is imported while the component is
being built (pre-initialisation), where the host's functions do not exist.
"""

import hashlib
import json
import os

from wit_world import exports
from componentize_py_types import Err
from wit_world.imports import clock, config, kv, log
from wit_world.imports.types import Denial, DenialCode, RequestInfo

# The default when neither the configuration nor `RELAY_RATE_LIMIT` says otherwise.
BUILT_IN_PER_MINUTE = 100
# Attempts at a contended compare-and-swap before giving up (and letting the request pass).
CAS_ATTEMPTS = 16
U32_MAX = 2**32 - 1
# In the order serde names them in its "unknown field" error.
KNOWN_KEYS = ("per_minute", "burst", "per_tool", "methods", "on_kv_unavailable")


class Rate:
    """`per_minute` requests per minute (at least 1), bursts of up to `burst` back to back."""

    def __init__(self, per_minute, burst=None):
        self.per_minute = max(per_minute, 1)
        self.interval_us = 60_000_000 // self.per_minute
        burst = max(self.per_minute if burst is None else burst, 1)
        # Multiplied before dividing, as in the Rust twin (no zero tolerance at huge rates).
        self.tolerance_us = (burst - 1) * 60_000_000 // self.per_minute

    def decide(self, tat, now_us):
        """(True, new_tat, ttl_us) to allow, or (False, retry_after_us, None) to refuse."""
        tat = max(now_us if tat is None else tat, now_us)
        earliest = max(tat - self.tolerance_us, 0)
        if now_us < earliest:
            return False, earliest - now_us, None
        new_tat = tat + self.interval_us
        return True, new_tat, new_tat - now_us


def _is_decimal(text):
    """What Rust's `str::parse::<u64>` accepts: ASCII digits, an optional leading `+`."""
    digits = text[1:] if text.startswith("+") else text
    return digits.isascii() and digits.isdigit()


def _u32(value, what):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U32_MAX:
        raise ValueError(f"{what}: expected a u32, got {json.dumps(value)}")
    return value


class Settings:
    """The plugin's `config` from relay.yaml (unknown keys are refused, like serde's)."""

    def __init__(self, text, env_default):
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("expected a JSON object")
        unknown = [key for key in raw if key not in KNOWN_KEYS]
        if unknown:
            expected = ", ".join(f"`{key}`" for key in KNOWN_KEYS)
            raise ValueError(f"unknown field `{unknown[0]}`, expected one of {expected}")
        per_minute = raw.get("per_minute")
        self.per_minute = None if per_minute is None else _u32(per_minute, "per_minute")
        burst = raw.get("burst")
        self.burst = None if burst is None else _u32(burst, "burst")
        per_tool = raw.get("per_tool", {})
        if not isinstance(per_tool, dict):
            raise ValueError("per_tool: expected a map of tool name to requests per minute")
        self.per_tool = {tool: _u32(limit, f"per_tool.{tool}") for tool, limit in per_tool.items()}
        methods = raw.get("methods")
        if methods is not None and not (isinstance(methods, list) and all(isinstance(m, str) for m in methods)):
            raise ValueError("methods: expected a list of strings")
        self.methods = methods
        mode = raw.get("on_kv_unavailable", "open")
        if mode not in ("open", "closed"):
            raise ValueError(f"on_kv_unavailable: unknown variant `{mode}`, expected `open` or `closed`")
        self.fail_closed = mode == "closed"
        if self.per_minute is None and env_default is not None:
            value = env_default.strip()
            if not _is_decimal(value) or int(value) > U32_MAX:
                raise ValueError(f"RELAY_RATE_LIMIT={env_default} is not a number")
            self.per_minute = int(value)

    def rate(self):
        return Rate(BUILT_IN_PER_MINUTE if self.per_minute is None else self.per_minute, self.burst)

    def applies_to(self, method):
        if self.methods is not None:
            return method in self.methods
        return method not in ("initialize", "ping")


# Parsed on the first call of an instance (the host keeps instances warm): (settings, problem).
_settings = None


def settings():
    global _settings
    if _settings is None:
        try:
            _settings = (Settings(config.get_json(), os.environ.get("RELAY_RATE_LIMIT")), None)
        except (ValueError, TypeError) as problem:
            _settings = (None, str(problem))
    return _settings


def describe(error):
    """`KvError::Unavailable("...")`, like the Rust twin's `{:?}` of a `kv-error`."""
    kind = "Unavailable" if isinstance(error, kv.KvError_Unavailable) else "Invalid"
    return f"KvError::{kind}({json.dumps(error.value, ensure_ascii=False)})"


def store_failed(error, fail_closed, principal):
    """The decision when the store fails, as configured (`on_kv_unavailable`), logged."""
    if not fail_closed:
        log.log(log.Level.WARN, f"kv unavailable ({describe(error)}); failing open: request of {principal} allowed")
        return
    log.log(log.Level.WARN, f"kv unavailable ({describe(error)}); failing closed: request of {principal} refused")
    raise Err(
        Denial(
            DenialCode.RATE_LIMITED,
            "rate-limit state is unavailable; request refused (on_kv_unavailable: closed)",
            1000,
        )
    )


def take(key, rate, principal, fail_closed):
    """Takes one token from the bucket at `key`, or raises a denial saying when one is due."""
    for _ in range(CAS_ATTEMPTS):
        now_us = clock.now_ms() * 1000
        try:
            stored = kv.get(key)
        except Err as e:
            return store_failed(e.value, fail_closed, principal)
        tat = int(stored) if stored is not None and _is_decimal(stored) else None
        allowed, value, ttl_us = rate.decide(tat, now_us)
        if not allowed:
            retry_after_ms = -(-value // 1000)
            raise Err(
                Denial(
                    DenialCode.RATE_LIMITED,
                    f"rate limit exceeded for {principal}: {rate.per_minute} requests per minute; "
                    f"retry in {retry_after_ms} ms",
                    retry_after_ms,
                )
            )
        try:
            if kv.compare_and_swap(key, stored, str(value), ttl_us // 1000 + 1):
                return
        except Err as e:
            return store_failed(e.value, fail_closed, principal)
    log.log(log.Level.WARN, f"bucket {key} too contended; request allowed")


MAX_PLAIN_KEY = 128


def bucket(kind: str, *parts: str) -> str:
    """The key of a bucket, as the Rust plugin makes it: plain while short, else the SHA-256
    of its length-prefixed parts (a key the host refuses must never mean "no limit")."""
    plain = f"{kind}:" + ":".join(parts)
    if len(plain.encode()) <= MAX_PLAIN_KEY:
        return plain
    digest = hashlib.sha256()
    for part in parts:
        raw = part.encode()
        digest.update(len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return f"{kind}#sha256:{digest.hexdigest()}"


class PolicyCheck(exports.PolicyCheck):
    def check(self, request: RequestInfo) -> None:
        current, problem = settings()
        if current is None:
            log.log(log.Level.ERROR, f"rate-limit configuration: {problem}")
            return
        if not current.applies_to(request.method):
            return
        principal = request.principal.id
        if request.tool is not None and request.tool in current.per_tool:
            rate = Rate(current.per_tool[request.tool])
            take(bucket("tool", principal, request.tool), rate, principal, current.fail_closed)
        take(bucket("principal", principal), current.rate(), principal, current.fail_closed)
