"""Polymarket CLOB V2: EIP-712 orders, the L1 ClobAuth signature, L2 HMAC headers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .crypto import address_of, checksum_address, keccak256, sign_hash
from .secrets import Secret

POLYGON = 137
AMOY = 80002

# CTF Exchange V2 contracts (verifyingContract of the order domain), per chain.
EXCHANGE_V2 = {
    POLYGON: "0xE111180000d2663C0091e4f400237545B87B996B",
    AMOY: "0xE111180000d2663C0091e4f400237545B87B996B",
}
NEG_RISK_EXCHANGE_V2 = {
    POLYGON: "0xe2222d279d744050d28e00520010520000310F59",
    AMOY: "0xe2222d279d744050d28e00520010520000310F59",
}

ZERO_BYTES32 = "0x" + "00" * 32
ZERO_BYTES32_RAW = b"\x00" * 32

ORDER_TYPE = (
    "Order(uint256 salt,address maker,address signer,uint256 tokenId,"
    "uint256 makerAmount,uint256 takerAmount,uint8 side,uint8 signatureType,"
    "uint256 timestamp,bytes32 metadata,bytes32 builder)"
)
DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
AUTH_DOMAIN_TYPE = "EIP712Domain(string name,string version,uint256 chainId)"
AUTH_TYPE = "ClobAuth(address address,string timestamp,uint256 nonce,string message)"
AUTH_MESSAGE = "This message attests that I control the given wallet"

_ORDER_TYPEHASH = keccak256(ORDER_TYPE.encode())
_DOMAIN_TYPEHASH = keccak256(DOMAIN_TYPE.encode())
_AUTH_DOMAIN_TYPEHASH = keccak256(AUTH_DOMAIN_TYPE.encode())
_AUTH_TYPEHASH = keccak256(AUTH_TYPE.encode())


class Side(IntEnum):
    BUY = 0
    SELL = 1


class SignatureType(IntEnum):
    EOA = 0
    POLY_PROXY = 1
    POLY_GNOSIS_SAFE = 2
    POLY_1271 = 3  # a deposit wallet: an ERC-1271 contract wallet, orders signed by its owner (ERC-7739)


# Deposit wallets (signature type 3) validate an order signature with ERC-1271 through an
# ERC-7739 "TypedDataSign" envelope: the owner key signs the order's struct hash nested in a
# TypedDataSign struct under the exchange's domain, naming the wallet's own EIP-712 domain
# ("DepositWallet", "1", chain, the wallet address, salt 0).
TYPED_DATA_SIGN_TYPE = ("TypedDataSign(Order contents,string name,string version,uint256 chainId,"
                        "address verifyingContract,bytes32 salt)" + ORDER_TYPE)
_TYPED_DATA_SIGN_TYPEHASH = keccak256(TYPED_DATA_SIGN_TYPE.encode())
DEPOSIT_WALLET_NAME = "DepositWallet"
DEPOSIT_WALLET_VERSION = "1"


def _u256(value: int) -> bytes:
    if not 0 <= value < 1 << 256:
        raise ValueError("uint256 out of range")
    return value.to_bytes(32, "big")


def _addr(value: str) -> bytes:
    raw = bytes.fromhex(value.lower().removeprefix("0x"))
    if len(raw) != 20:
        raise ValueError(f"not a 20-byte address: {value!r}")
    return b"\x00" * 12 + raw


def _b32(value: str) -> bytes:
    raw = bytes.fromhex(value.lower().removeprefix("0x").zfill(64))
    if len(raw) != 32:
        raise ValueError("bytes32 value too long")
    return raw


def _str(value: str) -> bytes:
    return keccak256(value.encode("utf-8"))


def domain_separator(chain_id: int, contract: str, name: str = "Polymarket CTF Exchange",
                     version: str = "2") -> bytes:
    return keccak256(_DOMAIN_TYPEHASH + _str(name) + _str(version) + _u256(chain_id) + _addr(contract))


def exchange_for(chain_id: int, neg_risk: bool) -> str:
    table = NEG_RISK_EXCHANGE_V2 if neg_risk else EXCHANGE_V2
    if chain_id not in table:
        raise ValueError(f"unsupported chain id {chain_id}")
    return table[chain_id]


@dataclass(frozen=True)
class Order:
    """An unsigned CLOB V2 order; amounts are in 6-decimal base units."""

    salt: int
    maker: str
    signer: str
    token_id: int
    maker_amount: int
    taker_amount: int
    side: Side
    signature_type: SignatureType = SignatureType.EOA
    timestamp: int = 0
    metadata: str = ZERO_BYTES32
    builder: str = ZERO_BYTES32
    expiration: int = 0

    def struct_hash(self) -> bytes:
        return keccak256(
            _ORDER_TYPEHASH
            + _u256(self.salt)
            + _addr(self.maker)
            + _addr(self.signer)
            + _u256(self.token_id)
            + _u256(self.maker_amount)
            + _u256(self.taker_amount)
            + _u256(int(self.side))
            + _u256(int(self.signature_type))
            + _u256(self.timestamp)
            + _b32(self.metadata)
            + _b32(self.builder)
        )

    def digest(self, chain_id: int, neg_risk: bool) -> bytes:
        sep = domain_separator(chain_id, exchange_for(chain_id, neg_risk))
        return keccak256(b"\x19\x01" + sep + self.struct_hash())


def deposit_wallet_digest(order: Order, chain_id: int, neg_risk: bool) -> bytes:
    """What a deposit wallet's owner signs (ERC-7739 TypedDataSign under the exchange's domain);
    ``order.signer`` is the wallet."""
    sign_struct = keccak256(_TYPED_DATA_SIGN_TYPEHASH + order.struct_hash() + _str(DEPOSIT_WALLET_NAME)
                            + _str(DEPOSIT_WALLET_VERSION) + _u256(chain_id) + _addr(order.signer)
                            + ZERO_BYTES32_RAW)
    sep = domain_separator(chain_id, exchange_for(chain_id, neg_risk))
    return keccak256(b"\x19\x01" + sep + sign_struct)


def sign_order(order: Order, key: Secret, chain_id: int, neg_risk: bool) -> str:
    """The order's signature: EIP-712 by the key for types 0-2; for a deposit wallet (3) the
    ERC-7739 envelope: owner signature (65) | exchange domain separator (32) | contents hash
    (32) | the Order type string | its length (uint16)."""
    if order.signature_type != SignatureType.POLY_1271:
        return "0x" + sign_hash(order.digest(chain_id, neg_risk), key).hex()
    inner = sign_hash(deposit_wallet_digest(order, chain_id, neg_risk), key)
    sep = domain_separator(chain_id, exchange_for(chain_id, neg_risk))
    contents_type = ORDER_TYPE.encode()
    return "0x" + (inner + sep + order.struct_hash() + contents_type + len(contents_type).to_bytes(2, "big")).hex()


def order_signer_key_digest(order: Order, signature: str, chain_id: int, neg_risk: bool) -> tuple[bytes, bytes]:
    """(digest, 65-byte signature) to recover the signing key from, for any signature type
    (used by the fake exchange); a malformed deposit-wallet envelope raises ValueError."""
    raw = bytes.fromhex(signature.removeprefix("0x"))
    if order.signature_type != SignatureType.POLY_1271:
        return order.digest(chain_id, neg_risk), raw
    contents_type = ORDER_TYPE.encode()
    sep = domain_separator(chain_id, exchange_for(chain_id, neg_risk))
    if (len(raw) != 65 + 32 + 32 + len(contents_type) + 2 or raw[65:97] != sep
            or raw[97:129] != order.struct_hash() or raw[129:-2] != contents_type
            or int.from_bytes(raw[-2:], "big") != len(contents_type)):
        raise ValueError("not a TypedDataSign envelope of this order")
    return deposit_wallet_digest(order, chain_id, neg_risk), raw[:65]


def order_payload(order: Order, signature: str, owner: str, order_type: str) -> dict[str, Any]:
    """The JSON body of POST /order, field for field as the exchange expects it."""
    return {
        "order": {
            "salt": order.salt,
            "maker": order.maker,
            "signer": order.signer,
            "tokenId": str(order.token_id),
            "makerAmount": str(order.maker_amount),
            "takerAmount": str(order.taker_amount),
            "side": "BUY" if order.side == Side.BUY else "SELL",
            "expiration": str(order.expiration),
            "signatureType": int(order.signature_type),
            "timestamp": str(order.timestamp),
            "metadata": order.metadata,
            "builder": order.builder,
            "signature": signature,
        },
        "owner": owner,
        "orderType": order_type,
        "deferExec": False,
        "postOnly": False,
    }


def order_from_payload(body: dict[str, Any]) -> tuple[Order, str]:
    """Parse the ``order`` object of a POST /order body (used by the fake exchange)."""
    o = body["order"]
    side = {"BUY": Side.BUY, "SELL": Side.SELL}[o["side"]]
    order = Order(
        salt=int(o["salt"]),
        maker=checksum_address(o["maker"]),
        signer=checksum_address(o["signer"]),
        token_id=int(o["tokenId"]),
        maker_amount=int(o["makerAmount"]),
        taker_amount=int(o["takerAmount"]),
        side=side,
        signature_type=SignatureType(int(o["signatureType"])),
        timestamp=int(o["timestamp"]),
        metadata=o.get("metadata", ZERO_BYTES32),
        builder=o.get("builder", ZERO_BYTES32),
        expiration=int(o.get("expiration", 0)),
    )
    return order, str(o["signature"])


def dumps(body: Any) -> str:
    """Compact JSON, the exact bytes that are both sent and HMAC-signed."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


# --- L1: ClobAuth ---------------------------------------------------------------

def clob_auth_digest(address: str, timestamp: int, nonce: int, chain_id: int) -> bytes:
    domain = keccak256(_AUTH_DOMAIN_TYPEHASH + _str("ClobAuthDomain") + _str("1") + _u256(chain_id))
    struct = keccak256(
        _AUTH_TYPEHASH + _addr(address) + _str(str(timestamp)) + _u256(nonce) + _str(AUTH_MESSAGE)
    )
    return keccak256(b"\x19\x01" + domain + struct)


def l1_headers(key: Secret, chain_id: int, timestamp: int, nonce: int = 0) -> dict[str, str]:
    address = address_of(key)
    sig = sign_hash(clob_auth_digest(address, timestamp, nonce, chain_id), key)
    return {
        "POLY_ADDRESS": address,
        "POLY_SIGNATURE": "0x" + sig.hex(),
        "POLY_TIMESTAMP": str(timestamp),
        "POLY_NONCE": str(nonce),
    }


# --- L2: HMAC -------------------------------------------------------------------

@dataclass(frozen=True)
class ApiCreds:
    api_key: str
    secret: Secret
    passphrase: Secret


def hmac_signature(secret: Secret, timestamp: int, method: str, path: str, body: str | None) -> str:
    message = f"{timestamp}{method}{path}"
    if body:
        message += body
    mac = hmac.new(base64.urlsafe_b64decode(secret.reveal()), message.encode("utf-8"), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode("ascii")


def l2_headers(address: str, creds: ApiCreds, timestamp: int, method: str, path: str,
               body: str | None = None) -> dict[str, str]:
    return {
        "POLY_ADDRESS": address,
        "POLY_SIGNATURE": hmac_signature(creds.secret, timestamp, method, path, body),
        "POLY_TIMESTAMP": str(timestamp),
        "POLY_API_KEY": creds.api_key,
        "POLY_PASSPHRASE": creds.passphrase.reveal(),
    }
