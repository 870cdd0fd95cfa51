"""The plan's dashboards as pages (issue 10): /, /system, /ha and /compliance as HTML for a browser, the JSON
kept for machines, the login session, and every value from the exchange, the ledger or a file escaped.

The bot runs as a process against the fake exchange (as ``polymarket-bot run`` runs under its unit); each
page is rendered by headless Chromium (Debian's ``chromium``, in the Makefile's TEST_DEPS) through a loopback
proxy that adds the session cookie a login gave, and its screenshot is saved under build/screens/."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, YES, Harness
from polymarket_bot.server import DashboardHandler, DashboardServer
from test_lease import write_lease
from test_service import free_port, health, start, stop, wait_for

TOKEN = "s3cret-token"  # conftest's API_SECRET_KEY
SCREENS = ROOT / "build" / "screens"
MARKET = "<script>alert(1)</script>Rain\x1b[31m?\x07"
MARKET_SHOWN = "&lt;script&gt;alert(1)&lt;/script&gt;Rain\\x1b[31m?\\x07"
LEADER = "<img src=x onerror=alert(2)>Whale\x00\u2028"
LEADER_SHOWN = "&lt;img src=x onerror=alert(2)&gt;Whale\\x00\\u2028"
CONTROL = "PermitRootLogin <b>no</b>\r\nInjected: 1"
CONTROL_SHOWN = "PermitRootLogin &lt;b&gt;no&lt;/b&gt;\\x0d\\x0aInjected: 1"
VIP = "192.0.2.10/24<svg onload=alert(3)>\x1b]0;title\x07"
VIP_SHOWN = "192.0.2.10/24&lt;svg onload=alert(3)&gt;\\x1b]0;title\\x07"
CHROMIUM = shutil.which("chromium")


# ---- HTTP as a machine and as a browser -----------------------------------------------------------
class Answer:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def cookies(self) -> dict[str, str]:
        """Set-Cookie name -> the whole header line."""
        return {v.split("=", 1)[0]: v for k, v in self.headers if k.lower() == "set-cookie"}

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def request(port: int, path: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> Answer:
    """One request, no redirect followed (a 303 is what a login answers)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Answer(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def browser(port: int, path: str, cookie: str | None = None, **extra: str) -> Answer:
    headers = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", **extra}
    if cookie:
        headers["Cookie"] = cookie
    return request(port, path, headers=headers)


def login(port: int, token: str = TOKEN, **extra: str) -> Answer:
    """As a browser does: GET the form (its CSRF cookie and field), POST it back."""
    form = browser(port, "/login")
    assert form.status == 200, form.text
    csrf_cookie = form.cookies()["pm_login"].split(";", 1)[0]
    field = re.search(r"name='csrf' value='([0-9a-f]+)'", form.text)
    assert field is not None and csrf_cookie == f"pm_login={field.group(1)}"
    body = urllib.parse.urlencode({"token": token, "csrf": field.group(1), "next": "/ha"}).encode()
    return request(port, "/login", "POST", body, {"Content-Type": "application/x-www-form-urlencoded",
                                                  "Cookie": csrf_cookie, "Origin": f"http://127.0.0.1:{port}",
                                                  "Host": f"127.0.0.1:{port}", **extra})


def session(port: int) -> str:
    r = login(port)
    assert r.status == 303, r.text
    return r.cookies()["pm_session"].split(";", 1)[0]


# ---- the bot as a process --------------------------------------------------------------------------
METRICS_TOKEN = "metrics-scrape-token-0123456789abcdef"


class Bot:
    def __init__(self, h: Harness, tmp: Path) -> None:
        self.h, self.tmp = h, tmp
        self.port = self.mport = free_port()
        while self.mport == self.port:  # two free_port() calls may return the same port
            self.mport = free_port()
        self.ha_status = tmp / "ha-status.json"
        self.report = tmp / "compliance.json"
        self.textfiles = tmp / "textfile"
        self.textfiles.mkdir(exist_ok=True)
        self.lease = tmp / "lease"
        write_lease(self.lease, "primary", 3600)
        metrics_token = tmp / "metrics-token"          # METRICS_PORT's money series are served to it only
        metrics_token.write_text(METRICS_TOKEN + "\n")
        metrics_token.chmod(0o640)
        env = h.env(DASHBOARD_PORT=self.port, METRICS_PORT=self.mport, POLL_INTERVAL="0.1",
                    HA_STATUS_FILE=self.ha_status, COMPLIANCE_REPORT=self.report, TEXTFILE_DIR=self.textfiles,
                    LEASE_FILE=self.lease, LEASE_NODE="primary", LOG_FILE="", METRICS_TOKEN_FILE=metrics_token)
        env_file = tmp / "bot.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        env_file.chmod(0o600)
        self.proc = start(env_file)
        if not wait_for(lambda: health(self.port) == 200 or self.proc.poll() is not None, 30):
            stop(self.proc)
            pytest.fail(f"no healthy bot on port {self.port} within 30 s (/health {health(self.port)})")
        assert self.proc.poll() is None, self.proc.communicate()[1][-3000:]

    def copy_a_trade(self) -> None:
        """A leader's trade with a hostile market title and leader name; the bot copies it (a real order)."""
        self.h.trade(leader=0, asset=YES, title=MARKET, name=LEADER, outcome="Yes")
        assert wait_for(lambda: len(self.h.ex.s.orders) == 1, 20)
        assert wait_for(lambda: MARKET_SHOWN in self.page("/"), 10)

    def page(self, path: str) -> str:
        return request(self.port, path, headers={"Authorization": f"Bearer {TOKEN}",
                                                 "Accept": "text/html"}).text

    def write_node_files(self) -> None:
        """What polymarket-ha, polymarket-compliance and polymarket-backup leave on a healthy node."""
        now = time.time()

        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        self.ha_status.write_text(json.dumps({
            "role": "primary", "hostname": "node-a", "virtual_ip": VIP, "checked_at": iso(now - 20),
            "vrrp_state": "MASTER", "vip_held": True, "passive": False, "bot": {"http": 200, "role": "active"},
            "peer": {"address": "192.0.2.12", "http": 200, "role": "passive"}, "replica_at": None,
            "lease": {"held": True, "detail": "held by primary", "enrolled": True},
            "last_replication": {"at": iso(now - 150), "kind": "incremental", "peer": "192.0.2.12",
                                 "result": "ok", "seconds": 0.4},
            "split_brain": False}))
        controls = [
            {"id": "sshd.permit_root_login", "name": CONTROL, "expected": "no", "actual": "yes", "status": "fail",
             "reason": "", "critical": True},
            {"id": "ufw.enabled", "name": "ufw active", "expected": "active", "actual": "inactive",
             "status": "fail", "reason": "", "critical": False},
        ] + [{"id": f"sysctl.k{i}", "name": f"sysctl {i}", "expected": "1", "actual": "1", "status": "pass",
              "reason": "", "critical": False} for i in range(24)]
        self.report.write_text(json.dumps({
            "host": "node-a", "time": iso(now - 3600), "score": 92.3, "threshold": 95, "compliant": False,
            "critical_failures": ["sshd.permit_root_login"], "counts": {"pass": 24, "fail": 2, "not-applicable": 0},
            "controls": controls}))
        (self.textfiles / "polymarket_backup.prom").write_text(
            "# HELP polymarket_backup_last_success_timestamp_seconds Unix time of the last backup\n"
            f"polymarket_backup_last_success_timestamp_seconds {now - 660:.0f}\n"
            "polymarket_backup_last_verify_ok 1\n"
            f"polymarket_backup_last_offsite_timestamp_seconds {now - 7 * 3600:.0f}\n")


@pytest.fixture
def bot(h: Harness, tmp_path: Path) -> Iterator[Bot]:
    b = Bot(h, tmp_path)
    try:
        yield b
    finally:
        stop(b.proc)


def money(port: int) -> dict[str, float]:
    """The money gauges of METRICS_PORT's Prometheus text."""
    text = request(port, "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith("polymarket_") and "{" not in line.split()[0] and len(line.split()) == 2}


# ---- Chromium ---------------------------------------------------------------------------------------
class _CookieProxy(BaseHTTPRequestHandler):
    """A loopback reverse proxy that adds the session cookie: Chromium's command line cannot set one."""

    target: int = 0
    cookie: str = ""

    def do_GET(self) -> None:
        headers = {"Accept": self.headers.get("Accept", "*/*"), "Cookie": self.cookie}
        r = request(self.target, self.path, headers=headers)
        self.send_response(r.status)
        for k, v in r.headers:
            if k.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(r.body)))
        self.end_headers()
        self.wfile.write(r.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def render(proxy_port: int, path: str, name: str) -> str:
    """The DOM Chromium built from the page (after parsing: what a browser shows), and a phone-sized screenshot."""
    assert CHROMIUM is not None
    SCREENS.mkdir(parents=True, exist_ok=True)
    shot = SCREENS / f"{name}.png"
    shot.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        # --no-sandbox: Chromium refuses root with its sandbox, and CI runs as root (the page is our own);
        # no background networking, component updates or sync: it talks to 127.0.0.1 only
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-features=Translate,MediaRouter",
                f"--user-data-dir={profile}", "--window-size=412,900", f"--screenshot={shot}", "--dump-dom",
                f"http://127.0.0.1:{proxy_port}{path}"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-2000:]
    assert shot.stat().st_size > 5000, f"{shot}: no screenshot"
    return r.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; make test does)")
def test_the_four_pages_render_in_chromium_with_their_data(bot: Bot) -> None:
    bot.copy_a_trade()
    bot.write_node_files()
    _CookieProxy.target, _CookieProxy.cookie = bot.port, session(bot.port)
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _CookieProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        port = proxy.server_address[1]
        doms = {name: render(port, path, name) for name, path in
                (("summary", "/"), ("system", "/system"), ("ha", "/ha"), ("compliance", "/compliance"))}
    finally:
        proxy.shutdown()
        proxy.server_close()
    for name, dom in doms.items():
        for tag in ("<script", "<img", "<svg", "<b>"):
            assert tag not in dom.lower(), (name, tag)  # nothing injected was parsed as markup
        assert 'name="viewport"' in dom, name
        assert "Log out" in dom and "/login" not in dom.split("<main>", 1)[1], f"{name}: not logged in"
    s = doms["summary"]
    assert MARKET_SHOWN in s and LEADER_SHOWN in s                     # the position and the order, escaped
    assert re.search(r"<td>BUY</td><td>" + re.escape(MARKET_SHOWN), s)  # the last orders
    m = money(bot.mport)  # the money figures: the same snapshot as Prometheus's
    assert (f"realised · unrealised</dt><dd>{m['polymarket_realised_pnl_today_usd']:,.2f} · "
            f"{m['polymarket_unrealised_pnl_usd']:,.2f}</dd>") in s
    assert f"USDC balance</dt><dd>{m['polymarket_usdc_balance_usd']:,.2f}</dd>" in s
    assert f"exposure</dt><dd>{m['polymarket_exposure_usd']:,.2f}</dd>" in s
    assert "this node (primary)" in s and "MASTER" in s
    assert "last replication</dt><dd>2 min (ok)" in s and "last backup</dt><dd>11 min" in s
    assert "92.3%" in s and "not compliant" in s and "sshd.permit_root_login, ufw.enabled" in s
    assert "<dt>status</dt><dd><span class=\"ok\">ok</span>" in s and "live · active" in s
    sy = doms["system"]
    assert f"<dt>pid</dt><dd>{bot.proc.pid}</dd>" in sy and "reachable" in sy and "Risk" in sy
    ha = doms["ha"]
    assert "MASTER" in ha and "192.0.2.12" in ha and "this node (primary)" in ha and "held by primary" in ha
    assert "2 min (ok)" in ha and "11 min" in ha and "passed" in ha and "7 h 0 min" in ha
    assert "split brain</dt><dd><span class=\"ok\">no</span>" in ha and VIP_SHOWN in ha
    c = doms["compliance"]
    assert "92.3%" in c and CONTROL_SHOWN in c and "ufw.enabled" in c and "inactive" in c
    assert c.count("<tr>") == 1 + 2 + 1 + 26  # failing (head + 2), all controls (head + 26)
    for name in doms:
        assert (SCREENS / f"{name}.png").is_file()


def test_a_figure_this_node_does_not_have_reads_unknown(bot: Bot) -> None:
    """No heartbeat file, no compliance report, no backup metric: "unknown" on the page, null in the JSON."""
    s = bot.page("/")
    for label in ("VRRP state", "last replication", "last backup", "compliance", "failing controls"):
        assert re.search(re.escape(label) + r"</dt><dd><span class='unknown'>unknown</span>", s), label
    assert "no open position" in s and "no order yet" in s
    ha = bot.page("/ha")
    for label in ("VRRP state", "last replication", "split brain", "last verify", "last off-site copy"):
        assert re.search(re.escape(label) + r"</dt><dd><span class='unknown'>unknown</span>", ha), label
    assert "not present" in ha
    assert "score</dt><dd><span class='unknown'>unknown</span>" in bot.page("/compliance")
    data = json.loads(request(bot.port, "/?format=json", headers={"Authorization": f"Bearer {TOKEN}"}).body)
    assert data["backup"]["age_seconds"] is None and data["ha"]["replication_age_seconds"] is None
    assert data["compliance"] == {"score": None, "compliant": None, "failing": []}
    assert data["pnl_today"]["realised_usd"] == 0.0 and data["pnl_today"]["exposure_usd"] == 0.0


def test_machines_keep_the_json_and_the_prometheus_text(bot: Bot) -> None:
    bot.copy_a_trade()
    bot.write_node_files()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/system", "/metrics", "/ha", "/compliance", "/"):
        by_accept = request(bot.port, path, headers={**auth, "Accept": "application/json"})
        by_query = request(bot.port, path + "?format=json", headers={**auth, "Accept": "text/html"})
        assert by_accept.status == by_query.status == 200, path
        assert by_accept.header("Content-Type") == by_query.header("Content-Type") == "application/json", path
        json.loads(by_accept.body)
        if path in ("/ha", "/compliance"):  # nothing in them moves between two requests: the same bytes
            assert by_accept.body == by_query.body, path
        page = request(bot.port, path, headers={**auth, "Accept": "text/html"})
        assert page.header("Content-Type") == "text/html; charset=utf-8", path
        assert "default-src 'none'" in (page.header("Content-Security-Policy") or ""), path
        assert page.text.startswith("<!doctype html>") and "<script" not in page.text.lower(), path
    # the JSON as before: the report's bytes parsed, the heartbeat's under "cluster"
    compliance = request(bot.port, "/compliance?format=json", headers=auth).body
    assert compliance == json.dumps(json.loads(bot.report.read_text()), default=str).encode()
    ha = json.loads(request(bot.port, "/ha", headers={**auth, "Accept": "application/json"}).body)
    assert ha["cluster"] == json.loads(bot.ha_status.read_text()) and set(ha) == {
        "role", "passive_file", "hostname", "mode", "cluster"}
    assert request(bot.port, "/system?format=xml", headers=auth).status == 400
    r = request(bot.port, "/ha?format=json")
    assert r.status == 401 and json.loads(r.body) == {"error": "a valid Authorization: Bearer token is required"}
    r = request(bot.port, "/health")
    assert r.status == 200 and json.loads(r.body)["status"] == "ok"
    r = request(bot.mport, "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})  # as Prometheus
    assert r.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
    assert "polymarket_trades_copied_total 1" in r.text


def test_login_session_and_csrf(bot: Bot) -> None:
    port = bot.port
    page = browser(port, "/system")
    assert page.status == 401 and "name='token'" in page.text and "value='/system'" in page.text
    # the cookie a login sets: not the token, HttpOnly, SameSite=Strict, not Secure over plain HTTP
    r = login(port)
    assert r.status == 303 and r.header("Location") == "/ha"
    line = r.cookies()["pm_session"]
    cookie = line.split(";", 1)[0]
    assert TOKEN not in line and "HttpOnly" in line and "SameSite=Strict" in line and "Secure" not in line
    assert re.fullmatch(r"pm_session=[0-9a-f]{32}\.[0-9a-f]{64}", cookie)
    assert "Max-Age=0" in r.cookies()["pm_login"]
    assert browser(port, "/system", cookie).status == 200
    assert request(port, "/system?format=json", headers={"Cookie": cookie}).status == 200
    # behind a TLS front end the cookies are Secure
    assert "; Secure" in login(port, **{"X-Forwarded-Proto": "https"}).cookies()["pm_session"]
    # a forged signature, another session id, a cookie that is the token: refused
    sid, mac = cookie.split("=", 1)[1].split(".")
    for bad in (f"{sid}.{'0' * 64}", f"{'0' * 32}.{mac}", f"pm_session={TOKEN}".split("=", 1)[1], ""):
        assert browser(port, "/system", f"pm_session={bad}").status == 401, bad
    # the token in a URL is no way in
    assert browser(port, f"/system?token={TOKEN}").status == 401
    assert request(port, f"/system?format=json&access_token={TOKEN}").status == 401
    # wrong token: the form again, no session
    r = login(port, "wrong")
    assert r.status == 401 and "pm_session" not in r.cookies() and "Wrong token." in r.text
    # CSRF: the form posted from another site, or without its cookie
    r = login(port, **{"Origin": "http://evil.example"})
    assert r.status == 403 and "pm_session" not in r.cookies()
    r = login(port, **{"Sec-Fetch-Site": "cross-site"})
    assert r.status == 403 and "pm_session" not in r.cookies()
    body = urllib.parse.urlencode({"token": TOKEN, "csrf": "ab" * 16, "next": "/"}).encode()
    r = request(port, "/login", "POST", body, {"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 403 and "pm_session" not in r.cookies()
    # a login never redirects to another site
    form = browser(port, "/login")
    csrf = form.cookies()["pm_login"].split(";", 1)[0]
    body = urllib.parse.urlencode({"token": TOKEN, "csrf": csrf.split("=", 1)[1],
                                   "next": "//evil.example/"}).encode()
    r = request(port, "/login", "POST", body, {"Cookie": csrf})
    assert r.status == 303 and r.header("Location") == "/"
    # logout ends the session on the server, not only in the browser
    r = request(port, "/logout", "POST", b"", {"Cookie": cookie})
    assert r.status == 303 and "Max-Age=0" in r.cookies()["pm_session"]
    assert browser(port, "/system", cookie).status == 401
    assert request(port, "/system", "POST", b"x=1", {"Cookie": cookie}).status == 405


def test_a_session_does_not_outlive_the_process(h: Harness, tmp_path: Path) -> None:
    b = Bot(h, tmp_path)
    try:
        cookie = session(b.port)
        assert browser(b.port, "/", cookie).status == 200
    finally:
        stop(b.proc)
    b = Bot(h, tmp_path)
    try:
        assert browser(b.port, "/", cookie).status == 401
    finally:
        stop(b.proc)


def test_a_login_body_is_bounded_like_a_request_head(h: Harness) -> None:
    """The listener reads a POST's form like the head: at most 4 KiB, whole by the head's deadline."""
    e = h.engine()
    dash = DashboardServer(("127.0.0.1", 0), DashboardHandler, e, header_timeout=1.0).start()
    try:
        port = dash.server_address[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /login HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 400 ") and b"over 4096 bytes" in answer
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /login HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\ntoken=")
            started = time.monotonic()
            assert s.recv(65536) == b""  # closed, unanswered, at the deadline
            assert time.monotonic() - started < 3
        # a form split over several packets within the deadline is read whole
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"POST /login HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\ntoken=s3")
            time.sleep(0.2)
            s.sendall(b"cret-token&csrf=" + b"0" * 16)
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 403 ")  # whole, and refused: no CSRF cookie
    finally:
        dash.shutdown()
        dash.server_close()
