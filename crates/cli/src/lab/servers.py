# The demo network's servers, run by `keepstate lab` inside a namespace:
#   python3 servers.py READY_FILE LABEL [echo]
# A web server on port 80 (IPv4 and IPv6) whose every answer names the server and the
# client address it saw, so a test can tell NAT from no NAT and a port forward from the
# real server; with `echo`, also the TCP and UDP echo service on port 7. READY_FILE is
# written once every socket is listening, so the caller need not guess how long that takes.
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def dual_stack(kind, port):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    return s


def plain(addr):
    # An IPv4 client of a dual-stack socket shows up as ::ffff:a.b.c.d.
    return addr[7:] if addr.startswith("::ffff:") else addr


LABEL = sys.argv[2]


class Web(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def do_GET(self):
        body = "server=%s client=%s port=%d path=%s\n" % (
            LABEL,
            plain(self.client_address[0]),
            self.client_address[1],
            self.path,
        )
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (plain(self.client_address[0]), fmt % args))
        sys.stderr.flush()


class Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def tcp_echo(listener):
    def serve(conn):
        with conn:
            conn.settimeout(30)
            try:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    conn.sendall(data)
            except OSError:
                return

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def udp_echo(sock):
    while True:
        data, peer = sock.recvfrom(65536)
        sock.sendto(data, peer)


def main():
    web = Server(("::", 80), Web)
    if len(sys.argv) > 3 and sys.argv[3] == "echo":
        t = dual_stack(socket.SOCK_STREAM, 7)
        t.listen(64)
        u = dual_stack(socket.SOCK_DGRAM, 7)
        threading.Thread(target=tcp_echo, args=(t,), daemon=True).start()
        threading.Thread(target=udp_echo, args=(u,), daemon=True).start()
    with open(sys.argv[1], "w") as f:
        f.write("ready\n")
    web.serve_forever()


main()
