"""A minimal OTLP/HTTP receiver for the traces test: every POST body to
/v1/traces (OTLP JSON) is appended as one line to OUT; answers 200 with an
empty ExportTraceServiceResponse. Writes its port to PORT_FILE.

    python3 otlp_receiver.py OUT PORT_FILE
"""
import http.server
import sys

out_path, port_path = sys.argv[1], sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        ok = self.path == "/v1/traces" and self.headers.get("Content-Type", "").startswith("application/json")
        if ok:
            with open(out_path, "ab") as f:
                f.write(body.replace(b"\n", b" ") + b"\n")
        answer = b"{}" if ok else b'{"error":"send OTLP JSON to /v1/traces"}'
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_path + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.rename(port_path + ".tmp", port_path)
server.serve_forever()
