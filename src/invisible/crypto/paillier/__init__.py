"""Paillier over `phe`: fast obfuscation (DJN, fixed base, pool), packing, wire format.

`phe`'s key and ciphertext types stay the interoperable core; see
:mod:`.keys` (keys, CRT), :mod:`.djn` (obfuscators), :mod:`.packing` (many
fixed-point slots per plaintext), :mod:`.vector` (ciphertext vectors:
encrypt, add, re-randomise, decrypt, validate, wire format) and
:mod:`.interop` (single values as `phe.EncryptedNumber`, phe's JSON form).
"""
