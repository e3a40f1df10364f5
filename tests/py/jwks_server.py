"""An https server of one JWKS document, for Vigil's remote-keys test.

Usage: jwks_server.py DIR PORT

Serves DIR/jwks.json at /jwks.json with an ETag and
`Cache-Control: max-age=5`, answering 304 to a matching If-None-Match; if
DIR/status exists, answers with the status it holds instead. Writes its
self-signed certificate (for 127.0.0.1) to DIR/ca.pem, appends one line
per request to DIR/requests ("<status> <If-None-Match or ->"), then
creates DIR/ready.
"""
import datetime
import hashlib
import http.server
import ipaddress
import os
import ssl
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(d):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    with open(os.path.join(d, "ca.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(d, "key.pem"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def main():
    d, port = sys.argv[1], int(sys.argv[2])
    self_signed(d)

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body=b"", headers=()):
            with open(os.path.join(d, "requests"), "a") as f:
                f.write(f"{status} {self.headers.get('If-None-Match', '-')}\n")
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path != "/jwks.json":
                return self.answer(404)
            status_file = os.path.join(d, "status")
            if os.path.exists(status_file):
                return self.answer(int(open(status_file).read().strip()))
            body = open(os.path.join(d, "jwks.json"), "rb").read()
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                return self.answer(304, headers=[("ETag", etag)])
            self.answer(200, body, [("Content-Type", "application/json"), ("ETag", etag),
                                    ("Cache-Control", "max-age=5")])

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(d, "ca.pem"), os.path.join(d, "key.pem"))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    open(os.path.join(d, "ready"), "w").close()
    server.serve_forever()


if __name__ == "__main__":
    main()
