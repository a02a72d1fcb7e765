"""Arithmetic on additively shared fixed-point arrays over Z_2^64, with a dealer.

:mod:`.context` (who computes, the record of openings), :mod:`.tuples`
(the catalogue of correlated randomness: Beaver triples, matrix triples,
truncation and comparison tuples), :mod:`.dealer` (the dealer that makes
them, PRG-compressed), :mod:`.provider` (where a computing party gets them),
:mod:`.shared` (shared arrays and their local operations, with bounds carried
through), :mod:`.arithmetic` (opening, products, exact truncation).
"""
