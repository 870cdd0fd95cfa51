"""Byte-for-byte equality of our signing with py-clob-client-v2 on fixed vectors."""

from __future__ import annotations

from typing import Any

import pytest
from polymarket_bot import crypto, signing
from polymarket_bot.secrets import Secret

clob = pytest.importorskip("py_clob_client_v2")

from py_clob_client_v2.clob_types import ApiCreds as RefCreds  # noqa: E402
from py_clob_client_v2.clob_types import RequestArgs  # noqa: E402
from py_clob_client_v2.headers.headers import (  # noqa: E402
    create_level_1_headers,
    create_level_2_headers,
)
from py_clob_client_v2.order_utils.exchange_order_builder_v2 import (  # noqa: E402
    ExchangeOrderBuilderV2,
)
from py_clob_client_v2.order_utils.model.order_data_v2 import (  # noqa: E402
    OrderDataV2,
    order_to_json_v2,
)
from py_clob_client_v2.order_utils.model.side import Side as RefSide  # noqa: E402
from py_clob_client_v2.signer import Signer  # noqa: E402

KEYS = [
    "0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
    "0x" + "11" * 32,
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
]
TOKEN = "71321045679252212594626385532706912750332728571942532289631379312455583992563"


def _ref_signed(key: str, side: int, neg_risk: bool, salt: int, maker_amt: int, taker_amt: int) -> Any:
    signer = Signer(key if key.startswith("0x") else "0x" + key, 137)
    contract = signing.exchange_for(137, neg_risk)
    builder = ExchangeOrderBuilderV2(contract, 137, signer, generate_salt=lambda: str(salt))
    data = OrderDataV2(
        maker=signer.address(), tokenId=TOKEN, makerAmount=str(maker_amt),
        takerAmount=str(taker_amt), side=RefSide(side), timestamp="1767225600123",
    )
    signed = builder.build_signed_order(data)
    order_hash = builder.build_order_hash(builder.build_order_typed_data(signed))
    return signer, signed, order_hash


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("side", [0, 1])
@pytest.mark.parametrize("neg_risk", [False, True])
def test_order_signature_matches_reference(key: str, side: int, neg_risk: bool) -> None:
    salt, maker_amt, taker_amt = 123456789 + side, 10_500_000, 21_000_000
    signer, ref, ref_hash = _ref_signed(key, side, neg_risk, salt, maker_amt, taker_amt)
    secret = Secret(key)
    addr = crypto.address_of(secret)
    assert addr == signer.address()
    order = signing.Order(
        salt=salt, maker=addr, signer=addr, token_id=int(TOKEN), maker_amount=maker_amt,
        taker_amount=taker_amt, side=signing.Side(side), timestamp=1767225600123,
    )
    assert "0x" + order.digest(137, neg_risk).hex() == ref_hash
    ours = signing.sign_order(order, secret, 137, neg_risk)
    assert ours == ref.signature
    assert signing.dumps(signing.order_payload(order, ours, "owner-key", "FOK")) == signing.dumps(
        order_to_json_v2(ref, "owner-key", "FOK")
    )
    assert crypto.recover_address(order.digest(137, neg_risk), bytes.fromhex(ours[2:])) == addr
    parsed, sig = signing.order_from_payload(signing.order_payload(order, ours, "o", "FAK"))
    assert parsed == order and sig == ours


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("nonce", [0, 7])
def test_l1_headers_match_reference(key: str, nonce: int) -> None:
    signer = Signer(key if key.startswith("0x") else "0x" + key, 137)
    ref = create_level_1_headers(signer, nonce=nonce, timestamp=1767225600)
    ours = signing.l1_headers(Secret(key), 137, 1767225600, nonce)
    assert ours == ref


def test_l2_headers_match_reference() -> None:
    key = KEYS[0]
    signer = Signer(key, 137)
    secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ="
    body = {"order": {"salt": 1, "side": "BUY"}, "owner": "k", "orderType": "FOK"}
    serialized = signing.dumps(body)
    ref = create_level_2_headers(
        signer, RefCreds("key-1", secret, "pass-1"),
        RequestArgs(method="POST", request_path="/order", body=body, serialized_body=serialized),
        timestamp=1767225600,
    )
    creds = signing.ApiCreds("key-1", Secret(secret), Secret("pass-1"))
    ours = signing.l2_headers(signer.address(), creds, 1767225600, "POST", "/order", serialized)
    assert ours == ref
    ref_get = create_level_2_headers(
        signer, RefCreds("key-1", secret, "pass-1"),
        RequestArgs(method="GET", request_path="/balance-allowance"), timestamp=1767225601,
    )
    assert signing.l2_headers(signer.address(), creds, 1767225601, "GET", "/balance-allowance") == ref_get


def test_many_random_hashes_match_eth_account() -> None:
    from eth_account import Account

    for i in range(40):
        digest = crypto.keccak256(b"vector-%d" % i)
        key = "0x" + crypto.keccak256(b"key-%d" % i).hex()
        ref = Account._sign_hash(digest, private_key=key).signature
        assert crypto.sign_hash(digest, Secret(key)) == bytes(ref)


def test_secret_never_printed() -> None:
    s = Secret(KEYS[0])
    assert KEYS[0] not in repr(s) and KEYS[0] not in str(s) and KEYS[0] not in f"{s}"
    with pytest.raises(crypto.SignatureError) as exc:
        crypto.private_key_int(Secret("zz" * 32))
    assert "zz" not in str(exc.value)


DEPOSIT_WALLET = "0x" + "5d" * 20


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("side", [0, 1])
@pytest.mark.parametrize("neg_risk", [False, True])
def test_deposit_wallet_order_matches_reference(key: str, side: int, neg_risk: bool) -> None:
    """Signature type 3 (POLY_1271): maker and signer are the deposit wallet, the owner key signs
    the ERC-7739 envelope; bytes equal to py-clob-client-v2's, and the fake exchange's verifier
    (the same parser the bot's tests rely on) recovers the owner from it."""
    salt, maker_amt, taker_amt = 987654321 + side, 10_500_000, 21_000_000
    signer = Signer(key if key.startswith("0x") else "0x" + key, 137)
    wallet = crypto.checksum_address(DEPOSIT_WALLET)
    builder = ExchangeOrderBuilderV2(signing.exchange_for(137, neg_risk), 137, signer,
                                     generate_salt=lambda: str(salt))
    ref = builder.build_signed_order(OrderDataV2(
        maker=wallet, signer=wallet, tokenId=TOKEN, makerAmount=str(maker_amt), takerAmount=str(taker_amt),
        side=RefSide(side), signatureType=3, timestamp="1767225600123"))
    ref_hash = builder.build_order_hash(builder.build_order_typed_data(ref))
    order = signing.Order(
        salt=salt, maker=wallet, signer=wallet, token_id=int(TOKEN), maker_amount=maker_amt,
        taker_amount=taker_amt, side=signing.Side(side), signature_type=signing.SignatureType.POLY_1271,
        timestamp=1767225600123)
    assert "0x" + order.digest(137, neg_risk).hex() == ref_hash
    ours = signing.sign_order(order, Secret(key), 137, neg_risk)
    assert ours == ref.signature
    assert signing.dumps(signing.order_payload(order, ours, "owner-key", "FAK")) == signing.dumps(
        order_to_json_v2(ref, "owner-key", "FAK"))
    digest, sig = signing.order_signer_key_digest(order, ours, 137, neg_risk)
    assert crypto.recover_address(digest, sig) == signer.address()
    with pytest.raises(ValueError):  # an envelope for another order is refused
        signing.order_signer_key_digest(order, ours, 137, not neg_risk)
