#!/usr/bin/env python3
"""A QMP client written from QEMU's docs/interop/qmp-spec.rst alone (asyncio,
standard library only), run against passlaunch's control socket by
tests/control_server_test.cpp. Usage: qmp_spec_client.py SOCKET

It follows the spec's sections in order: 2.2 the greeting, 4. capabilities
negotiation, 2.3 issuing commands with an "id" of any JSON type, 2.4 the
success and error responses echoing that id, 2.5 asynchronous events with a
timestamp, and 2.3.1 pipelining (several commands in flight, replies matched
by id). Prints "all checks passed" and exits 0, or names the failed check and
exits 1.
"""

import asyncio
import json
import sys


class QmpError(Exception):
    pass


class Client:
    def __init__(self, reader, writer):
        self.reader = reader
        self.writer = writer
        self.events = asyncio.Queue()
        self.pending = {}
        self.greeting = None
        self.task = None

    @classmethod
    async def connect(cls, path):
        reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)
        c = cls(reader, writer)
        # 2.2: the server sends the greeting as soon as the connection opens.
        c.greeting = json.loads(await asyncio.wait_for(reader.readline(), 10))
        return c

    def start(self):
        self.task = asyncio.ensure_future(self._read())

    async def _read(self):
        while True:
            line = await self.reader.readline()
            if not line:
                for fut in self.pending.values():
                    if not fut.done():
                        fut.set_exception(QmpError("connection closed"))
                return
            msg = json.loads(line)
            if "event" in msg:
                await self.events.put(msg)
                continue
            key = json.dumps(msg.get("id"), sort_keys=True)
            fut = self.pending.pop(key, None)
            if fut is None:
                raise QmpError("reply with an unknown id: %r" % msg)
            fut.set_result(msg)

    def send(self, command, arguments=None, id=None):
        msg = {"execute": command, "id": id}
        if arguments is not None:
            msg["arguments"] = arguments
        key = json.dumps(id, sort_keys=True)
        if key in self.pending:
            raise QmpError("id %s already in flight" % key)
        fut = asyncio.get_event_loop().create_future()
        self.pending[key] = fut
        self.writer.write(json.dumps(msg).encode() + b"\r\n")
        return fut

    async def execute(self, command, arguments=None, id="x"):
        reply = await asyncio.wait_for(self.send(command, arguments, id), 30)
        if "error" in reply:
            raise QmpError("%s: %s" % (reply["error"]["class"], reply["error"]["desc"]))
        if "return" not in reply:
            raise QmpError("reply without return or error: %r" % reply)
        return reply["return"]

    async def close(self):
        self.writer.close()
        await self.writer.wait_closed()


def check(cond, what):
    if not cond:
        raise QmpError("check failed: " + what)
    print("ok:", what)


async def main(path):
    c = await Client.connect(path)
    g = c.greeting
    check("QMP" in g and "version" in g["QMP"] and "capabilities" in g["QMP"],
          "greeting has version and capabilities")
    check(isinstance(g["QMP"]["version"]["qemu"]["major"], int), "version.qemu.major is a number")
    c.start()

    # 4: before negotiation only qmp_capabilities works.
    reply = await asyncio.wait_for(c.send("query-status", id="early"), 10)
    check(reply.get("error", {}).get("class") == "CommandNotFound",
          "commands before qmp_capabilities are CommandNotFound")
    check(await c.execute("qmp_capabilities", id=0) == {}, "qmp_capabilities returns {}")

    # 2.3/2.4: ids of any JSON type come back unchanged.
    for ident in ["s", 7, None, [1, "two"], {"nested": {"id": True}}]:
        reply = await asyncio.wait_for(c.send("query-status", id=ident), 10)
        check(reply.get("id") == ident and "return" in reply, "id %s echoed" % json.dumps(ident))

    st = await c.execute("query-status")
    check(st["status"] in ("running", "paused"), "query-status answers")
    version = await c.execute("query-version")
    check(version["qemu"] == g["QMP"]["version"]["qemu"], "query-version matches the greeting")
    names = {cmd["name"] for cmd in await c.execute("query-commands")}
    check("__org.passlaunch_status" in names, "query-commands lists __org.passlaunch_status")
    ours = await c.execute("__org.passlaunch_status")
    check(ours["qemu-pid"] > 0, "__org.passlaunch_status runs")
    try:
        await c.execute("no-such-command")
        check(False, "an unknown command fails")
    except QmpError as e:
        check(str(e).startswith("CommandNotFound"), "an unknown command is CommandNotFound")

    # 2.3.1: many commands in flight at once, each reply matched by its id.
    futs = [c.send("query-status" if i % 2 else "query-name", id="p%d" % i) for i in range(100)]
    replies = await asyncio.wait_for(asyncio.gather(*futs), 30)
    check(all(r["id"] == "p%d" % i and "return" in r for i, r in enumerate(replies)),
          "100 pipelined commands matched by id")

    # 2.5: events, with a timestamp.
    await c.execute("stop")
    ev = await asyncio.wait_for(c.events.get(), 10)
    check(ev["event"] == "STOP", "STOP event after stop")
    check("seconds" in ev["timestamp"] and "microseconds" in ev["timestamp"], "event timestamp")
    await c.execute("cont")
    ev = await asyncio.wait_for(c.events.get(), 10)
    check(ev["event"] == "RESUME", "RESUME event after cont")

    # 2.4.2 and the spec's advice: a parse error is answered, the session goes on.
    # ("This": an upper-case letter is a stray byte, and the server skips the
    # rest of the line; lower-case words would each be an invalid keyword.)
    c.writer.write(b"This is not JSON\n")
    # (the error reply has no id: our reader would reject it, so drain it here)
    c.task.cancel()
    try:
        await c.task
    except asyncio.CancelledError:
        pass
    line = await asyncio.wait_for(c.reader.readline(), 10)
    err = json.loads(line)
    check(err.get("error", {}).get("class") == "GenericError" and "id" not in err,
          "bad input gets a GenericError without id")
    c.start()
    check((await c.execute("query-status", id="after"))["status"] == "running",
          "the connection survives bad input")
    await c.close()
    print("all checks passed")


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1]))
    except Exception as e:  # noqa: BLE001 - report every failure the same way
        print("FAILED:", type(e).__name__, e)
        sys.exit(1)
