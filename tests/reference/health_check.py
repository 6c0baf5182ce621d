#!/usr/bin/env python3
import asyncio
import json
import sys
import argparse

async def check_health(host, port, timeout=5):
    """Check relay health on specified host:port."""
    try:
        reader, writer = await asyncio.open_connection(host, port)

        # Send initialize request
        request = {
            "jsonrpc": "2.0",
            "method": "initialize",
            "params": {"clientInfo": {"name": "health-check"}},
            "id": 1
        }
        writer.write((json.dumps(request) + '\n').encode())
        await writer.drain()

        # Read response with timeout
        data = await asyncio.wait_for(reader.readline(), timeout=timeout)
        response = json.loads(data.decode())

        if response.get("result", {}).get("serverInfo"):
            print(f"✅ Health check PASSED for {host}:{port}")
            print(f"   Server: {response['result']['serverInfo']}")

            # Test tool listing
            list_req = {"jsonrpc": "2.0", "method": "tools/list", "id": 2}
            writer.write((json.dumps(list_req) + '\n').encode())
            await writer.drain()

            data = await asyncio.wait_for(reader.readline(), timeout=timeout)
            tools_response = json.loads(data.decode())

            tool_count = len(tools_response.get("result", {}).get("tools", []))
            print(f"   Tools: {tool_count} available")

            writer.close()
            await writer.wait_closed()
            return True
        else:
            print(f"❌ Health check FAILED for {host}:{port}")
            print(f"   Invalid response: {response}")
            return False

    except asyncio.TimeoutError:
        print(f"❌ Health check TIMEOUT for {host}:{port}")
        return False
    except Exception as e:
        print(f"❌ Health check ERROR for {host}:{port}: {e}")
        return False

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout", type=int, default=5)
    args = parser.parse_args()

    result = asyncio.run(check_health(args.host, args.port, args.timeout))
    sys.exit(0 if result else 1)
