#!/usr/bin/env python3
"""An SMTP sink for the fleet's mail checks (ci/real-moodle.sh, tests/fleet.rs):
accepts every message and writes it to DIR/N.eml with its envelope as the
headers X-Envelope-From and X-Envelope-To. Prints the port it listens on
(PORT 0: one the system picks) on stdout, then serves until killed.

    python3 ci/smtp-sink.py ADDRESS PORT DIR
"""
import itertools
import os
import socketserver
import sys

addr, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
seq = itertools.count()


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        def say(s):
            self.wfile.write(s.encode() + b"\r\n")

        say("220 sink ESMTP")
        env = {"from": "", "to": []}
        while line := self.rfile.readline():
            cmd = line.decode(errors="replace").strip()
            up = cmd.upper()
            if up.startswith(("EHLO", "HELO")):
                say("250 sink")
            elif up.startswith("MAIL FROM:"):
                env = {"from": cmd[10:].strip(), "to": []}
                say("250 ok")
            elif up.startswith("RCPT TO:"):
                env["to"].append(cmd[8:].strip())
                say("250 ok")
            elif up == "DATA":
                say("354 go")
                data = []
                while (l := self.rfile.readline()) not in (b".\r\n", b".\n", b""):
                    data.append(l.decode(errors="replace"))
                name = os.path.join(out, f"{next(seq)}.eml")
                # Written under a temporary name: a reader never sees half a message.
                with open(name + ".tmp", "w") as f:
                    f.write(f"X-Envelope-From: {env['from']}\nX-Envelope-To: {','.join(env['to'])}\n")
                    f.write("".join(data))
                os.rename(name + ".tmp", name)
                say("250 queued")
            elif up == "QUIT":
                say("221 bye")
                return
            else:
                say("250 ok")


socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
server = socketserver.ThreadingTCPServer((addr, port), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
