"""Today's venue: deposit wallets (signature type 3) end to end against the fake exchange."""

from __future__ import annotations

import time

import pytest
from conftest import YES, Harness, held
from polymarket_bot import crypto, signing

WALLET = crypto.checksum_address("0x" + "5d" * 20)


def test_deposit_wallet_order_is_signed_by_the_owner_for_the_wallet(h: Harness) -> None:
    h.ex.set_balance(WALLET, 1000)
    e = h.engine(SIGNATURE_TYPE="3", WALLET_ADDRESS=WALLET)
    h.trade()
    e.poll_once()
    (o,) = h.ex.s.orders                                  # the fake verified the ERC-7739 envelope
    body = o["order"]
    assert body["signatureType"] == 3 and body["maker"] == body["signer"] == WALLET
    assert o["answer"]["success"] is True
    assert held(e, YES).shares == pytest.approx(20)
    order, sig = signing.order_from_payload({"order": body})
    digest, raw = signing.order_signer_key_digest(order, sig, 137, False)
    assert crypto.recover_address(digest, raw) == e.address   # the owner EOA signed


def test_deposit_wallet_signature_from_another_key_is_refused(h: Harness) -> None:
    from conftest import KEY
    from polymarket_bot.httpclient import HttpError, JsonClient
    from polymarket_bot.secrets import Secret

    e = h.engine(SIGNATURE_TYPE="3", WALLET_ADDRESS=WALLET)
    creds = e.api_creds()
    order = signing.Order(salt=1, maker=WALLET, signer=WALLET, token_id=int(YES), maker_amount=10_000_000,
                          taker_amount=20_000_000, side=signing.Side.BUY,
                          signature_type=signing.SignatureType.POLY_1271, timestamp=1)
    other = signing.sign_order(order, Secret("0x" + "22" * 32), 137, False)
    body = signing.dumps(signing.order_payload(order, other, creds.api_key, "FAK"))
    c = JsonClient(h.fake.url, retries=0)
    hdr = signing.l2_headers(e.address, creds, int(time.time()), "POST", "/order", body)
    with pytest.raises(HttpError) as exc:
        c.post("/order", body, headers=hdr)
    assert exc.value.status == 400 and exc.value.body == {"error": "invalid signature"}
    assert KEY


def test_tick_size_change_refreshes_the_market_and_retries_once(h: Harness) -> None:
    from conftest import COND, NO

    e = h.engine()
    e.poll_once()
    e.market(COND)                                        # cached with tick 0.01
    h.ex.add_market({"conditionId": COND, "slug": "will-it-rain", "tokens": [YES, NO], "tickSize": "0.02"})
    h.ex.set_book(YES, [[0.90, 10000]], [[0.97, 10000]])
    h.trade(price=0.975)                                  # limit 0.99 on the old grid: over 1 - 0.02
    e.poll_once()
    assert h.ex.s.requests["/order"] == 2                 # refused once, then one retry
    assert len(h.ex.s.orders) == 2 and h.ex.s.orders[0]["status"] == "CANCELED"
    assert h.ex.s.orders[1]["answer"]["success"] is True
    assert h.decisions(e) == [("copied", "retried after market refresh")]
    assert float(e.markets[COND][1].tick) == pytest.approx(0.02)
    assert e.metrics.get("polymarket_market_refresh_retries_total") == 1


def test_a_second_refusal_is_not_retried_again(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from polymarket_bot.fake_exchange import Rejection

    def refuse(hdr: dict[str, str], raw: str) -> dict[str, object]:
        raise Rejection(400, "invalid tick size")      # the exchange keeps refusing for the tick size

    e = h.engine()
    h.trade()
    monkeypatch.setattr(h.ex, "post_order", refuse)
    e.poll_once()
    assert h.ex.s.requests["/order"] == 2 and h.decisions(e)[0][0] == "rejected"


def test_geoblock_holds_buys_shows_on_health_and_in_validate_config(h: Harness, tmp_path: object) -> None:
    from pathlib import Path

    from conftest import NO
    from polymarket_bot import server
    from test_config_cli import run_cli

    h.ex.s.geoblocked = True
    e = h.engine()
    h.trade(ago=5, transactionHash="0x1")
    e.poll_once()
    assert h.ex.s.orders == [] and h.decisions(e)[-1] == ("skipped", "geoblocked")
    assert server.health(e)[1]["geoblock"]["blocked"] is True and server.health(e)[0] == 200
    env = Path(str(tmp_path)) / "geo.env"
    env.write_text("".join(f"{k}={v}\n" for k, v in h.env().items()))
    env.chmod(0o600)
    r = run_cli("--config", str(env), "validate-config", "--geoblock")
    assert r.returncode == 1 and "error: GEOBLOCK_URL: Polymarket refuses orders" in r.stderr
    assert run_cli("--config", str(env), "validate-config").returncode == 0   # not asked unless --geoblock
    h.ex.s.geoblocked = False                               # released: the next check (hourly) lets buys go
    e.last_geoblock = 0
    h.trade(asset=NO, ago=1, transactionHash="0x2")
    e.poll_once()
    assert len(h.ex.s.orders) == 1 and server.health(e)[1]["geoblock"]["blocked"] is False
    r = run_cli("--config", str(env), "validate-config", "--geoblock")
    assert r.returncode == 0, r.stderr
