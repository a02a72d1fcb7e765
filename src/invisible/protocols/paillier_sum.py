"""Paillier secure sum: parties encrypt packed vectors, one adds them, the key holder decrypts.

Roles among the job's parties: the key holder K, an aggregator A (a party
other than K), and the other encrypting parties E_i. Every party has a
vector x_i of fixed-point int64 values of one agreed length.

Steps:

1. K makes a fresh key pair for this job (2048 bits or more) whose DJN base
   hs is the public rule's for n, the job and K (:mod:`invisible.crypto.
   paillier.keys`), and sends the public key (n, hs) to every other party.
2. Every party but K recomputes hs from n, the job and K and refuses the key
   unless it is that (a weak base such as 1 would let A read the others'
   inputs); it packs x_i (bias, headroom for as many additions as there are
   encrypting parties) and encrypts each plaintext with a fresh obfuscator
   hs^a, a of |n|/2 random bits.
3. Each E_i sends its ciphertext vector to A. A checks every ciphertext
   (0 < c < n^2, gcd(c, n) = 1, K's key, the job's packing), multiplies them
   with its own, re-randomises the product with fresh obfuscators, and sends
   it to K.
4. K checks the vector the same way and that it sums exactly the encrypting
   parties, decrypts (CRT), removes the biases, and adds its own x_K in
   the clear: the total.

What each party learns: E_i and A learn K's public key and ciphertexts they
cannot decrypt; K learns the total and nothing else, since it only ever
sees the re-randomised sum. A and K together could decrypt every E_i's
input: they must not collude (the README's threat model).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from invisible.crypto.paillier import vector as cipher
from invisible.crypto.paillier.djn import ObfuscatorPool
from invisible.crypto.paillier.keys import MIN_KEY_BITS, PublicKey, generate_keypair
from invisible.crypto.paillier.packing import Packing
from invisible.crypto.prg import Prg
from invisible.errors import ProtocolError
from invisible.protocols.channel import Channel

KEY_STEP = "paillier/public-key"
INPUT_STEP = "paillier/ciphertexts"
SUM_STEP = "paillier/sum"


@dataclass(frozen=True)
class PaillierSumOutput:
    total: np.ndarray | None = None  # int64 fixed point, at the key holder only
    #: Ciphertexts this party encrypted, multiplied in, re-randomised or decrypted (a
    #: bill's measure).
    ciphertext_ops: int = 0


def _receive_vector(channel: Channel, sender: str, step: str, key: PublicKey, packing: Packing,
                    count: int) -> cipher.CiphertextVector:
    try:
        received = cipher.CiphertextVector.from_bytes(channel.recv_bytes(sender, step), key,
                                                      packing)
    except ValueError as exc:
        raise ProtocolError(f"party '{sender}' sent ciphertexts that are refused: {exc}") from None
    if received.count != count:
        raise ProtocolError(f"party '{sender}' sent {received.count} values, the job has {count}")
    return received


def key_context(channel: Channel, key_holder: str) -> bytes:
    """What the job's obfuscation base is bound to: the job and its key holder."""
    job, holder = channel.job_id.encode(), key_holder.encode()
    return len(job).to_bytes(4, "big") + job + len(holder).to_bytes(4, "big") + holder


def paillier_sum(channel: Channel, values: np.ndarray, *, key_holder: str, aggregator: str,
                 bias: int, rng: Prg, workers: int = 1,
                 key_bits: int = MIN_KEY_BITS) -> PaillierSumOutput:
    """Run the steps above; `values` are this party's int64 fixed-point inputs (|v| <= bias)."""
    me = channel.party_id
    if key_holder not in channel.parties or aggregator not in channel.parties:
        raise ProtocolError("the key holder and the aggregator must be parties of the job")
    if aggregator == key_holder or len(channel.parties) < 2:
        raise ProtocolError("the aggregator must be a party other than the key holder")
    encrypting = [p for p in channel.parties if p != key_holder]
    count = int(values.shape[0])
    if me == key_holder:
        public, private = generate_keypair(rng, key_bits,
                                           context=key_context(channel, key_holder))
        channel.send_to_each(KEY_STEP, {p: public.to_bytes() for p in channel.peers})
        packing = Packing.plan(public.bits, bias, len(encrypting))
        with cipher.decryption_pool(private, workers) as decryptors:  # starts while others work
            summed = _receive_vector(channel, aggregator, SUM_STEP, public, packing, count)
            if summed.summed != len(encrypting):
                raise ProtocolError(f"party '{aggregator}' sent a sum of {summed.summed} inputs,"
                                    f" the job has {len(encrypting)}")
            total = cipher.decrypt(private, summed, decryptors, workers) + values
        return PaillierSumOutput(total=total, ciphertext_ops=len(summed.ciphertexts))
    try:
        public = PublicKey.from_bytes(channel.recv_bytes(key_holder, KEY_STEP),
                                      context=key_context(channel, key_holder))
    except ValueError as exc:
        raise ProtocolError(f"party '{key_holder}' sent a public key that is refused: {exc}") \
            from None
    packing = Packing.plan(public.bits, bias, len(encrypting))
    with ObfuscatorPool(public, workers) as pool:
        mine = cipher.encrypt(public, packing, values, pool)
        if me != aggregator:
            channel.send(aggregator, INPUT_STEP, mine.to_bytes())
            return PaillierSumOutput(ciphertext_ops=len(mine.ciphertexts))
        others = [_receive_vector(channel, p, INPUT_STEP, public, packing, count)
                  for p in encrypting if p != me]
        total = cipher.rerandomise(cipher.add([mine, *others]), pool)
        channel.send(key_holder, SUM_STEP, total.to_bytes())
        # encrypted, then each other party's multiplied in, then the product re-randomised
        return PaillierSumOutput(ciphertext_ops=len(mine.ciphertexts) * (len(others) + 2))
