"""secp256k1 signing the way Ethereum does it, on archive packages only.

keccak-256 comes from python3-pycryptodome, the curve arithmetic from python3-ecdsa.
Signatures use the deterministic nonce of RFC 6979 (HMAC-SHA256), low-s, and carry the
recovery id as ``v = 27 + recid``, exactly as eth-account/eth-keys produce them.
"""

from __future__ import annotations

import hashlib
import hmac

try:  # Debian and Ubuntu ship pycryptodome as "Cryptodome" (python3-pycryptodome)
    from Cryptodome.Hash import keccak as _keccak_mod
except ImportError:  # pragma: no cover - PyPI's pycryptodome, as "Crypto"
    from Crypto.Hash import keccak as _keccak_mod  # type: ignore[no-redef]
from ecdsa import SECP256k1
from ecdsa.ellipticcurve import PointJacobi

from .secrets import Secret

_G = SECP256k1.generator
N: int = SECP256k1.order
P: int = SECP256k1.curve.p()


class SignatureError(ValueError):
    """A signature or key is malformed (the message never includes key material)."""


def keccak256(data: bytes) -> bytes:
    return bytes(_keccak_mod.new(digest_bits=256, data=data).digest())


def _int32(b: bytes) -> int:
    return int.from_bytes(b, "big")


def private_key_int(key: Secret) -> int:
    raw = key.reveal().strip()
    if raw.startswith(("0x", "0X")):
        raw = raw[2:]
    if len(raw) != 64:
        raise SignatureError("private key must be 32 bytes of hex")
    try:
        d = int(raw, 16)
    except ValueError:
        raise SignatureError("private key is not hexadecimal") from None
    if not 0 < d < N:
        raise SignatureError("private key is out of range for secp256k1")
    return d


def checksum_address(addr20: bytes | str) -> str:
    """EIP-55 mixed-case form of a 20-byte address."""
    if isinstance(addr20, str):
        h = addr20.lower().removeprefix("0x")
        if len(h) != 40:
            raise SignatureError(f"not a 20-byte address: {addr20!r}")
        bytes.fromhex(h)
    else:
        h = addr20.hex()
    digest = keccak256(h.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(h))


def _pub_to_address(x: int, y: int) -> str:
    return checksum_address(keccak256(x.to_bytes(32, "big") + y.to_bytes(32, "big"))[-20:])


def address_of(key: Secret) -> str:
    pt = _G * private_key_int(key)
    return _pub_to_address(pt.x(), pt.y())


def _rfc6979_k(msg_hash: bytes, d: int) -> int:
    """RFC 6979 nonce with HMAC-SHA256, as eth-keys computes it."""
    x = d.to_bytes(32, "big")
    v = b"\x01" * 32
    k = b"\x00" * 32
    k = hmac.new(k, v + b"\x00" + x + msg_hash, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    k = hmac.new(k, v + b"\x01" + x + msg_hash, hashlib.sha256).digest()
    v = hmac.new(k, v, hashlib.sha256).digest()
    while True:
        v = hmac.new(k, v, hashlib.sha256).digest()
        candidate = _int32(v)
        if 0 < candidate < N:
            return candidate
        k = hmac.new(k, v + b"\x00", hashlib.sha256).digest()
        v = hmac.new(k, v, hashlib.sha256).digest()


def sign_hash(msg_hash: bytes, key: Secret) -> bytes:
    """65-byte signature r || s || v (v = 27 + recovery id) over a 32-byte hash."""
    if len(msg_hash) != 32:
        raise SignatureError("message hash must be 32 bytes")
    d = private_key_int(key)
    z = _int32(msg_hash)
    k = _rfc6979_k(msg_hash, d)
    rpt = _G * k
    r: int = rpt.x() % N
    s = pow(k, -1, N) * (z + r * d) % N
    recid: int = rpt.y() & 1
    if s * 2 >= N:
        s = N - s
        recid ^= 1
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([27 + recid])


def recover_address(msg_hash: bytes, signature: bytes) -> str:
    """Address of the key that produced ``signature`` over ``msg_hash``."""
    if len(msg_hash) != 32 or len(signature) != 65:
        raise SignatureError("invalid signature length")
    r = _int32(signature[:32])
    s = _int32(signature[32:64])
    v = signature[64]
    recid = v - 27 if v >= 27 else v
    if recid not in (0, 1) or not (0 < r < N and 0 < s < N):
        raise SignatureError("invalid signature values")
    if s * 2 >= N:
        raise SignatureError("signature s value is not canonical (high s)")
    alpha = (pow(r, 3, P) + 7) % P
    beta = pow(alpha, (P + 1) // 4, P)
    if beta * beta % P != alpha:
        raise SignatureError("signature r is not on the curve")
    y = beta if (beta & 1) == recid else P - beta
    rpt = PointJacobi(SECP256k1.curve, r, y, 1, N)
    z = _int32(msg_hash)
    rinv = pow(r, -1, N)
    q = rpt * (s * rinv % N) + _G * ((-z * rinv) % N)
    if not q:
        raise SignatureError("signature recovers to the point at infinity")
    return _pub_to_address(q.x(), q.y())
