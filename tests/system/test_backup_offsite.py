"""Recovery when both nodes are lost (issue 11): a fresh host rebuilt from the offsite copy alone.

moto's S3 server (with IAM enforced) and the project's fake exchange run on the host inside a network
namespace this test creates; the booted containers join that namespace, one after the other, so both
meet the same bucket and the same exchange (whose order log outlives the lost node) on a loopback that
is not this machine's.

- The lost node: polymarket-bot (live, against the fake) and polymarket-backup; leader trades copied;
  backup, verify and offsite through their sandboxed units; the textfile metrics checked.
- An outsider holding that node's offsite credentials cannot delete or rewrite what it uploaded
  (IAM policy of the node's key + S3 Object Lock in COMPLIANCE mode on the bucket).
- A fresh container with the two packages and nothing else, the offsite credentials and the password:
  ``restore --from-offsite``; the bot starts on the restored ledger and copies no leader trade again.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.system import harness
from tests.system.conftest import deb
from tests.system.test_backup import require_restic, s3_namespace

pytestmark = pytest.mark.system

KEY = "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
LEADER = "0x" + "ab" * 20
FAKE_PORT = 8900
FAKE = f"http://127.0.0.1:{FAKE_PORT}"
BUCKET, PREFIX = "polymarket-backups", "production"
LEDGER = "/var/lib/polymarket/trade_history.db"
PROM = "/var/lib/prometheus/node-exporter/polymarket-backup.prom"
PYTHON = str(harness.REPO / ".venv" / "bin" / "python")
SECRET_LINES = "^(PRIVATE_KEY|API_SECRET_KEY|ENCRYPTION_KEY)=|^# [A-Z_]+ is an encrypted credential"
CREDS = ["API_SECRET_KEY.cred", "PRIVATE_KEY.cred"]

# Run in the namespace by the operator (admin key): the node's IAM user and the bucket with Object Lock.
SETUP = """
import boto3, json, sys, urllib.request
E = "http://127.0.0.1:%(port)d"
iam = boto3.client("iam", endpoint_url=E, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
def user(name, statements):
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName="p",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
admin = user("operator", [{"Effect": "Allow", "Action": "*", "Resource": "*"}])
node = user("node", json.loads(sys.argv[1]))
# From here on every request is authenticated and checked against the users' policies.
urllib.request.urlopen(urllib.request.Request(E + "/moto-api/reset-auth", data=b"0", method="POST",
                                              headers={"Content-Type": "text/plain"})).read()
s3 = boto3.client("s3", endpoint_url=E, aws_access_key_id=admin["id"], aws_secret_access_key=admin["secret"],
                  region_name="us-east-1")
s3.create_bucket(Bucket="%(bucket)s", ObjectLockEnabledForBucket=True)
s3.put_object_lock_configuration(Bucket="%(bucket)s", ObjectLockConfiguration={
    "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 40}}})
print(json.dumps({"admin": admin, "node": node}))
"""

# The attacker: the node's key. Every call must be refused; an overwrite only adds a version.
ATTACK = """
import boto3, botocore, json, sys
keys = json.loads(sys.argv[1])
def client(who):
    return boto3.client("s3", endpoint_url="http://127.0.0.1:%(port)d", aws_access_key_id=keys[who]["id"],
                        aws_secret_access_key=keys[who]["secret"], region_name="us-east-1")
s3, admin = client("node"), client("admin")
B = "%(bucket)s"
key = [o["Key"] for o in s3.list_objects_v2(Bucket=B, Prefix="%(prefix)s/snapshots/")["Contents"]][0]
# The operator looks (the node's key may not even list versions).
version = admin.list_object_versions(Bucket=B, Prefix=key)["Versions"][0]["VersionId"]
original = admin.get_object(Bucket=B, Key=key, VersionId=version)["Body"].read()
out = {}
def attempt(name, call, **kw):
    try:
        call(**kw)
        out[name] = "done"
    except botocore.exceptions.ClientError as exc:
        out[name] = exc.response["Error"]["Code"]
attempt("DeleteObject", s3.delete_object, Bucket=B, Key=key)
attempt("DeleteObject version", s3.delete_object, Bucket=B, Key=key, VersionId=version)
attempt("PutBucketVersioning", s3.put_bucket_versioning, Bucket=B,
        VersioningConfiguration={"Status": "Suspended"})
attempt("PutBucketLifecycleConfiguration", s3.put_bucket_lifecycle_configuration, Bucket=B,
        LifecycleConfiguration={"Rules": [{"ID": "x", "Status": "Enabled", "Filter": {"Prefix": ""},
                                           "Expiration": {"Days": 1}}]})
attempt("PutBucketPolicy", s3.put_bucket_policy, Bucket=B, Policy="{}")
attempt("PutObjectLockConfiguration", s3.put_object_lock_configuration, Bucket=B,
        ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})
attempt("DeleteBucket", s3.delete_bucket, Bucket=B)
# Object Lock itself: not even the operator's own key deletes a locked version.
attempt("operator DeleteObject version", admin.delete_object, Bucket=B, Key=key, VersionId=version)
if sys.argv[2] == "overwrite":
    attempt("PutObject over it", s3.put_object, Bucket=B, Key=key, Body=b"rewritten by an attacker")
out["original kept"] = admin.get_object(Bucket=B, Key=key, VersionId=version)["Body"].read() == original
out["versions"] = len(admin.list_object_versions(Bucket=B, Prefix=key)["Versions"])
print(json.dumps(out))
"""

# What restic needs, nothing more: list, read, write new objects, delete its own lock files.
NODE_POLICY = [
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": f"arn:aws:s3:::{BUCKET}"},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": f"arn:aws:s3:::{BUCKET}/{PREFIX}/*"},
    {"Effect": "Allow", "Action": ["s3:DeleteObject"], "Resource": f"arn:aws:s3:::{BUCKET}/{PREFIX}/locks/*"},
]


def in_ns(ns: str, *argv: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def wait(pred: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def fake(c: harness.Container, path: str, body: dict[str, object] | None = None) -> object:
    if body is None:
        return json.loads(c.sh(f"curl -sf {FAKE}{path}").stdout)
    return json.loads(c.sh(f"curl -sf -X POST --data-binary @- {FAKE}{path}", input=json.dumps(body)).stdout)


def orders(c: harness.Container) -> list[dict[str, object]]:
    result = fake(c, "/_control/orders")
    assert isinstance(result, list)
    return result


def healthy(c: harness.Container) -> bool:
    code = c.sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/health", check=False).stdout
    return code.strip() == "200"


def sql(c: harness.Container, query: str) -> str:
    return c.sh(f'sqlite3 {LEDGER} "{query}"').stdout.strip()


def offsite_conf(keys: dict[str, dict[str, str]], port: int) -> str:
    return (f"S3_ENDPOINT=http://127.0.0.1:{port}\nS3_BUCKET={BUCKET}/{PREFIX}\n"
            f"AWS_ACCESS_KEY_ID={keys['node']['id']}\nAWS_SECRET_ACCESS_KEY={keys['node']['secret']}\n")  # fmt: skip


def configure_live(c: harness.Container) -> None:
    """The bot live against the fake, one leader; leader trades of the last hour are copyable (so a bot that
    forgot them would copy them again after the restore)."""
    me = c.sh("python3 -c 'from polymarket_bot import crypto; from polymarket_bot.secrets import Secret; "
              f'print(crypto.address_of(Secret("{KEY}")))\'').stdout.strip()  # fmt: skip
    fake(c, "/_control/balance", {"address": me, "usd": 5000})
    settings = {"PRIVATE_KEY": KEY, "TRADING_MODE": "live", "COPY_LEADERS": LEADER,
                "POLYMARKET_DATA_API_URL": FAKE, "POLYMARKET_CLOB_URL": FAKE, "POLYMARKET_GAMMA_URL": FAKE,
                "API_SECRET_KEY": "dashboard-test-token", "POLL_INTERVAL": "0.2", "STOP_LOSS_PERCENTAGE": "0",
                "MAX_TRADE_AGE_SECONDS": "3600"}  # fmt: skip
    c.sh("; ".join(f"sed -i '/^{k}=/d' /etc/polymarket/.env" for k in settings))
    c.sh("cat >> /etc/polymarket/.env", input="".join(f"{k}={v}\n" for k, v in settings.items()))
    c.sh("systemctl restart polymarket-bot")
    wait(lambda: healthy(c), what="/health 200")


def metrics(c: harness.Container) -> dict[str, float]:
    text = c.sh(f"cat {PROM}").stdout
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if not line.startswith("#")}


def test_a_fresh_host_restores_from_the_offsite_copy_alone(rootfs: Path, dist: Path) -> None:
    require_restic(rootfs)
    ns = f"pmtest-s3lock-{os.getpid()}"
    debs = [deb(dist, "polymarket-bot"), deb(dist, "polymarket-backup")]
    with s3_namespace(ns) as (name, port):
        keys = json.loads(in_ns(name, PYTHON, "-c", SETUP % {"port": port, "bucket": BUCKET},
                                json.dumps(NODE_POLICY)))  # fmt: skip
        exchange = subprocess.Popen(
            ["ip", "netns", "exec", name, PYTHON, "-m", "polymarket_bot.fake_exchange", "--port", str(FAKE_PORT),
             "--demo"], env={**os.environ, "PYTHONPATH": str(harness.REPO / "packages" / "polymarket-bot")},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            netns = [f"--network-namespace-path=/run/netns/{name}"]
            # -- the node that is lost ------------------------------------------------------------------
            with harness.booted(rootfs, name="pmtest-lost", network="none", extra_args=netns) as a:
                a.install_debs(debs)
                wait(lambda: a.sh(f"curl -s -o /dev/null {FAKE}/time", check=False).returncode == 0, what="the fake")
                configure_live(a)
                for size in (10, 20, 30):
                    fake(a, "/_control/trade", {"proxyWallet": LEADER, "side": "BUY", "asset": "1001",
                                                "size": size, "price": 0.5})  # fmt: skip
                wait(lambda: len(orders(a)) == 3, what="3 copied orders at the fake")
                wait(lambda: sql(a, "select count(*) from orders where status != 'sending'") == "3", what="ledger")
                copied = sql(a, "select count(*) from leader_trades")
                a.sh("cat > /etc/polymarket-backup/offsite.conf", input=offsite_conf(keys, port))
                a.sh("chmod 0600 /etc/polymarket-backup/offsite.conf")
                started = time.time()
                for unit in ("polymarket-backup", "polymarket-backup-verify", "polymarket-backup-offsite"):
                    run = a.sh(f"systemctl start {unit}.service", check=False)  # one after the other
                    assert run.returncode == 0, a.sh(f"journalctl -u {unit}.service -o cat | tail -n 20").stdout
                log = a.sh("journalctl -u polymarket-backup-offsite.service -o cat").stdout
                assert "offsite copy done: 1 snapshot(s)" in log, log
                # The metrics contract, written by the sandboxed units (issue 10).
                got = metrics(a)
                for metric in ("polymarket_backup_last_success_timestamp_seconds",
                               "polymarket_backup_last_offsite_timestamp_seconds"):  # fmt: skip
                    assert started - 1 <= got[metric] <= time.time() + 1, (metric, got)
                assert got["polymarket_backup_last_verify_ok"] == 1.0 and got["polymarket_backup_snapshots"] == 1.0
                assert got["polymarket_backup_offsite_snapshots"] == 1.0
                assert a.sh(f"stat -c '%a %U' {PROM}").stdout.split() == ["644", "root"]
                # The operator's safe: the password, kept off the server.
                password = a.sh("cat /etc/polymarket-backup/repository-password").stdout.strip()
                # What the lost node's configuration was: .env, and the bot's secrets encrypted by systemd-creds
                # with this host's key (moved out of .env by polymarket-bot-secrets.service): no other host can
                # decrypt those files.
                config = a.sh(f"grep -v -E '{SECRET_LINES}' /etc/polymarket/.env").stdout
                assert a.sh("ls /etc/polymarket/credentials").stdout.split() == CREDS
                assert KEY[2:] not in a.sh("cat /etc/polymarket/.env").stdout
                a.sh("systemctl stop polymarket-bot")
            before = len(orders_from_host(name))
            assert before == 3

            # -- an outsider with the node's offsite key --------------------------------------------------
            attack = json.loads(in_ns(name, PYTHON, "-c", ATTACK % {"port": port, "bucket": BUCKET, "prefix": PREFIX},
                                      json.dumps(keys), "no-overwrite"))  # fmt: skip
            for call in ("DeleteObject", "DeleteObject version", "PutBucketVersioning",
                         "PutBucketLifecycleConfiguration", "PutBucketPolicy", "PutObjectLockConfiguration",
                         "DeleteBucket", "operator DeleteObject version"):  # fmt: skip
                assert attack[call] == "AccessDenied", (call, attack)
            assert attack["original kept"] and attack["versions"] == 1, attack

            # -- a fresh host: the packages, the offsite credentials, the password ------------------------
            with harness.booted(rootfs, name="pmtest-fresh", network="none", extra_args=netns) as b:
                b.install_debs(debs)
                assert b.sh(f"test -e {LEDGER}", check=False).returncode == 1 or sql(
                    b, "select count(*) from leader_trades") == "0"  # fmt: skip
                b.sh("cat > /etc/polymarket-backup/offsite.conf", input=offsite_conf(keys, port))
                b.sh("chmod 0600 /etc/polymarket-backup/offsite.conf")
                env_before = b.sh("sha256sum /etc/polymarket/.env").stdout

                # A wrong password: one line, exit 1, nothing changed.
                wrong = b.sh("polymarket-backup restore --from-offsite --password-file -", input="not-it\n",
                             check=False)  # fmt: skip
                errors = [line for line in wrong.stderr.splitlines() if line.startswith("error: ")]
                assert wrong.returncode == 1 and len(errors) == 1 and "does not open" in errors[0], wrong.stderr
                assert b.sh("sha256sum /etc/polymarket/.env").stdout == env_before
                assert b.sh("find /etc /var/lib/polymarket -name '*.pmrestore' -o -name '.*.restore'").stdout == ""
                assert b.sh("ls -A /var/lib/polymarket-backup/staging").stdout.strip() == ""

                t0 = time.monotonic()
                restore = b.sh("polymarket-backup restore --from-offsite --password-file -", input=password + "\n",
                               check=False)  # fmt: skip
                took = time.monotonic() - t0
                print(f"\nrestore --from-offsite on a fresh host: {took:.1f} s (ledger + configuration from S3)")
                assert restore.returncode == 0, restore.stderr + b.sh(
                    "journalctl -u 'polymarket-bot*' -o cat | tail -n 30; ls -la /etc/polymarket", check=False).stdout
                assert "ledger restored from snapshot" in restore.stdout and " of s3:http://" in restore.stdout
                assert "[" in restore.stderr and "s] restoring the ledger" in restore.stderr  # progress lines
                # The password and the wallet key are never printed.
                for out in (restore.stdout, restore.stderr, b.sh("journalctl -o cat").stdout):
                    assert password not in out and KEY[2:] not in out
                # The configuration of the lost node, owned by this host's users, secrets 0600.
                assert b.sh("stat -c '%a %U' /etc/polymarket/.env").stdout.split() == ["600", "polymarket-bot"]
                assert b.sh(f"grep -v -E '{SECRET_LINES}' /etc/polymarket/.env").stdout == config
                assert b.sh("stat -c '%a %U' /etc/polymarket-backup/repository-password").stdout.split() == [
                    "600", "root"]  # fmt: skip
                assert b.sh("cat /etc/polymarket-backup/repository-password").stdout.strip() == password
                assert b.sh("find /etc /var/lib/polymarket -name '*.pmrestore'").stdout == ""

                # The bot runs on the restored ledger and copies none of the leader's trades again.
                wait(lambda: healthy(b), what="/health 200 on the restored host")
                # The wallet key and the token: sealed again with this host's key by the bot's secret migrate
                # (it ran before the bot), out of .env again.
                assert b.sh("ls /etc/polymarket/credentials").stdout.split() == CREDS
                assert KEY[2:] not in b.sh("cat /etc/polymarket/.env").stdout
                assert sql(b, "select count(*) from leader_trades") == copied
                time.sleep(5)  # 25 polls at POLL_INTERVAL=0.2
                after = orders(b)
                # (With the ledger emptied instead, the 3 trades are copied again: the check can fail.)
                assert len(after) == before, f"{len(after) - before} duplicate order(s)"
                # ... and is live: a new leader trade is copied once.
                fake(b, "/_control/trade", {"proxyWallet": LEADER, "side": "BUY", "asset": "1001", "size": 40,
                                            "price": 0.5})  # fmt: skip
                wait(lambda: len(orders(b)) == before + 1, what="the new trade's order")
                time.sleep(2)
                assert len(orders(b)) == before + 1
                # The next offsite copy works with the adopted password (both repositories share it).
                b.sh("polymarket-backup backup")
                # 3: the lost node's, this host's pre-restore snapshot and its new one.
                assert "offsite copy done: 3 snapshot(s)" in b.sh("polymarket-backup offsite").stdout

            # Rewriting an uploaded object only adds a version: the locked original stays, undeletable.
            attack = json.loads(in_ns(name, PYTHON, "-c", ATTACK % {"port": port, "bucket": BUCKET, "prefix": PREFIX},
                                      json.dumps(keys), "overwrite"))  # fmt: skip
            assert attack["operator DeleteObject version"] == "AccessDenied"
            assert attack["original kept"] and attack["versions"] == 2, attack
        finally:
            os.killpg(exchange.pid, 15)
            exchange.wait(10)


def orders_from_host(ns: str) -> list[object]:
    out = in_ns(ns, "python3", "-c", f"import urllib.request; print(urllib.request.urlopen('{FAKE}/_control/orders')"
                                     ".read().decode())")  # fmt: skip
    result = json.loads(out)
    assert isinstance(result, list)
    return result
