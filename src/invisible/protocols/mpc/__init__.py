"""Arithmetic on additively shared fixed-point arrays over Z_2^64, with a dealer.

:mod:`.context` (who computes, the tuple provider, the record of openings),
:mod:`.dealer` (correlated randomness: Beaver triples, matrix triples,
truncation tuples, PRG-compressed), :mod:`.shared` (shared arrays and their
local operations, with bounds carried through), :mod:`.arithmetic`
(opening, products, exact truncation).
"""
